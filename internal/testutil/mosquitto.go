package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Mosquitto is a real mosquitto broker on a loopback port, used as "the cloud".
type Mosquitto struct {
	t    testing.TB
	Addr string
	Port int
	conf string
	cmd  *exec.Cmd
	done chan struct{}
	Out  *LockedBuffer
}

// StartMosquitto starts mosquitto on a free loopback port (or on port if > 0, so a test can
// stop and restart "the cloud" at the same address). extra is appended to the config.
func StartMosquitto(t testing.TB, port int, extra string) *Mosquitto {
	t.Helper()
	bin := RequireCommand(t, "mosquitto")
	if port == 0 {
		port = FreePort(t)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "mosquitto.conf")
	body := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\nmax_queued_messages 0\nmax_inflight_messages 0\npersistence false\n%s\n", port, extra)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	m := &Mosquitto{t: t, Addr: fmt.Sprintf("127.0.0.1:%d", port), Port: port, conf: conf}
	m.start(bin)
	t.Cleanup(m.Stop)
	return m
}

func (m *Mosquitto) start(bin string) {
	m.t.Helper()
	m.Out = &LockedBuffer{}
	m.cmd = exec.Command(bin, "-c", m.conf)
	m.cmd.Stdout, m.cmd.Stderr = m.Out, m.Out
	m.done = make(chan struct{})
	if err := m.cmd.Start(); err != nil {
		m.t.Fatalf("start mosquitto: %v", err)
	}
	done := m.done
	cmd := m.cmd
	go func() { _ = cmd.Wait(); close(done) }()
	WaitFor(m.t, 10*time.Second, 20*time.Millisecond, func() error {
		select {
		case <-done:
			m.t.Fatalf("mosquitto exited: %s", m.Out.String())
		default:
		}
		return dialOK(m.Addr)
	})
}

// Stop kills mosquitto (idempotent); Start brings it back on the same port.
func (m *Mosquitto) Stop() {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Kill()
	<-m.done
	m.cmd = nil
}

// Restart starts a stopped mosquitto again on the same port.
func (m *Mosquitto) Restart() {
	m.t.Helper()
	m.Stop()
	m.start(RequireCommand(m.t, "mosquitto"))
}
