package sdnotify_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/edged-dev/edged/internal/sdnotify"
)

// listen binds a real unixgram socket like systemd's and points NOTIFY_SOCKET at it.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatalf("listen %s: %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return c
}

func recv(t *testing.T, c *net.UnixConn, within time.Duration) string {
	t.Helper()
	buf := make([]byte, 4096)
	_ = c.SetReadDeadline(time.Now().Add(within))
	n, _, err := c.ReadFromUnix(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func TestMessages(t *testing.T) {
	tests := []struct {
		name string
		send func() error
		want string
	}{
		{"ready", func() error { return sdnotify.Ready("") }, "READY=1"},
		{"ready with status", func() error { return sdnotify.Ready("listening on 127.0.0.1:1883") }, "READY=1\nSTATUS=listening on 127.0.0.1:1883"},
		{"stopping", sdnotify.Stopping, "STOPPING=1\nSTATUS=stopping"},
		{"status", func() error { return sdnotify.Status("draining cloud") }, "STATUS=draining cloud"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := listen(t, filepath.Join(t.TempDir(), "notify"))
			if err := tc.send(); err != nil {
				t.Fatal(err)
			}
			if got := recv(t, c, 2*time.Second); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestAbstractSocket(t *testing.T) {
	c := listen(t, fmt.Sprintf("@edged-sdnotify-test-%d", os.Getpid()))
	if sent, err := sdnotify.Notify("READY=1"); err != nil || !sent {
		t.Fatalf("sent=%v err=%v", sent, err)
	}
	if got := recv(t, c, 2*time.Second); got != "READY=1" {
		t.Fatalf("got %q", got)
	}
}

func TestNoSocketIsNoop(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if sent, err := sdnotify.Notify("READY=1"); sent || err != nil {
		t.Fatalf("sent=%v err=%v, want a silent no-op", sent, err)
	}
	t.Setenv("WATCHDOG_USEC", "")
	done := make(chan error, 1)
	go func() { done <- sdnotify.Watchdog(context.Background(), nil) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Watchdog without WATCHDOG_USEC must return at once")
	}
}

func TestDeadSocketIsError(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "absent"))
	if _, err := sdnotify.Notify("READY=1"); err == nil {
		t.Fatal("want an error for a socket nobody listens on")
	}
	t.Setenv("NOTIFY_SOCKET", "relative/path")
	if _, err := sdnotify.Notify("READY=1"); err == nil {
		t.Fatal("want an error for a non-absolute socket path")
	}
}

func TestWatchdogInterval(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	tests := []struct {
		usec, pid string
		want      time.Duration
		ok, err   bool
	}{
		{"", "", 0, false, false},
		{"30000000", "", 30 * time.Second, true, false},
		{"30000000", self, 30 * time.Second, true, false},
		{"30000000", "1", 0, false, false}, // meant for another process
		{"abc", "", 0, false, true},
		{"0", "", 0, false, true},
		{"1000", "x", 0, false, true},
	}
	for _, tc := range tests {
		t.Setenv("WATCHDOG_USEC", tc.usec)
		t.Setenv("WATCHDOG_PID", tc.pid)
		d, ok, err := sdnotify.WatchdogInterval()
		if d != tc.want || ok != tc.ok || (err != nil) != tc.err {
			t.Errorf("USEC=%q PID=%q: got (%v, %v, %v), want (%v, %v, err=%v)", tc.usec, tc.pid, d, ok, err, tc.want, tc.ok, tc.err)
		}
	}
}

func TestWatchdogPingsWhileHealthy(t *testing.T) {
	c := listen(t, filepath.Join(t.TempDir(), "notify"))
	t.Setenv("WATCHDOG_USEC", "40000") // 40 ms: pings every 20 ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sdnotify.Watchdog(ctx, func() bool { return true }) }()
	for i := 0; i < 3; i++ {
		if got := recv(t, c, 2*time.Second); got != "WATCHDOG=1" {
			t.Fatalf("ping %d: got %q", i, got)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestWatchdogSilentWhenUnhealthy(t *testing.T) {
	c := listen(t, filepath.Join(t.TempDir(), "notify"))
	t.Setenv("WATCHDOG_USEC", "20000")
	t.Setenv("WATCHDOG_PID", "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sdnotify.Watchdog(ctx, func() bool { return false }) }()
	buf := make([]byte, 64)
	_ = c.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
	if n, _, err := c.ReadFromUnix(buf); err == nil {
		t.Fatalf("unhealthy daemon pinged: %q", buf[:n])
	}
	cancel()
	<-done
}
