package modbus

import (
	"encoding/json"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/edged-dev/edged/internal/testutil"
	"github.com/fxamacker/cbor/v2"
	mb "github.com/simonvetter/modbus"
)

type testReply struct {
	Unit      string `json:"unit"`
	Point     string `json:"point"`
	OK        bool   `json:"ok"`
	Error     string `json:"error"`
	Exception int    `json:"exception"`
}

func (f *fakeLocal) replies(t testing.TB, topic string) []testReply {
	t.Helper()
	var out []testReply
	for _, m := range f.onTopic(topic) {
		var r testReply
		if err := json.Unmarshal(m.Payload, &r); err != nil {
			t.Fatalf("reply %q: %v", m.Payload, err)
		}
		out = append(out, r)
	}
	return out
}

func (f *fakeLocal) waitReplies(t testing.TB, topic string, n int) []testReply {
	t.Helper()
	testutil.WaitFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if got := len(f.onTopic(topic)); got < n {
			return fmt.Errorf("%s: %d replies, want %d", topic, got, n)
		}
		return nil
	})
	return f.replies(t, topic)
}

// Writes through point and unit command topics, with scaling and word order, land in pymodbus's
// datastore, are answered on the reply topic and read back at once.
func TestPymodbusWriteWithReadBack(t *testing.T) {
	requirePymodbus(t)
	addr := testutil.FreeAddr(t)
	slave := startPySlave(t, map[int]map[string][]int{3: {"hr": make([]int, 20), "co": make([]int, 4)}}, "tcp", addr)
	buses := parseBuses(t, fmt.Sprintf(`
- name: plc
  tcp: %s
  poll: 10s # the read-back after a write must not wait for the next poll
  units:
    - name: pump
      id: 3
      command_topic: "cmd/{bus}/{unit}"
      points:
        - {name: setpoint, type: holding, address: 0, data_type: float32, word_order: low_first, command_topic: "cmd/{bus}/{unit}/{point}"}
        - {name: speed, type: holding, address: 4, data_type: int16, scale: 0.1, writable: true, on_change: true}
        - {name: run, type: coil, address: 1, writable: true}
        - {name: big, type: holding, address: 6, data_type: int32, writable: true}
        - {name: ro, type: holding, address: 10}
`, addr))
	local := newFakeLocal()
	startManager(t, buses, local)
	local.waitSample(t, "modbus/plc/pump/speed", 30*time.Second, func(s testSample) bool { return s.Q == QualityGood })

	local.command(t, "cmd/plc/pump/setpoint", `21.75`)
	local.command(t, "cmd/plc/pump", `{"point": "speed", "v": -12.3}`)
	local.command(t, "cmd/plc/pump", `{"point": "run", "v": true}`)
	local.command(t, "cmd/plc/pump", `{"point": "big", "v": 100000}`)

	rs := local.waitReplies(t, "cmd/plc/pump/setpoint/reply", 1)
	if !rs[0].OK || rs[0].Point != "setpoint" {
		t.Errorf("setpoint reply %+v", rs[0])
	}
	for _, r := range local.waitReplies(t, "cmd/plc/pump/reply", 3) {
		if !r.OK {
			t.Errorf("reply %+v", r)
		}
	}
	f := math.Float32bits(21.75)
	if got := slave.get(3, "hr", 0, 2); got[0] != int(f&0xFFFF) || got[1] != int(f>>16) {
		t.Errorf("setpoint registers %v, want low word first %v", got, []int{int(f & 0xFFFF), int(f >> 16)})
	}
	if got := slave.get(3, "hr", 4, 1); got[0] != 0x10000-123 {
		t.Errorf("speed register %v, want -123 as int16", got)
	}
	if got := slave.get(3, "co", 1, 1); got[0] != 1 {
		t.Errorf("coil %v", got)
	}
	if got := slave.get(3, "hr", 6, 2); got[0] != 1 || got[1] != 100000-65536 {
		t.Errorf("int32 registers %v", got)
	}
	// Read back at once (poll is 10s), even for the on_change point.
	local.waitSample(t, "modbus/plc/pump/setpoint", 5*time.Second, func(s testSample) bool { return fmt.Sprint(s.V) == "21.75" })
	local.waitSample(t, "modbus/plc/pump/speed", 5*time.Second, func(s testSample) bool { return fmt.Sprint(s.V) == "-12.3" })
	local.waitSample(t, "modbus/plc/pump/run", 5*time.Second, func(s testSample) bool { return s.V == true })

	// Refused without touching the device: read-only point, out of range, garbage.
	local.command(t, "cmd/plc/pump", `{"point": "ro", "v": 1}`)
	local.command(t, "cmd/plc/pump", `{"point": "speed", "v": 5000}`)
	local.command(t, "cmd/plc/pump/setpoint", `not a value`)
	rs = local.waitReplies(t, "cmd/plc/pump/reply", 5)
	if rs[3].OK || rs[4].OK || rs[3].Error == "" || rs[4].Error == "" {
		t.Errorf("refused writes answered %+v %+v", rs[3], rs[4])
	}
	if rs := local.waitReplies(t, "cmd/plc/pump/setpoint/reply", 2); rs[1].OK {
		t.Errorf("garbage write answered %+v", rs[1])
	}
	if got := slave.get(3, "hr", 10, 1); got[0] != 0 {
		t.Errorf("read-only point written: %v", got)
	}
}

// Exception responses: pymodbus answers a read past its block with code 2 and a write past it
// too; the library's server answers code 6 (busy) where told. Counted by code, published bad,
// and a write's reply carries the code.
func TestExceptionCodes(t *testing.T) {
	requirePymodbus(t)
	pyAddr, memAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	startPySlave(t, map[int]map[string][]int{1: {"hr": make([]int, 5)}}, "tcp", pyAddr)
	mem := startMemSlave(t, memAddr, 1)
	mem.mu.Lock()
	mem.failAt[7] = mb.ErrServerDeviceBusy
	mem.mu.Unlock()
	buses := parseBuses(t, fmt.Sprintf(`
- name: py
  tcp: %s
  poll: 100ms
  units:
    - name: u
      id: 1
      points:
        - {name: ok, type: holding, address: 0}
        - {name: past, type: holding, address: 50, command_topic: "w/past"}
- name: mem
  tcp: %s
  poll: 100ms
  units:
    - name: u
      id: 1
      points:
        - {name: busy, type: input, address: 7}
`, pyAddr, memAddr))
	local := newFakeLocal()
	m, reg := startManager(t, buses, local)
	local.waitSample(t, "modbus/py/u/past", 30*time.Second, func(s testSample) bool { return s.Q == QualityBad && s.V == nil })
	local.waitSample(t, "modbus/mem/u/busy", 30*time.Second, func(s testSample) bool { return s.Q == QualityBad })
	local.waitSample(t, "modbus/py/u/ok", 30*time.Second, func(s testSample) bool { return s.Q == QualityGood })
	local.command(t, "w/past", "1")
	r := local.waitReplies(t, "w/past/reply", 1)[0]
	if r.OK || r.Exception != 2 {
		t.Errorf("write past the block: reply %+v, want exception 2", r)
	}
	testutil.WaitFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		c2, _ := testutil.MetricValue(t, reg, "edged_modbus_exceptions_total", map[string]string{"bus": "py", "unit": "u", "code": "2"})
		c6, _ := testutil.MetricValue(t, reg, "edged_modbus_exceptions_total", map[string]string{"bus": "mem", "unit": "u", "code": "6"})
		if c2 < 3 || c6 < 3 {
			return fmt.Errorf("exceptions: code 2 %v, code 6 %v", c2, c6)
		}
		return nil
	})
	// Bad is published once per transition, not every poll; the unit stays online (it answers).
	if n := len(local.samples(t, "modbus/mem/u/busy")); n != 1 {
		t.Errorf("%d samples for the failing point, want 1", n)
	}
	for _, b := range m.Status() {
		if u := b.Units[0]; u.State != UnitOnline || u.Exceptions == nil {
			t.Errorf("%s status %+v", b.Name, u)
		}
	}
}

// Report by exception against a changing value: deadband and max_interval counts.
func TestDeadbandAndMaxIntervalCounts(t *testing.T) {
	addr := testutil.FreeAddr(t)
	mem := startMemSlave(t, addr, 1)
	buses := parseBuses(t, fmt.Sprintf(`
- name: b
  tcp: %s
  poll: 20ms
  format: cbor
  units:
    - name: u
      id: 1
      points:
        - {name: db, type: holding, address: 0, deadband: 10}
        - {name: pct, type: holding, address: 1, deadband: "50%%"}
        - {name: heartbeat, type: holding, address: 2, on_change: true, max_interval: 300ms}
        - {name: every, type: holding, address: 3}
`, addr))
	local := newFakeLocal()
	_, reg := startManager(t, buses, local)
	decode := func(topic string) []sample {
		var out []sample
		for _, m := range local.onTopic(topic) {
			var s sample
			if err := cbor.Unmarshal(m.Payload, &s); err != nil {
				t.Fatalf("cbor %x: %v", m.Payload, err)
			}
			if m.ContentType != "application/cbor" {
				t.Fatalf("content type %q", m.ContentType)
			}
			out = append(out, s)
		}
		return out
	}
	polled := func(n float64) {
		t.Helper()
		base, _ := testutil.MetricValue(t, reg, "edged_modbus_requests_total", map[string]string{"bus": "b", "unit": "u", "result": "ok"})
		testutil.WaitFor(t, 30*time.Second, 5*time.Millisecond, func() error {
			v, _ := testutil.MetricValue(t, reg, "edged_modbus_requests_total", map[string]string{"bus": "b", "unit": "u", "result": "ok"})
			if v < base+n {
				return fmt.Errorf("%v polls", v-base)
			}
			return nil
		})
	}
	polled(2)
	// db: 0 -> 5 (no) -> 10 (no: not more than 10) -> 11 (yes) -> 2 (no) -> 0 (yes: 11 from 11)
	// pct: 100 -> 140 (no) -> 151 (yes) -> 100 (no: 33% of 151) -> 70 (yes)
	steps := [][2]uint16{{5, 100}, {10, 140}, {11, 151}, {2, 100}, {0, 70}}
	mem.set(1, func(u *memUnit) { u.holding[1] = 100 })
	polled(2)
	for _, s := range steps {
		mem.set(1, func(u *memUnit) { u.holding[0], u.holding[1] = s[0], s[1] })
		polled(2)
	}
	var dbVals, pctVals []any
	for _, s := range decode("modbus/b/u/db") {
		dbVals = append(dbVals, s.V)
	}
	for _, s := range decode("modbus/b/u/pct") {
		pctVals = append(pctVals, s.V)
	}
	if fmt.Sprint(dbVals) != "[0 11 0]" {
		t.Errorf("deadband 10 published %v, want [0 11 0]", dbVals)
	}
	if fmt.Sprint(pctVals) != "[0 100 151 70]" {
		t.Errorf("deadband 50%% published %v, want [0 100 151 70]", pctVals)
	}

	// heartbeat never changes: published on the first read and then once per max_interval.
	testutil.WaitFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if n := len(decode("modbus/b/u/heartbeat")); n < 5 {
			return fmt.Errorf("heartbeat published %d times", n)
		}
		return nil
	})
	hb := decode("modbus/b/u/heartbeat")
	every := decode("modbus/b/u/every")
	if len(hb) < 2 {
		t.Fatalf("heartbeat published %d times", len(hb))
	}
	span := time.Duration(hb[len(hb)-1].T-hb[0].T) * time.Millisecond
	want := int(span/(300*time.Millisecond)) + 1
	if len(hb) < want-1 || len(hb) > want+1 {
		t.Errorf("heartbeat: %d publishes over %v with max_interval 300ms, want %d±1", len(hb), span, want)
	}
	for i := 1; i < len(hb); i++ {
		if gap := time.Duration(hb[i].T-hb[i-1].T) * time.Millisecond; gap < 300*time.Millisecond || gap > 2*time.Second {
			t.Errorf("heartbeat gap %v", gap)
		}
	}
	if len(every) < 5*len(hb) {
		t.Errorf("point without report by exception published %d times vs heartbeat %d", len(every), len(hb))
	}
}

// Writes wait in the queue while the bus is away, are sent when it comes back, expire after
// command_max_age, and the oldest is dropped (and answered) when the queue is full.
func TestWritesQueuedWhileBusAway(t *testing.T) {
	addr := testutil.FreeAddr(t)
	buses := parseBuses(t, fmt.Sprintf(`
- name: b
  tcp: %s
  poll: 50ms
  command_queue: 2
  command_max_age: 2s
  reopen: {min: 50ms, max: 200ms}
  units:
    - name: u
      id: 1
      command_topic: "w"
      points:
        - {name: a, type: holding, address: 0, writable: true}
`, addr))
	local := newFakeLocal()
	m, reg := startManager(t, buses, local)
	testutil.WaitFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s := m.Status()[0]; s.State == StateStopped || s.State == StateOpen {
			return fmt.Errorf("state %s", s.State)
		}
		return nil
	})
	for i := 1; i <= 3; i++ { // queue of 2: the first is dropped
		local.command(t, "w", fmt.Sprintf(`{"point": "a", "v": %d}`, i))
	}
	rs := local.waitReplies(t, "w/reply", 1)
	if rs[0].OK || rs[0].Error == "" {
		t.Errorf("dropped write answered %+v", rs[0])
	}
	if q := m.Status()[0].Queued; q != 2 {
		t.Errorf("queued %d, want 2", q)
	}
	mem := startMemSlave(t, addr, 1)
	rs = local.waitReplies(t, "w/reply", 3)
	if !rs[1].OK || !rs[2].OK {
		t.Errorf("queued writes answered %+v", rs)
	}
	mem.mu.Lock()
	got := mem.units[1].holding[0]
	mem.mu.Unlock()
	if got != 3 {
		t.Errorf("register %d, want the last write 3", got)
	}
	local.waitSample(t, "modbus/b/u/a", 10*time.Second, func(s testSample) bool { return fmt.Sprint(s.V) == "3" })

	// Away again, past command_max_age: expired, answered, counted.
	mem.stop()
	testutil.WaitFor(t, 20*time.Second, 10*time.Millisecond, func() error {
		if s := m.Status()[0]; s.State == StateOpen {
			return fmt.Errorf("state %s", s.State)
		}
		return nil
	})
	local.command(t, "w", `{"point": "a", "v": 9}`)
	time.Sleep(2100 * time.Millisecond)
	startMemSlave(t, addr, 1)
	rs = local.waitReplies(t, "w/reply", 4)
	if rs[3].OK {
		t.Errorf("expired write answered %+v", rs[3])
	}
	for reason, want := range map[string]float64{DropQueueFull: 1, DropExpired: 1} {
		if v, _ := testutil.MetricValue(t, reg, "edged_modbus_dropped_total", map[string]string{"bus": "b", "reason": reason}); v != want {
			t.Errorf("dropped %s = %v, want %v", reason, v, want)
		}
	}
}
