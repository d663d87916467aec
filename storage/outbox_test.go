package storage

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/edged-dev/edged/internal/confkit"
)

func TestAppendReadAckReopen(t *testing.T) {
	dir := t.TempDir()
	db := openT(t, dir)
	ob := outboxT(t, db, "cloud", Config{})
	appendN(t, ob, 0, 100, 50)
	nums, seqs := readAll(t, ob)
	if len(nums) != 100 || seqs[0] != 1 || seqs[99] != 100 {
		t.Fatalf("read %d records, seqs %v..", len(nums), seqs[:3])
	}
	for i, n := range nums {
		if n != i {
			t.Fatalf("record %d has payload %d", i, n)
		}
	}
	// maxBytes and maxMsgs bound a read, but one record always comes back.
	recs, err := ob.Read(0, 10, 1)
	must(t, err)
	if len(recs) != 1 {
		t.Fatalf("maxBytes 1: got %d records", len(recs))
	}
	recs, err = ob.Read(5, 10, 1<<20)
	must(t, err)
	if len(recs) != 10 || recs[0].Seq != 6 {
		t.Fatalf("read after 5: %d records from %d", len(recs), recs[0].Seq)
	}
	must(t, ob.Ack(40))
	st := ob.Stats()
	if st.Depth != 60 || st.Head != 41 || st.Tail != 100 || st.Bytes <= 0 || st.OldestAge < 0 {
		t.Fatalf("stats after ack: %+v", st)
	}
	must(t, ob.Ack(10)) // below head: no-op
	must(t, db.Close())

	db = openT(t, dir)
	ob = outboxT(t, db, "cloud", Config{})
	if s := ob.Stats(); s.Depth != 60 || s.Head != 41 || s.Bytes != st.Bytes {
		t.Fatalf("after reopen %+v, before %+v", s, st)
	}
	nums, _ = readAll(t, ob)
	if len(nums) != 60 || nums[0] != 40 {
		t.Fatalf("after reopen: %d records starting %d", len(nums), nums[0])
	}
	appendN(t, ob, 100, 1, 10)
	if s := ob.Stats(); s.Tail != 101 {
		t.Fatalf("seq reused after reopen: tail %d", s.Tail)
	}
	must(t, ob.Ack(1000))
	if s := ob.Stats(); s.Depth != 0 || s.Bytes != 0 || s.Head != 102 || s.OldestAge != 0 {
		t.Fatalf("after full ack: %+v", s)
	}
	if recs, _ := ob.Read(0, 10, 0); len(recs) != 0 {
		t.Fatalf("empty outbox read %d", len(recs))
	}
}

func TestOutboxesAreIndependent(t *testing.T) {
	db := openT(t, t.TempDir())
	a := outboxT(t, db, "a", Config{})
	ab := outboxT(t, db, "ab", Config{}) // "a" must not be a prefix of "ab"
	appendN(t, a, 0, 3, 10)
	appendN(t, ab, 100, 5, 10)
	na, _ := readAll(t, a)
	nab, _ := readAll(t, ab)
	if len(na) != 3 || len(nab) != 5 || nab[0] != 100 {
		t.Fatalf("a=%v ab=%v", na, nab)
	}
	if got := len(db.Stats().Outboxes); got != 2 {
		t.Fatalf("%d outboxes", got)
	}
}

func TestNotify(t *testing.T) {
	db := openT(t, t.TempDir())
	ob := outboxT(t, db, "n", Config{})
	select {
	case <-ob.Notify():
		t.Fatal("notified before any append")
	default:
	}
	appendN(t, ob, 0, 3, 10)
	select {
	case <-ob.Notify():
	case <-time.After(time.Second):
		t.Fatal("no notification")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatal(err)
	}
	err := Config{MaxBytes: -1, MaxMessages: -5, TTL: -time.Second, WhenFull: "drop_newest"}.Validate()
	var keys []string
	for _, e := range confkit.Flatten(err) {
		var ke *confkit.KeyError
		if !errors.As(e, &ke) {
			t.Fatalf("not a KeyError: %v", e)
		}
		keys = append(keys, ke.Key)
	}
	if len(keys) != 4 || keys[0] != "max_bytes" || keys[3] != "when_full" {
		t.Fatalf("keys %v (%v)", keys, err)
	}
	if e := (Config{WhenFull: "drop_newest"}).Validate().Error(); e != `when_full: must be "drop_oldest" or "reject", got "drop_newest"` {
		t.Fatalf("message %q", e)
	}
	c := Config{}
	c.ApplyDefaults()
	if c != Defaults() || c.MaxBytes != 1<<30 || c.MaxMessages != 5000000 || c.TTL != 168*time.Hour || c.WhenFull != DropOldest {
		t.Fatalf("defaults %+v", c)
	}
}

func TestBoundsDropOldest(t *testing.T) {
	db := openT(t, t.TempDir())
	ob := outboxT(t, db, "d", Config{MaxMessages: 10})
	appendN(t, ob, 0, 25, 10)
	nums, _ := readAll(t, ob)
	if len(nums) != 10 || nums[0] != 15 || nums[9] != 24 {
		t.Fatalf("kept %v", nums)
	}
	s := ob.Stats()
	if s.Drops[ReasonMaxMessages] != 15 || s.Depth != 10 {
		t.Fatalf("stats %+v", s)
	}
	// One append bigger than the room left drops as many as needed, in one commit.
	appendBatch(t, ob, 100, 7, 10, 7)
	nums, _ = readAll(t, ob)
	if len(nums) != 10 || nums[0] != 22 || nums[9] != 106 {
		t.Fatalf("after batch %v", nums)
	}

	// max_bytes
	ob2 := outboxT(t, db, "b", Config{MaxBytes: 8 << 10})
	appendN(t, ob2, 0, 100, 500)
	s2 := ob2.Stats()
	if s2.Bytes > 8<<10 || s2.Drops[ReasonMaxBytes] == 0 || s2.Depth+int64(s2.Drops[ReasonMaxBytes]) != 100 {
		t.Fatalf("max_bytes stats %+v", s2)
	}
	nums, _ = readAll(t, ob2)
	if nums[len(nums)-1] != 99 || len(nums) != int(s2.Depth) {
		t.Fatalf("max_bytes kept %v", nums)
	}
	// A message larger than the whole outbox is refused even under drop_oldest.
	if err := ob2.Append(context.Background(), env(1, 9<<10)); !errors.Is(err, ErrFull) {
		t.Fatalf("oversized: %v", err)
	}
}

func TestBoundsReject(t *testing.T) {
	db := openT(t, t.TempDir())
	ob := outboxT(t, db, "r", Config{MaxMessages: 5, WhenFull: Reject})
	appendN(t, ob, 0, 5, 10)
	err := ob.Append(context.Background(), env(5, 10))
	if !errors.Is(err, ErrFull) {
		t.Fatalf("want ErrFull, got %v", err)
	}
	if s := ob.Stats(); s.Depth != 5 || s.Rejected != 1 || s.Tail != 5 {
		t.Fatalf("stats %+v", s)
	}
	must(t, ob.Ack(2))
	appendN(t, ob, 5, 2, 10)
	nums, _ := readAll(t, ob)
	if len(nums) != 5 || nums[0] != 2 || nums[4] != 6 {
		t.Fatalf("kept %v", nums)
	}
}

func TestBoundsTTL(t *testing.T) {
	db := openT(t, t.TempDir(), func(o *Options) { o.GCInterval = 50 * time.Millisecond })
	ob := outboxT(t, db, "t", Config{TTL: time.Second})
	appendN(t, ob, 0, 20, 10)
	// Quiet: ~1.1 s (the TTL plus one 50 ms housekeeping tick). The deadline is for a
	// machine loaded with -race and parallel builds, where a tick can be late by seconds.
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		if s := ob.Stats(); s.Depth != 0 || s.Drops[ReasonTTL] != 20 {
			return errors.New("not expired yet")
		}
		return nil
	})
	// Expiry also happens on append, before the housekeeping tick.
	db2 := openT(t, t.TempDir(), func(o *Options) { o.GCInterval = time.Hour })
	ob2 := outboxT(t, db2, "t", Config{TTL: time.Second})
	appendN(t, ob2, 0, 5, 10)
	time.Sleep(1100 * time.Millisecond)
	appendN(t, ob2, 5, 1, 10)
	if s := ob2.Stats(); s.Depth != 1 || s.Drops[ReasonTTL] != 5 {
		t.Fatalf("stats %+v", s)
	}
}

func TestDeadLetters(t *testing.T) {
	dir := t.TempDir()
	db := openT(t, dir)
	ob := outboxT(t, db, "dl", Config{})
	appendN(t, ob, 0, 10, 20)
	must(t, ob.DeadLetter(1, "http 400: bad request")) // the head
	must(t, ob.DeadLetter(5, "http 422"))
	if err := ob.DeadLetter(5, "again"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("twice: %v", err)
	}
	if err := ob.DeadLetter(99, "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	s := ob.Stats()
	if s.Depth != 8 || s.DLQDepth != 2 || s.Head != 2 {
		t.Fatalf("stats %+v", s)
	}
	nums, _ := readAll(t, ob)
	if len(nums) != 8 || nums[0] != 1 || nums[3] != 5 {
		t.Fatalf("queue %v", nums)
	}
	dl, err := ob.DeadLetters(0, 0)
	must(t, err)
	if len(dl) != 2 || dl[0].Seq != 1 || dl[0].Reason != "http 400: bad request" || payloadNum(dl[0].Env) != 0 || dl[1].Seq != 5 {
		t.Fatalf("dead letters %+v", dl)
	}
	must(t, db.Close())

	db = openT(t, dir)
	ob = outboxT(t, db, "dl", Config{})
	if s := ob.Stats(); s.DLQDepth != 2 {
		t.Fatalf("after reopen %+v", s)
	}
	n, err := ob.Requeue(context.Background(), 5)
	if err != nil || n != 1 {
		t.Fatalf("requeue 5: %d %v", n, err)
	}
	nums, _ = readAll(t, ob)
	if nums[len(nums)-1] != 4 || len(nums) != 9 {
		t.Fatalf("after requeue %v", nums)
	}
	if _, err := ob.Requeue(context.Background(), 5); !errors.Is(err, ErrNotFound) {
		t.Fatalf("requeue twice: %v", err)
	}
	n, err = ob.PurgeDeadLetters(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("purge %d %v", n, err)
	}
	if s := ob.Stats(); s.DLQDepth != 0 || s.DLQBytes != 0 || s.Depth != 9 {
		t.Fatalf("after purge %+v", s)
	}
	// requeue all, across several commits
	ob.Ack(1 << 40)
	appendBatch(t, ob, 0, 700, 20, 100)
	for seq := uint64(12); seq < 12+600; seq++ {
		must(t, ob.DeadLetter(seq, "x"))
	}
	n, err = ob.Requeue(context.Background())
	if err != nil || n != 600 {
		t.Fatalf("requeue all %d %v", n, err)
	}
	if s := ob.Stats(); s.DLQDepth != 0 || s.Depth != 700 {
		t.Fatalf("after requeue all %+v", s)
	}
}

func TestGroupCommit(t *testing.T) {
	db := openT(t, t.TempDir())
	ob := outboxT(t, db, "g", Config{})
	const producers, per = 16, 100
	c0 := db.Stats().Commits
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() { appendN(t, ob, p*per, per, 100) })
	}
	// state writes share the commits too
	wg.Go(func() {
		for i := range 50 {
			must(t, db.State().Put("k"+string(rune('a'+i%26)), []byte("v")))
		}
	})
	wg.Wait()
	commits := db.Stats().Commits - c0
	appends := uint64(producers*per + 50)
	t.Logf("%d appends+puts in %d commits (%.1f per fsync)", appends, commits, float64(appends)/float64(commits))
	if commits >= appends {
		t.Fatalf("no grouping: %d commits for %d appends", commits, appends)
	}
	if s := ob.Stats(); s.Depth != producers*per {
		t.Fatalf("depth %d", s.Depth)
	}
	// Per producer, FIFO order is kept.
	nums, _ := readAll(t, ob)
	last := map[int]int{}
	for _, n := range nums {
		p := n / per
		if v, ok := last[p]; ok && n <= v {
			t.Fatalf("producer %d out of order: %d after %d", p, n, v)
		}
		last[p] = n
	}
}

func TestStateStore(t *testing.T) {
	dir := t.TempDir()
	db := openT(t, dir)
	st := db.State()
	must(t, st.Put("sub/c1/a", []byte("1")))
	must(t, st.Put("sub/c1/b", []byte("2")))
	must(t, st.Put("sub/c2/a", []byte("3")))
	must(t, st.Put("ret/x", []byte("4")))
	must(t, st.Delete("sub/c1/b"))
	must(t, st.Delete("nothing"))
	must(t, db.Close())
	db = openT(t, dir)
	var got []string
	must(t, db.State().Scan("sub/", func(k string, v []byte) error {
		got = append(got, k+"="+string(v))
		return nil
	}))
	if len(got) != 2 || got[0] != "sub/c1/a=1" || got[1] != "sub/c2/a=3" {
		t.Fatalf("scan %v", got)
	}
	stop := errors.New("stop")
	if err := db.State().Scan("", func(string, []byte) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("scan error %v", err)
	}
}

func TestClosedAndIdempotentClose(t *testing.T) {
	db := openT(t, t.TempDir())
	ob := outboxT(t, db, "c", Config{})
	must(t, db.Close())
	must(t, db.Close())
	if err := ob.Append(context.Background(), env(1, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
}

// A message as large as the broker's default maximum packet (1 MiB) is stored and read back:
// values above badger's ValueThreshold go to the value log and weigh only a pointer in a
// commit. (Before, anything above ~470 KB failed every append, so a device resent it forever.)
func TestLargeMessage(t *testing.T) {
	dir := t.TempDir()
	db := openT(t, dir)
	ob := outboxT(t, db, "cloud", Config{})
	for _, size := range []int{100 << 10, 1 << 20} {
		must(t, ob.Append(context.Background(), env(size, size)))
	}
	must(t, ob.Append(context.Background(), env(1, 64), env(2, 1<<20), env(3, 64)))
	nums, _ := readAll(t, ob)
	if len(nums) != 5 {
		t.Fatalf("read %d records, want 5", len(nums))
	}
	must(t, db.Close())
	db = openT(t, dir)
	ob = outboxT(t, db, "cloud", Config{})
	recs, err := ob.Read(0, 10, 8<<20)
	must(t, err)
	if len(recs) != 5 || len(recs[1].Env.Payload) != 1<<20 {
		t.Fatalf("after reopen: %d records", len(recs))
	}
}
