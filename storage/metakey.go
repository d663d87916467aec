package storage

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Where the outbox meta lives, and why it moved
//
// Every group commit writes the new records of an outbox and its meta. Format 1 kept the meta
// under 'h', before the records ('o'), so every memtable badger flushed spanned the key range
// from the meta to the newest record: it overlapped every table of the level below, and each
// compaction rewrote that whole level, and the next one down when it overflowed. The cost of
// taking a message in grew with the backlog (BenchmarkIngestByDepth: the last tenth of a 1M
// backlog came in at about half the rate of the first, several times the bytes written per
// message). Under 'p' the meta sorts after the records, a flushed memtable is one short range
// at the end of the key space, and a compaction touches only the last table of each level.
//
// A store without the format 2 marker is migrated when it is opened (not by the read-only
// inspections of the CLI): every 'h' meta is rewritten under 'p' and deleted, and the marker
// set, in one transaction. An older edged refuses a format 2 store instead of seeing its
// outboxes empty and reusing their sequence numbers.

// migrateMetas moves the metas of the named outboxes from kindMetaV1 to kindMeta and marks the
// store format 2, atomically and durably.
func migrateMetas(bdb *badger.DB, names []string) error {
	err := bdb.Update(func(txn *badger.Txn) error {
		for _, n := range names {
			old := namePrefix(kindMetaV1, n)
			v, err := getValue(txn, old)
			if err != nil {
				return err
			}
			// A format 2 meta already there (not expected: both are written in one
			// transaction) is newer: keep it.
			if _, err := txn.Get(namePrefix(kindMeta, n)); errors.Is(err, badger.ErrKeyNotFound) {
				if err := txn.Set(namePrefix(kindMeta, n), v); err != nil {
					return err
				}
			} else if err != nil {
				return err
			}
			if err := txn.Delete(old); err != nil {
				return err
			}
		}
		return txn.Set([]byte{kindFormat}, []byte{formatVersion})
	})
	if err == nil {
		err = bdb.Sync()
	}
	if err != nil {
		return fmt.Errorf("move %d outbox metas to format %d: %w", len(names), formatVersion, err)
	}
	return nil
}
