package storage

import (
	"os"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// TestManyEntriesReopen writes enough to grow table builders past their first buffer and to
// run many flushes and compactions (the 32-bit ristretto allocator bug corrupts exactly this),
// drains part of it, reopens and checks every record. Run under GOARCH=386 and qemu-arm.
func TestManyEntriesReopen(t *testing.T) {
	n := scaled(400_000, 100_000)
	if os.Getenv("EDGED_BIG_WITHOUT_WORKAROUND") != "" {
		// Demonstrates the bug on 32-bit: badger's default table sizing.
		tuneHook = func(o *badger.Options) { o.BaseTableSize = 2 << 20; o.TableSizeMultiplier = 2 }
		defer func() { tuneHook = nil }()
	}
	dir := t.TempDir()
	db := openT(t, dir)
	ob := outboxT(t, db, "big", Config{})
	appendBatch(t, ob, 0, n, 200, 500)
	must(t, ob.Ack(uint64(n/4)))
	t.Logf("%d records written, store %d MB, %d commits", n, dirSize(dir)>>20, db.Stats().Commits)
	must(t, db.Close())

	db = openT(t, dir)
	ob = outboxT(t, db, "big", Config{})
	if s := ob.Stats(); s.Depth != int64(n-n/4) {
		t.Fatalf("after reopen depth %d, want %d", s.Depth, n-n/4)
	}
	nums, _ := readAll(t, ob)
	if len(nums) != n-n/4 {
		t.Fatalf("read %d records, want %d", len(nums), n-n/4)
	}
	for i, v := range nums {
		if v != n/4+i {
			t.Fatalf("record %d is %d, want %d", i, v, n/4+i)
		}
	}
}
