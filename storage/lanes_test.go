package storage

import (
	"context"
	"errors"
	"testing"

	"github.com/edged-dev/edged/wire"
)

// TestAppendLanesOneCommit: parts for three outboxes and a keep-latest store go out in one
// group commit (one fsync); a part refused by its outbox's limits (when_full: reject) fails
// alone.
func TestAppendLanesOneCommit(t *testing.T) {
	db := openT(t, t.TempDir())
	hi := outboxT(t, db, "c#p8", Config{})
	lo := outboxT(t, db, "c#p2", Config{})
	full := outboxT(t, db, "c#full", Config{MaxMessages: 2, WhenFull: Reject})
	lt, err := db.Latest("c#p5-latest", 0)
	must(t, err)
	parts := []*LaneAppend{
		{Outbox: hi, Envs: []*wire.Envelope{env(1, 10), env(2, 10)}},
		{Outbox: lo, Envs: []*wire.Envelope{env(3, 10)}},
		{Outbox: full, Envs: []*wire.Envelope{env(4, 10), env(5, 10), env(6, 10)}},
		{Latest: lt, Envs: []*wire.Envelope{env(7, 10), env(17, 10)}}, // same topic (i%10): one kept
	}
	c0 := db.Stats().Commits
	db.AppendLanes(context.Background(), parts)
	if c := db.Stats().Commits - c0; c != 1 {
		t.Fatalf("%d group commits for one AppendLanes, want 1", c)
	}
	for i, p := range parts {
		if (p.Err != nil) != (i == 2) {
			t.Fatalf("part %d: err %v", i, p.Err)
		}
	}
	if !errors.Is(parts[2].Err, ErrFull) {
		t.Fatalf("refused part: %v, want ErrFull", parts[2].Err)
	}
	if hi.Stats().Depth != 2 || lo.Stats().Depth != 1 || full.Stats().Depth != 0 || lt.Stats().Depth != 1 {
		t.Fatalf("depths %d %d %d %d", hi.Stats().Depth, lo.Stats().Depth, full.Stats().Depth, lt.Stats().Depth)
	}
}
