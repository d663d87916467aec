package storage

import (
	"context"
	"errors"
	"testing"

	"github.com/edged-dev/edged/wire"
)

// Options.Wire is the only payload limit: an outbox stores and reads back what it allows (a
// broker configured for larger packets), and refuses beyond it, so nothing is stored that
// could not be read back.
func TestWireLimits(t *testing.T) {
	big := env(1, wire.DefaultMaxPayload+1000)

	def := openT(t, t.TempDir())
	ob := outboxT(t, def, "x", Config{})
	if err := ob.Append(context.Background(), big); !errors.Is(err, wire.ErrLimit) {
		t.Fatalf("default limits stored %d bytes: %v", len(big.Payload), err)
	}

	db := openT(t, t.TempDir(), func(o *Options) { o.Wire = wire.Limits{MaxPayload: 2 * wire.DefaultMaxPayload} })
	ob = outboxT(t, db, "x", Config{})
	must(t, ob.Append(context.Background(), big))
	recs, err := ob.Read(0, 10, 4*wire.DefaultMaxPayload)
	if err != nil || len(recs) != 1 || len(recs[0].Env.Payload) != len(big.Payload) {
		t.Fatalf("read back: %d records, %v", len(recs), err)
	}
	must(t, ob.DeadLetter(recs[0].Seq, "test"))
	dl, err := ob.DeadLetters(0, 10)
	if err != nil || len(dl) != 1 || dl[0].Env == nil || len(dl[0].Env.Payload) != len(big.Payload) {
		t.Fatalf("dead letter read back: %+v, %v", dl, err)
	}
	if err := ob.Append(context.Background(), env(2, 2*wire.DefaultMaxPayload+1)); !errors.Is(err, wire.ErrLimit) {
		t.Fatalf("beyond Options.Wire: %v", err)
	}
}
