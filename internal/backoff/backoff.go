// Package backoff owns the one retry delay of edged: exponential from a minimum to a cap, with
// equal jitter, and a sleep that gives way to cancellation. The forwarders (bridge), the serial
// ports (hardware) and the Modbus buses (hardware/modbus) reconnect with it, so that parts that
// failed together (one uplink, one USB hub) do not retry in lockstep.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Delay is the wait before attempt n (1 = the first retry): d = min*2^(n-1) capped at max, drawn
// uniformly from [d/2, d] ("equal jitter": never zero while d > 1ns, never above max).
func Delay(min, max time.Duration, attempt int) time.Duration {
	d := min
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// Backoff counts attempts for Delay; the zero count is the first retry. Not safe for
// concurrent use: each reconnect loop owns one.
type Backoff struct {
	Min, Max time.Duration
	n        int
}

// Next returns the delay before the next attempt and counts it.
func (b *Backoff) Next() time.Duration {
	b.n++
	return Delay(b.Min, b.Max, b.n)
}

// Reset starts again from Min, after a success.
func (b *Backoff) Reset() { b.n = 0 }

// Sleep waits d or until ctx is done; it reports whether ctx is still live, so a loop can
// `if !backoff.Sleep(ctx, d) { return }`.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
