package storage

import (
	"errors"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// rawBadger opens dir with badger directly (the store must be closed).
func rawBadger(t *testing.T, dir string, f func(txn *badger.Txn) error) {
	t.Helper()
	bdb, err := badger.Open(tuneBadger(dir, testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer bdb.Close()
	must(t, bdb.Update(f))
}

// A format 1 store (metas under 'h', no marker) opens with its queues intact, is moved to
// format 2 at open, and its sequence numbers go on where they were.
func TestFormat1MetasMigrated(t *testing.T) {
	dir := t.TempDir()
	db := openT(t, dir)
	ob := outboxT(t, db, "up", Config{})
	appendBatch(t, ob, 0, 100, 50, 10)
	must(t, ob.Ack(10))
	want := ob.Stats()
	must(t, db.Close())

	// Rewrite it as format 1 wrote it.
	rawBadger(t, dir, func(txn *badger.Txn) error {
		v, err := getValue(txn, namePrefix(kindMeta, "up"))
		if err != nil {
			return err
		}
		must(t, txn.Delete(namePrefix(kindMeta, "up")))
		must(t, txn.Delete([]byte{kindFormat}))
		return txn.Set(namePrefix(kindMetaV1, "up"), v)
	})

	db = openT(t, dir)
	ob = outboxT(t, db, "up", Config{})
	if got := ob.Stats(); got.Depth != want.Depth || got.Tail != want.Tail || got.Bytes != want.Bytes {
		t.Fatalf("after migration: %+v, want %+v", got, want)
	}
	nums, seqs := readAll(t, ob)
	if len(nums) != 90 || nums[0] != 10 || seqs[0] != 11 {
		t.Fatalf("records after migration: %d, first %v %v", len(nums), nums[:1], seqs[:1])
	}
	appendN(t, ob, 100, 1, 50)
	if tail := ob.Stats().Tail; tail != want.Tail+1 {
		t.Fatalf("tail %d after one more append, want %d", tail, want.Tail+1)
	}
	must(t, db.Close())

	rawBadger(t, dir, func(txn *badger.Txn) error {
		if _, err := txn.Get(namePrefix(kindMetaV1, "up")); !errors.Is(err, badger.ErrKeyNotFound) {
			t.Errorf("format 1 meta still there: %v", err)
		}
		if _, err := txn.Get(namePrefix(kindMeta, "up")); err != nil {
			t.Errorf("format 2 meta: %v", err)
		}
		v, err := getValue(txn, []byte{kindFormat})
		if err != nil {
			return err
		}
		if len(v) != 1 || v[0] != formatVersion {
			t.Errorf("format marker %v, want %d", v, formatVersion)
		}
		return nil
	})
}

// A store of a newer format than this code knows is refused, not misread.
func TestNewerFormatRefused(t *testing.T) {
	dir := t.TempDir()
	db := openT(t, dir)
	must(t, db.Close())
	rawBadger(t, dir, func(txn *badger.Txn) error { return txn.Set([]byte{kindFormat}, []byte{formatVersion + 1}) })
	db, err := Open(Options{Dir: dir, Logger: testLogger(t), MinFreeBytes: -1, NoRecover: true})
	if err == nil {
		db.Close()
		t.Fatal("opened a store of a newer format")
	}
}
