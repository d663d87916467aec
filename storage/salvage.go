package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/badger/v4/y"
	"github.com/dgraph-io/ristretto/v2/z"
)

// afterOpen runs once Open has a usable store and before anything is served (the committer is
// not started: writes run inline): salvage of a store moved aside, the loss checks of
// integrity.go, then the witness.
func (db *DB) afterOpen(aside string) {
	if aside != "" {
		db.salvage(aside)
	}
	db.checkOutboxes()
	if !db.opts.NoRecover { // the CLI's read-only inspections write nothing
		db.openWitness()
	}
}

// Salvage reads a store that badger refused to open, file by file, without badger.Open: a
// damaged MANIFEST, table or log must not make the rest unreadable, and the quarantined
// directory is only read (it stays as it is for inspection). Every table (*.sst) is opened on
// its own with block checksums verified, every write-ahead log (*.mem) is replayed like
// badger does (whole transactions, up to the first damaged entry), values kept in the value
// log (*.vlog) are read through their pointers and checked. The newest version of every key
// wins, deletions included, exactly as in badger's own merge.
//
// What is copied into the fresh store: every outbox record at or above its outbox's head and
// every dead letter, under the same keys (so order, sequence numbers and envelope ids are
// kept), rebuilt outbox metas, and the broker state (sessions, subscriptions, inflight,
// retained: plain key/values, copied as they are). A record whose checksum fails goes to the
// dead letters as corrupt; a sequence between head and tail that is nowhere readable is lost:
// a dead-letter marker says so, and it is counted. The totals are logged at ERROR.
//
// Limits: the live keys are collected in memory before they are copied (about the size of the
// queued data); an outbox whose meta and witness are both unreadable restarts at the first
// record found, so records acked but not yet reclaimed may be delivered again (at-least-once).
// Entries after a damaged one in a write-ahead log are not searched for (badger would not
// replay them either).

// salvageKV is one live key of the quarantined store.
type salvageKV struct {
	key, val []byte
}

func (db *DB) salvage(aside string) {
	kvs, stats, err := readQuarantined(aside)
	if err != nil {
		db.log.Error("salvage: cannot read the store moved aside; nothing salvaged", "from", aside, "error", err)
		return
	}
	for _, s := range stats {
		db.log.Error("salvage: file of the store moved aside partly unreadable", "from", aside, "file", s)
		db.integ.badgerErrors.Inc()
	}
	wit, _ := readWitness(aside)
	res, err := db.copySalvaged(kvs, wit)
	if err != nil {
		db.log.Error("salvage: writing into the fresh store failed", "from", aside, "error", err)
	}
	db.integ.salvaged.WithLabelValues("copied").Add(float64(res.copied + res.dead + res.corrupt))
	db.integ.salvaged.WithLabelValues("lost").Add(float64(res.lost))
	db.integ.mu.Lock()
	copied := res.copied + res.dead + res.corrupt
	db.integ.salvage = &SalvageStats{From: aside, Copied: copied, Lost: res.lost, Corrupt: res.corrupt}
	db.integ.mu.Unlock()
	db.log.Error(fmt.Sprintf("salvaged %d of %d records from %s", copied, copied+res.lost, aside),
		"from", aside, "records_copied", res.copied, "records_lost", res.lost, "corrupt_kept_in_dlq", res.corrupt,
		"dead_letters_copied", res.dead, "state_keys_copied", res.state, "outboxes", res.outboxes)
}

// SalvageStats is what Open salvaged from a store it had to move aside.
type SalvageStats struct {
	From string `json:"from"`
	// Copied: outbox records and dead letters copied into the fresh store. Lost: records the
	// old store should have held (between an outbox's head and tail) that were unreadable.
	// Corrupt: records copied into the dead letters because their checksum failed.
	Copied  int64 `json:"copied"`
	Lost    int64 `json:"lost"`
	Corrupt int64 `json:"corrupt"`
}

type salvageResult struct {
	copied, lost, corrupt, dead, state int64
	outboxes                           int
}

// salvageOutbox collects one outbox while its keys stream by (dead letters, meta, records).
type salvageOutbox struct {
	name    string
	m       meta
	hasMeta bool
	dead    map[uint64]bool
	next    uint64 // next sequence expected among the records
	first   bool
	headMs  int64
	want    int64 // records the old store should hold (its count; -1: unknown)
	got     int64 // records found (copied, or kept as corrupt)
	missing []span
	nmiss   int64
	// deadSeqs are the sequences of dead, sorted, as known before the records are copied.
	deadSeqs []uint64
}

// maxLostMarkers bounds the dead-letter markers salvage writes for the missing records of one
// outbox.
const maxLostMarkers = 100_000

// copySalvaged writes kvs (sorted by key, newest versions only) into the fresh store.
func (db *DB) copySalvaged(kvs []salvageKV, wit map[string]witnessed) (res salvageResult, err error) {
	obs := map[string]*salvageOutbox{}
	get := func(name string) *salvageOutbox {
		so := obs[name]
		if so == nil {
			so = &salvageOutbox{name: name, dead: map[uint64]bool{}, first: true}
			obs[name] = so
		}
		return so
	}
	// A name that is not UTF-8 comes from a damaged key, never from a connector: it would
	// also panic as a metric label value (found by FuzzSalvageCopy).
	name := func(k []byte) (string, bool) {
		if len(k) < 2 || len(k) < 2+int(k[1]) || k[1] == 0 || !utf8.Valid(k[2:2+int(k[1])]) {
			return "", false
		}
		return string(k[2 : 2+int(k[1])]), true
	}
	// nameOf is the store name of a key that carries tail bytes after it (8: a sequence, 0: a
	// meta key); false for a key of any other length.
	nameOf := func(k []byte, tail int) (string, bool) {
		n, ok := name(k)
		return n, ok && len(k) == 2+len(n)+tail
	}
	// Keep-latest stores (latest.go): one record per topic, copied as they are; the meta is
	// rebuilt from what was readable, and a shortfall against the old meta's count is a loss.
	type salvageLatest struct {
		m       latestMeta
		want    int64
		hasMeta bool
	}
	latests := map[string]salvageLatest{}
	// First pass: metas and dead-letter sequences (so gaps can be told from dead letters).
	for _, kv := range kvs {
		switch kv.key[0] {
		case kindMeta, kindMetaV1: // keys are sorted: a format 2 meta ('p') wins over 'h'
			if n, ok := nameOf(kv.key, 0); ok {
				if m, err := decodeMeta(kv.val); err == nil {
					so := get(n)
					so.m, so.hasMeta = m, true
				}
			}
		case kindDead:
			if n, ok := nameOf(kv.key, 8); ok {
				get(n).dead[keySeq(kv.key)] = true
			}
		case kindLatestMeta:
			if n, ok := nameOf(kv.key, 0); ok {
				lm := latests[n]
				if m, err := decodeLatestMeta(kv.val); err == nil {
					lm.want, lm.m.seq, lm.m.superseded, lm.m.ttl, lm.hasMeta = m.count, m.seq, m.superseded, m.ttl, true
				}
				latests[n] = lm
			}
		}
	}
	for _, so := range obs {
		so.want = -1
		if so.hasMeta {
			so.want = so.m.count
		}
		for seq := range so.dead {
			so.deadSeqs = append(so.deadSeqs, seq)
		}
		slices.Sort(so.deadSeqs)
	}
	for n, t := range wit {
		if !utf8.ValidString(n) {
			continue // see name
		}
		so := get(n)
		if !so.hasMeta {
			so.m, so.want = meta{head: t.head, tail: t.tail}, t.count
		} else if t.tail > so.m.tail {
			// Acked records the log lost (the meta rolled back with them).
			if lo := max(so.m.tail+1, t.head); t.tail >= lo {
				so.want += int64(t.tail - lo + 1)
			}
			so.m.tail = t.tail
		}
	}
	for _, so := range obs {
		so.next = max(so.m.head, 1)
		so.m.count, so.m.bytes, so.m.dlqCount, so.m.dlqBytes, so.m.headMs = 0, 0, 0, 0, 0
	}

	wb := db.bdb.NewWriteBatch()
	defer wb.Cancel()
	now := nowMs()
	// putDead writes a dead letter of so into the fresh store and counts it in so's meta.
	putDead := func(so *salvageOutbox, k, v []byte) error {
		if err := wb.Set(k, v); err != nil {
			return err
		}
		so.m.dlqCount++
		so.m.dlqBytes += int64(len(k) + len(v))
		return nil
	}
	// gap records [lo, hi] as missing, except the sequences dead letters explain. It walks the
	// dead letters in the range, never the range itself: one damaged key byte or witness tail
	// makes a gap of 2^60 sequences, which a walk by sequence would never finish.
	gap := func(so *salvageOutbox, lo, hi uint64) {
		if lo > hi {
			return
		}
		add := func(a, b uint64) {
			if n := len(so.missing); n > 0 && so.missing[n-1].hi < b && so.missing[n-1].hi+1 == a {
				so.missing[n-1].hi = b
			} else {
				so.missing = append(so.missing, span{a, b})
			}
			n := uint64(math.MaxUint64)
			if b-a < math.MaxUint64 {
				n = b - a + 1
			}
			so.nmiss = int64(min(uint64(so.nmiss)+min(n, math.MaxInt64), math.MaxInt64))
		}
		next := lo
		i, _ := slices.BinarySearch(so.deadSeqs, lo)
		for ; i < len(so.deadSeqs) && so.deadSeqs[i] <= hi; i++ {
			d := so.deadSeqs[i]
			if d > next {
				add(next, d-1)
			}
			if d == math.MaxUint64 {
				return
			}
			next = d + 1
		}
		if next <= hi {
			add(next, hi)
		}
	}
	// markLost writes a dead-letter marker for each missing sequence of so when they are
	// exactly its shortfall (see recount), and counts the shortfall as lost either way.
	markLost := func(so *salvageOutbox) error {
		short := so.want - so.got
		if so.want < 0 {
			short = so.nmiss // no count survived: every unexplained hole counts
		}
		if short <= 0 {
			return nil
		}
		res.lost += short
		db.integ.corrupt.WithLabelValues(so.name, causeSalvage).Add(float64(short))
		db.metrics.dropped.WithLabelValues(so.name, ReasonCorrupt).Add(float64(short))
		// Markers only for a shortfall a person could go through: a larger one comes from a
		// damaged sequence or tail, not from that many lost messages, and writing one marker
		// per sequence would fill the disk.
		if so.nmiss != short || short > maxLostMarkers {
			return nil
		}
		for _, sp := range so.missing {
			for s := sp.lo; s >= sp.lo && s <= sp.hi; s++ {
				dk := seqKey(namePrefix(kindDead, so.name), s)
				dv := encodeDead(now, ReasonCorrupt+": unreadable in the store moved aside at start-up", nil)
				if err := putDead(so, dk, dv); err != nil {
					return err
				}
				db.integ.deadLetters.WithLabelValues(so.name, ReasonCorrupt).Inc()
			}
		}
		return nil
	}
	for _, kv := range kvs {
		switch kv.key[0] {
		case kindState:
			if err := wb.Set(kv.key, kv.val); err != nil {
				return res, err
			}
			res.state++
		case kindLatest:
			n, ok := name(kv.key)
			if !ok || len(kv.val) < 8 {
				continue
			}
			lm := latests[n]
			if _, _, derr := decodeRecord(kv.val[8:]); derr != nil {
				// A damaged keep-latest record is not copied (its store has no place to keep
				// it for inspection); markLatest below counts it as lost.
				continue
			}
			if err := wb.Set(kv.key, kv.val); err != nil {
				return res, err
			}
			lm.m.count++
			lm.m.bytes += int64(len(kv.key) + len(kv.val))
			lm.m.seq = max(lm.m.seq, binary.BigEndian.Uint64(kv.val[:8]))
			latests[n] = lm
			res.copied++
		case kindDead:
			n, ok := nameOf(kv.key, 8)
			if !ok {
				continue
			}
			if err := putDead(get(n), kv.key, kv.val); err != nil {
				return res, err
			}
			res.dead++
		case kindRecord:
			n, ok := nameOf(kv.key, 8)
			if !ok {
				continue
			}
			so := get(n)
			seq := keySeq(kv.key)
			if seq < so.m.head || seq == 0 {
				continue // acked before the damage: garbage
			}
			if so.first && so.want < 0 {
				so.next = seq // no meta, no witness: the head is unknown; start at the first found
			}
			if seq > so.next {
				gap(so, so.next, seq-1)
			}
			so.next = seq + 1
			so.got++
			so.m.tail = max(so.m.tail, seq)
			ms, _, derr := decodeRecord(kv.val)
			if derr != nil {
				// Kept as it is, never delivered.
				dk := seqKey(namePrefix(kindDead, n), seq)
				dv := encodeDead(now, ReasonCorrupt+": "+derr.Error()+" (found while salvaging)", kv.val)
				if err := putDead(so, dk, dv); err != nil {
					return res, err
				}
				so.dead[seq] = true
				res.corrupt++
				db.integ.deadLetters.WithLabelValues(n, ReasonCorrupt).Inc()
				db.integ.corrupt.WithLabelValues(n, causeChecksum).Inc()
				db.metrics.dropped.WithLabelValues(n, ReasonCorrupt).Inc()
				continue
			}
			if err := wb.Set(kv.key, kv.val); err != nil {
				return res, err
			}
			if so.first {
				so.m.head, so.headMs, so.first = seq, ms, false
			}
			so.m.count++
			so.m.bytes += int64(len(kv.key) + len(kv.val))
			res.copied++
		}
	}
	names := make([]string, 0, len(obs))
	for n := range obs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		so := obs[n]
		if so.m.tail >= so.next {
			gap(so, so.next, so.m.tail)
		}
		if err := markLost(so); err != nil {
			return res, err
		}
		if so.first {
			so.m.head = so.m.tail + 1 // nothing queued
		} else {
			so.m.headMs = so.headMs
		}
		if err := wb.Set(namePrefix(kindMeta, n), so.m.encode()); err != nil {
			return res, err
		}
		res.outboxes++
	}
	for n, lm := range latests {
		if short := lm.want - lm.m.count; lm.hasMeta && short > 0 {
			res.lost += short
			db.integ.corrupt.WithLabelValues(n, causeSalvage).Add(float64(short))
			db.metrics.dropped.WithLabelValues(n, ReasonCorrupt).Add(float64(short))
		}
		if err := wb.Set(namePrefix(kindLatestMeta, n), lm.m.encode()); err != nil {
			return res, err
		}
	}
	if err := wb.Flush(); err != nil {
		return res, err
	}
	if err := db.bdb.Sync(); err != nil {
		return res, err
	}
	// Load the salvaged outboxes as if the store had been opened with them.
	db.mu.Lock()
	defer db.mu.Unlock()
	return res, db.load(db.bdb)
}

// readQuarantined returns the live keys of the store in dir (newest version of each, deleted
// ones left out), sorted, and a description of every file that was partly unreadable.
func readQuarantined(dir string) ([]salvageKV, []string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	var damaged []string
	vlogs := map[uint32][]byte{}
	type version struct {
		ts   uint64
		meta byte
		val  []byte
	}
	latest := map[string]version{}
	put := func(key []byte, meta byte, val []byte) {
		if len(key) <= 8 {
			return
		}
		k, ts := string(y.ParseKey(key)), y.ParseTs(key)
		if v, ok := latest[k]; ok && v.ts >= ts {
			return
		}
		latest[k] = version{ts, meta, bytes.Clone(val)}
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".vlog") {
			continue
		}
		fid, err := strconv.ParseUint(strings.TrimSuffix(e.Name(), ".vlog"), 10, 32)
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil {
			vlogs[uint32(fid)] = b
		} else {
			damaged = append(damaged, fmt.Sprintf("%s: %v", e.Name(), err))
		}
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		switch {
		case strings.HasSuffix(e.Name(), ".sst"):
			if err := readTable(p, put); err != nil {
				damaged = append(damaged, fmt.Sprintf("%s: %v", e.Name(), err))
			}
		case strings.HasSuffix(e.Name(), ".mem"):
			b, err := os.ReadFile(p)
			if err != nil {
				damaged = append(damaged, fmt.Sprintf("%s: %v", e.Name(), err))
				continue
			}
			ents, end, err := replayLog(b)
			for _, le := range ents {
				put(le.key, le.meta, le.val)
			}
			if err != nil || !zeroFrom(b, end) {
				damaged = append(damaged, fmt.Sprintf("%s: replay stopped at offset %d of %d (damaged entry or truncated file)", e.Name(), end, len(b)))
			}
		}
	}
	out := make([]salvageKV, 0, len(latest))
	for k, v := range latest {
		if v.meta&bitDelete != 0 || len(k) == 0 {
			continue
		}
		val := v.val
		if v.meta&bitValuePointer != 0 {
			var err error
			if val, err = readVlogValue(vlogs, val); err != nil {
				damaged = append(damaged, fmt.Sprintf("value of key %q: %v", k, err))
				continue // a record: counted as lost by the gap it leaves
			}
		}
		out = append(out, salvageKV{key: []byte(k), val: val})
	}
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i].key, out[j].key) < 0 })
	return out, damaged, nil
}

// badger's entry meta bits (value.go of badger; not exported).
const (
	bitDelete       byte = 1 << 0
	bitValuePointer byte = 1 << 1
	bitTxn          byte = 1 << 6
	bitFinTxn       byte = 1 << 7
)

// readTable reads every entry of one table file, verifying each block's checksum; an error
// means the table was read only up to a damaged block (or not at all).
func readTable(path string, put func(key []byte, meta byte, val []byte)) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("table reader panicked: %v", r)
		}
	}()
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil && !errors.Is(err, z.NewFile) {
		return err
	}
	t, err := table.OpenTable(mf, table.Options{ChkMode: options.OnBlockRead, Compression: options.None})
	if err != nil {
		_ = mf.Close(-1)
		return err
	}
	defer func() { _ = t.DecrRef() }() // a read-only table of a store moved aside: nothing to act on
	it := t.NewIterator(0)
	defer it.Close()
	// Block by block (the index holds each block's first key), so a bad block loses only its
	// own keys: a table iterator ends at the first block it cannot read.
	starts := t.KeySplits(int(^uint32(0)>>1), nil)
	n := 0
	for i, k := range starts {
		for it.Seek([]byte(k)); it.Valid(); it.Next() {
			if i+1 < len(starts) && y.CompareKeys(it.Key(), []byte(starts[i+1])) >= 0 {
				break
			}
			vs := it.Value()
			put(it.Key(), vs.Meta, vs.Value)
			n++
		}
	}
	if n < int(t.KeyCount()) {
		return fmt.Errorf("read %d of %d keys (damaged block)", n, t.KeyCount())
	}
	return nil
}

// logEntry is one entry of a badger log file (write-ahead log or value log).
type logEntry struct {
	meta     byte
	key, val []byte
	len      int
}

var errLogEntry = errors.New("damaged log entry")

// decodeLogEntry decodes the entry at the start of b: meta(1) userMeta(1) klen vlen expiresAt
// (uvarints) key value crc32c(4, over all before it, big-endian). A zeroed header (the
// preallocated end of a file) returns a nil entry and no error.
func decodeLogEntry(b []byte) (*logEntry, error) {
	if len(b) < 2 {
		return nil, errLogEntry
	}
	h := 2
	klen, n := binary.Uvarint(b[h:])
	if n <= 0 {
		return nil, errLogEntry
	}
	h += n
	vlen, n := binary.Uvarint(b[h:])
	if n <= 0 {
		return nil, errLogEntry
	}
	h += n
	_, n = binary.Uvarint(b[h:])
	if n <= 0 {
		return nil, errLogEntry
	}
	h += n
	if klen == 0 && vlen == 0 && b[0] == 0 && b[1] == 0 {
		return nil, nil
	}
	if klen > 1<<16 || vlen > uint64(len(b)) || uint64(h)+klen+vlen+4 > uint64(len(b)) {
		return nil, errLogEntry
	}
	end := h + int(klen) + int(vlen)
	if crc32.Checksum(b[:end], castagnoli) != binary.BigEndian.Uint32(b[end:end+4]) {
		return nil, errLogEntry
	}
	return &logEntry{meta: b[0], key: b[h : h+int(klen)], val: b[h+int(klen) : end], len: end + 4}, nil
}

// replayLog returns the entries of a write-ahead log that badger would replay: whole
// transactions up to the first damaged entry, and the offset where that stopped.
func replayLog(b []byte) ([]logEntry, int, error) {
	off := logHeaderSize
	if len(b) < off {
		return nil, 0, errLogEntry
	}
	var out, txn []logEntry
	valid := off
	var txnTs uint64
	for off < len(b) {
		e, err := decodeLogEntry(b[off:])
		if err != nil {
			return out, valid, err
		}
		if e == nil {
			return out, valid, nil
		}
		off += e.len
		switch {
		case e.meta&bitTxn != 0:
			ts := y.ParseTs(e.key)
			if txnTs == 0 {
				txnTs = ts
			}
			if ts != txnTs {
				return out, valid, errLogEntry
			}
			txn = append(txn, *e)
		case e.meta&bitFinTxn != 0:
			ts, err := strconv.ParseUint(string(e.val), 10, 64)
			if err != nil || ts != txnTs {
				return out, valid, errLogEntry
			}
			for _, t := range txn {
				t.meta &^= bitTxn | bitFinTxn
				out = append(out, t)
			}
			txn, txnTs, valid = txn[:0], 0, off
		default:
			if txnTs != 0 {
				return out, valid, errLogEntry
			}
			out = append(out, *e)
			valid = off
		}
	}
	return out, valid, nil
}

func zeroFrom(b []byte, off int) bool {
	for _, c := range b[min(off, len(b)):] {
		if c != 0 {
			return false
		}
	}
	return true
}

// readVlogValue resolves a value pointer (Fid, Len, Offset: three uint32 in badger's in-memory
// layout, little-endian on every platform edged runs on) against the value-log files.
func readVlogValue(vlogs map[uint32][]byte, ptr []byte) ([]byte, error) {
	if len(ptr) < 12 {
		return nil, errors.New("bad value pointer")
	}
	fid, ln, off := binary.LittleEndian.Uint32(ptr), binary.LittleEndian.Uint32(ptr[4:]), binary.LittleEndian.Uint32(ptr[8:])
	b, ok := vlogs[fid]
	if !ok {
		return nil, fmt.Errorf("value log %06d.vlog missing", fid)
	}
	if uint64(off)+uint64(ln) > uint64(len(b)) {
		return nil, fmt.Errorf("value log %06d.vlog: pointer past its end", fid)
	}
	e, err := decodeLogEntry(b[off : off+ln])
	if err != nil || e == nil {
		return nil, fmt.Errorf("value log %06d.vlog at %d: %w", fid, off, errLogEntry)
	}
	return bytes.Clone(e.val), nil
}
