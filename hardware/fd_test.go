//go:build linux

package hardware

import (
	"context"
	"errors"
	"github.com/edged-dev/edged/hardware/hwkit"
	"github.com/edged-dev/edged/internal/testutil"
	"strings"
	"sync"
	"testing"
	"time"

	"go.bug.st/serial"
)

// Without a reserve, a port opened when every low fd is taken would panic go.bug.st/serial's
// select; openSerial refuses it with an error instead.
func TestOpenRefusesPortAboveFDSetSize(t *testing.T) {
	dev := newDevice(t)
	testutil.ExhaustLowFDs(t)
	var reserved []int
	sp, err := openSerial(dev.path(), &serial.Mode{BaudRate: 9600}, &reserved)
	if err == nil {
		sp.Close()
		t.Fatal("port with fd >= 1024 was opened")
	}
	if !strings.Contains(err.Error(), ">= 1024") {
		t.Errorf("error = %v", err)
	}
}

// The Manager reserved low fds when it was created, so its port still opens, and works, after
// the process ran out of low fds.
func TestReservedLowFDsKeepPortUsable(t *testing.T) {
	dev := newDevice(t)
	local := newFakeLocal()
	m, err := New(Config{Serial: []SerialConfig{{Name: "p", Line: hwkit.Line{Port: dev.path()}, Topic: "s/p",
		Away: hwkit.Away{Reopen: Backoff{Min: time.Millisecond, Max: 10 * time.Millisecond}}}}}, local, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	testutil.ExhaustLowFDs(t)
	r := runManager(t, m)
	r.waitState(t, "p", StateOpen) // openSerial refuses fds >= 1024, so open means low fds
	dev.write(t, []byte("low fds\n"))
	expectPayloads(t, local, "s/p", "low fds")
}

// A panic inside the serial library's Read becomes a port error and a reopen, not a crash.
func TestReadPanicIsRecovered(t *testing.T) {
	local := newFakeLocal()
	m, err := New(Config{Serial: []SerialConfig{{Name: "p", Line: hwkit.Line{Port: "/dev/fake"}, Topic: "s/p",
		Away: hwkit.Away{Reopen: Backoff{Min: time.Millisecond, Max: 5 * time.Millisecond}}}}}, local, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	opens := 0
	m.ports[0].opener = opener{
		open: func(string, *serial.Mode, *[]int) (serial.Port, error) {
			mu.Lock()
			defer mu.Unlock()
			opens++
			return &panicPort{closed: make(chan struct{})}, nil
		},
		close: func(sp serial.Port, _ *[]int) error { return sp.Close() },
	}
	r := runManager(t, m)
	waitFor(t, "recovered panics and reopens", func() error {
		s := r.status("p")
		if s.Reopens < 2 || !strings.Contains(s.LastError, "panicked") {
			return errors.New(s.State + " " + s.LastError)
		}
		return nil
	})
}

func runManager(t *testing.T, m *Manager) *running {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return &running{m: m, stop: stop}
}

// panicPort fails like go.bug.st/serial does with an fd >= 1024.
type panicPort struct {
	once   sync.Once
	closed chan struct{}
}

func (p *panicPort) Read([]byte) (int, error) {
	var fds [16]int
	i := 1024
	return fds[i%1024+16], nil // index out of range, as in unix.FdSet.Set
}
func (p *panicPort) Write(b []byte) (int, error)                          { return len(b), nil }
func (p *panicPort) SetMode(*serial.Mode) error                           { return nil }
func (p *panicPort) Drain() error                                         { return nil }
func (p *panicPort) ResetInputBuffer() error                              { return nil }
func (p *panicPort) ResetOutputBuffer() error                             { return nil }
func (p *panicPort) SetDTR(bool) error                                    { return nil }
func (p *panicPort) SetRTS(bool) error                                    { return nil }
func (p *panicPort) GetModemStatusBits() (*serial.ModemStatusBits, error) { return nil, nil }
func (p *panicPort) SetReadTimeout(time.Duration) error                   { return nil }
func (p *panicPort) Break(time.Duration) error                            { return nil }
func (p *panicPort) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}
