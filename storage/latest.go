package storage

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/edged-dev/edged/internal/ratelog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/edged-dev/edged/wire"
)

// Latest is a durable keep-latest store: one message per topic, the newest. A Put for a topic
// that already holds a message replaces it in the same group commit (the old one is counted as
// dropped with reason "superseded"). It suits state-like data (a setpoint, a device status)
// whose history is worth nothing once a newer value exists: during an outage the store stays
// as large as the number of topics, whatever the number of updates.
//
// Key layout (keys.go): 'k' len name topic -> seq(8) record (the outbox record encoding), and
// 'K' len name -> latestMeta. Records are read in topic order, not in arrival order.
type Latest struct {
	db      *DB
	name    string
	prefix  []byte
	metaKey []byte
	dprefix []byte
	ttl     atomic.Int64 // ns; 0 = keep forever
	notify  chan struct{}

	mu      sync.Mutex
	cm      latestMeta // committed state
	loaded  bool
	dropLog ratelog.Limit
}

const (
	kindLatest     = 'k'
	kindLatestMeta = 'K'
)

// ReasonSuperseded is the drop reason of a keep-latest message replaced by a newer one of the
// same topic before it was sent.
const ReasonSuperseded = "superseded"

// latestMeta is persisted in the same transaction as every change of the store.
type latestMeta struct {
	seq        uint64 // last sequence assigned
	count      int64
	bytes      int64
	superseded uint64
	ttl        uint64
	dlqCount   int64
}

const latestMetaLen = 1 + 8*6

func (m latestMeta) encode() []byte {
	b := make([]byte, 0, latestMetaLen)
	b = append(b, 1)
	for _, v := range []uint64{m.seq, uint64(m.count), uint64(m.bytes), m.superseded, m.ttl, uint64(m.dlqCount)} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}

func decodeLatestMeta(b []byte) (latestMeta, error) {
	if len(b) != latestMetaLen || b[0] != 1 {
		return latestMeta{}, fmt.Errorf("keep-latest meta: bad encoding (%d bytes)", len(b))
	}
	u := func(i int) uint64 { return binary.BigEndian.Uint64(b[1+8*i:]) }
	m := latestMeta{seq: u(0), count: int64(u(1)), bytes: int64(u(2)), superseded: u(3), ttl: u(4), dlqCount: int64(u(5))}
	if m.count < 0 || m.bytes < 0 {
		return m, fmt.Errorf("keep-latest meta: negative count %d or bytes %d", m.count, m.bytes)
	}
	return m, nil
}

// Latest returns the keep-latest store called name, creating it on first use; ttl > 0 drops
// (counted as "ttl") messages older than that when they are read. name shares the outbox name
// space rules (1..200 bytes) but not its keys.
func (db *DB) Latest(name string, ttl time.Duration) (*Latest, error) {
	if name == "" || len(name) > maxNameLen {
		return nil, fmt.Errorf("keep-latest store name %q: must be 1..%d bytes", name, maxNameLen)
	}
	db.mu.Lock()
	if db.latest == nil {
		db.latest = map[string]*Latest{}
	}
	l := db.latest[name]
	if l == nil {
		l = &Latest{db: db, name: name, prefix: namePrefix(kindLatest, name), metaKey: namePrefix(kindLatestMeta, name),
			dprefix: namePrefix(kindDead, name), notify: make(chan struct{}, 1)}
		db.latest[name] = l
	}
	db.mu.Unlock()
	l.ttl.Store(int64(ttl))
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.loaded {
		err := db.bdb.View(func(txn *badger.Txn) error {
			it, err := txn.Get(l.metaKey)
			if errors.Is(err, badger.ErrKeyNotFound) {
				return nil
			} else if err != nil {
				return err
			}
			return it.Value(func(v []byte) error {
				m, err := decodeLatestMeta(v)
				l.cm = m
				return err
			})
		})
		if err != nil {
			return nil, fmt.Errorf("keep-latest store %q: load: %w", name, err)
		}
		l.loaded = true
	}
	return l, nil
}

// Name is the store's name.
func (l *Latest) Name() string { return l.name }

// Notify receives (coalesced, capacity 1) after messages were put.
func (l *Latest) Notify() <-chan struct{} { return l.notify }

// latestWork is the store's state inside one group (the committer's working copy).
type latestWork struct {
	m, base    latestMeta
	put        int
	superseded uint64
	ttl, deadN uint64
}

func (g *group) latestWork(l *Latest) *latestWork {
	if g.ext == nil {
		g.ext = map[any]any{}
	}
	if w, ok := g.ext[l].(*latestWork); ok {
		return w
	}
	m := locked(&l.mu, &l.cm)
	w := &latestWork{m: m, base: m}
	g.ext[l] = w
	g.after = append(g.after, func(committed bool) {
		if !committed {
			return
		}
		l.publish(w)
	})
	return w
}

// flush writes the store's meta into the group (called by every op that changed it).
func (g *group) flushLatest(l *Latest, w *latestWork) error {
	return g.set(l.metaKey, w.m.encode())
}

func (l *Latest) publish(w *latestWork) {
	l.mu.Lock()
	l.cm = w.m
	l.mu.Unlock()
	mt := l.db.metrics
	mt.appendedTo(l.name, w.put, l.notify)
	if w.superseded > 0 {
		mt.dropped.WithLabelValues(l.name, ReasonSuperseded).Add(float64(w.superseded))
	}
	if w.ttl > 0 {
		mt.dropped.WithLabelValues(l.name, ReasonTTL).Add(float64(w.ttl))
	}
	if n := w.superseded + w.ttl; n > 0 {
		if ok, more := l.dropLog.Allow(time.Minute, int(n)); ok {
			l.db.log.Info("keep-latest store replaced or expired messages not yet sent", "store", l.name,
				"superseded", w.superseded, "ttl", w.ttl, "dropped_since_last_log", more, "depth", w.m.count)
		}
	}
}

// Put stores envs, each replacing any queued message of the same topic (counted as
// superseded), and returns once durable (one group commit shared with every other writer).
// Within one call a later envelope of a topic supersedes an earlier one.
func (l *Latest) Put(ctx context.Context, envs ...*wire.Envelope) error {
	if len(envs) == 0 {
		return nil
	}
	kvs, err := l.encode(envs)
	if err != nil {
		return err
	}
	// One op; when a group's budget runs out it continues in the next group (still in order).
	rest := kvs
	err = l.db.submit(ctx, &op{grows: true, apply: func(g *group) (bool, error) { return g.putLatest(l, &rest) }})
	if err != nil {
		return fmt.Errorf("put to keep-latest store %q: %w", l.name, err)
	}
	return nil
}

type latestKV struct{ k, v []byte }

func (l *Latest) encode(envs []*wire.Envelope) ([]latestKV, error) {
	now := nowMs()
	kvs := make([]latestKV, 0, len(envs))
	for _, e := range envs {
		b, err := wire.MarshalEnvelope(e)
		if err != nil {
			return nil, fmt.Errorf("put to keep-latest store %q: %w", l.name, err)
		}
		kvs = append(kvs, latestKV{append(append([]byte(nil), l.prefix...), e.Topic...), encodeRecord(now, b)})
	}
	return kvs, nil
}

// putLatest writes *rest into l, consuming it; done == false when the group is full (the
// rest goes into the next group).
func (g *group) putLatest(l *Latest, rest *[]latestKV) (bool, error) {
	w := g.latestWork(l)
	for len(*rest) > 0 {
		x := (*rest)[0]
		if !g.room(3, g.cost(x.k, x.v)+int64(latestMetaLen+len(l.metaKey))+8) {
			if g.empty() {
				return true, fmt.Errorf("put to keep-latest store %q: message too large for one commit", l.name)
			}
			return false, g.flushLatest(l, w)
		}
		old, err := g.txn.Get(x.k)
		switch {
		case err == nil:
			// Not ValueSize: for a write pending in this transaction it reports 0.
			n, err := valueLen(old)
			if err != nil {
				return false, err
			}
			w.m.count--
			w.m.bytes -= int64(len(x.k) + n)
			w.m.superseded++
			w.superseded++
		case !errors.Is(err, badger.ErrKeyNotFound):
			return false, err
		}
		w.m.seq++
		v := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(x.v)), w.m.seq)
		v = append(v, x.v...)
		if err := g.set(x.k, v); err != nil {
			return false, err
		}
		w.m.count++
		w.m.bytes += int64(len(x.k) + len(v))
		w.put++
		*rest = (*rest)[1:]
	}
	return true, g.flushLatest(l, w)
}

// Read returns up to maxMsgs queued messages in topic order, stopping before maxBytes (but
// returning at least one if any is queued). Messages older than the store's TTL are removed
// (counted as "ttl") instead of returned; a record that does not decode goes to the dead
// letters. Nothing else is removed: Remove does that once the remote confirmed.
func (l *Latest) Read(maxMsgs, maxBytes int) ([]Record, error) {
	if maxMsgs <= 0 {
		maxMsgs = 1
	}
	var out []Record
	var expired []Record
	type bad struct {
		rec Record
		err error
	}
	var bads []bad
	cutoff := int64(0)
	if ttl := time.Duration(l.ttl.Load()); ttl > 0 {
		cutoff = nowMs() - ttl.Milliseconds()
	}
	total := 0
	err := l.db.bdb.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: l.prefix, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid() && len(out) < maxMsgs; it.Next() {
			item := it.Item()
			size := len(item.Key()) + int(item.ValueSize())
			if len(out) > 0 && maxBytes > 0 && total+size > maxBytes {
				break
			}
			topic := string(item.Key()[len(l.prefix):])
			var rec Record
			var ms int64
			err := item.Value(func(v []byte) error {
				if len(v) < 8 {
					return errBadRecord
				}
				rec.Seq = binary.BigEndian.Uint64(v)
				var b []byte
				var err error
				ms, b, err = decodeRecord(v[8:])
				if err != nil {
					return err
				}
				rec.Env, err = wire.UnmarshalEnvelope(b)
				return err
			})
			rec.Size = size
			if err != nil {
				bads = append(bads, bad{Record{Seq: rec.Seq, Env: &wire.Envelope{Topic: topic}}, err})
				continue
			}
			if cutoff > 0 && ms < cutoff {
				expired = append(expired, rec)
				continue
			}
			out = append(out, rec)
			total += size
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read keep-latest store %q: %w", l.name, err)
	}
	if len(expired) > 0 {
		if err := l.remove(expired, func(w *latestWork) { w.m.ttl++; w.ttl++ }); err != nil {
			return out, err
		}
	}
	for _, b := range bads {
		l.db.log.Error("keep-latest record does not decode; moved to dead letters", "store", l.name, "topic", b.rec.Env.Topic, "error", b.err)
		if err := l.DeadLetter(b.rec, "undecodable: "+b.err.Error()); err != nil {
			return out, err
		}
	}
	return out, nil
}

// Remove deletes the given records (the remote confirmed them). A topic whose message was
// replaced since it was read keeps the newer one: only an exact (topic, seq) match is removed.
func (l *Latest) Remove(recs []Record) error { return l.remove(recs, nil) }

func (l *Latest) remove(recs []Record, count func(*latestWork)) error {
	for len(recs) > 0 {
		rest := recs
		err := l.db.submit(context.Background(), &op{apply: func(g *group) (bool, error) {
			w := g.latestWork(l)
			for len(rest) > 0 {
				r := rest[0]
				k := append(append([]byte(nil), l.prefix...), r.Env.Topic...)
				if !g.room(3, int64(len(k))+int64(latestMetaLen+len(l.metaKey))+24) {
					if g.empty() {
						return true, errors.New("keep-latest remove: commit budget too small")
					}
					return false, g.flushLatest(l, w)
				}
				item, err := g.txn.Get(k)
				if err == nil {
					var seq uint64
					if err := item.Value(func(v []byte) error {
						if len(v) >= 8 {
							seq = binary.BigEndian.Uint64(v)
						}
						return nil
					}); err != nil {
						return false, err
					}
					if seq == r.Seq {
						n, err := valueLen(item)
						if err != nil {
							return false, err
						}
						size := int64(len(k) + n)
						if err := g.del(k); err != nil {
							return false, err
						}
						w.m.count--
						w.m.bytes -= size
						if count != nil {
							count(w)
						}
					}
				} else if !errors.Is(err, badger.ErrKeyNotFound) {
					return false, err
				}
				rest = rest[1:]
			}
			return true, g.flushLatest(l, w)
		}})
		if err != nil {
			return fmt.Errorf("remove from keep-latest store %q: %w", l.name, err)
		}
		recs = rest
	}
	return nil
}

// DeadLetter moves rec (read from this store) to the store's dead letters with reason.
func (l *Latest) DeadLetter(rec Record, reason string) error {
	err := l.db.submit(context.Background(), &op{grows: true, apply: func(g *group) (bool, error) {
		w := g.latestWork(l)
		k := append(append([]byte(nil), l.prefix...), rec.Env.Topic...)
		v, err := getValue(g.txn, k)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return true, nil
		} else if err != nil {
			return false, err
		}
		if len(v) < 8 || binary.BigEndian.Uint64(v) != rec.Seq {
			return true, nil // replaced meanwhile: the newer message stays
		}
		if len(reason) > 1024 {
			reason = reason[:1024]
		}
		dk := seqKey(l.dprefix, rec.Seq)
		dv := encodeDead(g.now, reason, v[8:])
		if !g.room(3, g.cost(dk, dv)+int64(len(k))+64) {
			if g.empty() {
				return true, fmt.Errorf("dead-letter %s/%s: record too large", l.name, rec.Env.Topic)
			}
			return false, nil
		}
		if err := g.set(dk, dv); err != nil {
			return false, err
		}
		if err := g.del(k); err != nil {
			return false, err
		}
		w.m.count--
		w.m.bytes -= int64(len(k) + len(v))
		w.m.dlqCount++
		w.deadN++
		return true, g.flushLatest(l, w)
	}})
	if err == nil {
		l.db.integ.deadLetters.WithLabelValues(l.name, deadReason(reason)).Inc()
	}
	return err
}

// Stats describes the store in the shape of an outbox's (Head and Tail are 0; OldestAge is
// not tracked and stays 0, as every queued message is the newest of its topic). Drops carries
// superseded and ttl.
func (l *Latest) Stats() OutboxStats {
	m := locked(&l.mu, &l.cm)
	return OutboxStats{Name: l.name, Depth: m.count, Bytes: m.bytes, DLQDepth: m.dlqCount, Configured: true,
		Drops: map[string]uint64{ReasonSuperseded: m.superseded, ReasonTTL: m.ttl}}
}

func valueLen(item *badger.Item) (n int, err error) {
	err = item.Value(func(v []byte) error { n = len(v); return nil })
	return n, err
}

// LatestNames lists the keep-latest stores that hold state in the DB (one small key each),
// so a store a configuration no longer names can still be found and drained.
func (db *DB) LatestNames() ([]string, error) {
	var out []string
	err := db.bdb.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{kindLatestMeta}, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) >= 2 && int(k[1]) == len(k)-2 {
				out = append(out, string(k[2:]))
			}
		}
		return nil
	})
	return out, err
}
