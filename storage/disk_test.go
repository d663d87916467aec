package storage

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestDiskFull fills a 64 MB tmpfs: appends fail with ErrDiskFull (no SIGBUS, no corruption),
// acks keep working, and everything acknowledged survives a reopen.
func TestDiskFull(t *testing.T) {
	mnt := mountSmall(t, "tmpfs", "64m")
	dir := filepath.Join(mnt, "data")
	const reserve = 24 << 20
	db := openT(t, dir, func(o *Options) { o.MinFreeBytes = reserve })
	ob := outboxT(t, db, "full", Config{})
	var ok int
	var err error
	for i := 0; ; i++ {
		if err = ob.Append(context.Background(), env(i, 1000)); err != nil {
			break
		}
		ok++
	}
	if !errors.Is(err, ErrDiskFull) {
		t.Fatalf("after %d appends: %v", ok, err)
	}
	free, _ := diskFree(dir)
	t.Logf("%d appends of 1 KB before ErrDiskFull (%v); %d MB free", ok, err, free>>20)
	// Still refusing, still alive; state puts refused too; acks work.
	if err := db.State().Put("k", []byte("v")); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("state put on a full disk: %v", err)
	}
	must(t, ob.Ack(100))
	// Someone else frees space (here: our own filler would be removed); simulate by lowering the reserve.
	must(t, db.Close())

	db = openT(t, dir, func(o *Options) { o.MinFreeBytes = reserve })
	ob = outboxT(t, db, "full", Config{})
	nums, _ := readAll(t, ob)
	if len(nums) != ok-100 || nums[0] != 100 || nums[len(nums)-1] != ok-1 {
		t.Fatalf("after reopen: %d records (%v..), want %d", len(nums), nums[:1], ok-100)
	}
	must(t, db.Close())

	// An outside filler takes the space: refused, and accepted again once it is gone.
	db = openT(t, dir, func(o *Options) { o.MinFreeBytes = 8 << 20 })
	ob = outboxT(t, db, "full", Config{})
	appendN(t, ob, ok, 1, 100)
	free, _ = diskFree(dir)
	filler := filepath.Join(mnt, "filler")
	must(t, os.WriteFile(filler, make([]byte, free-(4<<20)), 0o644))
	if err := ob.Append(context.Background(), env(1, 100)); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("with filler: %v", err)
	}
	must(t, os.Remove(filler))
	// The next group measures the disk again: the first retry succeeds when quiet; the
	// deadline only bounds a loaded machine.
	checkFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		return ob.Append(context.Background(), env(ok+1, 100))
	})
}
