package hwkit_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edged-dev/edged/hardware/hwkit"
	"github.com/edged-dev/edged/internal/config"
	"github.com/edged-dev/edged/internal/confkit"
)

// The shared structs are embedded inline in hardware.serial[] and hardware.modbus[] (and its
// rtu:): the loader must still know their keys (unknown keys rejected, listed with the
// section's own), and every problem must come back as FILE:LINE: full.key: text.
func TestInlineKeysStayStrictAndLocated(t *testing.T) {
	for _, c := range []struct {
		name, doc string
		want      []string // whole lines of the error
	}{
		{"serial unknown key", `hardware:
  serial:
    - name: a
      port: /dev/x
      topic: t
      bogus: 1
`, []string{"edged.yaml:6: hardware.serial[0].bogus: unknown key (known keys here: baud, command_max_age, command_queue, " +
			"command_topic, data_bits, delimiter, error_topic, format, framing, match, max_frame, name, parity, port, publish_as, " +
			"qos, reopen, retain, stop_bits, topic)"}},
		{"serial port and match", `hardware:
  serial:
    - name: a
      port: /dev/x
      match: {vid: "0403", pid: "6001", bogus: 1}
      topic: t
`, []string{
			"edged.yaml:4: hardware.serial[0].port: set either port or match, not both",
			"edged.yaml:5: hardware.serial[0].match.bogus: unknown key (known keys here: pid, serial_number, vid)",
		}},
		{"serial line and away", `hardware:
  serial:
    - name: a
      match: {vid: "403", pid: zz}
      baud: -1
      data_bits: 9
      parity: foo
      stop_bits: 3
      topic: t
      command_queue: -1
      command_max_age: -1s
      reopen: {min: 2s, max: 1s}
`, []string{
			`edged.yaml:4: hardware.serial[0].match.vid: "403" is not a USB vendor id (4 hex digits, e.g. 0403)`,
			`edged.yaml:4: hardware.serial[0].match.pid: "zz" is not a USB product id (4 hex digits, e.g. 6001)`,
			"edged.yaml:5: hardware.serial[0].baud: -1 is not a valid baud rate",
			"edged.yaml:6: hardware.serial[0].data_bits: 9 is not valid (5, 6, 7 or 8)",
			`edged.yaml:7: hardware.serial[0].parity: "foo" is not valid (none, odd, even, mark or space)`,
			`edged.yaml:8: hardware.serial[0].stop_bits: "3" is not valid (1, 1.5 or 2)`,
			"edged.yaml:10: hardware.serial[0].command_queue: -1 is not valid (0 to 10000)",
			"edged.yaml:11: hardware.serial[0].command_max_age: -1s is not valid (must be > 0)",
			"edged.yaml:12: hardware.serial[0].reopen.max: 1s is less than reopen.min 2s",
		}},
		// stop_bits is a plain string in both sections: a list there is a located type error,
		// and the port's other keys still decode (no "required" for keys that are present).
		{"serial stop_bits not a scalar", `hardware:
  serial:
    - name: a
      port: /dev/x
      topic: t
      stop_bits: [1]
`, []string{"edged.yaml:6: hardware.serial[0].stop_bits: cannot use !!seq into string"}},
		{"rtu unknown key", `hardware:
  modbus:
    - name: b
      rtu:
        port: /dev/x
        bogus: 1
      units: [{name: u, id: 1, points: [{name: p, type: holding, address: 0}]}]
`, []string{"edged.yaml:6: hardware.modbus[0].rtu.bogus: unknown key (known keys here: baud, data_bits, match, parity, port, stop_bits)"}},
		{"rtu line and bus away", `hardware:
  modbus:
    - name: b
      rtu:
        match: {vid: "403", pid: "6001"}
        baud: -5
        data_bits: 5
        parity: mark
        stop_bits: 1.5
      command_queue: 10001
      command_max_age: -1s
      reopen: {min: -1s}
      offline_backoff: {min: 5s, max: 1s}
      units: [{name: u, id: 1, points: [{name: p, type: holding, address: 0}]}]
`, []string{
			`edged.yaml:5: hardware.modbus[0].rtu.match.vid: "403" is not a USB vendor id (4 hex digits, e.g. 0403)`,
			"edged.yaml:6: hardware.modbus[0].rtu.baud: -5 is not a valid baud rate",
			"edged.yaml:7: hardware.modbus[0].rtu.data_bits: 5 is not valid (7 or 8)",
			`edged.yaml:8: hardware.modbus[0].rtu.parity: "mark" is not valid (none, even or odd)`,
			`edged.yaml:9: hardware.modbus[0].rtu.stop_bits: "1.5" is not valid (1 or 2)`,
			"edged.yaml:10: hardware.modbus[0].command_queue: 10001 is not valid (0 to 10000)",
			"edged.yaml:11: hardware.modbus[0].command_max_age: -1s is not valid (must be > 0)",
			"edged.yaml:12: hardware.modbus[0].reopen.min: -1s is not valid (must be > 0)",
			"edged.yaml:13: hardware.modbus[0].offline_backoff.max: 1s is less than offline_backoff.min 5s",
		}},
		{"bus reopen unknown key", `hardware:
  modbus:
    - name: b
      tcp: h:1
      reopen: {min: 1s, bogus: 1}
      units: [{name: u, id: 1, points: [{name: p, type: holding, address: 0}]}]
`, []string{"edged.yaml:5: hardware.modbus[0].reopen.bogus: unknown key (known keys here: max, min)"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.Parse("edged.yaml", []byte(c.doc))
			if err == nil {
				t.Fatal("accepted")
			}
			got := strings.Split(err.Error(), "\n")
			if strings.Join(got, "\n") != strings.Join(c.want, "\n") {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}
}

// Both sections decode the same keys into the same fields, each with its own defaults.
func TestInlineKeysDecodeAndDefault(t *testing.T) {
	cfg, err := config.Parse("edged.yaml", []byte(`hardware:
  serial:
    - name: a
      port: /dev/x
      topic: t
      stop_bits: 1.5
      reopen: {min: 40s}
  modbus:
    - name: b
      rtu: {match: {vid: "0403", pid: "6001", serial_number: S1}, parity: none}
      command_queue: 0
      units: [{name: u, id: 1, points: [{name: p, type: holding, address: 0}]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Hardware.Serial[0]
	if s.Line != (hwkit.Line{Port: "/dev/x", Baud: 115200, DataBits: 8, Parity: "none", StopBits: "1.5"}) {
		t.Errorf("serial line %+v", s.Line)
	}
	if *s.CommandQueue != 16 || s.CommandMaxAge != 30*time.Second || s.Reopen != (confkit.Backoff{Min: 40 * time.Second, Max: 40 * time.Second}) {
		t.Errorf("serial away %+v %+v", *s.CommandQueue, s.Away)
	}
	b := cfg.Hardware.Modbus[0]
	r := b.RTU.Line
	if r.Match == nil || *r.Match != (hwkit.USBMatch{VID: "0403", PID: "6001", SerialNumber: "S1"}) {
		t.Errorf("rtu match %+v", r.Match)
	}
	r.Match = nil
	if r != (hwkit.Line{Baud: 19200, DataBits: 8, Parity: "none", StopBits: "2"}) {
		t.Errorf("rtu line %+v", r)
	}
	if *b.CommandQueue != 0 || b.CommandMaxAge != 30*time.Second || b.Reopen != (confkit.Backoff{Min: 250 * time.Millisecond, Max: 30 * time.Second}) {
		t.Errorf("bus away %+v %+v", *b.CommandQueue, b.Away)
	}
}

func TestLineRules(t *testing.T) {
	rules := hwkit.LineRules{Baud: 9600, DataBits: 8, Parity: "even", StopBits: "1", StopBitsNoParity: "2",
		ValidDataBits: []int{8}, ValidParities: []string{"none", "even"}, ValidStopBits: []string{"1", "2"}}
	for _, c := range []struct {
		in, want hwkit.Line
	}{
		{hwkit.Line{}, hwkit.Line{Baud: 9600, DataBits: 8, Parity: "even", StopBits: "1"}},
		{hwkit.Line{Parity: "none"}, hwkit.Line{Baud: 9600, DataBits: 8, Parity: "none", StopBits: "2"}},
		{hwkit.Line{Parity: "none", StopBits: "1"}, hwkit.Line{Baud: 9600, DataBits: 8, Parity: "none", StopBits: "1"}},
	} {
		l := c.in
		l.ApplyDefaults(&rules)
		if l != c.want {
			t.Errorf("defaults of %+v: %+v, want %+v", c.in, l, c.want)
		}
	}
	l := hwkit.Line{Port: "/dev/x", Baud: hwkit.MaxBaud + 1, DataBits: 7, Parity: "odd", StopBits: "1.5"}
	var got []string
	for _, e := range confkit.Flatten(l.Validate(&rules)) {
		var ke *confkit.KeyError
		if !errors.As(e, &ke) {
			t.Errorf("%v is not a *confkit.KeyError", e)
		}
		got = append(got, e.Error())
	}
	want := []string{
		"baud: 20000001 is not a valid baud rate",
		"data_bits: 7 is not valid (8)",
		`parity: "odd" is not valid (none or even)`,
		`stop_bits: "1.5" is not valid (1 or 2)`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got %q, want %q", got, want)
	}
}
