package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged-dev/edged/internal/ratelog"
)

// Record format. A record is the value of an outbox key:
//
//	ver 2: ver(1) appendMs(8) crc32c(4) cbor-envelope   (written since envelope checksums)
//	ver 1: ver(1) appendMs(8) cbor-envelope             (older stores: read, never written)
//
// The CRC-32C (Castagnoli) covers the envelope bytes, the part that is delivered. appendMs is
// left out on purpose: Requeue rewrites it in place, and a damaged time only moves a TTL. A
// version-1 record keeps working (it is checked by badger's block checksums only), so a store
// written by an older edged drains unchanged after an upgrade.
const (
	recordV1    = 1
	recordV2    = 2
	recHeaderV1 = 9
	recHeaderV2 = 13
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	errBadRecord = errors.New("bad record header")
	// errRecordChecksum: the envelope bytes do not match the checksum stored with them (bit rot
	// the block checksums did not catch, e.g. in a memtable or value-log file).
	errRecordChecksum = errors.New("envelope checksum mismatch")
	// errNoRecord: a dead-letter marker for a record that was lost unread (its table block or
	// write-ahead log was damaged); there is nothing left to show.
	errNoRecord = errors.New("record was unreadable when dead-lettered; nothing was kept")
)

func encodeRecord(appendMs int64, env []byte) []byte {
	v := make([]byte, recHeaderV2+len(env))
	v[0] = recordV2
	binary.BigEndian.PutUint64(v[1:9], uint64(appendMs))
	binary.BigEndian.PutUint32(v[9:13], crc32.Checksum(env, castagnoli))
	copy(v[recHeaderV2:], env)
	return v
}

// decodeRecord returns the append time and envelope bytes of a stored record. On a checksum
// mismatch it still returns both (with errRecordChecksum), so TTL handling of a damaged record
// stays what it was and the bytes can be kept for inspection; callers must not deliver them.
func decodeRecord(v []byte) (appendMs int64, env []byte, err error) {
	if len(v) == 0 {
		return 0, nil, errNoRecord
	}
	switch v[0] {
	case recordV1:
		if len(v) < recHeaderV1 {
			return 0, nil, errBadRecord
		}
		return int64(binary.BigEndian.Uint64(v[1:9])), v[recHeaderV1:], nil
	case recordV2:
		if len(v) < recHeaderV2 {
			return 0, nil, errBadRecord
		}
		ms, env := int64(binary.BigEndian.Uint64(v[1:9])), v[recHeaderV2:]
		if want, got := binary.BigEndian.Uint32(v[9:13]), crc32.Checksum(env, castagnoli); want != got {
			return ms, env, fmt.Errorf("%w (stored %08x, computed %08x)", errRecordChecksum, want, got)
		}
		return ms, env, nil
	}
	return 0, nil, errBadRecord
}

// setRecordTime rewrites a stored record's append time in place (requeue); the envelope and
// its checksum are untouched.
func setRecordTime(v []byte, ms int64) {
	if len(v) >= recHeaderV1 && (v[0] == recordV1 || v[0] == recordV2) {
		binary.BigEndian.PutUint64(v[1:9], uint64(ms))
	}
}

// Drop and dead-letter reasons for damage. Everything damaged is counted as a drop with
// ReasonCorrupt in edged_outbox_dropped_total (not persisted in the outbox meta, whose
// drop counters keep their format) and in edged_storage_corrupt_records_total by cause.
const (
	ReasonCorrupt = "corrupt"

	causeChecksum   = "checksum"   // record checksum mismatch: moved to the DLQ as it is
	causeUnreadable = "unreadable" // missing from the tables (a block badger could not read)
	causeWAL        = "wal"        // acked, then lost from a damaged write-ahead log
	causeCounters   = "counters"   // the persisted count said more records than were found
	causeSalvage    = "salvage"    // unreadable in a store moved aside
)

// integrity holds the counters and log limits of everything storage detects as damaged.
type integrity struct {
	log          *slog.Logger
	corrupt      *prometheus.CounterVec // outbox, cause
	deadLetters  *prometheus.CounterVec // outbox, reason
	badgerErrors prometheus.Counter
	salvaged     *prometheus.CounterVec // result

	wit       *witness // committer goroutine only
	scrubDone chan struct{}

	mu      sync.Mutex
	salvage *SalvageStats
	limits  *ratelog.Keyed // log rate limits by kind of line, so one outbox's damage never hides another's
}

func newIntegrity(log *slog.Logger) *integrity {
	return &integrity{
		log:    log,
		limits: ratelog.NewKeyed(time.Second, 256),
		corrupt: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edged_storage_corrupt_records_total",
			Help: "Outbox records found damaged or lost, by cause (checksum: moved to the dead letters as they are; unreadable, wal, counters, salvage: lost, a marker is in the dead letters)."},
			[]string{"outbox", "cause"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edged_outbox_dead_letters_total",
			Help: "Records moved to the outbox's dead letters, by reason (rejected: by the remote, undecodable, corrupt)."},
			[]string{"outbox", "reason"}),
		badgerErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_storage_badger_errors_total",
			Help: "Errors badger reported in its log (truncated or damaged write-ahead log, bad tables, failed I/O)."}),
		salvaged: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edged_storage_salvaged_records_total",
			Help: "Records copied from a store moved aside into the fresh one at start-up (result=copied), or found there but unreadable (result=lost)."},
			[]string{"result"}),
	}
}

func (in *integrity) collectors() []prometheus.Collector {
	return []prometheus.Collector{in.corrupt, in.deadLetters, in.badgerErrors, in.salvaged}
}

// deadReason classifies a free-text dead-letter reason for the metric label.
func deadReason(reason string) string {
	switch {
	case strings.HasPrefix(reason, ReasonCorrupt):
		return ReasonCorrupt
	case strings.HasPrefix(reason, "undecodable"):
		return "undecodable"
	}
	return "rejected"
}

// lost counts n records of ob lost (or dead-lettered as corrupt) for cause and logs at ERROR,
// rate-limited; the first/last sequence say where.
func (db *DB) lost(ob string, cause string, n int64, first, last uint64, msg string) {
	if n <= 0 {
		return
	}
	in := db.integ
	in.corrupt.WithLabelValues(ob, cause).Add(float64(n))
	if db.metrics != nil {
		db.metrics.dropped.WithLabelValues(ob, ReasonCorrupt).Add(float64(n))
	}
	if ok, more := in.limits.Limit("lost\x00"+ob+"\x00"+cause).Allow(time.Second, int(n)); ok {
		db.log.Error(msg, "outbox", ob, "cause", cause, "records", n, "first_seq", first, "last_seq", last,
			"suppressed_since_last_log", more)
	}
}

// span is a closed range of sequence numbers.
type span struct{ lo, hi uint64 }

func (s span) n() uint64 { return s.hi - s.lo + 1 }

// unexplained returns the parts of [lo, hi] that have no dead letter: a record missing from an
// outbox's key range is either dead-lettered (DeadLetter deletes it there) or lost.
func (o *Outbox) unexplained(txn *badger.Txn, lo, hi uint64) []span {
	if lo > hi {
		return nil
	}
	var out []span
	it := txn.NewIterator(badger.IteratorOptions{Prefix: o.dprefix, PrefetchValues: false})
	defer it.Close()
	next := lo
	for it.Seek(seqKey(o.dprefix, lo)); it.Valid() && next <= hi; it.Next() {
		s := keySeq(it.Item().Key())
		if s > hi {
			break
		}
		if s > next {
			out = append(out, span{next, s - 1})
		}
		next = s + 1
	}
	if next <= hi {
		out = append(out, span{next, hi})
	}
	return out
}

// scan visits ob's records in [from, to] in order (keys only unless fn reads values) until fn
// returns false. damaged reports a damaged table block on the way whose missing records are
// not accounted for yet (not dead-lettered).
//
// badger does not report a table block whose checksum fails: its table iterator just ends, so
// the keys of that block and of the rest of the table vanish from the merged iteration, and a
// Get of a key in that block says "not found". A key after the bad block is still found by a
// Seek (the table index leads past the bad block). So at every gap that no dead letter
// explains, the iteration probes the missing sequences with Get and, at the first one found,
// seeks again and goes on: records behind a bad block are still delivered. A record found
// that way after missing ones is the evidence (a hole left by a requeued or purged dead letter
// never hides a later record from the iterator). Which missing sequences were lost is decided
// by recount, against the count. Missing records with nothing readable after them look like
// such holes here; the recount at the next Open and the check when the queue runs empty
// (counterGap) still count them.
func (o *Outbox) scan(txn *badger.Txn, from, to uint64, fn func(item *badger.Item) bool) (damaged bool) {
	if from > to {
		return false
	}
	it := txn.NewIterator(badger.IteratorOptions{Prefix: o.prefix, PrefetchValues: false})
	defer it.Close()
	next := from
	it.Seek(seqKey(o.prefix, from))
	for next <= to {
		if !it.Valid() {
			ok, misses := o.probe(txn, it, next, to)
			if !ok {
				return damaged
			}
			damaged = damaged || misses > 0
		}
		s := keySeq(it.Item().Key())
		if s > next {
			if ok, misses := o.probe(txn, it, next, min(s-1, to)); ok {
				damaged = damaged || misses > 0
				continue
			}
		}
		if s > to || !fn(it.Item()) {
			return damaged
		}
		next = s + 1
		it.Next()
	}
	return damaged
}

// skipDamage is for loops over ob's records that end when the iterator does: when it ended
// before to, it seeks to the next record still readable in [from, to] (not dead-lettered),
// and reports whether the iterator is valid again.
func (o *Outbox) skipDamage(txn *badger.Txn, it *badger.Iterator, from, to uint64) bool {
	ok, _ := o.probe(txn, it, from, to)
	return ok
}

// probe is skipDamage that also says how many sequences it found neither as records nor as
// dead letters before the record it moved to.
func (o *Outbox) probe(txn *badger.Txn, it *badger.Iterator, from, to uint64) (bool, int) {
	misses := 0
	for _, sp := range o.unexplained(txn, from, to) {
		for s := sp.lo; s <= sp.hi; s++ {
			if _, err := txn.Get(seqKey(o.prefix, s)); err == nil {
				it.Seek(seqKey(o.prefix, s))
				return it.Valid(), misses
			}
			misses++
		}
	}
	return false, misses
}

// recount compares ob's persisted count with the records actually between its head and tail,
// on the committer (so nothing moves meanwhile). A shortfall is a loss: counted, logged at
// ERROR with its size, and taken out of the count (so it is reported once). When the missing
// sequences that no dead letter explains are exactly as many as the shortfall, they are the
// lost records: each gets a dead-letter marker (reason corrupt). Otherwise (holes left by
// requeued or purged dead letters mixed in) the number is still exact, only which sequences
// is not known, and no markers are written.
func (o *Outbox) recount(cause, why string) (lost int64, err error) {
	var marked int64
	var first, last uint64
	reason := ReasonCorrupt + ": " + why
	op1 := &op{apply: func(g *group) (bool, error) {
		w := g.work(o)
		var found, bytes int64
		var gaps []span
		next := w.m.head
		o.scan(g.txn, w.m.head, w.m.tail, func(item *badger.Item) bool {
			s := keySeq(item.Key())
			if s > next {
				gaps = append(gaps, span{next, s - 1})
			}
			next = s + 1
			found++
			bytes += int64(len(item.Key())) + item.ValueSize()
			return true
		})
		if next <= w.m.tail {
			gaps = append(gaps, span{next, w.m.tail})
		}
		short := w.m.count - found
		if short < 0 {
			g.db.log.Warn("outbox held more records than its persisted count; count corrected", "outbox", o.name, "extra", -short)
			w.m.count, w.m.bytes, g.wrote = found, bytes, true
			return true, nil
		}
		if short == 0 {
			return true, nil
		}
		var missing []span
		var nmiss int64
		for _, gp := range gaps {
			for _, sp := range o.unexplained(g.txn, gp.lo, gp.hi) {
				missing = append(missing, sp)
				nmiss += int64(sp.n())
			}
		}
		if first == 0 && len(missing) > 0 {
			first = missing[0].lo
		}
		if nmiss == short {
			for _, sp := range missing {
				for s := sp.lo; s <= sp.hi; s++ {
					dk := seqKey(o.dprefix, s)
					dv := encodeDead(g.now, reason, nil)
					if !g.room(1, g.cost(dk, dv)) {
						return false, nil // next group goes on from here
					}
					if err := g.set(dk, dv); err != nil {
						return false, err
					}
					w.m.count--
					w.m.dlqCount++
					w.m.dlqBytes += int64(len(dk) + len(dv))
					marked++
					lost++
					last = s
				}
			}
		} else {
			lost += short
			w.m.count = found
			if len(missing) > 0 {
				last = missing[len(missing)-1].hi
			}
		}
		w.m.bytes = bytes
		g.wrote = true
		// Move the head to the first record still there (or past the tail).
		if _, err := g.txn.Get(seqKey(o.prefix, w.m.head)); errors.Is(err, badger.ErrKeyNotFound) {
			_, err := g.trimHead(o, w, func(uint64, int64, func() int64) bool { return false }, nil)
			return true, err
		}
		return true, nil
	}}
	// Not a growing op: a full disk must not keep a loss from being recorded (the markers are
	// tiny and stand for records that are gone).
	if err := o.db.submitOrInline(op1); err != nil {
		return 0, err
	}
	if marked > 0 {
		o.db.integ.deadLetters.WithLabelValues(o.name, ReasonCorrupt).Add(float64(marked))
	}
	if lost > 0 {
		o.db.lost(o.name, cause, lost, first, last, "outbox records LOST: "+why+fmt.Sprintf("; %d of them marked in the dead letters (edged outbox dlq list)", marked))
	}
	return lost, nil
}

// counterGap is called by trimHead when a queue turned out empty while its persisted count
// said otherwise: records were lost without a trace in the key range (a gap no Read saw).
func (g *group) counterGap(ob *Outbox, w *work) {
	if w.m.count > 0 {
		g.db.lost(ob.name, causeCounters, w.m.count, w.m.head, w.m.tail,
			"outbox LOST records: its persisted count is higher than the records found (damaged table or log)")
	} else if w.m.count < 0 {
		g.db.log.Warn("outbox held more records than its persisted count; count corrected", "outbox", ob.name, "extra", -w.m.count)
	}
}

// checkOutboxes runs once at Open, before the gateway serves: it compares each outbox's
// persisted state with the tails the last run wrote after every fsync (the witness), which
// catches acked records lost from a damaged write-ahead log (the meta rolled back with them).
// Records lost from a damaged table or an older log file are found by startScrub. Every loss
// is counted, logged at ERROR with its size and marked in the dead letters. A read-only
// (NoRecover) open only reports.
func (db *DB) checkOutboxes() {
	wit, err := readWitness(db.opts.Dir)
	if err != nil {
		db.log.Warn("outbox tails file unreadable; acked records lost from a damaged write-ahead log cannot be counted this time", "error", err)
	}
	for name, t := range wit {
		db.mu.Lock()
		ob := db.outboxes[name]
		noMeta := ob == nil
		if noMeta {
			ob = db.newOutbox(name)
			ob.cm = meta{head: 1}
			db.outboxes[name] = ob
		}
		db.mu.Unlock()
		if noMeta {
			db.rebuildMeta(ob, t)
		}
		db.applyWitness(ob, t)
	}
}

// startScrub compares, in the background once the store serves, each outbox's persisted count
// with the records actually between its head and tail (a read-only, keys-only scan that every
// table block it crosses has its checksum verified by), and hands a shortfall to recount on
// the committer. In the background because it reads the whole backlog: measured 0.7-1.7 s for
// 300k queued messages on a loaded 2-core VM, against ~10 ms for the rest of Open. Close
// stops it.
func (db *DB) startScrub() {
	in := db.integ
	in.scrubDone = make(chan struct{})
	if db.opts.NoRecover { // the CLI: quick inspections, no repairs
		close(in.scrubDone)
		return
	}
	go func() {
		defer close(in.scrubDone)
		defer func() {
			// badger can panic on a damaged block it parses before checking its checksum; at
			// start-up that would be a crash loop. Report it instead.
			if r := recover(); r != nil {
				db.requestSalvage("checking the outboxes against their records: badger panicked on damaged data: " + fmt.Sprint(r))
			}
		}()
		for _, ob := range db.Outboxes() {
			var m meta
			var found int64
			stopped := false
			err := db.bdb.View(func(txn *badger.Txn) error {
				item, err := txn.Get(ob.metaKey)
				if err != nil {
					return err
				}
				if err := item.Value(func(v []byte) error { m, err = decodeMeta(v); return err }); err != nil {
					return err
				}
				ob.scan(txn, m.head, m.tail, func(*badger.Item) bool {
					found++
					if found%4096 == 0 {
						select {
						case <-db.quit:
							stopped = true
							return false
						default:
						}
					}
					return true
				})
				return nil
			})
			if stopped {
				return
			}
			if err != nil || found >= m.count {
				continue // no meta yet (nothing written), or nothing missing
			}
			if _, err := ob.recount(causeUnreadable, "missing from the store (damaged table or log)"); err != nil && !errors.Is(err, ErrClosed) {
				db.log.Error("checking the outbox against its records failed", "outbox", ob.name, "error", err)
			}
		}
	}()
}

func (db *DB) waitScrub() {
	if db.integ.scrubDone != nil {
		<-db.integ.scrubDone
	}
}

// rebuildMeta recreates the meta of an outbox the witness knows but the store has no meta for
// (its key sat in a damaged block): from the records found at or above the witnessed head and
// the dead letters. Without it the records would be orphaned and their sequences reused.
func (db *DB) rebuildMeta(ob *Outbox, t witnessed) {
	m := meta{head: t.head, tail: t.tail}
	_ = db.bdb.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: ob.prefix, PrefetchValues: false})
		for it.Seek(seqKey(ob.prefix, t.head)); it.Valid(); it.Next() {
			item := it.Item()
			seq := keySeq(item.Key())
			if m.count == 0 {
				_ = item.Value(func(v []byte) error { m.headMs, _, _ = decodeRecord(v); return nil })
			}
			m.count++
			m.bytes += int64(len(item.Key())) + item.ValueSize()
			m.tail = max(m.tail, seq)
		}
		it.Close()
		it = txn.NewIterator(badger.IteratorOptions{Prefix: ob.dprefix, PrefetchValues: false})
		for it.Rewind(); it.Valid(); it.Next() {
			m.dlqCount++
			m.dlqBytes += int64(len(it.Item().Key())) + it.Item().ValueSize()
		}
		it.Close()
		return nil
	})
	found := m.count
	// The witnessed count makes the shortfall visible to the recount that follows.
	m.count = max(m.count, t.count)
	if m.count == 0 {
		m.head = m.tail + 1
	}
	db.log.Error("outbox meta missing from the store (damaged block): rebuilt from the records found and the witnessed tails",
		"outbox", ob.name, "records_found", found, "records_witnessed", t.count, "head", m.head, "tail", m.tail)
	if db.opts.NoRecover {
		return
	}
	o := &op{apply: func(g *group) (bool, error) {
		w := g.work(ob)
		w.m = m
		g.wrote = true
		return true, nil
	}}
	if err := db.submitOrInline(o); err != nil {
		db.log.Error("rebuilding the outbox meta failed", "outbox", ob.name, "error", err)
	}
}

// applyWitness compares ob's persisted state with what the last run witnessed after an fsync.
// A witnessed tail above the persisted one means acknowledged appends were lost from the log
// (the meta rolled back with them): the tail is raised so their sequences are never reused,
// those the remote had not yet confirmed are counted as lost and marked in the dead letters,
// and a witnessed head above the persisted one (acks lost from the log) skips what the remote
// had already confirmed instead of sending it again.
func (db *DB) applyWitness(ob *Outbox, t witnessed) {
	m := locked(&ob.mu, &ob.cm)
	if t.tail <= m.tail && t.head <= m.head {
		return
	}
	lo := max(m.tail+1, t.head)
	var lost uint64
	if t.tail >= lo {
		lost = t.tail - lo + 1
	}
	if t.tail > m.tail {
		db.log.Error("write-ahead log damaged: acknowledged records were lost from it", "outbox", ob.name,
			"records_lost", lost, "records_already_delivered", min(t.tail, lo-1)-m.tail,
			"first_lost_seq", lo, "last_lost_seq", t.tail, "persisted_tail", m.tail, "witnessed_tail", t.tail)
	}
	if db.opts.NoRecover {
		return
	}
	reason := ReasonCorrupt + ": acknowledged, then lost from a damaged write-ahead log"
	var marked, skipped int64
	cur := lo
	o := &op{apply: func(g *group) (bool, error) {
		w := g.work(ob)
		if t.tail > w.m.tail {
			w.m.tail = t.tail
			g.wrote = true
		}
		for ; cur <= t.tail; cur++ {
			if _, err := g.txn.Get(seqKey(ob.prefix, cur)); err == nil {
				continue // still there after all
			}
			dk := seqKey(ob.dprefix, cur)
			if _, err := g.txn.Get(dk); err == nil {
				continue
			} else if !errors.Is(err, badger.ErrKeyNotFound) {
				return false, err
			}
			dv := encodeDead(g.now, reason, nil)
			if !g.room(1, g.cost(dk, dv)) {
				return false, nil
			}
			if err := g.set(dk, dv); err != nil {
				return false, err
			}
			w.m.dlqCount++
			w.m.dlqBytes += int64(len(dk) + len(dv))
			marked++
		}
		out, err := g.trimHead(ob, w, func(seq uint64, _ int64, _ func() int64) bool { return seq < t.head },
			func(int64) { skipped++ })
		return !out, err
	}}
	if err := db.submitOrInline(o); err != nil {
		db.log.Error("recording records lost from the write-ahead log failed", "outbox", ob.name, "error", err)
		return
	}
	if marked > 0 {
		db.integ.deadLetters.WithLabelValues(ob.name, ReasonCorrupt).Add(float64(marked))
		db.lost(ob.name, causeWAL, marked, lo, t.tail, "outbox records LOST from a damaged write-ahead log; dead-letter markers written (edged outbox dlq list)")
	}
	if skipped > 0 {
		db.log.Warn("acks lost from a damaged write-ahead log: skipped records the remote had already confirmed",
			"outbox", ob.name, "records", skipped)
	}
}

func (in *integrity) salvageStats() *SalvageStats {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.salvage == nil {
		return nil
	}
	s := *in.salvage
	return &s
}

// submitOrInline runs o through the committer, or inline while Open still owns the DB (the
// committer is not started yet).
func (db *DB) submitOrInline(o *op) error {
	if db.reqs == nil {
		o.ctx, o.done = context.Background(), make(chan error, 1)
		return db.runInline(o)
	}
	return db.submit(context.Background(), o)
}
