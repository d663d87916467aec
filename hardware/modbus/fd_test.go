//go:build linux

package modbus

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edged-dev/edged/internal/testutil"
	"golang.org/x/sys/unix"
)

// exhaustLowFDs raises RLIMIT_NOFILE and opens /dev/null until the kernel hands out fds above
// 1100, so every fd below FD_SETSIZE is taken; they are closed at the end of the test.
func exhaustLowFDs(t *testing.T) {
	t.Helper()
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		t.Skip(err)
	}
	if lim.Cur < 2048 {
		lim.Cur = min(lim.Max, 4096)
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < 2048 {
			t.Skipf("cannot raise RLIMIT_NOFILE to 2048 (max %d): %v", lim.Max, err)
		}
	}
	var held []int
	t.Cleanup(func() {
		for _, fd := range held {
			unix.Close(fd)
		}
	})
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, fd)
		if fd > 1100 {
			return
		}
	}
}

// Without the hardware serial layer's reserve, an RTU device opened when every low fd is taken
// gets an fd that goburrow/serial's select would panic on; the bus finds it in the library's
// client and refuses it (and retries) instead of polling.
func TestRTUOpenRefusesFDAboveFDSetSize(t *testing.T) {
	testutil.RequireCommand(t, "socat")
	pty := startPTYPair(t, t.TempDir())
	exhaustLowFDs(t)
	buses := parseBuses(t, fmt.Sprintf(`
- name: line
  rtu: {port: %s}
  reopen: {min: 10ms, max: 50ms}
  units: [{name: u, id: 1, points: [{name: p, type: holding, address: 0}]}]
`, pty.A))
	m, _ := startManager(t, buses, newFakeLocal())
	testutil.WaitFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		s := m.Status()[0]
		if !strings.Contains(s.LastError, ">= 1024") {
			return fmt.Errorf("state %s, last error %q", s.State, s.LastError)
		}
		if s.State == StateOpen {
			return fmt.Errorf("bus open with a high fd")
		}
		return nil
	})
}

// The positive path (the fd found in a real client) is TestRTUOpenRefusesFDAboveFDSetSize.
func TestClientFDOfAnUnknownShapeIsSkipped(t *testing.T) {
	if fd := clientFD(struct{ transport int }{}); fd != -1 {
		t.Errorf("clientFD of a foreign shape = %d, want -1", fd)
	}
}
