package storage

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// A full disk is a state, never a crash.
//
// badger writes its memtable WALs (*.mem), value logs (*.vlog), tables (*.sst) and DISCARD
// through shared mappings of files it creates sparse (ftruncate to the mapped size). A store to
// a mapped page that has no block behind it makes the kernel allocate one; on a full file
// system it cannot, and the process gets SIGBUS, which the Go runtime turns into a fatal
// "fault" that no error check or recover can catch. Measured on tmpfs and on ext4: a sparse
// mapping faults once the file system is filled from outside; a range allocated with
// fallocate(2) beforehand does not, and neither does a range preallocated with
// FALLOC_FL_KEEP_SIZE on a 0-byte file that is later ftruncated up to cover it.
//
// So the space guard makes sure every write badger does on behalf of a commit lands in blocks
// that already exist, and refuses (ErrDiskFull) any write for which it cannot:
//
//   - The active WAL: badger creates it at Open (sparse); Open allocates all of it
//     (fallocate, mode 0) before the first commit.
//   - The next WAL: badger rotates to <nextMemFid>.mem every ~MemTableSize of writes, opening
//     it with O_CREATE (not O_EXCL) and ftruncating it only when it is empty. The guard creates
//     that file ahead, 0 bytes long with its blocks preallocated (FALLOC_FL_KEEP_SIZE), and
//     fsyncs the directory, so the rotation needs no new block and its directory entry is
//     already durable. After each commit one fstat of that file tells whether badger took it;
//     then it is fsynced (its size and header) before the commit is answered, and the next one
//     is prepared. Open removes a left-over 0-byte preallocated file (badger refuses to open a
//     0-byte WAL; see repair.go).
//   - The value log (values >= ValueThreshold only): a group that carries such values is
//     committed only once the current *.vlog is allocated; a new one (rotation, every
//     ValueLogFileSize) is fsynced with the directory when seen and allocated before its first
//     use.
//   - Tables (flushes, compactions, DropPrefix) and new file headers cannot be preallocated
//     from outside: badger creates them O_EXCL and fills them at once. So a commit (any
//     commit may rotate the memtable, whose flush writes a table) starts only while the file
//     system has room for a flush (roomNeed: 2 x MemTableSize), and for the moment an outside
//     writer has taken that room the guard keeps an emergency reserve: a fallocated file
//     (RESERVE, Options.ReserveBytes) in the data dir. It is released when a write needs room
//     and the free space has stopped falling (quiet: an outside writer still filling the disk
//     would take it), and taken again once the disk has room. While it is released its size
//     does not count as free for growth (effectiveFree), so releasing it never lets new
//     messages in. Open releases it first when the disk is short (Open flushes replayed WALs
//     and creates new files) and fails with ErrDiskFull, instead of faulting, when there is
//     no room even then.
//
// A write the guard cannot make safe is refused with ErrDiskFull, acks included (the caller
// retries; the forwarder reads the same messages again, which the ack protocol allows);
// reads, Ping and Stats go on. With the reserve released, acks and the DropPrefix of a
// drained outbox run on a disk that is full for everyone else.
//
// What remains (measured: tmpfs and loop ext4, dd as the outside writer): a table that badger
// is writing at the very moment another process takes the last free blocks can still fault
// (a flush or compaction already under way when the filler passes; edged's own growth stops
// MinFreeBytes earlier, which is the headroom for exactly these). The guard covers a disk
// that is full, not one being filled during a table write.

// DefaultReserveBytes is the emergency reserve kept in the data dir (see above). It covers the
// flush of both memtables (4 MB tables) and a DropPrefix of a drained outbox, with headroom
// for one L0 compaction of the small-table profile; the full-disk tests drain 20k queued
// messages on a full disk with it.
const DefaultReserveBytes = 16 << 20

const (
	reserveFile    = "RESERVE"
	memExt         = ".mem"
	vlogExt        = ".vlog"
	logHeaderSize  = 20 // badger's vlogHeaderSize: key id + base IV, the same for *.mem
	spacePollEvery = time.Second
)

type spaceSample struct {
	at   time.Time
	free int64
}

// spaceGuard is owned by the committer goroutine (and by Open before it starts); Stats reads
// only its atomics.
type spaceGuard struct {
	dir      string
	log      *slog.Logger
	memSize  int64 // bytes badger maps per WAL (2 x MemTableSize)
	vlogSize int64 // bytes badger maps per value log (2 x ValueLogFileSize)
	minFree  int64
	reserve  int64 // 0: no reserve

	activeMem int  // fid of the WAL badger writes
	activeOK  bool // its blocks are allocated
	next      *os.File
	nextFid   int
	vlogFid   int
	vlogOK    bool
	vlogData  bool // values may live in the value log (big values written now or before)
	lastPoll  time.Time
	ref       spaceSample // an older measurement, for quiet
	roomNeed  int64       // free space a commit needs: a memtable flush (2 x MemTableSize)

	blocked      atomic.Bool  // writes refused: no allocated WAL to write into
	held         atomic.Bool  // the reserve file exists
	free         atomic.Int64 // last measured free bytes (-1 unknown)
	blockedLog   rateLimit
	mReleased    prometheus.Counter
	mBlocked     prometheus.Counter
	mRepairs     *prometheus.CounterVec
	repairCounts map[string]int
	reg          prometheus.Registerer
}

func newSpaceGuard(dir string, bo badger.Options, o Options) *spaceGuard {
	s := &spaceGuard{dir: dir, log: o.Logger, memSize: 2 * bo.MemTableSize, vlogSize: 2 * bo.ValueLogFileSize,
		minFree: max(o.MinFreeBytes, 0), reserve: max(o.ReserveBytes, 0), activeMem: -1, vlogFid: -1, roomNeed: 2 * bo.MemTableSize,
		repairCounts: map[string]int{}}
	s.free.Store(-1)
	s.mReleased = prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_storage_reserve_released_total",
		Help: "Times the emergency disk reserve was released because the data dir file system ran full."})
	s.mBlocked = prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_storage_writes_blocked_total",
		Help: "Group commits refused entirely (acks included) because no preallocated write-ahead log space could be had."})
	s.mRepairs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edged_storage_repairs_total",
		Help: "Files repaired at start-up before opening the store, by kind (empty_wal, empty_vlog)."}, []string{"kind"})
	return s
}

// register exports the guard's metrics (and the repairs done before they existed).
func (s *spaceGuard) register(reg prometheus.Registerer) {
	for k, n := range s.repairCounts {
		s.mRepairs.WithLabelValues(k).Add(float64(n))
	}
	if reg == nil {
		return
	}
	s.reg = reg
	for _, c := range []prometheus.Collector{s.mReleased, s.mBlocked, s.mRepairs} {
		if err := reg.Register(c); err != nil {
			s.log.Warn("storage metric not registered", "error", err)
		}
	}
}

func (s *spaceGuard) unregister() {
	if s.reg != nil {
		s.reg.Unregister(s.mReleased)
		s.reg.Unregister(s.mBlocked)
		s.reg.Unregister(s.mRepairs)
	}
}

func (s *spaceGuard) path(name string) string { return filepath.Join(s.dir, name) }

func memName(fid int) string  { return fmt.Sprintf("%05d%s", fid, memExt) }
func vlogName(fid int) string { return fmt.Sprintf("%06d%s", fid, vlogExt) }

// fileFids returns the highest fid of the files with extension ext (-1 if none).
func (s *spaceGuard) maxFid(ext string) int {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return -1
	}
	m := -1
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ext); ok {
			if fid, err := strconv.Atoi(n); err == nil && fid > m {
				m = fid
			}
		}
	}
	return m
}

// beforeOpen releases the reserve when the disk is too short for what badger.Open writes
// (replayed WALs are flushed to tables, a new WAL and value log are created). With no room
// even then, Open fails with ErrDiskFull rather than let badger fault.
func (s *spaceGuard) beforeOpen() error {
	defer func() {
		if f, err := diskFree(s.dir); err == nil {
			s.free.Store(f)
		}
	}()
	if _, err := os.Stat(s.path(reserveFile)); err == nil {
		s.held.Store(true)
	}
	if free, err := diskFree(s.dir); s.held.Load() && err == nil && free < s.roomNeed+s.memSize {
		// Wait (briefly) for an outside writer to stop, or it takes the reserve.
		for deadline := time.Now().Add(2 * time.Second); !s.quiet() && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
		s.release(free, "opening the store")
	}
	if free, err := diskFree(s.dir); err == nil && free < s.roomNeed {
		return fmt.Errorf("%w: %s has %d bytes free, opening the store needs %d (free some space; edged starts on its own then)",
			ErrDiskFull, s.dir, free, s.roomNeed)
	}
	return nil
}

// afterOpen makes what badger created at Open durable (the new WAL, the new value log, the
// directory: a power cut must not leave them 0 bytes long or missing) and prepares the space
// of the first commits.
func (s *spaceGuard) afterOpen() {
	s.activeMem = s.maxFid(memExt)
	s.vlogFid = s.maxFid(vlogExt)
	if m, _ := filepath.Glob(s.path("*" + vlogExt)); len(m) > 1 {
		s.vlogData = true
	}
	for _, name := range []string{memName(s.activeMem), vlogName(s.vlogFid), "DISCARD"} {
		if err := syncFile(s.path(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("fsync of a file badger created at open failed", "file", name, "error", err)
		}
	}
	if err := syncDir(s.dir); err != nil {
		s.log.Warn("fsync of the data dir failed", "dir", s.dir, "error", err)
	}
	// DISCARD (1 MiB, sparse) is written through its mapping by compactions and value-log GC.
	if err := allocate(s.path("DISCARD"), 0, 1<<20, false); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("could not preallocate badger's DISCARD file", "error", err)
	}
	s.poll(true)
	_ = s.ready()
}

// ready reports whether a commit may write: the active WAL is allocated and the next one is
// prepared. It tries to make it so (releasing the reserve if that is what it takes) and
// returns an error wrapping ErrDiskFull when it cannot.
func (s *spaceGuard) ready() error {
	if s.activeMem < 0 {
		return nil // in-memory or unknown layout: nothing to guard
	}
	err := s.tryReady()
	if err == nil {
		err = s.room()
	}
	if err != nil && s.held.Load() && s.quiet() {
		s.release(s.free.Load(), "a write needs room")
		err = s.tryReady()
		if err == nil {
			err = s.room()
		}
	}
	if err != nil {
		if !s.blocked.Swap(true) || s.blockedLogAllow() {
			s.log.Error("data dir file system is full: ALL writes are refused (acks too) until space is freed",
				"dir", s.dir, "error", err, "reserve_held", s.held.Load())
		}
		s.mBlocked.Inc()
		return fmt.Errorf("%w: %s: %v", ErrDiskFull, s.dir, err)
	}
	if s.blocked.Swap(false) {
		s.log.Warn("data dir has room again: writes resumed", "dir", s.dir, "free_bytes", s.free.Load())
	}
	return nil
}

// room: any commit may rotate the memtable, whose flush (and the L0 compaction it may start)
// writes tables through fresh mappings; a commit starts only with room for that.
func (s *spaceGuard) room() error {
	if f := s.free.Load(); f >= 0 && f < s.roomNeed {
		return fmt.Errorf("%d bytes free, a memtable flush needs %d", f, s.roomNeed)
	}
	return nil
}

// quiet reports whether the free space has stopped falling (by more than 256 KiB over at
// least a second): the reserve is released only then, so an outside writer that is still
// filling the disk does not take it. Until then the writes that need room wait (ErrDiskFull,
// retried by the caller). Measured with dd on a loop-mounted ext4 under load: with a 200 ms
// window dd's writeback pauses looked quiet and dd took the reserve.
func (s *spaceGuard) quiet() bool {
	s.poll(true)
	return time.Since(s.ref.at) >= time.Second && s.free.Load() >= s.ref.free-(256<<10)
}

func (s *spaceGuard) blockedLogAllow() bool {
	ok, _ := s.blockedLog.allow(10*time.Second, 1)
	return ok
}

func (s *spaceGuard) tryReady() error {
	if !s.activeOK {
		if err := allocate(s.path(memName(s.activeMem)), 0, s.memSize, false); err != nil {
			return fmt.Errorf("allocate %s: %w", memName(s.activeMem), err)
		}
		s.activeOK = true
	}
	if s.next == nil {
		fid := s.activeMem + 1
		f, err := os.OpenFile(s.path(memName(fid)), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return fmt.Errorf("prepare %s: %w", memName(fid), err)
		}
		if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, s.memSize); err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
			f.Close()
			os.Remove(f.Name())
			return fmt.Errorf("prepare %s: %w", memName(fid), err)
		}
		if err := syncDir(s.dir); err != nil {
			f.Close()
			os.Remove(f.Name())
			return fmt.Errorf("prepare %s: %w", memName(fid), err)
		}
		s.next, s.nextFid = f, fid
	}
	return nil
}

// readyVlog allocates the current value log before a commit that writes values to it.
func (s *spaceGuard) readyVlog() error {
	if s.vlogOK || s.vlogFid < 0 {
		return nil
	}
	err := allocate(s.path(vlogName(s.vlogFid)), 0, s.vlogSize, false)
	if err != nil && isNoSpace(err) && s.held.Load() {
		s.release(s.free.Load(), "preallocating the value log")
		err = allocate(s.path(vlogName(s.vlogFid)), 0, s.vlogSize, false)
	}
	if err != nil {
		return fmt.Errorf("%w: %s: no room for the value log: %v", ErrDiskFull, s.dir, err)
	}
	s.vlogOK, s.vlogData = true, true
	return nil
}

// readyVlogGC: value-log GC rewrites live values into the current value log, so it needs it
// allocated, but only when values live in the value log at all (a store of small messages
// never allocates one).
func (s *spaceGuard) readyVlogGC() error {
	if !s.vlogData {
		return nil
	}
	return s.readyVlog()
}

// afterWrite runs after every commit (and DropPrefix, value-log GC), before the commit is
// answered: it notices a WAL or value-log rotation, makes the new file durable and prepares
// the next one. One fstat when nothing rotated (plus one stat when vlog was written).
func (s *spaceGuard) afterWrite(vlog bool) error {
	var err error
	if s.next != nil {
		fi, serr := s.next.Stat()
		if serr == nil && fi.Size() > 0 {
			// badger rotated into the prepared file: make its size and header durable (its
			// directory entry already is), then prepare the one after it.
			err = s.next.Sync()
			s.next.Close()
			s.activeMem, s.activeOK, s.next = s.nextFid, true, nil
			// The old memtable is being flushed to a table now: measure, so a short disk
			// releases the reserve for it. A failure to prepare the next WAL refuses the
			// next commit (ready); this one is durable.
			s.poll(true)
			_ = s.ready()
		}
	}
	if vlog || s.vlogFid < 0 {
		for {
			p := s.path(vlogName(s.vlogFid + 1))
			if _, serr := os.Stat(p); serr != nil {
				break
			}
			s.vlogFid++
			s.vlogOK = false
			if serr := syncFile(p); serr != nil && err == nil {
				err = serr
			}
			if serr := syncDir(s.dir); serr != nil && err == nil {
				err = serr
			}
		}
	}
	return err
}

// poll measures the free space (at most once per spacePollEvery unless force) and keeps the
// reserve: released when the disk runs short, taken again once there is room.
func (s *spaceGuard) poll(force bool) {
	if !force && time.Since(s.lastPoll) < spacePollEvery/10 {
		return
	}
	s.lastPoll = time.Now()
	free, err := diskFree(s.dir)
	if err != nil {
		return
	}
	s.free.Store(free)
	if now := s.lastPoll; now.Sub(s.ref.at) >= 2*time.Second {
		s.ref = spaceSample{at: now, free: free}
	}
	switch {
	case !s.held.Load() && s.reserve > 0 && free >= s.minFree+2*s.reserve:
		// Taken again with a reserve's worth of hysteresis above where growth resumes
		// (effectiveFree), so it does not flap.
		if err := allocate(s.path(reserveFile), 0, s.reserve, true); err != nil {
			os.Remove(s.path(reserveFile))
			s.log.Warn("could not create the emergency disk reserve", "dir", s.dir, "error", err)
			return
		}
		if err := syncDir(s.dir); err == nil {
			s.held.Store(true)
			s.log.Info("emergency disk reserve in place", "dir", s.dir, "bytes", s.reserve)
		}
	}
}

func (s *spaceGuard) release(free int64, why string) {
	if err := os.Remove(s.path(reserveFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Error("could not release the emergency disk reserve", "dir", s.dir, "error", err)
		return
	}
	s.held.Store(false)
	s.mReleased.Inc()
	_ = syncDir(s.dir)
	if f, err := diskFree(s.dir); err == nil {
		s.free.Store(f)
	}
	s.log.Error("data dir file system is full: released the emergency disk reserve so acks, flushes and compactions have room; new messages are refused",
		"dir", s.dir, "why", why, "free_bytes_before", free, "free_bytes", s.free.Load(), "reserve_bytes", s.reserve)
}

// close removes the prepared, unused next WAL (badger must not find a 0-byte WAL at Open).
func (s *spaceGuard) close() {
	if s.next == nil {
		return
	}
	if fi, err := s.next.Stat(); err == nil && fi.Size() == 0 {
		os.Remove(s.next.Name())
	}
	s.next.Close()
	s.next = nil
}

// SpaceStats is the disk side of Stats.
type SpaceStats struct {
	// DiskFull: the file system has less than MinFreeBytes free, new messages are refused
	// (acks and draining go on).
	DiskFull bool `json:"disk_full"`
	// WritesBlocked: not even the write-ahead log could be preallocated; every write is
	// refused, acks included, until space is freed.
	WritesBlocked bool `json:"writes_blocked"`
	// ReserveHeld: the emergency reserve file is in place (false after it was released).
	ReserveHeld bool `json:"reserve_held"`
	// Repairs counts files repaired at this start-up, by kind.
	Repairs map[string]int `json:"repairs,omitempty"`
	// Health is "ok" or "degraded: <why>".
	Health string `json:"health"`
}

func (s *spaceGuard) stats(free int64) SpaceStats {
	st := SpaceStats{WritesBlocked: s.blocked.Load(), ReserveHeld: s.held.Load(), Health: "ok"}
	if len(s.repairCounts) > 0 {
		st.Repairs = s.repairCounts
	}
	st.DiskFull = free >= 0 && s.minFree > 0 && s.effectiveFree(free) < s.minFree
	switch {
	case st.WritesBlocked:
		st.DiskFull = true
		st.Health = "degraded: disk full: no room for the write-ahead log, all writes (acks too) refused"
	case st.DiskFull:
		st.Health = fmt.Sprintf("degraded: disk full (%d MiB free, %d MiB needed): new messages refused, draining goes on", free>>20, (free-s.effectiveFree(free)+s.minFree)>>20)
	}
	return st
}

// allocate makes sure [off, off+n) of path has blocks (fallocate mode 0: extends the file
// if needed, never changes data). create also creates the file and fsyncs it. EOPNOTSUPP (a
// file system without fallocate) is not an error: there the guard cannot help.
func allocate(path string, off, n int64, create bool) error {
	flag := os.O_RDWR
	if create {
		flag |= os.O_CREATE
	}
	f, err := os.OpenFile(path, flag, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Fallocate(int(f.Fd()), 0, off, n); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			return nil
		}
		return err
	}
	if create {
		return f.Sync()
	}
	return nil
}

func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// diskShort: below MinFreeBytes (growth refused).
func (s *spaceGuard) diskShort() bool {
	f := s.free.Load()
	return f >= 0 && s.effectiveFree(f) < s.minFree
}

// effectiveFree is the free space growth may count on: while the reserve is released, its
// size is not (it must be taken again first), so releasing it never lets new messages in.
func (s *spaceGuard) effectiveFree(free int64) int64 {
	if s.reserve > 0 && !s.held.Load() {
		return free - s.reserve
	}
	return free
}
