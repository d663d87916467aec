package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/skl"
)

var skiplistNodeSize = skl.MaxNodeSize

// op is one logical write. The committer applies ops in arrival order to one badger
// transaction (a "group"), commits it and fsyncs once, then answers every op of the group.
//
// apply may stop early when the group's budget is used up (done == false): what it did so far
// is committed with the group and apply runs again, from the then current state, in the next
// group. So ops that delete many records (ack, drops, purge) are naturally split, and appends
// never are (Append chunks before submitting).
type op struct {
	ctx   context.Context
	grows bool // refused with ErrDiskFull when the disk is short of MinFreeBytes
	apply func(g *group) (done bool, err error)
	err   error // the op's own error (the group may still commit)
	done  chan error
}

// work is an outbox's state inside one group: a working copy of its meta.
type work struct {
	m        meta
	base     meta
	appended int
	acked    int
	drops    [len(reasons)]uint64
	garbage  int64 // bytes left below the head by this group
	freed    int64 // bytes physically deleted by this group
}

// group is one transaction being built.
type group struct {
	db      *DB
	txn     *badger.Txn
	entries int
	bytes   int64
	outs    map[*Outbox]*work
	order   []*Outbox
	now     int64
	wrote   bool
	vlog    bool // a value goes to the value log (>= ValueThreshold)
	// ext holds the working state of stores other than outboxes (latest.go) in this group;
	// after runs once the group is over, committed or not.
	ext   map[any]any
	after []func(committed bool)
}

func (g *group) cost(k, v []byte) int64 {
	n := int64(len(k)) + 12
	if int64(len(v)) < g.db.budget.threshold {
		return n + int64(len(v))
	}
	return n + 12
}

// room reports whether n more entries of about b bytes fit, keeping space for the outbox metas.
func (g *group) room(n int, b int64) bool {
	reserve := len(g.outs) + 2
	return g.entries+n+reserve <= g.db.budget.entries && g.bytes+b+int64(reserve*(metaLen+32)) <= g.db.budget.bytes
}

func (g *group) empty() bool { return g.entries == 0 }

func (g *group) set(k, v []byte) error {
	g.entries++
	g.bytes += g.cost(k, v)
	g.wrote = true
	if int64(len(v)) >= g.db.budget.threshold {
		g.vlog = true
	}
	return g.txn.Set(k, v)
}

func (g *group) del(k []byte) error {
	g.entries++
	g.bytes += int64(len(k)) + 12
	g.wrote = true
	return g.txn.Delete(k)
}

// locked returns a copy of *v read under mu: a store's committed meta, the base of its
// working copy in a group.
func locked[T any](mu *sync.Mutex, v *T) T {
	mu.Lock()
	defer mu.Unlock()
	return *v
}

// work returns ob's state in this group.
func (g *group) work(ob *Outbox) *work {
	if w := g.outs[ob]; w != nil {
		return w
	}
	m := locked(&ob.mu, &ob.cm)
	w := &work{m: m, base: m}
	g.outs[ob] = w
	g.order = append(g.order, ob)
	return w
}

// trimHead removes records from the head of ob while want says so, then moves head (and
// headMs) to the first remaining record. Removal is logical: only the head moves (one meta
// write, no tombstone per record); the records left below the head are garbage that Read and
// Seek never visit, reclaimed in bulk by reclaimGarbage. It sees this group's own writes.
func (g *group) trimHead(ob *Outbox, w *work, want func(seq uint64, size int64, appendMs func() int64) bool, onDel func(size int64)) (budgetOut bool, err error) {
	it := g.txn.NewIterator(badger.IteratorOptions{Prefix: ob.prefix, PrefetchValues: false})
	defer it.Close()
	var item *badger.Item
	appendMs := func() int64 {
		var ms int64
		_ = item.Value(func(v []byte) error {
			ms, _, _ = decodeRecord(v)
			return nil
		})
		return ms
	}
	next := w.m.head
	// A damaged table block ends badger's iteration early; skipDamage seeks past it
	// (integrity.go), so records behind it are neither skipped nor given up.
	for it.Seek(seqKey(ob.prefix, w.m.head)); it.Valid() || ob.skipDamage(g.txn, it, next, w.m.tail); it.Next() {
		item = it.Item()
		seq := keySeq(item.Key())
		next = seq + 1
		size := int64(len(item.Key())) + item.ValueSize()
		if !want(seq, size, appendMs) {
			w.m.head, w.m.headMs = seq, appendMs()
			g.wrote = true
			return false, nil
		}
		w.m.count--
		w.m.bytes -= size
		w.garbage += size
		if onDel != nil {
			onDel(size)
		}
	}
	// Queue empty.
	w.m.head, w.m.headMs = w.m.tail+1, 0
	g.wrote = true
	if w.m.count != 0 || w.m.bytes != 0 {
		g.counterGap(ob, w) // a loss, counted and logged (integrity.go)
		w.m.count, w.m.bytes = 0, 0
	}
	return false, nil
}

// expire drops records older than the TTL from the head.
func (g *group) expire(ob *Outbox, w *work, lim *Config) (budgetOut bool, err error) {
	cutoff := g.now - lim.TTL.Milliseconds()
	if w.m.count == 0 || w.m.headMs == 0 || w.m.headMs >= cutoff {
		return false, nil
	}
	return g.trimHead(ob, w, func(_ uint64, _ int64, ms func() int64) bool { return ms() < cutoff },
		func(int64) { w.m.drops[reasonIndex(ReasonTTL)]++; w.drops[reasonIndex(ReasonTTL)]++ })
}

// appendRecords enforces the limits and appends vals (encoded records) at the tail.
func (g *group) appendRecords(ob *Outbox, vals [][]byte) (done bool, err error) {
	lim := ob.limits()
	w := g.work(ob)
	// need is what the records weigh against the outbox limits; cost is what they weigh in
	// the badger transaction, where a value at or above ValueThreshold goes to the value log
	// and only its pointer counts (so a 1 MiB message, the broker's default maximum packet,
	// fits a commit).
	var need, cost int64
	for _, v := range vals {
		k := int64(len(ob.prefix) + 8)
		need += k + int64(len(v))
		cost += k + 12
		if int64(len(v)) < g.db.budget.threshold {
			cost += int64(len(v))
		} else {
			cost += 12
		}
	}
	n := int64(len(vals))
	if n > lim.MaxMessages || need > int64(lim.MaxBytes) {
		return true, fmt.Errorf("append to outbox %q: %d messages of %d bytes exceed its limits (max_messages %d, max_bytes %s): %w",
			ob.name, n, need, lim.MaxMessages, lim.MaxBytes, ErrFull)
	}
	if out, err := g.expire(ob, w, lim); err != nil || out {
		return false, err
	}
	over := func() string {
		switch {
		case w.m.count+n > lim.MaxMessages:
			return ReasonMaxMessages
		case w.m.bytes+need > int64(lim.MaxBytes):
			return ReasonMaxBytes
		}
		return ""
	}
	if r := over(); r != "" {
		if lim.WhenFull == Reject {
			ob.rejected.Add(uint64(n))
			return true, fmt.Errorf("append to outbox %q: %s reached (%d messages, %d bytes queued): %w", ob.name, r, w.m.count, w.m.bytes, ErrFull)
		}
		var reason string
		out, err := g.trimHead(ob, w, func(uint64, int64, func() int64) bool {
			reason = over()
			return reason != ""
		}, func(int64) {
			i := reasonIndex(reason)
			w.m.drops[i]++
			w.drops[i]++
		})
		if err != nil || out {
			return false, err
		}
	}
	if !g.room(len(vals), cost) {
		if g.empty() {
			return true, fmt.Errorf("append to outbox %q: %d bytes in one call is more than one commit holds", ob.name, need)
		}
		return false, nil
	}
	wasEmpty := w.m.count == 0
	for _, v := range vals {
		w.m.tail++
		if err := g.set(seqKey(ob.prefix, w.m.tail), v); err != nil {
			return false, err
		}
	}
	if wasEmpty {
		w.m.head = w.m.tail - uint64(n) + 1
		w.m.headMs, _, _ = decodeRecord(vals[0])
	}
	w.m.count += n
	w.m.bytes += need
	w.appended += len(vals)
	return true, nil
}

// commitLoop is the one goroutine that writes to badger.
func (db *DB) commitLoop() {
	defer close(db.done)
	tick := time.NewTicker(db.opts.GCInterval)
	defer tick.Stop()
	spaceTick := time.NewTicker(spacePollEvery) // statfs only: an idle store writes nothing
	defer spaceTick.Stop()
	var pending []*op
	for {
		if len(pending) == 0 {
			select {
			case o := <-db.reqs:
				pending = append(pending, o)
			case <-spaceTick.C:
				db.space.poll(true)
				continue
			case <-tick.C:
				db.housekeeping()
				continue
			case <-db.quit:
				db.failPending(nil)
				return
			}
		}
	gather:
		for len(pending) < 4096 {
			select {
			case o := <-db.reqs:
				pending = append(pending, o)
			default:
				break gather
			}
		}
		pending = db.runGroup(pending)
		select {
		case <-tick.C:
			db.housekeeping()
		default:
		}
	}
}

// failPending answers everything still queued with ErrClosed.
func (db *DB) failPending(pending []*op) {
	for _, o := range pending {
		o.done <- ErrClosed
	}
	for {
		select {
		case o := <-db.reqs:
			o.done <- ErrClosed
		default:
			return
		}
	}
}

// runGroup applies ops from the front of pending to one transaction, commits, fsyncs and
// answers them. It returns the ops left for the next group.
func (db *DB) runGroup(pending []*op) []*op {
	g := &group{db: db, txn: db.bdb.NewTransaction(true), outs: map[*Outbox]*work{}, now: nowMs()}
	defer g.txn.Discard()

	diskFull := false
	if db.opts.MinFreeBytes > 0 {
		for _, o := range pending {
			if o.grows {
				if free, err := diskFree(db.opts.Dir); err == nil && db.space.effectiveFree(free) < db.opts.MinFreeBytes {
					diskFull = true
					db.metrics.diskFull.Inc()
					if ok, n := db.diskFullLog.Allow(10*time.Second, 1); ok {
						db.log.Error("data dir file system is full: refusing new messages (acks still work)",
							"dir", db.opts.Dir, "free_bytes", free, "min_free_bytes", db.opts.MinFreeBytes, "refused_since_last_log", n)
					}
				}
				break
			}
		}
	}

	var applied []*op
	rest := pending
	for len(rest) > 0 {
		o := rest[0]
		if err := o.ctx.Err(); err != nil {
			o.err = err
			applied, rest = append(applied, o), rest[1:]
			continue
		}
		if diskFull && o.grows {
			o.err = fmt.Errorf("%w: %s has less than %d bytes free", ErrDiskFull, db.opts.Dir, db.opts.MinFreeBytes)
			applied, rest = append(applied, o), rest[1:]
			continue
		}
		done, err := o.apply(g)
		if err != nil && done {
			o.err = err
		} else if err != nil {
			// A badger error inside the transaction: the whole group fails.
			for _, a := range append(applied, o) {
				a.err = nil
			}
			db.finish(g, append(applied, o), fmt.Errorf("storage write: %w", err), false)
			return rest[1:]
		}
		if !done {
			break
		}
		applied, rest = append(applied, o), rest[1:]
	}
	if !g.wrote {
		db.finish(g, applied, nil, false)
		return rest
	}
	// A full disk must not reach a sparse mapped page (SIGBUS): write only into preallocated
	// WAL (and value-log) space, else refuse the whole group (diskfull.go).
	db.space.poll(false)
	if err := db.space.ready(); err != nil {
		db.finish(g, applied, err, false)
		return rest
	}
	if g.vlog {
		if err := db.space.readyVlog(); err != nil {
			db.finish(g, applied, err, false)
			return rest
		}
	}
	for _, ob := range g.order {
		w := g.outs[ob]
		if w.m != w.base {
			if err := g.txn.Set(ob.metaKey, w.m.encode()); err != nil {
				db.finish(g, applied, fmt.Errorf("storage write: %w", err), false)
				return rest
			}
		}
	}
	t0 := time.Now()
	if err := g.txn.Commit(); err != nil {
		db.finish(g, applied, fmt.Errorf("storage commit: %w", diskErr(err)), false)
		return rest
	}
	err := db.bdb.Sync()
	db.metrics.commitSeconds.Observe(time.Since(t0).Seconds())
	if err != nil {
		// The transaction is in badger (and visible) but maybe not on disk: keep the in-memory
		// state in step with badger, tell the callers (who retry: at-least-once).
		err = fmt.Errorf("storage fsync: %w", diskErr(err))
	} else {
		db.witness(g) // durable now: record the tails outside the log (witness.go)
	}
	if serr := db.space.afterWrite(g.vlog); serr != nil && err == nil {
		err = fmt.Errorf("storage fsync of a new log file: %w", diskErr(serr))
	}
	db.finish(g, applied, err, true)
	for _, ob := range g.order {
		if g.outs[ob].garbage > 0 {
			db.reclaimGarbage(ob, false)
		}
	}
	return rest
}

// finish publishes the group's outbox states when committed and answers the ops.
func (db *DB) finish(g *group, ops []*op, err error, committed bool) {
	for _, fn := range g.after {
		fn(committed) // in step with badger even when fsync failed, as the outboxes
	}
	if committed {
		db.commits.Add(1)
		db.committedOps.Add(uint64(len(ops)))
		db.metrics.commits.Inc()
		for _, ob := range g.order {
			ob.publish(g.outs[ob])
		}
	}
	for _, o := range ops {
		e := o.err
		if e == nil {
			e = err
		}
		o.done <- e
	}
}

// diskErr marks out-of-space errors (badger flattens errors to strings) with ErrDiskFull.
func diskErr(err error) error {
	if err != nil && !errors.Is(err, ErrDiskFull) && strings.Contains(err.Error(), "no space left on device") {
		return fmt.Errorf("%w: %w", ErrDiskFull, err)
	}
	return err
}

// runInline runs one op to completion on the committer goroutine (in as many groups as it
// needs) and returns its result.
func (db *DB) runInline(o *op) error {
	for rest := []*op{o}; len(rest) > 0; {
		rest = db.runGroup(rest)
	}
	return <-o.done
}

// housekeeping runs between groups, on the committer goroutine: TTL expiry (only writes when
// something expired), space reclaim of emptied queues and value-log GC (only when something was
// deleted since the last run). An idle store writes nothing.
func (db *DB) housekeeping() {
	now := nowMs()
	for _, ob := range db.Outboxes() {
		if !ob.configured.Load() {
			continue
		}
		lim := ob.limits()
		ob.mu.Lock()
		expired := ob.cm.count > 0 && ob.cm.headMs > 0 && ob.cm.headMs < now-lim.TTL.Milliseconds()
		ob.mu.Unlock()
		for expired {
			o := &op{ctx: context.Background(), done: make(chan error, 1), apply: func(g *group) (bool, error) {
				out, err := g.expire(ob, g.work(ob), lim)
				return !out, err
			}}
			if err := db.runInline(o); err != nil {
				db.log.Warn("ttl expiry failed", "outbox", ob.name, "error", err)
			}
			expired = false
		}
		db.reclaimGarbage(ob, true)
	}
	// Value-log GC rewrites values through the write path: only into prepared space, and not
	// on a short disk (it grows before it frees).
	db.space.poll(true)
	if db.freedSinceGC.Load() > 0 && db.space.ready() == nil && db.space.readyVlogGC() == nil && !db.space.diskShort() {
		db.freedSinceGC.Store(0)
		defer func() {
			// GC's rewrites are not acknowledgements: a failure to prepare the next file here
			// is retried by the next commit, which checks it before it answers anyone.
			if err := db.space.afterWrite(true); err != nil {
				db.log.Debug("prepare space after value-log GC", "err", err)
			}
		}()
		for range 8 {
			if err := db.bdb.RunValueLogGC(0.5); err != nil {
				break
			}
		}
	}
}

// reclaimAfter is how much garbage (records below the head: acked, dropped, expired) an
// outbox may leave before it is reclaimed. When the queue is empty (the usual case for a
// forwarder that keeps up), the whole key range goes with one DropPrefix, which deletes whole
// table files and writes nothing per record; this happens after the commit that emptied it, on
// the committer goroutine, so no append can land under the dropped prefix. A queue that never
// empties gets its garbage range tombstoned in chunks by housekeeping once it exceeds
// 4*reclaimAfter (tombstones only pay off at a later compaction, so they are the fallback).
const reclaimAfter = 8 << 20

// reclaimGarbage reclaims ob's garbage if there is enough (committer goroutine). force also
// tombstones the garbage of a non-empty queue (housekeeping).
func (db *DB) reclaimGarbage(ob *Outbox, force bool) {
	ob.mu.Lock()
	garbage, debt, empty := ob.garbage, ob.debt, ob.cm.count == 0
	ob.mu.Unlock()
	if empty && garbage > 0 && debt >= reclaimAfter {
		// DropPrefix flushes the memtable, rewrites tables and rotates the WAL: only into
		// prepared space, with the reserve released first if the disk is short.
		db.space.poll(true)
		if db.space.ready() != nil {
			return
		}
		t0 := time.Now()
		err := db.bdb.DropPrefix(ob.prefix)
		_ = db.space.afterWrite(false)
		if err != nil {
			db.log.Warn("reclaiming the space of a drained outbox failed; retried later", "outbox", ob.name, "error", err)
			return
		}
		ob.mu.Lock()
		ob.garbage, ob.debt = 0, 0
		ob.mu.Unlock()
		db.freedSinceGC.Add(garbage)
		db.log.Debug("reclaimed the space of a drained outbox", "outbox", ob.name, "bytes", garbage, "took", time.Since(t0))
		return
	}
	if !force || empty || garbage < 4*reclaimAfter {
		return
	}
	// Tombstone [first key, head) in chunks, each chunk Seeking past the previous one.
	var from uint64
	{ // runInline runs the op group after group until it reports done: one op, many chunks
		o := &op{ctx: context.Background(), done: make(chan error, 1), apply: func(g *group) (bool, error) {
			w := g.work(ob)
			it := g.txn.NewIterator(badger.IteratorOptions{Prefix: ob.prefix, PrefetchValues: false})
			defer it.Close()
			for it.Seek(seqKey(ob.prefix, from)); it.Valid(); it.Next() {
				item := it.Item()
				from = keySeq(item.Key())
				if from >= w.m.head {
					break
				}
				if !g.room(1, int64(len(item.Key()))+12) {
					return false, nil
				}
				if err := g.del(item.KeyCopy(nil)); err != nil {
					return false, err
				}
				w.freed += int64(len(item.Key())) + item.ValueSize()
			}
			return true, nil
		}}
		if err := db.runInline(o); err != nil {
			db.log.Warn("reclaiming outbox garbage failed", "outbox", ob.name, "error", err)
			return
		}
	}
	ob.mu.Lock()
	ob.garbage = 0
	ob.mu.Unlock()
}
