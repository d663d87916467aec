package bridge_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/edged-dev/edged/internal/testutil"
)

// One device publishing QoS 1 with a window of messages in flight (as a paho client does)
// must not pay one fsync per message: the broker hands the client's queued publishes to the
// bridge in one CaptureBatch, and they share one group commit. Counted in storage commits
// (one fsync each) per window of messages.
func TestClientWindowSharesCommits(t *testing.T) {
	dead := testutil.FreeAddr(t)
	s := startStack(t, "", mqttConnector(t, "up", "tcp://"+dead, "forward: [{from: 'dev/#', to: '{topic}'}]"))
	c := localClient(t, s.addr, "device")
	const window, n = 32, 3200

	c0 := s.db.Stats().Commits
	t0 := time.Now()
	// window-1 outstanding + the one being waited for = window in flight
	publishWindow(t, c, window-1, n, func(i int) (string, []byte) { return "dev/t", []byte(fmt.Sprintf("seq=%d", i)) })
	el := time.Since(t0)
	commits := s.db.Stats().Commits - c0
	if d := s.status("up").Depth; d != n {
		t.Fatalf("outbox depth %d, want %d", d, n)
	}
	windows := n / window
	t.Logf("%d messages, %d in flight: %d commits (%.1f per window of %d), %.0f msgs/s",
		n, window, commits, float64(commits)/float64(windows), window, float64(n)/el.Seconds())
	// In steady state a window is taken in two groups: while one commit is in flight the acks
	// of the previous one let the client send that many more, which queue and go together
	// into the next commit (measured: 1.8 per window). One commit per message would be 32;
	// the bound leaves room for a loaded machine descheduling the reader mid-window.
	if commits > uint64(4*windows) {
		t.Errorf("%d commits for %d windows of %d messages: a client's window is not committed together", commits, windows, window)
	}
}
