package hardware

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/internal/testutil"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeLocal is an in-memory Local: it records publishes and lets tests deliver commands.
type fakeLocal struct {
	testutil.FakeLocal[*broker.Message]
}

func newFakeLocal() *fakeLocal { return &fakeLocal{} }

// command delivers a message to the subscriber of topic (exact filter), as the broker would.
func (f *fakeLocal) command(t *testing.T, topic string, payload []byte) {
	t.Helper()
	fn := f.Subscriber(topic)
	if fn == nil {
		t.Fatalf("nobody subscribed to %s", topic)
	}
	fn(&broker.Message{Topic: topic, Payload: payload})
}

func (f *fakeLocal) subscribed(topic string) bool { return f.Subscriber(topic) != nil }

func (f *fakeLocal) onTopic(topic string) []*broker.Message { return f.Where(onTopic(topic)) }

// onTopic selects the messages published on topic.
func onTopic(topic string) func(*broker.Message) bool {
	return func(m *broker.Message) bool { return m.Topic == topic }
}

func payloads(ms []*broker.Message) []string {
	var out []string
	for _, m := range ms {
		out = append(out, string(m.Payload))
	}
	return out
}

// device is the far end of a pty pair: what a serial device would see.
type device struct {
	master, slave *os.File
	mu            sync.Mutex
	got           bytes.Buffer
	done          chan struct{}
}

// newDevice opens a pty pair. The test keeps the slave open too, so the master never reads EIO
// before the port under test opens it.
func newDevice(t *testing.T) *device {
	t.Helper()
	// The master is non-blocking, in the runtime poller, so Close interrupts the reader
	// goroutine below (a blocking *os.File read would not return).
	m, s := testutil.OpenPTY(t)
	d := &device{master: m, slave: s, done: make(chan struct{})}
	go func() {
		defer close(d.done)
		buf := make([]byte, 4096)
		for {
			n, err := m.Read(buf)
			d.mu.Lock()
			d.got.Write(buf[:n])
			d.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(d.unplug)
	return d
}

func (d *device) path() string { return d.slave.Name() }

// unplug closes both ends, as pulling the USB cable does to the port; idempotent.
func (d *device) unplug() {
	d.master.Close()
	d.slave.Close()
	<-d.done
}

func (d *device) write(t *testing.T, p []byte) {
	t.Helper()
	if _, err := d.master.Write(p); err != nil {
		t.Fatalf("device write: %v", err)
	}
}

func (d *device) received() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return bytes.Clone(d.got.Bytes())
}

// link makes (or re-points, atomically) a symlink to target, as udev does for a by-id name.
func link(t *testing.T, at, target string) {
	t.Helper()
	tmp := at + ".tmp"
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, at); err != nil {
		t.Fatal(err)
	}
}

func symlinkPath(t *testing.T) string { return filepath.Join(t.TempDir(), "ttyDEV") }

func waitFor(t *testing.T, what string, fn func() error) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, 5*time.Millisecond, func() error {
		if err := fn(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	})
}

// running is a Manager started in the background; stop cancels it and waits for Run to return.
type running struct {
	m    *Manager
	reg  *prometheus.Registry
	stop func()
}

func startManager(t *testing.T, local Local, ports ...SerialConfig) *running {
	t.Helper()
	for i := range ports {
		if ports[i].Reopen.Min == 0 {
			ports[i].Reopen = Backoff{Min: 5 * time.Millisecond, Max: 50 * time.Millisecond}
		}
	}
	reg := prometheus.NewRegistry()
	m, err := New(Config{Serial: ports}, local, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Errorf("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return &running{m: m, reg: reg, stop: stop}
}

// startOpen gives every port without a device (no port, no match) a pty device of its own,
// starts a Manager with the ports and waits until all of them are open. The devices are
// returned in the order of the ports that got one.
func startOpen(t *testing.T, local Local, ports ...SerialConfig) (*running, []*device) {
	t.Helper()
	var devs []*device
	names := make([]string, len(ports))
	for i := range ports {
		if ports[i].Port == "" && ports[i].Match == nil {
			d := newDevice(t)
			ports[i].Port = d.path()
			devs = append(devs, d)
		}
		names[i] = ports[i].Name
	}
	r := startManager(t, local, ports...)
	r.waitOpen(t, names...)
	return r, devs
}

func (r *running) status(name string) PortStatus {
	for _, s := range r.m.Status() {
		if s.Name == name {
			return s
		}
	}
	return PortStatus{}
}

func (r *running) waitState(t *testing.T, name, state string) {
	t.Helper()
	waitFor(t, name+" "+state, func() error {
		if s := r.status(name); s.State != state {
			return fmt.Errorf("state %s (last error %q)", s.State, s.LastError)
		}
		return nil
	})
}

// waitOpen waits until every named port is open.
func (r *running) waitOpen(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		r.waitState(t, n, StateOpen)
	}
}

// metric returns the value of one series from the registry, 0 if absent.
func (r *running) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	v, _ := testutil.MetricValue(t, r.reg, name, want)
	return v
}

// wantMetric reports an error when one series of the registry is not at want.
func (r *running) wantMetric(t *testing.T, want float64, name string, labels ...string) {
	t.Helper()
	if got := r.metric(t, name, labels...); got != want {
		t.Errorf("%s %q = %v, want %v", name, labels, got, want)
	}
}

func expectPayloads(t *testing.T, local *fakeLocal, topic string, want ...string) {
	t.Helper()
	waitFor(t, "payloads on "+topic, func() error {
		got := payloads(local.onTopic(topic))
		if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
			return fmt.Errorf("got %q, want %q", got, want)
		}
		return nil
	})
}

func removeLink(at string) error { return os.Remove(at) }
