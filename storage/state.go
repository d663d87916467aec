package storage

import (
	"context"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// StateStore is the broker's persistence (mochi sessions, subscriptions, inflight messages,
// retained messages) in the same DB. Put and Delete are durable when they return and share the
// group commit with the outboxes. Keys are the broker's own (e.g. "sub/client/filter").
type StateStore struct{ db *DB }

func stateKey(key string) []byte {
	k := make([]byte, 1+len(key))
	k[0] = kindState
	copy(k[1:], key)
	return k
}

// Put stores val under key (replacing any value).
func (s *StateStore) Put(key string, val []byte) error {
	if key == "" {
		return fmt.Errorf("state put: empty key")
	}
	k := stateKey(key)
	v := append([]byte(nil), val...)
	return s.db.submit(context.Background(), &op{grows: true, apply: func(g *group) (bool, error) {
		if !g.room(1, g.cost(k, v)) {
			if g.empty() {
				return true, fmt.Errorf("state put %q: %d bytes is too large", key, len(v))
			}
			return false, nil
		}
		return true, g.set(k, v)
	}})
}

// Delete removes key (no error if absent).
func (s *StateStore) Delete(key string) error {
	k := stateKey(key)
	return s.db.submit(context.Background(), &op{apply: func(g *group) (bool, error) {
		if !g.room(1, int64(len(k))+12) {
			return false, nil
		}
		return true, g.del(k)
	}})
}

// Scan calls fn for every key starting with prefix, in key order, with a value valid only
// during the call. An error from fn stops the scan and is returned.
func (s *StateStore) Scan(prefix string, fn func(key string, val []byte) error) error {
	return s.db.bdb.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: stateKey(prefix), PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			key := string(item.Key()[1:])
			if err := item.Value(func(v []byte) error { return fn(key, v) }); err != nil {
				return err
			}
		}
		return nil
	})
}
