package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/edged-dev/edged/internal/ratelog"
	"github.com/edged-dev/edged/wire"
)

// Outbox is the durable FIFO of one connector. Append is safe for any number of producers;
// Read/Ack/DeadLetter are meant for the one forwarder that drains it.
type Outbox struct {
	db      *DB
	name    string
	prefix  []byte // record keys
	dprefix []byte // dead-letter keys
	metaKey []byte

	lim        atomic.Pointer[Config]
	configured atomic.Bool
	notify     chan struct{}
	rejected   atomic.Uint64

	mu      sync.Mutex
	cm      meta  // committed (durable) state
	garbage int64 // bytes of records below the head not yet reclaimed
	debt    int64 // garbage plus tombstoned bytes since the last DropPrefix
	dropLog ratelog.Limit
}

func (db *DB) newOutbox(name string) *Outbox {
	ob := &Outbox{db: db, name: name, prefix: namePrefix(kindRecord, name), dprefix: namePrefix(kindDead, name),
		metaKey: namePrefix(kindMeta, name), notify: make(chan struct{}, 1)}
	d := Defaults()
	ob.lim.Store(&d)
	return ob
}

// Name is the outbox (connector) name.
func (o *Outbox) Name() string { return o.name }

func (o *Outbox) limits() *Config { return o.lim.Load() }

// publish makes a committed group's state visible (committer goroutine).
func (o *Outbox) publish(w *work) {
	o.mu.Lock()
	o.cm = w.m
	o.garbage += w.garbage
	o.debt += w.garbage
	o.mu.Unlock()
	if w.freed > 0 {
		o.db.freedSinceGC.Add(w.freed)
	}
	mt := o.db.metrics
	mt.appendedTo(o.name, w.appended, o.notify)
	var dropped uint64
	for i, n := range w.drops {
		if n > 0 {
			mt.dropped.WithLabelValues(o.name, reasons[i]).Add(float64(n))
			dropped += n
		}
	}
	if dropped > 0 {
		if ok, more := o.dropLog.Allow(10*time.Second, int(dropped)); ok {
			o.db.log.Warn("outbox full or expired: dropped oldest messages",
				"outbox", o.name, "max_bytes", w.drops[reasonIndex(ReasonMaxBytes)],
				"max_messages", w.drops[reasonIndex(ReasonMaxMessages)], "ttl", w.drops[reasonIndex(ReasonTTL)],
				"dropped_since_last_log", more, "depth", w.m.count)
		}
	}
}

// appendChunk bounds the bytes one Append hands to one group commit, so it always fits.
func (o *Outbox) appendChunk() int64 { return o.db.budget.bytes / 2 }

// Append stores envs at the tail and returns once they are durable (fsynced, in a group commit
// shared with every concurrent writer). Under when_full: reject a full outbox returns an error
// wrapping ErrFull and stores nothing; under drop_oldest the oldest messages are dropped
// (counted). A short disk returns ErrDiskFull. Very large calls are split into several
// commits, in order; each envelope is stored exactly once either way.
func (o *Outbox) Append(ctx context.Context, envs ...*wire.Envelope) error {
	if len(envs) == 0 {
		return nil
	}
	now := nowMs()
	vals := make([][]byte, 0, len(envs))
	for _, e := range envs {
		b, err := o.db.opts.Wire.MarshalEnvelope(e)
		if err != nil {
			return fmt.Errorf("append to outbox %q: %w", o.name, err)
		}
		vals = append(vals, encodeRecord(now, b))
	}
	return o.appendVals(ctx, vals)
}

func (o *Outbox) appendVals(ctx context.Context, vals [][]byte) error {
	for len(vals) > 0 {
		n, size := 0, int64(0)
		for n < len(vals) && (n == 0 || size+int64(len(vals[n])) <= o.appendChunk()) && n < o.db.budget.entries/2 {
			size += int64(len(vals[n])) + 32
			n++
		}
		chunk := vals[:n]
		vals = vals[n:]
		err := o.db.submit(ctx, &op{grows: true, apply: func(g *group) (bool, error) {
			return g.appendRecords(o, chunk)
		}})
		if err != nil {
			return err
		}
	}
	return nil
}

// Record is one queued message.
type Record struct {
	Seq  uint64
	Env  *wire.Envelope
	Size int // stored bytes (key + value)
}

// Read returns up to maxMsgs durable records after afterSeq (0: from the head), in FIFO order,
// stopping before maxBytes is exceeded (but always returning at least one record if any is
// queued). It does not remove anything. A record that no longer decodes is moved to the dead
// letters (reason "undecodable: ...") and skipped.
func (o *Outbox) Read(afterSeq uint64, maxMsgs, maxBytes int) ([]Record, error) {
	if maxMsgs <= 0 {
		maxMsgs = 1
	}
	o.mu.Lock()
	head, tail := o.cm.head, o.cm.tail
	o.mu.Unlock()
	start := max(afterSeq+1, head)
	if start > tail {
		return nil, nil
	}
	var out []Record
	type bad struct {
		seq uint64
		err error
	}
	var bads []bad
	var damaged bool // a damaged table block hid records (integrity.go)
	total := 0
	err := o.db.bdb.View(func(txn *badger.Txn) (err error) {
		defer func() {
			// badger can panic on a damaged block it parses before checking its checksum:
			// an error for this Read, not a crash of the gateway.
			if r := recover(); r != nil {
				o.db.requestSalvage(fmt.Sprintf("read of outbox %q: badger panicked on damaged data: %v", o.name, r))
				err = fmt.Errorf("badger panicked on damaged data: %v: %w", r, ErrSalvageRequested)
			}
		}()
		damaged = o.scan(txn, start, tail, func(item *badger.Item) bool {
			if len(out) >= maxMsgs {
				return false
			}
			seq := keySeq(item.Key())
			size := len(item.Key()) + int(item.ValueSize())
			if len(out) > 0 && maxBytes > 0 && total+size > maxBytes {
				return false
			}
			var env *wire.Envelope
			err := item.Value(func(v []byte) error {
				_, b, err := decodeRecord(v)
				if err != nil {
					return err
				}
				env, err = o.db.opts.Wire.UnmarshalEnvelope(b)
				return err
			})
			if err != nil {
				bads = append(bads, bad{seq, err})
				return true
			}
			out = append(out, Record{Seq: seq, Env: env, Size: size})
			total += size
			return true
		})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read outbox %q: %w", o.name, err)
	}
	if damaged {
		// Records behind the damage were still read; recount tells how many were lost, marks
		// them, and counts them once. Failing to must not wedge the outbox.
		if _, err := o.recount(causeUnreadable, "unreadable (damaged table block)"); err != nil {
			o.db.log.Error("counting lost outbox records failed", "outbox", o.name, "error", err)
		}
	}
	for _, b := range bads {
		if errors.Is(b.err, errRecordChecksum) {
			if err := o.DeadLetter(b.seq, ReasonCorrupt+": "+b.err.Error()); err != nil && !errors.Is(err, ErrNotFound) {
				return out, err
			}
			o.db.lost(o.name, causeChecksum, 1, b.seq, b.seq, "outbox record damaged (checksum mismatch): never delivered, moved to dead letters as it is")
			continue
		}
		o.db.log.Error("outbox record does not decode; moved to dead letters", "outbox", o.name, "seq", b.seq, "error", b.err)
		if err := o.DeadLetter(b.seq, "undecodable: "+b.err.Error()); err != nil && !errors.Is(err, ErrNotFound) {
			return out, err
		}
	}
	return out, nil
}

// Ack removes every record up to and including uptoSeq (the remote confirmed them). Acking
// below the head is a no-op. Durable when it returns.
func (o *Outbox) Ack(uptoSeq uint64) error {
	return o.db.submit(context.Background(), &op{apply: func(g *group) (bool, error) {
		w := g.work(o)
		if uptoSeq < w.m.head || w.m.count == 0 {
			return true, nil
		}
		out, err := g.trimHead(o, w, func(seq uint64, _ int64, _ func() int64) bool { return seq <= uptoSeq },
			func(int64) { w.acked++ })
		return !out, err
	}})
}

// DeadLetter moves record seq to the outbox's dead-letter queue with reason (the remote
// rejected it permanently). Durable when it returns; ErrNotFound if seq is not queued.
func (o *Outbox) DeadLetter(seq uint64, reason string) error {
	err := o.deadLetter(seq, reason)
	if err == nil {
		o.db.integ.deadLetters.WithLabelValues(o.name, deadReason(reason)).Inc()
	}
	return err
}

func (o *Outbox) deadLetter(seq uint64, reason string) error {
	return o.db.submit(context.Background(), &op{grows: true, apply: func(g *group) (bool, error) {
		w := g.work(o)
		if seq < w.m.head || seq > w.m.tail {
			return true, fmt.Errorf("dead-letter %s/%d: %w", o.name, seq, ErrNotFound)
		}
		k := seqKey(o.prefix, seq)
		rec, err := getValue(g.txn, k)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return true, fmt.Errorf("dead-letter %s/%d: %w", o.name, seq, ErrNotFound)
		} else if err != nil {
			return false, err
		}
		if len(reason) > 1024 {
			reason = reason[:1024]
		}
		dv := encodeDead(g.now, reason, rec)
		dk := seqKey(o.dprefix, seq)
		if !g.room(2, g.cost(dk, dv)+int64(len(k))+12) {
			if g.empty() {
				return true, fmt.Errorf("dead-letter %s/%d: record too large", o.name, seq)
			}
			return false, nil
		}
		if err := g.set(dk, dv); err != nil {
			return false, err
		}
		if err := g.del(k); err != nil {
			return false, err
		}
		size := int64(len(k) + len(rec))
		w.m.count--
		w.m.bytes -= size
		w.freed += size
		w.m.dlqCount++
		w.m.dlqBytes += int64(len(dk) + len(dv))
		if seq == w.m.head {
			_, err := g.trimHead(o, w, func(uint64, int64, func() int64) bool { return false }, nil)
			return true, err
		}
		return true, nil
	}})
}

// Notify receives (coalesced, capacity 1) after records were appended.
func (o *Outbox) Notify() <-chan struct{} { return o.notify }

// OutboxStats describes one outbox.
type OutboxStats struct {
	Name string `json:"name"`
	// Depth and Bytes are the queued messages and their stored size (keys + values).
	Depth int64 `json:"depth"`
	Bytes int64 `json:"bytes"`
	// OldestAge is how long the head message has been queued (0 when empty); JSON carries it
	// as oldest_age_seconds.
	OldestAge time.Duration `json:"-"`
	// Head is the first queued sequence (if any), Tail the last assigned.
	Head uint64 `json:"head"`
	Tail uint64 `json:"tail"`
	// Drops counts messages dropped since the outbox was created, by reason (max_bytes,
	// max_messages, ttl). Rejected counts appends refused under when_full: reject since Open.
	Drops    map[string]uint64 `json:"drops"`
	Rejected uint64            `json:"rejected"`
	// DLQDepth and DLQBytes describe the dead letters.
	DLQDepth int64 `json:"dlq_depth"`
	DLQBytes int64 `json:"dlq_bytes"`
	// Configured is false for an outbox found in the store whose connector is not configured.
	Configured bool   `json:"configured"`
	Limits     Config `json:"limits"`
}

// MarshalJSON adds oldest_age_seconds, the unit the status API and metrics use.
func (s OutboxStats) MarshalJSON() ([]byte, error) {
	type plain OutboxStats
	return json.Marshal(struct {
		plain
		OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	}{plain(s), s.OldestAge.Seconds()})
}

// Stats returns the outbox's durable state.
func (o *Outbox) Stats() OutboxStats {
	m := locked(&o.mu, &o.cm)
	s := OutboxStats{Name: o.name, Depth: m.count, Bytes: m.bytes, Head: m.head, Tail: m.tail,
		DLQDepth: m.dlqCount, DLQBytes: m.dlqBytes, Drops: map[string]uint64{},
		Rejected: o.rejected.Load(), Configured: o.configured.Load(), Limits: *o.limits()}
	if m.count > 0 && m.headMs > 0 {
		s.OldestAge = max(0, time.Duration(nowMs()-m.headMs)*time.Millisecond)
	}
	for i, r := range reasons {
		s.Drops[r] = m.drops[i]
	}
	return s
}
