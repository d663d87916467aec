package storage

import (
	"context"
	"fmt"

	"github.com/edged-dev/edged/wire"
)

// LaneAppend is one part of an AppendLanes call: envelopes for one outbox or one keep-latest
// store (exactly one of Outbox and Latest is set). Err is its result.
type LaneAppend struct {
	Outbox *Outbox
	Latest *Latest
	Envs   []*wire.Envelope
	Err    error
}

// AppendLanes stores every part in one operation of the committer, so a capture that spans
// several queues (the priority lanes of a connector, several connectors) shares one group
// commit and one fsync instead of racing for separate ones. Each part gets its own result:
// under when_full: reject one full outbox refuses its part (ErrFull) while the others are
// stored. It returns once every stored part is durable. Parts too large for one commit are
// appended on their own, in order, with Append.
func (db *DB) AppendLanes(ctx context.Context, parts []*LaneAppend) {
	type prepared struct {
		p    *LaneAppend
		vals [][]byte   // outbox records
		kvs  []latestKV // keep-latest entries
	}
	var one []*prepared
	var size int64
	var n int
	for _, p := range parts {
		if len(p.Envs) == 0 {
			continue
		}
		pr := &prepared{p: p}
		var err error
		if p.Latest != nil {
			pr.kvs, err = p.Latest.encode(p.Envs)
			for _, kv := range pr.kvs {
				size += int64(len(kv.k) + len(kv.v))
			}
		} else {
			now := nowMs()
			for _, e := range p.Envs {
				b, merr := wire.MarshalEnvelope(e)
				if merr != nil {
					err = fmt.Errorf("append to outbox %q: %w", p.Outbox.name, merr)
					break
				}
				v := encodeRecord(now, b)
				pr.vals = append(pr.vals, v)
				size += int64(len(v)) + 32
			}
		}
		if err != nil {
			p.Err = err
			continue
		}
		n += len(p.Envs)
		one = append(one, pr)
	}
	if len(one) == 0 {
		return
	}
	// Too big for one group: each part on its own (Append chunks).
	if size > db.budget.bytes/2 || n >= db.budget.entries/2 {
		for _, pr := range one {
			if pr.p.Latest != nil {
				pr.p.Err = pr.p.Latest.Put(ctx, pr.p.Envs...)
			} else {
				pr.p.Err = pr.p.Outbox.appendVals(ctx, pr.vals)
			}
		}
		return
	}
	i := 0
	err := db.submit(ctx, &op{grows: true, apply: func(g *group) (bool, error) {
		for i < len(one) {
			pr := one[i]
			var done bool
			var err error
			if pr.p.Latest != nil {
				done, err = g.putLatest(pr.p.Latest, &pr.kvs)
			} else {
				done, err = g.appendRecords(pr.p.Outbox, pr.vals)
			}
			if !done {
				return false, err // group full (continue in the next) or a badger error
			}
			pr.p.Err = err // this part's own refusal (limits), the others go on
			i++
		}
		return true, nil
	}})
	if err != nil {
		for _, pr := range one {
			pr.p.Err = err // the op failed: nothing of it is known to be durable
		}
	}
}
