package storage

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edged-dev/edged/wire"
)

// salvageFixture writes a closed store in dir: outbox "a" with 2000 messages of which seq 10
// is a dead letter and 1..100 are acked, outbox "b" with 500, and one broker state key. It
// returns the envelope ids by outbox and sequence.
func salvageFixture(t *testing.T, dir string) map[string]map[uint64]wire.ID {
	t.Helper()
	db := openT(t, dir)
	ids := map[string]map[uint64]wire.ID{"a": {}, "b": {}}
	for name, n := range map[string]int{"a": 2000, "b": 500} {
		ob := outboxT(t, db, name, Config{})
		var es []*wire.Envelope
		for i := 1; i <= n; i++ {
			e := markedEnv(i)
			ids[name][uint64(i)] = e.ID
			es = append(es, e)
			if len(es) == 100 || i == n {
				must(t, ob.Append(context.Background(), es...))
				es = nil
			}
		}
	}
	a := outboxT(t, db, "a", Config{})
	must(t, a.DeadLetter(10, "http 400: bad request"))
	must(t, a.Ack(100))
	must(t, db.State().Put("sess/client-1", []byte("session bytes")))
	must(t, db.Close())
	return ids
}

func damageManifest(t *testing.T, dir string) {
	t.Helper()
	p := filepath.Join(dir, "MANIFEST")
	b, err := os.ReadFile(p)
	must(t, err)
	for i := 8; i < len(b); i += 7 {
		b[i] ^= 0xFF
	}
	must(t, os.WriteFile(p, b, 0o644))
}

// drainIDs reads the whole outbox and checks order and ids.
func drainIDs(t *testing.T, ob *Outbox, ids map[uint64]wire.ID) []uint64 {
	t.Helper()
	var seqs []uint64
	var after uint64
	for {
		recs, err := ob.Read(after, 500, 1<<20)
		must(t, err)
		if len(recs) == 0 {
			return seqs
		}
		for _, r := range recs {
			if r.Env.ID != ids[r.Seq] || !bytes.Equal(r.Env.Payload, markedEnv(int(r.Seq)).Payload) {
				t.Fatalf("%s seq %d: id or payload changed", ob.name, r.Seq)
			}
			if len(seqs) > 0 && r.Seq <= seqs[len(seqs)-1] {
				t.Fatalf("%s: order broken at %d", ob.name, r.Seq)
			}
			seqs = append(seqs, r.Seq)
		}
		after = recs[len(recs)-1].Seq
	}
}

// badger refuses a store whose MANIFEST is damaged; it is moved aside, and every record, dead
// letter and state key is salvaged into the fresh store with its sequence and id.
func TestSalvageAfterManifestDamage(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	ids := salvageFixture(t, dir)
	damageManifest(t, dir)

	c := openCapture(t, dir)
	st := c.db.Stats()
	if st.MovedAside == "" {
		t.Fatal("the damaged store was not moved aside (the test damages nothing badger notices)")
	}
	if _, err := os.Stat(filepath.Join(st.MovedAside, "MANIFEST")); err != nil {
		t.Fatalf("the quarantined store is not kept: %v", err)
	}
	a := outboxT(t, c.db, "a", Config{})
	b := outboxT(t, c.db, "b", Config{})
	if sa := drainIDs(t, a, ids["a"]); len(sa) != 1900 || sa[0] != 101 || sa[len(sa)-1] != 2000 {
		t.Fatalf("a: %d records salvaged", len(sa))
	}
	if sb := drainIDs(t, b, ids["b"]); len(sb) != 500 || sb[0] != 1 {
		t.Fatalf("b: %d records salvaged", len(sb))
	}
	if sv := salvageOf(c.db); sv == nil || sv.Copied != 1900+500+1 || sv.Lost != 0 {
		t.Fatalf("salvage %+v, want 2401 copied, 0 lost", sv)
	}
	if !strings.Contains(c.log.String(), "salvaged 2401 of 2401 records") {
		t.Fatalf("no salvage summary in the log:\n%s", c.log.String())
	}
	dl, err := a.DeadLetters(0, 0)
	must(t, err)
	if len(dl) != 1 || dl[0].Seq != 10 || dl[0].Reason != "http 400: bad request" || dl[0].Env.ID != ids["a"][10] {
		t.Fatalf("dead letters %+v", dl)
	}
	if s := a.Stats(); s.Depth != 1900 || s.DLQDepth != 1 || s.Head != 101 || s.Tail != 2000 {
		t.Fatalf("a stats %+v", s)
	}
	var state []string
	must(t, c.db.State().Scan("", func(k string, v []byte) error { state = append(state, k+"="+string(v)); return nil }))
	if len(state) != 1 || state[0] != "sess/client-1=session bytes" {
		t.Fatalf("state %v", state)
	}
	// New messages continue the sequence.
	must(t, a.Append(context.Background(), markedEnv(2001)))
	if s := a.Stats(); s.Tail != 2001 {
		t.Fatalf("tail after append %d", s.Tail)
	}
	if v := c.metric(t, "edged_storage_salvaged_records_total", map[string]string{"result": "copied"}); v != 2401 {
		t.Fatalf("salvaged metric %v", v)
	}
}

// Salvage with a damaged table too: what is readable is copied, the unreadable records are
// counted as lost and marked in the dead letters, and the counts agree.
func TestSalvageCountsUnreadableRecords(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	ids := salvageFixture(t, dir)
	flipIn(t, dir, []byte(fmt.Sprintf("PAYLOAD<%06d>", 1200)), 64, false)
	damageManifest(t, dir)

	c := openCapture(t, dir)
	var delivered, lostMarks int
	for _, name := range []string{"a", "b"} {
		ob := outboxT(t, c.db, name, Config{})
		delivered += len(drainIDs(t, ob, ids[name]))
		dl, err := ob.DeadLetters(0, 0)
		must(t, err)
		for _, d := range dl {
			if strings.HasPrefix(d.Reason, ReasonCorrupt) {
				lostMarks++
			}
		}
	}
	if delivered == 0 {
		t.Fatal("nothing salvaged")
	}
	st := salvageOf(c.db)
	if st == nil || st.Lost == 0 {
		t.Fatalf("salvage %+v: want lost records", st)
	}
	if int64(lostMarks) != st.Lost || int64(delivered)+st.Lost != 1900+500 {
		t.Fatalf("delivered %d, lost %d, marked %d: want delivered+lost = 2400 and every loss marked", delivered, st.Lost, lostMarks)
	}
	if !strings.Contains(c.log.String(), fmt.Sprintf("salvaged %d of %d records", st.Copied, st.Copied+st.Lost)) {
		t.Fatalf("no salvage summary in the log:\n%s", c.log.String())
	}
	if v := c.metricSum(t, "edged_storage_corrupt_records_total", map[string]string{"cause": causeSalvage}); int64(v) != st.Lost {
		t.Fatalf("corrupt metric %v != lost %d", v, st.Lost)
	}
}

// A keep-latest store (latest.go) of a store badger refuses is salvaged too: its newest
// message per topic is still there after the move aside, in topic order, and its count is right.
func TestSalvageKeepsLatestStores(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	db := openT(t, dir)
	l, err := db.Latest("cloud#p5-latest", 0)
	must(t, err)
	for i := 1; i <= 300; i++ {
		e := markedEnv(i)
		e.Topic = fmt.Sprintf("state/%02d", i%10)
		must(t, l.Put(context.Background(), e))
	}
	must(t, db.Close())
	damageManifest(t, dir)

	c := openCapture(t, dir)
	if c.db.Stats().MovedAside == "" {
		t.Fatal("the damaged store was not moved aside")
	}
	l2, err := c.db.Latest("cloud#p5-latest", 0)
	must(t, err)
	if s := l2.Stats(); s.Depth != 10 {
		t.Fatalf("keep-latest depth %d after salvage, want 10", s.Depth)
	}
	recs, err := l2.Read(100, 1<<20)
	must(t, err)
	if len(recs) != 10 {
		t.Fatalf("read %d keep-latest records, want 10", len(recs))
	}
	for i, r := range recs {
		// The newest of topic state/0k is message 290+k (300 for k=0).
		want := 290 + i
		if i == 0 {
			want = 300
		}
		var got int
		fmt.Sscanf(string(r.Env.Payload), "%d-", &got)
		if r.Env.Topic != fmt.Sprintf("state/%02d", i) || got != want {
			t.Fatalf("record %d: topic %s message %d, want state/%02d message %d", i, r.Env.Topic, got, i, want)
		}
	}
	if sv := salvageOf(c.db); sv == nil || sv.Lost != 0 || sv.Copied != 10 {
		t.Fatalf("salvage %+v, want 10 copied, 0 lost", sv)
	}
}

// TestSalvageDamagedSequenceEnds: salvage walked every missing sequence one by one, so a
// record key whose sequence a damaged byte made ~2^62 (or a witness tail as large) kept the
// daemon in its start-up salvage forever, writing a dead-letter marker per sequence. The
// copy now ends at once, counts the records it found and writes no markers for the gap.
func TestSalvageDamagedSequenceEnds(t *testing.T) {
	db := openT(t, t.TempDir())
	defer db.Close()
	rec := encodeRecord(1700000000000, mustEnvelope(t))
	prefix := namePrefix(kindRecord, "cloud")
	kvs := []salvageKV{
		{key: seqKey(prefix, 1), val: rec},
		{key: seqKey(prefix, 1<<62), val: rec},
	}
	done := make(chan salvageResult, 1)
	go func() {
		res, err := db.copySalvaged(kvs, map[string]witnessed{"other": {head: 1, tail: math.MaxUint64 - 1, count: 1}})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	select {
	case res := <-done:
		if res.copied != 2 {
			t.Fatalf("copied %d records, want 2", res.copied)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("salvage copy of a damaged sequence still running after 30s")
	}
	if d, err := outboxT(t, db, "cloud", Config{}).DeadLetters(0, 10); err != nil || len(d) != 0 {
		t.Fatalf("%d dead-letter markers for the gap (%v), want none", len(d), err)
	}
}

func mustEnvelope(t *testing.T) []byte {
	t.Helper()
	b, err := wire.MarshalEnvelope(&wire.Envelope{ID: wire.NewID(), Topic: "sensors/t", Payload: []byte("21.5"), QoS: 1})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSalvageSkipsNonUTF8Names: an outbox name read from a damaged key became a metric label
// and Prometheus panicked on it ("label value is not valid UTF-8"): start-up salvage took the
// daemon down. Such keys are now garbage, like keys of any other impossible shape.
func TestSalvageSkipsNonUTF8Names(t *testing.T) {
	db := openT(t, t.TempDir())
	defer db.Close()
	bad := seqKey(namePrefix(kindRecord, "\xff\xfe"), 1)
	res, err := db.copySalvaged([]salvageKV{{key: bad, val: []byte("not a record")}},
		map[string]witnessed{"\xc3": {head: 1, tail: 3, count: 3}})
	if err != nil || res.copied != 0 || res.corrupt != 0 {
		t.Fatalf("%+v, %v", res, err)
	}
}
