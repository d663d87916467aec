package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// mosquittoStartTimeout bounds how long mosquitto may take to listen.
const mosquittoStartTimeout = 10 * time.Second

// Mosquitto is a real mosquitto broker on a loopback port, used as "the cloud".
type Mosquitto struct {
	peer
	Addr string
	Port int
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
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	m := &Mosquitto{peer: peer{t: t, name: "mosquitto", addr: addr, conf: conf}, Addr: addr, Port: port}
	m.start(bin, mosquittoStartTimeout)
	t.Cleanup(m.Stop)
	return m
}

// Stop kills mosquitto (idempotent); Restart brings it back on the same port.
func (m *Mosquitto) Stop() { m.kill() }

// Restart starts a stopped mosquitto again on the same port.
func (m *Mosquitto) Restart() {
	m.t.Helper()
	m.Stop()
	m.start(RequireCommand(m.t, "mosquitto"), mosquittoStartTimeout)
}
