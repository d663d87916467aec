package storage

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
