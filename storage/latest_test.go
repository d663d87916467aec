package storage

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/edged-dev/edged/wire"
)

func latestEnv(topic string, i int) *wire.Envelope {
	return &wire.Envelope{ID: wire.NewID(), Topic: topic, Payload: []byte(fmt.Sprintf("v=%d", i)), QoS: 1, Time: time.Now().UnixMilli()}
}

// TestLatestKeepsNewestPerTopic: 1,000 updates to 10 topics leave 10 messages, the newest of
// each, 990 (+2 below) counted as superseded; the state survives a reopen.
func TestLatestKeepsNewestPerTopic(t *testing.T) {
	dir := t.TempDir()
	db := openT(t, dir)
	l, err := db.Latest("c#latest", 0)
	must(t, err)
	ctx := context.Background()
	for i := 0; i < 1000; i++ {
		must(t, l.Put(ctx, latestEnv(fmt.Sprintf("t/%d", i%10), i)))
	}
	// One call with several updates of one topic: the last wins.
	must(t, l.Put(ctx, latestEnv("t/0", 2000), latestEnv("t/0", 2001)))
	check := func(l *Latest) {
		t.Helper()
		st := l.Stats()
		if st.Depth != 10 || st.Drops[ReasonSuperseded] != 992 {
			t.Fatalf("depth %d superseded %d, want 10 and 992", st.Depth, st.Drops[ReasonSuperseded])
		}
		recs, err := l.Read(100, 0)
		must(t, err)
		if len(recs) != 10 {
			t.Fatalf("read %d, want 10", len(recs))
		}
		for _, r := range recs {
			var topic, i int
			fmt.Sscanf(r.Env.Topic, "t/%d", &topic)
			fmt.Sscanf(string(r.Env.Payload), "v=%d", &i)
			want := 990 + topic
			if topic == 0 {
				want = 2001
			}
			if i != want {
				t.Fatalf("topic %s holds %d, want %d", r.Env.Topic, i, want)
			}
		}
	}
	check(l)
	must(t, db.Close())
	db = openT(t, dir)
	l, err = db.Latest("c#latest", 0)
	must(t, err)
	check(l)

	// Remove only what was read: a topic updated since keeps the newer message.
	recs, err := l.Read(100, 0)
	must(t, err)
	must(t, l.Put(ctx, latestEnv("t/3", 5000)))
	must(t, l.Remove(recs))
	left, err := l.Read(100, 0)
	must(t, err)
	if len(left) != 1 || string(left[0].Env.Payload) != "v=5000" {
		t.Fatalf("after remove: %d left (%v), want only t/3 v=5000", len(left), left)
	}
	if st := l.Stats(); st.Depth != 1 || st.Bytes != int64(left[0].Size) {
		t.Fatalf("stats after remove: depth %d bytes %d, want 1 and %d", st.Depth, st.Bytes, left[0].Size)
	}
}

// TestLatestTTL: a message older than the store's TTL is dropped (counted), not returned.
func TestLatestTTL(t *testing.T) {
	db := openT(t, t.TempDir())
	l, err := db.Latest("c#ttl", 50*time.Millisecond)
	must(t, err)
	must(t, l.Put(context.Background(), latestEnv("a", 1), latestEnv("b", 2)))
	time.Sleep(80 * time.Millisecond)
	recs, err := l.Read(10, 0)
	must(t, err)
	if len(recs) != 0 {
		t.Fatalf("read %d expired messages", len(recs))
	}
	if st := l.Stats(); st.Depth != 0 || st.Drops[ReasonTTL] != 2 {
		t.Fatalf("depth %d ttl drops %d, want 0 and 2", st.Depth, st.Drops[ReasonTTL])
	}
}
