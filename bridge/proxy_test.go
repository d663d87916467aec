package bridge_test

import (
	"time"

	"github.com/edged-dev/edged/internal/testutil"
)

// flapOnProgress cuts the link for 50 ms each time the cloud has received another fifth of
// n messages, until stop; it returns the number of cuts. Cuts follow progress rather than the
// clock, so a drain fast enough to fit one timed window is still cut several times.
func flapOnProgress(p *testutil.Relay, sub *cloudSub, n int, stop <-chan struct{}) int {
	flaps, next := 0, n/5
	for {
		select {
		case <-stop:
			return flaps
		case <-time.After(time.Millisecond):
		}
		if sub.count() < next {
			continue
		}
		p.Set(false)
		time.Sleep(50 * time.Millisecond)
		p.Set(true)
		flaps++
		next += n / 5
	}
}
