package modbus

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/edged-dev/edged/internal/testutil"
)

// Every data type and word order, decoded from registers that pymodbus serves over TCP.
func TestPymodbusTCPEveryDataType(t *testing.T) {
	requirePymodbus(t)
	addr := testutil.FreeAddr(t)
	f32 := math.Float32bits(21.5)
	f64 := math.Float64bits(1234.5)
	hr := []int{
		0xFFFE,         // 0 int16 -2
		0xFFFE,         // 1 uint16 65534
		0xFFFF, 0xFFFD, // 2 int32 high -3
		0xFFFD, 0xFFFF, // 4 int32 low -3
		int(f32 >> 16), int(f32 & 0xFFFF), // 6 float32 high
		int(f32 & 0xFFFF), int(f32 >> 16), // 8 float32 low
		0xFFFF, 0xFFFF, 0xFFFF, 0xFFF0, // 10 int64 high -16
		int(f64 & 0xFFFF), int(f64 >> 16 & 0xFFFF), int(f64 >> 32 & 0xFFFF), int(f64 >> 48), // 14 float64 low
		'E'<<8 | 'D', 'G'<<8 | 'E', '0'<<8 | '1', // 18 string
		235,             // 21 uint16 *0.1 -10 = 13.5
		1,               // 22 bool in a register
		0x8000, 0, 0, 5, // 23 uint64 high
	}
	slave := startPySlave(t, map[int]map[string][]int{1: {"hr": hr, "ir": {1, 4464}, "co": {1, 0}, "di": {1}}}, "tcp", addr)
	_ = slave
	buses := parseBuses(t, fmt.Sprintf(`
- name: plant
  tcp: %s
  poll: 200ms
  units:
    - name: m1
      id: 1
      points:
        - {name: i16, type: holding, address: 0, data_type: int16}
        - {name: u16, type: holding, address: 1}
        - {name: i32h, type: holding, address: 2, data_type: int32}
        - {name: i32l, type: holding, address: 4, data_type: int32, word_order: low_first}
        - {name: f32h, type: holding, address: 6, data_type: float32}
        - {name: f32l, type: holding, address: 8, data_type: float32, word_order: low_first}
        - {name: i64h, type: holding, address: 10, data_type: int64}
        - {name: f64l, type: holding, address: 14, data_type: float64, word_order: low_first}
        - {name: str, type: holding, address: 18, data_type: string, count: 3}
        - {name: scaled, type: holding, address: 21, scale: 0.1, offset: -10, unit: "°C"}
        - {name: flag, type: holding, address: 22, data_type: bool}
        - {name: u64h, type: holding, address: 23, data_type: uint64}
        - {name: u32in, type: input, address: 0, data_type: uint32}
        - {name: c0, type: coil, address: 0}
        - {name: c1, type: coil, address: 1}
        - {name: d0, type: discrete_input, address: 0}
`, addr))
	local := newFakeLocal()
	m, _ := startManager(t, buses, local)
	want := map[string]string{
		"i16": "-2", "u16": "65534", "i32h": "-3", "i32l": "-3", "f32h": "21.5", "f32l": "21.5",
		"i64h": "-16", "f64l": "1234.5", "str": `"EDGE01"`, "scaled": "13.5", "flag": "true",
		"u64h": "9223372036854775813", "u32in": "70000", "c0": "true", "c1": "false", "d0": "true",
	}
	for name, w := range want {
		topic := "modbus/plant/m1/" + name
		s := local.waitSample(t, topic, 30*time.Second, func(s testSample) bool { return s.Q == QualityGood })
		got, _ := json.Marshal(s.V)
		if name == "scaled" {
			f, _ := s.V.(json.Number).Float64()
			if math.Abs(f-13.5) > 1e-9 {
				t.Errorf("%s: %v, want 13.5", name, f)
			}
			continue
		}
		if string(got) != w && strings.Trim(string(got), `"`) != w {
			t.Errorf("%s: got %s, want %s", name, got, w)
		}
	}
	// Capture time is the read time and is the message's time; the unit rides as a user property.
	msgs := local.onTopic("modbus/plant/m1/scaled")
	last := msgs[len(msgs)-1]
	var s testSample
	json.Unmarshal(last.Payload, &s)
	if s.T != last.Time.UnixMilli() || time.Since(last.Time) > time.Minute {
		t.Errorf("t=%d, message time %v", s.T, last.Time)
	}
	props := map[string]string{}
	for _, p := range last.UserProps {
		props[p.Key] = p.Value
	}
	if props[PropUnit] != "°C" || props[PropBus] != "plant" || props[PropTime] != fmt.Sprint(s.T) {
		t.Errorf("user properties %v", props)
	}

	st := unitStatus(m, "plant", "m1")
	if st.State != UnitOnline || st.Polls == 0 {
		t.Errorf("unit status %+v", st)
	}
}

// Units behind a TCP gateway: a silent one goes offline while the others keep their rate on the
// same connection; when every unit is silent the connection is suspected half-open and redialled.
func TestPymodbusTCPSilentUnit(t *testing.T) {
	requirePymodbus(t)
	addr := testutil.FreeAddr(t)
	slave := startPySlave(t, map[int]map[string][]int{1: {"hr": {1}}, 2: {"hr": {2}}}, "tcp", addr)
	buses := parseBuses(t, fmt.Sprintf(`
- name: gw
  tcp: %s
  poll: 100ms
  timeout: 200ms
  offline_after: 2
  offline_backoff: {min: 1s, max: 2s}
  reopen: {min: 50ms, max: 200ms}
  units:
    - {name: a, id: 1, points: [{name: p, type: holding, address: 0}]}
    - {name: b, id: 2, points: [{name: p, type: holding, address: 0}]}
`, addr))
	local := newFakeLocal()
	m, _ := startManager(t, buses, local)
	local.waitSample(t, "modbus/gw/b/p", 30*time.Second, func(s testSample) bool { return s.Q == QualityGood })
	slave.send("silent 2")
	local.waitSample(t, "modbus/gw/b/p", 30*time.Second, func(s testSample) bool { return s.Q == QualityStale })
	before := len(local.samples(t, "modbus/gw/a/p"))
	time.Sleep(2 * time.Second)
	got := len(local.samples(t, "modbus/gw/a/p")) - before
	if got < 10 { // 20 slots of 100ms; at least half, on a loaded machine
		t.Errorf("unit a published %d times in 2s at 100ms while b was silent", got)
	}
	if s := m.Status()[0]; s.Reopens != 0 || s.Units[1].State != UnitOffline {
		t.Errorf("status %+v: want no reconnect and b offline", s)
	}
	slave.send("silent 1")
	testutil.WaitFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if s := m.Status()[0]; s.Reopens == 0 {
			return fmt.Errorf("no reconnect yet: %+v", s)
		}
		return nil
	})
	slave.send("answer 1")
	slave.send("answer 2")
	since := time.Now()
	for _, u := range []string{"a", "b"} {
		local.waitSample(t, "modbus/gw/"+u+"/p", 30*time.Second, func(s testSample) bool { return s.Q == QualityGood && s.at.After(since) })
	}
}
