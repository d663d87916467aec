package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged-dev/edged/internal/ratelog"
	"github.com/edged-dev/edged/wire"
)

// Errors callers decide on with errors.Is.
var (
	// ErrLocked: the data dir is held by another process (usually a running edged). Open never
	// moves a locked directory aside.
	ErrLocked = errors.New("data dir is locked")
	// ErrFull: an outbox with when_full: reject is at a limit (or a message is larger than the
	// outbox's max_bytes). The broker answers MQTT 5 reason 0x97.
	ErrFull = errors.New("outbox full")
	// ErrDiskFull: the file system holding the data dir has less than Options.MinFreeBytes
	// free; nothing was written. Acks and purges still work, so draining frees space.
	ErrDiskFull = errors.New("disk full")
	// ErrClosed: the DB was closed.
	ErrClosed = errors.New("storage closed")
	// ErrNotFound: no record (or dead letter) with that sequence number.
	ErrNotFound = errors.New("not found")
	// ErrCorrupt: the store could not be opened and Options.NoRecover forbade moving it aside.
	ErrCorrupt = errors.New("store is corrupt or unreadable")
)

// DefaultMinFreeBytes is the free space the data dir's file system must keep. badger writes its
// WAL, tables and value log through mmap'ed, sparsely allocated files: on a really full file
// system a write to such a page is a SIGBUS, not an error. Refusing growth below this reserve
// (which covers two memtable WALs, a flush and a compaction of the small-table profile) turns
// "disk full" into ErrDiskFull instead of a crash. A disk that someone else fills past it is
// the space guard's (diskfull.go).
const DefaultMinFreeBytes = 64 << 20

// Options opens a DB.
type Options struct {
	// Dir is the data directory (data_dir); created if missing.
	Dir string
	// Logger receives storage and badger logs (badger's at WARN and above). Nil discards.
	Logger *slog.Logger
	// Registerer receives the storage metrics. Nil: metrics are kept but not exported.
	Registerer prometheus.Registerer
	// MinFreeBytes: growth (appends, state puts, dead letters) fails with ErrDiskFull while the
	// file system has less free space. 0 means DefaultMinFreeBytes; negative disables the check
	// (the space guard still refuses a write with no room for a memtable flush: diskfull.go).
	MinFreeBytes int64
	// NoRecover makes Open fail with ErrCorrupt instead of moving a corrupt store aside (the CLI
	// uses it: an operator tool must not "repair" behind the operator's back).
	NoRecover bool
	// GCInterval is the period of value-log GC and TTL checks. 0 means 1 minute.
	GCInterval time.Duration
	// ReserveBytes is the emergency reserve file kept in the data dir and released when the
	// file system runs full (diskfull.go). 0 means DefaultReserveBytes; negative: none.
	ReserveBytes int64
	// Wire bounds the envelopes stored and read back (the zero value: wire's defaults).
	// Appending an envelope beyond it fails, so nothing is stored that could not be read back.
	Wire wire.Limits
}

// DB is the one badger database of a gateway: outboxes, dead letters and broker state.
type DB struct {
	opts    Options
	log     *slog.Logger
	bdb     *badger.DB
	lock    *dirLock
	budget  budget
	metrics *metrics
	integ   *integrity // damage detection, loss accounting, salvage (integrity.go)

	reqs     chan *op
	quit     chan struct{}
	done     chan struct{}
	trimDone chan struct{}
	closeMu  sync.RWMutex
	closed   bool
	closeErr error

	mu       sync.Mutex
	outboxes map[string]*Outbox
	latest   map[string]*Latest // keep-latest stores by name (latest.go)
	state    *StateStore

	corrupt    int
	movedAside string
	salvageReq salvageRequest // salvagereq.go

	commits      atomic.Uint64
	committedOps atomic.Uint64
	diskFullLog  ratelog.Limit
	freedSinceGC atomic.Int64
	space        *spaceGuard // full disk and file repair (diskfull.go, repair.go)
}

// tuneBadger is the constrained-hardware profile. Every figure is the memory (or disk) it buys
// on a 512 MB Raspberry Pi class gateway; the defaults are in parentheses.
func tuneBadger(dir string, log *slog.Logger) badger.Options {
	o := badger.DefaultOptions(dir)
	o.Logger = newBadgerLogger(log.With("component", "badger"), nil)
	// Memtables are heap arenas of MemTableSize (+15% batch slack): 2 x ~5 MB instead of
	// 5 x 75 MB. Smaller than 4 MB costs throughput (more flushes) for little gain.
	o.MemTableSize = 4 << 20 // (64 MB)
	o.NumMemtables = 2       // (5)
	// Values up to 64 KiB stay inline in the LSM (no value log, nothing for value-log GC to do,
	// deletes reclaimed by compaction). Must stay <= 15% of MemTableSize or Open panics.
	o.ValueThreshold = 64 << 10 // (1 MB)
	// 32-bit safety (field notes): ristretto's allocator overflows once a table builder outgrows
	// its first buffer on 32-bit; BaseTableSize >= MemTableSize and no table growth per level
	// keep every builder inside one buffer. Also keeps every table (and its in-flight builder,
	// ~2x table size of heap) at 4 MB.
	o.BaseTableSize = 4 << 20 // (2 MB)
	o.TableSizeMultiplier = 1 // (2)
	// badger sizes its levels from the last one down (levelTargets): L0 compacts into the
	// deepest level whose target is within BaseLevelSize, and each level above the last is a
	// tenth of the one below. With 128 MB, an outage's backlog (1M messages of 200 B is
	// ~250 MB of LSM) sits in L0, one base level of up to 128 MB and the last level, with few
	// rewrites between levels, and durable ingest stays flat as it grows. With 16 MB, more
	// levels filled and their compactions ran under the ingest: the rate after the first 100k
	// fell to 0.80-0.87 of the first 100k's; with 128 MB it measured 0.99-1.09 (6 runs of 1M,
	// 8 publishers); BenchmarkIngestByDepth: last/first 10% 0.82 -> 0.95, and bytes written
	// per message 1507 -> 1056 (less SD wear). Compaction still works a table (4 MB) at a
	// time; RssAnon right after a 1M ingest, mostly table builders in flight, measured 37-51 MB
	// with 16 MB and 40-53 MB with 128 MB (at memory_limit 64MiB).
	o.BaseLevelSize = 128 << 20   // (10 MB)
	o.LevelSizeMultiplier = 10    // (10)
	o.NumLevelZeroTables = 2      // (5): 8 MB of L0 before compaction; fewer tables per Seek
	o.NumLevelZeroTablesStall = 8 // (15)
	o.NumCompactors = 2           // (4): each runs a builder of ~8 MB heap
	// No block cache (256 MB) and no index cache: reads come from the OS page cache of the
	// mmap'ed tables, which the kernel can reclaim; with no cache, compression must be off
	// (BlockCacheSize 0 + Snappy panics), and Snappy doubled peak memory anyway.
	o.BlockCacheSize = 0
	o.IndexCacheSize = 0
	o.Compression = options.None
	// Verify each table block's checksum (CRC-32C) whenever it is read, so bit rot in a table
	// is detected instead of delivered (NoVerification). Not OnTableRead: verifying every
	// table at open would make one bad block fail the whole store. Cost: see BenchmarkDrain in
	// storage/doc.go.
	o.ChecksumVerificationMode = options.OnBlockRead
	// Value-log files are mmap'ed at twice their size: 2 GB (default) is ENOMEM on 32-bit.
	o.ValueLogFileSize = 16 << 20 // (1 GB)
	o.NumGoroutines = 2           // (8) stream/backup workers
	o.MetricsEnabled = false      // expvar counters we do not export; also saves atomics per op
	o.DetectConflicts = false     // one writer (the committer): conflict tracking is pure cost
	// Durability is ours: one DB.Sync per group commit (see commit.go) instead of one fsync per
	// transaction; the committer is badger's only writer, so the synced WAL is the one written.
	o.SyncWrites = false
	o.BypassLockGuard = true // we hold the same flock ourselves (lock_unix.go)
	if tuneHook != nil {
		tuneHook(&o)
	}
	return o
}

// tuneHook lets tests try other badger options (e.g. show the 32-bit failure without the
// workaround).
var tuneHook func(*badger.Options)

// budget is how much one group commit (one badger transaction) may hold: 3/4 of badger's
// per-transaction limits (15% of MemTableSize, and that / skl.MaxNodeSize entries).
type budget struct {
	bytes     int64
	entries   int
	threshold int64
}

func newBudget(o badger.Options) budget {
	maxBatch := 15 * o.MemTableSize / 100
	return budget{bytes: maxBatch * 3 / 4, entries: int(maxBatch/int64(skiplistNodeSize)) * 3 / 4, threshold: o.ValueThreshold}
}

// Open opens (or creates) the store in o.Dir. A directory held by another process gives
// ErrLocked. A store that cannot be opened for any other reason than a lock, permissions, a
// read-only or full file system, is moved aside to <dir>.corrupt-<UTC time> and a fresh one is
// opened, so a damaged SD card never keeps the gateway down; this is logged at ERROR and
// counted (Stats.CorruptRecoveries, edged_storage_corrupt_recoveries_total).
func Open(o Options) (*DB, error) {
	if o.Dir == "" {
		return nil, errors.New("open storage: no data dir")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MinFreeBytes == 0 {
		o.MinFreeBytes = DefaultMinFreeBytes
	}
	if o.GCInterval <= 0 {
		o.GCInterval = time.Minute
	}
	if o.ReserveBytes == 0 {
		o.ReserveBytes = DefaultReserveBytes
	}
	log := o.Logger
	dir := filepath.Clean(o.Dir)
	if o.NoRecover {
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("open storage: %w", err)
		}
	} else if err := mkdirSynced(dir); err != nil {
		return nil, fmt.Errorf("open storage: %w", err)
	}
	lk, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("open storage: %w", err)
	}
	db := &DB{opts: o, log: log, lock: lk, outboxes: map[string]*Outbox{}, integ: newIntegrity(log)}
	db.budget = newBudget(tuneBadger(dir, log))
	db.space = newSpaceGuard(dir, tuneBadger(dir, log), o)
	db.space.repairFiles()
	if err := db.space.beforeOpen(); err != nil {
		lk.unlock(true)
		return nil, fmt.Errorf("open storage: %w", err)
	}

	aside := ""
	why, forced := "", false
	if !o.NoRecover {
		why, forced = salvageRequested(dir) // salvagereq.go
	}
	if forced {
		err = fmt.Errorf("%w: %s", ErrSalvageRequested, why)
	} else {
		err = db.openBadger(dir)
	}
	if err != nil && !forced && !isCorruption(err) {
		lk.unlock(true)
		return nil, fmt.Errorf("open storage %s: %w", dir, err)
	}
	if err != nil {
		if o.NoRecover {
			lk.unlock(true)
			return nil, fmt.Errorf("open storage %s: %w: %v", dir, ErrCorrupt, err) //nolint:errorlint // callers decide on ErrCorrupt; badger's error is context
		}
		aside = dir + ".corrupt-" + time.Now().UTC().Format("20060102T150405.000Z")
		if rerr := os.Rename(dir, aside); rerr != nil {
			lk.unlock(true)
			return nil, fmt.Errorf("open storage %s: %w (and moving it aside failed: %v)", dir, err, rerr) //nolint:errorlint // the open error decides; the rename error is context
		}
		log.Error("storage is corrupt or unreadable: moved it aside; salvaging what is readable into a fresh store",
			"dir", dir, "moved_to", aside, "error", err)
		if merr := os.MkdirAll(dir, 0o750); merr != nil {
			lk.unlock(false)
			return nil, fmt.Errorf("open storage: recreate %s: %w", dir, merr)
		}
		lk2, lerr := lockDir(dir)
		lk.unlock(false)
		if lerr != nil {
			return nil, fmt.Errorf("open storage: %w", lerr)
		}
		db.lock = lk2
		db.corrupt, db.movedAside = 1, aside
		if err := db.openBadger(dir); err != nil {
			lk2.unlock(true)
			return nil, fmt.Errorf("open storage %s (fresh, after moving the corrupt one aside): %w", dir, err)
		}
	}

	db.metrics = newMetrics(db, o.Registerer)
	db.metrics.corrupt.Add(float64(db.corrupt))
	db.space.register(o.Registerer)
	db.space.afterOpen()
	db.state = &StateStore{db: db}
	db.afterOpen(aside) // salvage, loss checks, witness: before anything is served (integrity.go)
	db.reqs = make(chan *op, 1024)
	db.quit = make(chan struct{})
	db.done = make(chan struct{})
	db.trimDone = make(chan struct{})
	go db.commitLoop()
	go db.trimLoop()
	db.startScrub() // integrity.go
	return db, nil
}

// openBadger opens badger and loads the outbox metas; any failure (including a panic inside
// badger on garbage input) is returned as an error with the DB closed again.
func (db *DB) openBadger(dir string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("badger panicked while opening: %v", r)
		}
	}()
	bo := tuneBadger(dir, db.log)
	bo.Logger = db.integ.badgerLogger(db.log.With("component", "badger")) // badgerlog.go
	bdb, err := badger.Open(bo)
	if err != nil {
		return err
	}
	if err := db.load(bdb); err != nil {
		_ = bdb.Close()
		return err
	}
	db.bdb = bdb
	return nil
}

// load checks the format marker and reads every outbox meta (one small key per outbox).
func (db *DB) load(bdb *badger.DB) error {
	var legacy []string // outboxes whose meta is still under kindMetaV1
	format := byte(1)   // no marker: format 1
	err := bdb.View(func(txn *badger.Txn) error {
		if v, err := getValue(txn, []byte{kindFormat}); err == nil {
			if len(v) != 1 || (v[0] != formatVersion && v[0] != 1) {
				return fmt.Errorf("store format %v is not %d", v, formatVersion)
			}
			format = v[0]
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("read format marker: %w", err)
		}
		for _, kind := range []byte{kindMetaV1, kindMeta} { // a format 2 meta wins (metakey.go)
			if err := db.loadMetas(txn, kind, &legacy); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil && !db.opts.NoRecover && (format != formatVersion || len(legacy) > 0) {
		err = migrateMetas(bdb, legacy) // metakey.go
	}
	return err
}

// loadMetas reads the outbox metas stored under kind.
func (db *DB) loadMetas(txn *badger.Txn, kind byte, legacy *[]string) error {
	{
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kind}, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) < 2 || int(k[1]) != len(k)-2 {
				return fmt.Errorf("bad outbox meta key %q", k)
			}
			name := string(k[2:])
			var m meta
			if err := it.Item().Value(func(v []byte) error {
				var err error
				m, err = decodeMeta(v)
				return err
			}); err != nil {
				return fmt.Errorf("outbox %q: %w", name, err)
			}
			if kind == kindMetaV1 {
				*legacy = append(*legacy, name)
			}
			ob := db.outboxes[name]
			if ob == nil {
				ob = db.newOutbox(name)
			}
			ob.cm = m
			// Garbage left below the head by the last run (amount unknown): reclaim it soon.
			git := txn.NewIterator(badger.IteratorOptions{Prefix: ob.prefix, PrefetchValues: false})
			git.Rewind()
			if git.Valid() && keySeq(git.Item().Key()) < m.head {
				ob.garbage, ob.debt = reclaimAfter, reclaimAfter
			}
			git.Close()
			db.outboxes[name] = ob
		}
		return nil
	}
}

// isCorruption: everything that moving the directory aside could fix. Errors of the
// environment (permissions, read-only or full file system, fd or memory exhaustion) are not:
// a fresh store would fail the same way and the old data would be orphaned for nothing. badger
// flattens its errors to strings, hence the text match.
func isCorruption(err error) bool {
	if errors.Is(err, ErrLocked) || errors.Is(err, os.ErrPermission) {
		return false
	}
	s := strings.ToLower(err.Error())
	for _, env := range []string{"permission denied", "operation not permitted", "read-only file system",
		"no space left on device", "disk quota exceeded", "too many open files", "cannot allocate memory"} {
		if strings.Contains(s, env) {
			return false
		}
	}
	return true
}

// Close stops the committer (after the group in flight), closes badger and releases the lock.
// Idempotent.
func (db *DB) Close() error {
	db.closeMu.Lock()
	already := db.closed
	db.closed = true
	db.closeMu.Unlock()
	if already {
		<-db.done
		return db.closeErr
	}
	close(db.quit)
	<-db.done
	<-db.trimDone
	db.waitScrub()
	db.closeWitness()
	db.space.close()
	err := db.bdb.Close()
	db.lock.unlock(true)
	db.metrics.unregister()
	db.space.unregister()
	if err != nil {
		db.closeErr = fmt.Errorf("close storage: %w", err)
	}
	return db.closeErr
}

// trimEvery and trimAfter schedule returnMemory: checked every trimEvery, it runs after
// trimAfter[i] ticks without a commit following write activity.
const trimEvery = 5 * time.Second

var trimAfter = []int{1, 3, 6, 12} // 5 s, 15 s, 30 s, 60 s idle

// trimLoop hands the memory of a write burst back to the OS once the store goes idle.
//
// Why: badger builds every flushed or compacted table in a table-builder buffer of twice the
// table size (8 MB here), takes them from an internal pool of up to 8, and frees one only per
// 2 s in which no table was built. A burst of writes (a backlog building up, a bulk ack) leaves
// up to 64 MB of such buffers; once badger lets go of them they are garbage, but an idle
// process allocates too little to trigger a GC, so they stayed resident until the runtime's
// forced GC (2 min) and its slow scavenger. Measured (BenchmarkBacklogMemory, 1M messages,
// GOMEMLIMIT=48MiB): RssAnon stayed at 27 MB after 24 s idle without this, ~8 MB with it.
//
// Cost: one debug.FreeOSMemory (a full GC plus returning free pages) at 5, 15, 30 and 60 s
// after the last commit of a burst; nothing while writes go on (GOMEMLIMIT governs then) and
// nothing on an idle store.
func (db *DB) trimLoop() {
	defer close(db.trimDone)
	tick := time.NewTicker(trimEvery)
	defer tick.Stop()
	last, idle := db.commits.Load(), -1 // -1: no activity since the last schedule ended
	for {
		select {
		case <-db.quit:
			return
		case <-tick.C:
		}
		if c := db.commits.Load(); c != last {
			last, idle = c, 0
			continue
		}
		if idle < 0 {
			continue
		}
		idle++
		for _, n := range trimAfter {
			if idle == n {
				debug.FreeOSMemory()
			}
		}
		if idle >= trimAfter[len(trimAfter)-1] {
			idle = -1
		}
	}
}

// Dir is the data directory.
func (db *DB) Dir() string { return db.opts.Dir }

// Outbox returns the outbox called name (a connector name), creating it on first use. lim's
// zero fields take the Defaults. Calling it again for the same name returns the same *Outbox
// with the new limits. Nothing is written until the first append.
func (db *DB) Outbox(name string, lim Config) (*Outbox, error) {
	if name == "" || len(name) > maxNameLen {
		return nil, fmt.Errorf("outbox name %q: must be 1..%d bytes", name, maxNameLen)
	}
	lim.ApplyDefaults()
	if err := lim.Validate(); err != nil {
		return nil, fmt.Errorf("outbox %q limits: %w", name, err)
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	ob := db.outboxes[name]
	if ob == nil {
		ob = db.newOutbox(name)
		ob.cm = meta{head: 1}
		db.outboxes[name] = ob
	}
	ob.lim.Store(&lim)
	ob.configured.Store(true)
	return ob, nil
}

// Outboxes lists the outboxes in the store (configured or left over from removed connectors),
// sorted by name.
func (db *DB) Outboxes() []*Outbox {
	db.mu.Lock()
	out := make([]*Outbox, 0, len(db.outboxes))
	for _, ob := range db.outboxes {
		out = append(out, ob)
	}
	db.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// State is the broker's persistence (sessions, subscriptions, inflight, retained).
func (db *DB) State() *StateStore { return db.state }

// Stats is a point-in-time view of the whole store.
type Stats struct {
	Outboxes []OutboxStats `json:"outboxes"`
	// BytesWritten is write_bytes of /proc/self/io: everything this process caused to be
	// written to the block device since it started (SD card wear). 0 where unavailable.
	BytesWritten uint64 `json:"bytes_written"`
	// LSMBytes and VlogBytes are badger's own size estimates of the store on disk.
	LSMBytes  int64 `json:"lsm_bytes"`
	VlogBytes int64 `json:"vlog_bytes"`
	// DiskFree is the free space of the data dir's file system (-1 if unknown).
	DiskFree int64 `json:"disk_free"`
	// Commits is the number of group commits (fsyncs); CommittedOps the operations they
	// carried (appends, acks, state writes...).
	Commits      uint64 `json:"commits"`
	CommittedOps uint64 `json:"committed_ops"`
	// CorruptRecoveries is 1 when this Open found a corrupt store and moved it to MovedAside.
	CorruptRecoveries int    `json:"corrupt_recoveries"`
	MovedAside        string `json:"moved_aside,omitempty"`
	// Salvage: what was copied from the store moved aside (nil when none was).
	Salvage *SalvageStats `json:"salvage,omitempty"`
	// Space: disk full, emergency reserve, start-up repairs and the health verdict.
	Space SpaceStats `json:"space"`
}

// Stats returns the statistics of every outbox and of the store.
func (db *DB) Stats() Stats {
	s := Stats{Commits: db.commits.Load(), CommittedOps: db.committedOps.Load(),
		CorruptRecoveries: db.corrupt, MovedAside: db.movedAside, BytesWritten: procWriteBytes(), DiskFree: -1}
	for _, ob := range db.Outboxes() {
		s.Outboxes = append(s.Outboxes, ob.Stats())
	}
	s.Salvage = db.integ.salvageStats()
	s.LSMBytes, s.VlogBytes = db.bdb.Size()
	if f, err := diskFree(db.opts.Dir); err == nil {
		s.DiskFree = f
	}
	s.Space = db.space.stats(s.DiskFree)
	return s
}

// submit hands an operation to the committer and waits until it is durable (or failed).
func (db *DB) submit(ctx context.Context, o *op) error {
	if ctx == nil {
		ctx = context.Background()
	}
	o.ctx = ctx
	o.done = make(chan error, 1)
	db.closeMu.RLock()
	if db.closed {
		db.closeMu.RUnlock()
		return ErrClosed
	}
	select {
	case db.reqs <- o:
	case <-ctx.Done():
		db.closeMu.RUnlock()
		return ctx.Err()
	}
	db.closeMu.RUnlock()
	select {
	case err := <-o.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// procWriteBytes reads write_bytes from /proc/self/io.
func procWriteBytes() uint64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64) // unreadable: 0, as when missing
			return n
		}
	}
	return 0
}

// Ping returns once the commit goroutine has taken a no-op through a group, or ctx's error.
// It writes nothing: a wedged commit loop (an fsync that never returns on a dying SD card)
// makes it time out, which is what the systemd watchdog and /healthz need to see.
func (db *DB) Ping(ctx context.Context) error {
	if db.salvageReq.set.Load() {
		return ErrSalvageRequested
	}
	return db.submit(ctx, &op{apply: func(*group) (bool, error) { return true, nil }})
}
