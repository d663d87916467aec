package storage

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/edged-dev/edged/wire"
)

// DeadRecord is one dead letter.
type DeadRecord struct {
	Seq    uint64 // its sequence number in the outbox when it was dead-lettered
	Reason string
	Time   time.Time // when it was dead-lettered
	Env    *wire.Envelope
	Err    error // set (and Env nil) when the stored envelope no longer decodes
	Size   int
}

// DeadLetters lists up to max dead letters after afterSeq (0: from the first), oldest first.
func (o *Outbox) DeadLetters(afterSeq uint64, max int) ([]DeadRecord, error) {
	if afterSeq == math.MaxUint64 {
		return nil, nil // nothing comes after; afterSeq+1 would wrap to the first page
	}
	var out []DeadRecord
	err := o.db.bdb.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: o.dprefix, PrefetchValues: false})
		defer it.Close()
		for it.Seek(seqKey(o.dprefix, afterSeq+1)); it.Valid() && (max <= 0 || len(out) < max); it.Next() {
			item := it.Item()
			d := DeadRecord{Seq: keySeq(item.Key()), Size: len(item.Key()) + int(item.ValueSize())}
			err := item.Value(func(v []byte) error {
				ms, reason, rec, err := decodeDead(v)
				if err != nil {
					return err
				}
				d.Reason, d.Time = reason, time.UnixMilli(ms)
				_, b, err := decodeRecord(rec)
				if err != nil {
					return err
				}
				d.Env, err = o.db.opts.Wire.UnmarshalEnvelope(b)
				return err
			})
			if err != nil {
				d.Err = err
			}
			out = append(out, d)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list dead letters of %q: %w", o.name, err)
	}
	return out, nil
}

// Requeue moves dead letters back to the tail of the outbox (as new messages, subject to the
// limits), oldest first; no seqs means all of them. It returns how many it moved. Seqs that
// are not dead letters are ErrNotFound (the others are still moved).
func (o *Outbox) Requeue(ctx context.Context, seqs ...uint64) (int, error) {
	moved := 0
	var missing []uint64
	all := len(seqs) == 0
	idx := 0
	err := o.db.submit(ctx, &op{grows: true, apply: func(g *group) (bool, error) {
		w := g.work(o)
		move := func(dk, dv []byte) (bool, error) {
			_, _, rec, err := decodeDead(dv)
			if err != nil {
				return true, fmt.Errorf("requeue %s/%d: %w", o.name, keySeq(dk), err)
			}
			nrec := make([]byte, len(rec))
			copy(nrec, rec)
			setRecordTime(nrec, g.now) // requeued: its TTL starts again
			if !g.room(3, g.cost(dk, nrec)+int64(len(dk))+12) {
				return false, nil
			}
			done, err := g.appendRecords(o, [][]byte{nrec})
			if err != nil || !done {
				return done, err
			}
			if err := g.del(dk); err != nil {
				return false, err
			}
			w.m.dlqCount--
			w.m.dlqBytes -= int64(len(dk) + len(dv))
			moved++
			return true, nil
		}
		if all {
			it := g.txn.NewIterator(badger.IteratorOptions{Prefix: o.dprefix})
			var batch [][2][]byte
			for it.Rewind(); it.Valid() && len(batch) < 256; it.Next() {
				v, err := it.Item().ValueCopy(nil)
				if err != nil {
					it.Close()
					return false, err
				}
				batch = append(batch, [2][]byte{it.Item().KeyCopy(nil), v})
			}
			it.Close()
			for _, kv := range batch {
				if done, err := move(kv[0], kv[1]); err != nil || !done {
					return done, err
				}
			}
			return len(batch) < 256, nil
		}
		for ; idx < len(seqs); idx++ {
			dk := seqKey(o.dprefix, seqs[idx])
			dv, err := getValue(g.txn, dk)
			if errors.Is(err, badger.ErrKeyNotFound) {
				missing = append(missing, seqs[idx])
				continue
			} else if err != nil {
				return false, err
			}
			if done, err := move(dk, dv); err != nil || !done {
				return done, err
			}
		}
		return true, nil
	}})
	if err == nil && len(missing) > 0 {
		err = fmt.Errorf("requeue %s: dead letters %v: %w", o.name, missing, ErrNotFound)
	}
	return moved, err
}

// PurgeDeadLetters deletes every dead letter of the outbox and returns how many.
func (o *Outbox) PurgeDeadLetters(ctx context.Context) (int, error) {
	n := 0
	err := o.db.submit(ctx, &op{apply: func(g *group) (bool, error) {
		w := g.work(o)
		it := g.txn.NewIterator(badger.IteratorOptions{Prefix: o.dprefix, PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			if !g.room(1, int64(len(k))+12) {
				return false, nil
			}
			if err := g.del(k); err != nil {
				return false, err
			}
			w.m.dlqCount--
			w.m.dlqBytes -= int64(len(k)) + it.Item().ValueSize()
			n++
		}
		w.m.dlqCount, w.m.dlqBytes = 0, 0
		return true, nil
	}})
	return n, err
}
