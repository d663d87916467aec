package hardware

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edged-dev/edged/hardware/hwkit"
	"github.com/edged-dev/edged/internal/confkit"
	"go.bug.st/serial/enumerator"
	"gopkg.in/yaml.v3"
)

func validPort() SerialConfig {
	s := SerialConfig{Name: "meter1", Line: hwkit.Line{Port: "/dev/ttyUSB0"}, Topic: "sensors/meter1"}
	s.ApplyDefaults()
	return s
}

func TestConfigValidate(t *testing.T) {
	neg := -1
	for _, c := range []struct {
		name string
		mod  func(*SerialConfig)
		want []string // "key: message" prefixes, all must appear
	}{
		{"ok", func(*SerialConfig) {}, nil},
		{"baud 0", func(s *SerialConfig) { s.Baud = 0 }, []string{"serial[0].baud: 0 is not a valid baud rate"}},
		{"data bits 9", func(s *SerialConfig) { s.DataBits = 9 }, []string{"serial[0].data_bits: 9 is not valid"}},
		{"parity foo", func(s *SerialConfig) { s.Parity = "foo" }, []string{`serial[0].parity: "foo" is not valid`}},
		{"stop bits 3", func(s *SerialConfig) { s.StopBits = "3" }, []string{`serial[0].stop_bits: "3" is not valid`}},
		{"both", func(s *SerialConfig) { s.Match = &USBMatch{VID: "0403", PID: "6001"} }, []string{"serial[0].port: set either port or match"}},
		{"neither", func(s *SerialConfig) { s.Port = "" }, []string{"serial[0].port: required"}},
		{"bad match", func(s *SerialConfig) { s.Port, s.Match = "", &USBMatch{VID: "403", PID: "xyzw"} }, []string{
			`serial[0].match.vid: "403" is not`, `serial[0].match.pid: "xyzw" is not`}},
		{"framing", func(s *SerialConfig) { s.Framing = "hdlc" }, []string{`serial[0].framing: "hdlc" is not valid`}},
		{"delimiter", func(s *SerialConfig) { s.Delimiter = "\r\n" }, []string{`serial[0].delimiter: "\r\n": must be exactly one byte`}},
		{"delimiter with cobs", func(s *SerialConfig) { s.Framing = "cobs" }, []string{"serial[0].delimiter: only used with framing line"}},
		{"max frame", func(s *SerialConfig) { s.MaxFrame = 2 << 20 }, []string{"serial[0].max_frame: 2097152 is not valid"}},
		{"format", func(s *SerialConfig) { s.Format = "xml" }, []string{`serial[0].format: "xml" is not valid`}},
		{"publish_as without cbor", func(s *SerialConfig) { s.PublishAs = "json" }, []string{`serial[0].publish_as: json needs format cbor`}},
		{"topic wildcard", func(s *SerialConfig) { s.Topic = "sensors/+" }, []string{"serial[0].topic:"}},
		{"no topic", func(s *SerialConfig) { s.Topic = "" }, []string{"serial[0].topic: required"}},
		{"command filter ok", func(s *SerialConfig) { s.CommandTopic = "cmd/meter1/#" }, nil},
		{"command filter bad", func(s *SerialConfig) { s.CommandTopic = "cmd/#/x" }, []string{"serial[0].command_topic:"}},
		{"qos", func(s *SerialConfig) { s.QoS = 3 }, []string{"serial[0].qos: 3 is not valid"}},
		{"queue", func(s *SerialConfig) { s.CommandQueue = &neg }, []string{"serial[0].command_queue: -1 is not valid"}},
		{"backoff", func(s *SerialConfig) { s.Reopen = Backoff{Min: time.Second, Max: time.Millisecond} }, []string{"serial[0].reopen.max:"}},
		{"name", func(s *SerialConfig) { s.Name = "a b" }, []string{`serial[0].name: "a b"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := validPort()
			c.mod(&s)
			cfg := Config{Serial: []SerialConfig{s}}
			err := cfg.Validate()
			if len(c.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			var msgs []string
			for _, e := range confkit.Flatten(err) {
				var ke *confkit.KeyError
				if !errors.As(e, &ke) {
					t.Errorf("%v is not a *confkit.KeyError", e)
				}
				msgs = append(msgs, e.Error())
			}
			for _, w := range c.want {
				if !slices.ContainsFunc(msgs, func(m string) bool { return strings.HasPrefix(m, w) }) {
					t.Errorf("errors %q lack %q", msgs, w)
				}
			}
		})
	}
}

func TestConfigDuplicateNamesAndAllErrorsCollected(t *testing.T) {
	a, b := validPort(), validPort()
	b.Baud, b.Parity = -5, "foo"
	err := (&Config{Serial: []SerialConfig{a, b}}).Validate()
	got := err.Error()
	for _, w := range []string{`serial[1].name: "meter1" is already used by serial[0]`, "serial[1].baud: -5 is not a valid baud rate", `serial[1].parity: "foo"`} {
		if !strings.Contains(got, w) {
			t.Errorf("%q lacks %q", got, w)
		}
	}
	if _, err := New(Config{Serial: []SerialConfig{a, b}}, newFakeLocal(), nil, nil); err == nil {
		t.Error("New accepted an invalid config")
	}
}

func TestConfigYAMLAndDefaults(t *testing.T) {
	var cfg Config
	src := `
serial:
  - name: meter1
    match: {vid: "0403", pid: "6001", serial_number: "A1"}
    stop_bits: 1.5
    parity: even
    data_bits: 7
    delimiter: "\r"
    max_frame: 1KiB
    format: json
    topic: sensors/meter1
    command_topic: cmd/meter1
    command_queue: 0
    reopen: {min: 1s}
`
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s := cfg.Serial[0]
	if s.StopBits != "1.5" || s.Baud != DefaultBaud || s.Delimiter != "\r" || s.MaxFrame != 1024 ||
		*s.CommandQueue != 0 || s.Reopen.Max != hwkit.DefaultReopenMax || s.Framing != "line" || s.Match.SerialNumber != "A1" {
		t.Errorf("decoded %+v", s)
	}
	if m := s.mode(); m.DataBits != 7 || m.BaudRate != 115200 {
		t.Errorf("mode %+v", m)
	}
}

// fakeUSB replaces the port enumeration for one test.
func fakeUSB(t *testing.T, list func() []*enumerator.PortDetails) {
	t.Helper()
	old := enumerate
	enumerate = func(...func(vid, pid string) bool) ([]*enumerator.PortDetails, error) { return list(), nil }
	t.Cleanup(func() { enumerate = old })
}

func TestResolveMatch(t *testing.T) {
	fakeUSB(t, func() []*enumerator.PortDetails {
		return []*enumerator.PortDetails{
			{Name: "/dev/ttyS0"},
			{Name: "/dev/ttyUSB0", IsUSB: true, VID: "0403", PID: "6001", SerialNumber: "A1"},
			{Name: "/dev/ttyUSB1", IsUSB: true, VID: "0403", PID: "6001", SerialNumber: "B2"},
			{Name: "/dev/ttyACM0", IsUSB: true, VID: "2341", PID: "0043"},
		}
	})
	for _, c := range []struct {
		m          USBMatch
		want, fail string
	}{
		{USBMatch{VID: "2341", PID: "0043"}, "/dev/ttyACM0", ""},
		{USBMatch{VID: "0403", PID: "6001", SerialNumber: "B2"}, "/dev/ttyUSB1", ""},
		{USBMatch{VID: "0403", PID: "6001"}, "", "ambiguous, 2 devices"},
		{USBMatch{VID: "dead", PID: "BEEF"}, "", "no USB device matches"},
	} {
		got, err := resolveMatch(&c.m)
		if got != c.want || (c.fail == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.fail)) {
			t.Errorf("%+v: %q, %v", c.m, got, err)
		}
	}
}

// A device found by USB identity comes back at another path after a replug and is found again.
func TestMatchFollowsDeviceToNewPath(t *testing.T) {
	dev := newDevice(t)
	var mu sync.Mutex
	current := dev.path()
	fakeUSB(t, func() []*enumerator.PortDetails {
		mu.Lock()
		defer mu.Unlock()
		if current == "" {
			return nil
		}
		return []*enumerator.PortDetails{{Name: current, IsUSB: true, VID: "0403", PID: "6001"}}
	})
	setCurrent := func(p string) { mu.Lock(); current = p; mu.Unlock() }

	local := newFakeLocal()
	r := startManager(t, local, SerialConfig{Name: "u", Line: hwkit.Line{Match: &USBMatch{VID: "0403", PID: "6001"}}, Topic: "s/u"})
	r.waitState(t, "u", StateOpen)
	dev.write(t, []byte("1\n"))
	expectPayloads(t, local, "s/u", "1")

	setCurrent("")
	dev.unplug()
	r.waitState(t, "u", StateWaiting)
	if s := r.status("u"); !strings.Contains(s.LastError, "no USB device matches") {
		t.Errorf("last error %q", s.LastError)
	}
	dev2 := newDevice(t)
	setCurrent(dev2.path())
	r.waitState(t, "u", StateOpen)
	dev2.write(t, []byte("2\n"))
	expectPayloads(t, local, "s/u", "1", "2")
	if s := r.status("u"); s.Path != dev2.path() {
		t.Errorf("path %q", s.Path)
	}
}

func TestPortsTable(t *testing.T) {
	fakeUSB(t, func() []*enumerator.PortDetails {
		return []*enumerator.PortDetails{
			{Name: "/dev/ttyUSB0", IsUSB: true, VID: "0403", PID: "6001", SerialNumber: "A1", Product: "FT232R USB UART"},
			{Name: "/dev/ttyS0"},
		}
	})
	ports, err := ListPorts()
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 2 || ports[0].Name != "/dev/ttyS0" || ports[1].VID != "0403" || !ports[1].IsUSB {
		t.Fatalf("ports %+v", ports)
	}
}
