package storage

import (
	"testing"
	"time"
)

// TestReclaimAfterDrain: a drained backlog gives its disk space back (DropPrefix of the empty
// queue, run by housekeeping), not at some later compaction.
func TestReclaimAfterDrain(t *testing.T) {
	n := scaled(200_000, 50_000)
	dir := t.TempDir()
	db := openT(t, dir, func(o *Options) { o.GCInterval = 200 * time.Millisecond })
	ob := outboxT(t, db, "r", Config{})
	keep := outboxT(t, db, "keep", Config{})
	appendN(t, keep, 0, 10, 100)
	appendBatch(t, ob, 0, n, 200, 500)
	full := dirSize(dir)
	var after uint64
	for {
		recs, err := ob.Read(after, 1000, 1<<20)
		must(t, err)
		if len(recs) == 0 {
			break
		}
		must(t, ob.Ack(recs[len(recs)-1].Seq))
		after = recs[len(recs)-1].Seq
	}
	// Housekeeping (a 200 ms tick) drops the prefix; badger deletes the tables as compaction
	// and DropPrefix let go of them. Any change of the store's size or commits is progress.
	waitProgress(t, 30*time.Second, 100*time.Millisecond, func() uint64 {
		return uint64(dirSize(dir)) + db.commits.Load()
	}, func() error {
		if s := dirSize(dir); s > full/3 {
			return errorf("store still %d MB (was %d MB)", s>>20, full>>20)
		}
		return nil
	})
	t.Logf("%d messages: store %d MB full, %d MB after drain", n, full>>20, dirSize(dir)>>20)
	// The other outbox is untouched, and the drained one still works with fresh sequences.
	if nums, _ := readAll(t, keep); len(nums) != 10 {
		t.Fatalf("other outbox lost records: %d", len(nums))
	}
	appendN(t, ob, 0, 1, 10)
	if s := ob.Stats(); s.Tail != uint64(n+1) || s.Depth != 1 {
		t.Fatalf("after reclaim %+v", s)
	}
}

// TestIdleWritesNothing: an idle store (housekeeping ticking) writes no bytes to the device.
func TestIdleWritesNothing(t *testing.T) {
	dir := t.TempDir()
	db := openT(t, dir, func(o *Options) { o.GCInterval = 100 * time.Millisecond })
	ob := outboxT(t, db, "idle", Config{TTL: time.Hour})
	appendBatch(t, ob, 0, 50_000, 200, 500)
	recs, _ := ob.Read(0, 100, 0)
	must(t, ob.Ack(recs[len(recs)-1].Seq))
	time.Sleep(3 * time.Second) // flushes and compactions triggered by the load settle
	idle := time.Duration(scaled(10, 3)) * time.Second
	w0 := db.Stats().BytesWritten
	time.Sleep(idle)
	w := db.Stats().BytesWritten - w0
	perHour := float64(w) * float64(time.Hour) / float64(idle)
	t.Logf("idle %v: %d bytes written (%.0f bytes/hour extrapolated)", idle, w, perHour)
	if w > 0 {
		t.Fatalf("idle store wrote %d bytes in %v", w, idle)
	}
}

func errorf(f string, a ...any) error { return fmtErr(f, a...) }

// TestReclaimGarbageOfBusyQueue: a queue that never empties gets its acked range tombstoned by
// housekeeping; the remaining records are untouched.
func TestReclaimGarbageOfBusyQueue(t *testing.T) {
	db := openT(t, t.TempDir(), func(o *Options) { o.GCInterval = 100 * time.Millisecond })
	ob := outboxT(t, db, "busy", Config{})
	appendBatch(t, ob, 0, 200_000, 200, 500)
	must(t, ob.Ack(190_000))
	// The tombstoning runs in group commits on the committer (9 s quiet under -race, more on
	// a loaded machine): wait while commits keep coming.
	waitProgress(t, 30*time.Second, 50*time.Millisecond, db.commits.Load, func() error {
		ob.mu.Lock()
		defer ob.mu.Unlock()
		if ob.garbage != 0 {
			return errorf("garbage %d", ob.garbage)
		}
		return nil
	})
	nums, _ := readAll(t, ob)
	if len(nums) != 10_000 || nums[0] != 190_000 {
		t.Fatalf("after reclaim: %d records from %d", len(nums), nums[0])
	}
}
