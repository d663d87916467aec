package backoff

import (
	"context"
	"testing"
	"time"
)

func TestDelayBounds(t *testing.T) {
	const min, max = 100 * time.Millisecond, time.Second
	for _, tc := range []struct {
		attempt int
		lo, hi  time.Duration
	}{
		{1, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 100 * time.Millisecond, 200 * time.Millisecond},
		{4, 400 * time.Millisecond, 800 * time.Millisecond},
		{5, 500 * time.Millisecond, time.Second}, // 1.6s capped at max
		{1000, 500 * time.Millisecond, time.Second},
	} {
		for i := 0; i < 200; i++ {
			if d := Delay(min, max, tc.attempt); d < tc.lo || d > tc.hi {
				t.Fatalf("attempt %d: %v outside [%v, %v]", tc.attempt, d, tc.lo, tc.hi)
			}
		}
	}
	if d := Delay(0, time.Second, 3); d != 0 {
		t.Fatalf("min 0: %v", d)
	}
	if d := Delay(1, 1, 7); d != 1 {
		t.Fatalf("1ns: %v", d)
	}
}

// Jitter is what keeps ports that failed together from retrying in lockstep: 100 draws of one
// delay must not all be equal.
func TestDelayJitters(t *testing.T) {
	seen := map[time.Duration]bool{}
	for i := 0; i < 100; i++ {
		seen[Delay(time.Second, time.Second, 1)] = true
	}
	if len(seen) < 2 {
		t.Fatalf("no jitter: %v", seen)
	}
}

func TestBackoffResets(t *testing.T) {
	b := &Backoff{Min: time.Millisecond, Max: time.Hour}
	for i := 0; i < 10; i++ {
		b.Next()
	}
	if d := b.Next(); d < 512*time.Millisecond {
		t.Fatalf("11th delay %v, want >= 512ms", d)
	}
	b.Reset()
	if d := b.Next(); d > time.Millisecond {
		t.Fatalf("after reset %v, want <= 1ms", d)
	}
}

func TestSleep(t *testing.T) {
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("live context: Sleep reported cancelled")
	}
	if !Sleep(context.Background(), 0) {
		t.Fatal("zero delay on a live context reported cancelled")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("cancelled context: Sleep reported live")
	}
	if Sleep(ctx, 0) {
		t.Fatal("cancelled context, zero delay: Sleep reported live")
	}
}
