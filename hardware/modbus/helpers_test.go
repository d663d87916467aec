package modbus

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/internal/testutil"
	"github.com/prometheus/client_golang/prometheus"
	mb "github.com/simonvetter/modbus"
	"gopkg.in/yaml.v3"
)

// fakeLocal is an in-memory Local: it records publishes and lets tests deliver commands.
type fakeLocal struct {
	testutil.FakeLocal[*broker.Message]
}

func newFakeLocal() *fakeLocal { return &fakeLocal{} }

// command delivers a message to the subscriber of topic (exact filter), as the broker would,
// once there is one.
func (f *fakeLocal) command(t testing.TB, topic string, payload string) {
	t.Helper()
	var fn func(*broker.Message)
	testutil.WaitFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if fn = f.Subscriber(topic); fn == nil {
			return fmt.Errorf("nobody subscribed to %s", topic)
		}
		return nil
	})
	fn(&broker.Message{Topic: topic, Payload: []byte(payload)})
}

func (f *fakeLocal) onTopic(topic string) []*broker.Message { return f.Where(onTopic(topic)) }

// onTopic selects the messages published on topic.
func onTopic(topic string) func(*broker.Message) bool {
	return func(m *broker.Message) bool { return m.Topic == topic }
}

type testSample struct {
	V  any    `json:"v"`
	T  int64  `json:"t"`
	Q  string `json:"q"`
	at time.Time
}

// samples decodes the JSON values published on topic.
func (f *fakeLocal) samples(t testing.TB, topic string) []testSample {
	t.Helper()
	var out []testSample
	for _, m := range f.onTopic(topic) {
		var s testSample
		d := json.NewDecoder(strings.NewReader(string(m.Payload)))
		d.UseNumber()
		if err := d.Decode(&s); err != nil {
			t.Fatalf("%s: payload %q: %v", topic, m.Payload, err)
		}
		s.at = m.Time
		out = append(out, s)
	}
	return out
}

// last waits for a sample on topic matching ok and returns it.
func (f *fakeLocal) waitSample(t testing.TB, topic string, total time.Duration, ok func(testSample) bool) testSample {
	t.Helper()
	var got testSample
	testutil.WaitFor(t, total, 10*time.Millisecond, func() error {
		ss := f.samples(t, topic)
		for i := len(ss) - 1; i >= 0; i-- {
			if ok(ss[i]) {
				got = ss[i]
				return nil
			}
		}
		if len(ss) > 0 {
			return fmt.Errorf("%s: %d samples, last %+v", topic, len(ss), ss[len(ss)-1])
		}
		return fmt.Errorf("%s: no samples", topic)
	})
	return got
}

// parseBuses reads a hardware.modbus YAML list.
func parseBuses(t testing.TB, y string) []BusConfig {
	t.Helper()
	var buses []BusConfig
	if err := yaml.Unmarshal([]byte(y), &buses); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	return buses
}

// startManager runs the buses until the test ends.
func startManager(t testing.TB, buses []BusConfig, local Local) (*Manager, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := New(buses, local, nil, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return m, reg
}

func unitStatus(m *Manager, bus, unit string) UnitStatus {
	for _, b := range m.Status() {
		if b.Name != bus {
			continue
		}
		for _, u := range b.Units {
			if u.Name == unit {
				return u
			}
		}
	}
	return UnitStatus{}
}

// --- the library's own server, for fast in-process TCP tests -----------------------------------

// memSlave is a set of units with 1000 registers/bits per table; failAt makes register reads
// touching an address answer with an exception. (Silent units are tested against pymodbus: this
// server handles a connection's requests one by one, so a unit that hangs would hang them all.)
type memSlave struct {
	mu     sync.Mutex
	units  map[uint8]*memUnit
	failAt map[uint16]error // holding/input register address -> exception
	srv    *mb.ModbusServer
}

type memUnit struct {
	coils, discrete []bool
	holding, input  []uint16
}

func newMemUnit() *memUnit {
	return &memUnit{coils: make([]bool, 1000), discrete: make([]bool, 1000), holding: make([]uint16, 1000), input: make([]uint16, 1000)}
}

func startMemSlave(t testing.TB, addr string, ids ...uint8) *memSlave {
	t.Helper()
	s := &memSlave{units: map[uint8]*memUnit{}, failAt: map[uint16]error{}}
	for _, id := range ids {
		s.units[id] = newMemUnit()
	}
	s.start(t, addr)
	return s
}

func (s *memSlave) start(t testing.TB, addr string) {
	t.Helper()
	srv, err := mb.NewServer(&mb.ServerConfiguration{URL: "tcp://" + addr, Timeout: 30 * time.Second, MaxClients: 8,
		Logger: logDiscard()}, s)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	t.Cleanup(func() { srv.Stop() })
}

func (s *memSlave) stop() {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	srv.Stop()
}

func (s *memSlave) unit(id uint8) (*memUnit, error) {
	s.mu.Lock()
	u := s.units[id]
	s.mu.Unlock()
	if u == nil {
		return nil, mb.ErrGWTargetFailedToRespond
	}
	return u, nil
}

func (s *memSlave) set(id uint8, fn func(u *memUnit)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fn(s.units[id])
}

// serve reads or writes qty values at addr of the table pick selects in unit id; register
// tables answer with the exception failAt holds for an address in the range.
func serve[T any](s *memSlave, id uint8, pick func(*memUnit) []T, addr, qty uint16, write bool, args []T) ([]T, error) {
	u, err := s.unit(id)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	table := pick(u)
	if int(addr)+int(qty) > len(table) {
		return nil, mb.ErrIllegalDataAddress
	}
	if _, regs := any(table).([]uint16); regs {
		for a := addr; a < addr+qty; a++ {
			if e := s.failAt[a]; e != nil {
				return nil, e
			}
		}
	}
	if write {
		copy(table[addr:], args)
		return nil, nil
	}
	return append([]T(nil), table[addr:addr+qty]...), nil
}

func (s *memSlave) HandleCoils(r *mb.CoilsRequest) ([]bool, error) {
	return serve(s, r.UnitId, func(u *memUnit) []bool { return u.coils }, r.Addr, r.Quantity, r.IsWrite, r.Args)
}

func (s *memSlave) HandleDiscreteInputs(r *mb.DiscreteInputsRequest) ([]bool, error) {
	return serve(s, r.UnitId, func(u *memUnit) []bool { return u.discrete }, r.Addr, r.Quantity, false, nil)
}

func (s *memSlave) HandleHoldingRegisters(r *mb.HoldingRegistersRequest) ([]uint16, error) {
	return serve(s, r.UnitId, func(u *memUnit) []uint16 { return u.holding }, r.Addr, r.Quantity, r.IsWrite, r.Args)
}

func (s *memSlave) HandleInputRegisters(r *mb.InputRegistersRequest) ([]uint16, error) {
	return serve(s, r.UnitId, func(u *memUnit) []uint16 { return u.input }, r.Addr, r.Quantity, false, nil)
}

// --- pymodbus and socat: a Modbus implementation nobody here wrote -------------------------------

const python = "/usr/bin/python3" // Debian's python3-pymodbus is installed for the system python

// requirePymodbus skips (or under CI fails) when the peers are missing.
func requirePymodbus(t testing.TB) {
	t.Helper()
	testutil.RequireCommand(t, "socat")
	if err := exec.Command(python, "-c", "import pymodbus.server, serial_asyncio").Run(); err != nil {
		if testutil.InCI() {
			t.Fatalf("pymodbus not importable by %s: CI must install it (see .ci/run): %v", python, err)
		}
		t.Skipf("pymodbus missing (apt-get install python3-pymodbus python3-serial python3-serial-asyncio socat); skipping outside CI")
	}
}

// ptyPair is a socat pty pair: edged opens A, the slave B. kill unplugs both ends.
type ptyPair struct {
	A, B string
	cmd  *exec.Cmd
	done chan struct{}
}

func startPTYPair(t testing.TB, dir string) *ptyPair {
	t.Helper()
	p := &ptyPair{A: filepath.Join(dir, "ttyA"), B: filepath.Join(dir, "ttyB")}
	p.start(t)
	t.Cleanup(p.kill)
	return p
}

func (p *ptyPair) start(t testing.TB) {
	t.Helper()
	p.cmd = exec.Command("socat", "pty,raw,echo=0,link="+p.A, "pty,raw,echo=0,link="+p.B)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(p.cmd, p.done)
	testutil.WaitFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for _, l := range []string{p.A, p.B} {
			if _, err := os.Stat(l); err != nil {
				return err
			}
		}
		return nil
	})
}

// kill is an unplug: SIGKILL socat, so both ptys vanish at once.
func (p *ptyPair) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	os.Remove(p.A)
	os.Remove(p.B)
}

// pySlave is testdata/slave.py: a pymodbus server with stdin control.
type pySlave struct {
	t     testing.TB
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Scanner
	mu    sync.Mutex
	stder *strings.Builder
}

// startPySlave runs slave.py; args are "rtu DEVICE BAUD" or "tcp HOST:PORT"; units maps unit id
// to its tables ({"hr": [...], "ir": [...], "co": [...], "di": [...]}).
func startPySlave(t testing.TB, units map[int]map[string][]int, args ...string) *pySlave {
	t.Helper()
	js, _ := json.Marshal(units)
	cmd := exec.Command(python, append(append([]string{filepath.Join("testdata", "slave.py")}, args...), string(js))...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outp, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &pySlave{t: t, cmd: cmd, in: in, out: bufio.NewScanner(outp), stder: &strings.Builder{}}
	cmd.Stderr = &lockedWriter{w: s.stder, mu: &s.mu}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	ready := make(chan bool, 1)
	go func() { ready <- s.out.Scan() && s.out.Text() == "ready" }()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("slave.py did not start: %s", s.stderr())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("slave.py not ready after 60s: %s", s.stderr())
	}
	return s
}

func (s *pySlave) stderr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stder.String()
}

func (s *pySlave) send(line string) {
	s.t.Helper()
	if _, err := io.WriteString(s.in, line+"\n"); err != nil {
		s.t.Fatalf("slave.py %q: %v (%s)", line, err, s.stderr())
	}
}

// get reads n values of a table through the slave's own datastore.
func (s *pySlave) get(unit int, table string, addr, n int) []int {
	s.t.Helper()
	s.send(fmt.Sprintf("get %d %s %d %d", unit, table, addr, n))
	if !s.out.Scan() {
		s.t.Fatalf("slave.py: no answer to get: %s", s.stderr())
	}
	var v []int
	if err := json.Unmarshal(s.out.Bytes(), &v); err != nil {
		s.t.Fatalf("slave.py get: %q: %v", s.out.Text(), err)
	}
	return v
}

func (s *pySlave) stop() {
	if s.cmd.Process == nil {
		return
	}
	s.in.Close()
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func logDiscard() *log.Logger { return log.New(io.Discard, "", 0) }
