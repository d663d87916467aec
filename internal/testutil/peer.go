package testutil

import (
	"os/exec"
	"testing"
	"time"
)

// peer is a server program a test talks to (mosquitto, a nats-server node), run from a config
// file and listening on a loopback address. Mosquitto and NATSNode embed it.
type peer struct {
	t             testing.TB
	name          string // in failure messages: "mosquitto", "nats-server n1"
	addr          string // host:port it listens on once up
	conf          string
	cmd           *exec.Cmd
	done          chan struct{}
	Out           *LockedBuffer // its stdout and stderr
	killAtCleanup bool          // its kill is registered with t.Cleanup
}

// start runs bin -c conf and waits up to total until addr accepts connections, failing the
// test early (with the peer's output) if the process exits first.
func (p *peer) start(bin string, total time.Duration) {
	p.t.Helper()
	p.Out = &LockedBuffer{}
	p.cmd = exec.Command(bin, "-c", p.conf)
	p.cmd.Stdout, p.cmd.Stderr = p.Out, p.Out
	p.done = make(chan struct{})
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	done, cmd := p.done, p.cmd
	go func() { _ = cmd.Wait(); close(done) }()
	// Also when the wait below fails the test before the caller registered its own Stop. Once,
	// at the first start, so a Restart does not move the kill ahead of later cleanups.
	if !p.killAtCleanup {
		p.killAtCleanup = true
		p.t.Cleanup(p.kill)
	}
	WaitFor(p.t, total, 20*time.Millisecond, func() error {
		select {
		case <-done:
			p.t.Fatalf("%s exited: %s", p.name, p.Out.String())
		default:
		}
		return dialOK(p.addr)
	})
}

// kill sends SIGKILL (a crash, not a clean shutdown) and waits for the process to exit;
// idempotent.
func (p *peer) kill() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	p.cmd = nil
}
