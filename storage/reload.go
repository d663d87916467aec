package storage

import (
	"context"
	"errors"
	"fmt"
)

// Unconfigure marks the outbox called name as left over from a connector the configuration no
// longer has (OutboxStats.Configured false): its records stay in the store, readable and
// purgeable, until a connector of that name comes back (Outbox) or it is purged on purpose.
func (db *DB) Unconfigure(name string) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if ob := db.outboxes[name]; ob != nil {
		ob.configured.Store(false)
	}
}

// ErrConfigured refuses to purge the queue of an outbox whose connector is configured: its
// messages are still on their way.
var ErrConfigured = errors.New("outbox belongs to a configured connector")

// PurgeOrphaned deletes the queued messages and dead letters of an outbox whose connector was
// removed from the configuration, and returns how many of each it deleted. Only what was
// queued when it was called goes: if the connector comes back meanwhile, its new messages stay.
func (o *Outbox) PurgeOrphaned(ctx context.Context) (queued int64, dead int, err error) {
	if o.configured.Load() {
		return 0, 0, fmt.Errorf("purge %q: %w", o.name, ErrConfigured)
	}
	st := o.Stats()
	if st.Depth > 0 {
		if err := o.Ack(st.Tail); err != nil {
			return 0, 0, fmt.Errorf("purge %q: %w", o.name, err)
		}
	}
	dead, err = o.PurgeDeadLetters(ctx)
	if err != nil {
		return st.Depth, dead, fmt.Errorf("purge %q dead letters: %w", o.name, err)
	}
	return st.Depth, dead, nil
}
