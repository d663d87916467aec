//go:build linux

package modbus

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edged-dev/edged/internal/testutil"
)

// Without the hardware serial layer's reserve, an RTU device opened when every low fd is taken
// gets an fd that goburrow/serial's select would panic on; the bus finds it in the library's
// client and refuses it (and retries) instead of polling.
func TestRTUOpenRefusesFDAboveFDSetSize(t *testing.T) {
	testutil.RequireCommand(t, "socat")
	pty := startPTYPair(t, t.TempDir())
	testutil.ExhaustLowFDs(t)
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
