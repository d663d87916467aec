package hardware

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/edged-dev/edged/hardware/modbus"
	"github.com/edged-dev/edged/internal/confkit"
	"go.bug.st/serial"
	"gopkg.in/yaml.v3"
)

// Defaults applied by ApplyDefaults to zero values.
const (
	DefaultBaud          = 115200
	DefaultDataBits      = 8
	DefaultParity        = "none"
	DefaultStopBits      = "1"
	DefaultFraming       = "line"
	DefaultDelimiter     = "\n"
	DefaultMaxFrame      = 4096
	DefaultFormat        = "raw"
	DefaultCommandQueue  = 16
	DefaultCommandMaxAge = 30 * time.Second
	DefaultReopenMin     = 250 * time.Millisecond
	DefaultReopenMax     = 30 * time.Second

	maxMaxFrame = 1 << 20
)

// Config is the `hardware:` section of the edged config.
type Config struct {
	// Serial lists the serial devices edged reads frames from and writes commands to. Each one
	// is opened independently; a missing device does not stop the others or edged.
	Serial []SerialConfig `yaml:"serial"`
	// Modbus lists Modbus buses (RTU serial lines or TCP connections) and the units polled on
	// them; see package hardware/modbus.
	Modbus []modbus.BusConfig `yaml:"modbus"`
}

// SerialConfig is one serial device.
type SerialConfig struct {
	// Name identifies the port in status, metrics (label port) and logs, and is sent with every
	// frame as the MQTT 5 user property "port". Required, unique, [A-Za-z0-9_.-].
	Name string `yaml:"name"`
	// Port is the device path, e.g. /dev/ttyUSB0 or a stable /dev/serial/by-id/... link.
	// Exactly one of port and match is required.
	Port string `yaml:"port"`
	// Match finds the device by its USB identity instead of a path, so the device is found again
	// when it comes back at another /dev/ttyUSB* after a replug. Re-resolved before every open.
	Match *USBMatch `yaml:"match"`
	// Baud is the line speed in bit/s. Default 115200.
	Baud int `yaml:"baud"`
	// DataBits is the character size: 5, 6, 7 or 8. Default 8.
	DataBits int `yaml:"data_bits"`
	// Parity is none, odd, even, mark or space. Default none.
	Parity string `yaml:"parity"`
	// StopBits is 1, 1.5 or 2. Default 1. (Linux cannot set 1.5; opening such a port fails.)
	StopBits StopBits `yaml:"stop_bits"`
	// Framing splits the byte stream into frames: line (delimiter-terminated), cobs (0x00
	// terminated COBS) or slip (RFC 1055). Commands are written with the same framing.
	// Default line.
	Framing string `yaml:"framing"`
	// Delimiter ends a frame with framing line; one byte, YAML escapes allowed ("\r", "\x03").
	// Default "\n"; with "\n" a trailing "\r" is removed too, so CRLF devices work.
	Delimiter string `yaml:"delimiter"`
	// MaxFrame is the largest frame accepted, in bytes (decoded size); longer frames are dropped
	// and counted (reason oversize) and the decoder resynchronises on the next delimiter.
	// Default 4096, at most 1MiB.
	MaxFrame confkit.ByteSize `yaml:"max_frame"`
	// Format is what a frame must contain: raw (anything, published as is), json (one JSON
	// value) or cbor (one well-formed CBOR item). Frames that do not validate are counted
	// (edged_serial_invalid_total) and dropped, or published to error_topic. Default raw.
	Format string `yaml:"format"`
	// PublishAs transcodes valid frames before publishing: "" (publish as received) or json
	// (only with format cbor: CBOR frames are published as JSON, content type
	// application/json).
	PublishAs string `yaml:"publish_as"`
	// Topic is the MQTT topic every frame is published on (no wildcards). Required.
	Topic string `yaml:"topic"`
	// QoS of the published frames: 0, 1 or 2. With 1 or 2, a frame that matches a forward rule
	// is durable in the outbox when the publish returns.
	QoS byte `yaml:"qos"`
	// Retain publishes frames as retained messages (the last frame is kept for new subscribers).
	Retain bool `yaml:"retain"`
	// ErrorTopic, when set, receives frames that failed validation (as received, user property
	// "error" = reason) instead of dropping them. Oversize and undecodable frames are never
	// published: they are incomplete.
	ErrorTopic string `yaml:"error_topic"`
	// CommandTopic is a topic filter; messages published on it are framed and written to the
	// device. Empty: the port is read-only.
	CommandTopic string `yaml:"command_topic"`
	// CommandQueue is how many commands are held while the port is away (and behind a slow
	// write); the oldest is dropped and counted when it is full. 0 disables buffering: commands
	// arriving while the port is away are dropped and counted. Default 16.
	CommandQueue *int `yaml:"command_queue"`
	// CommandMaxAge drops (and counts) queued commands older than this when the port comes back,
	// instead of replaying stale commands to a device. Default 30s.
	CommandMaxAge time.Duration `yaml:"command_max_age"`
	// Reopen is the backoff between attempts to (re)open a missing or failed port.
	Reopen Backoff `yaml:"reopen"`
}

// USBMatch identifies a USB serial adapter. VID and PID are 4 hex digits (case-insensitive), as
// shown by `edged ports`.
type USBMatch struct {
	// VID is the USB vendor id, e.g. "0403". Required.
	VID string `yaml:"vid"`
	// PID is the USB product id, e.g. "6001". Required.
	PID string `yaml:"pid"`
	// SerialNumber narrows the match to one adapter when several share VID:PID; if empty and
	// more than one device matches, opening fails as ambiguous.
	SerialNumber string `yaml:"serial_number"`
}

// Backoff is an exponential backoff with full jitter between Min and Max.
type Backoff struct {
	// Min is the first delay after a failure. Default 250ms.
	Min time.Duration `yaml:"min"`
	// Max caps the delay. Default 30s.
	Max time.Duration `yaml:"max"`
}

// StopBits is "1", "1.5" or "2"; YAML numbers 1, 1.5 and 2 are accepted as written.
type StopBits string

// UnmarshalYAML takes the scalar's text, so `stop_bits: 1.5` stays "1.5".
func (s *StopBits) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: stop_bits: want 1, 1.5 or 2", n.Line)
	}
	*s = StopBits(n.Value)
	return nil
}

// ApplyDefaults fills zero values with the defaults.
func (c *Config) ApplyDefaults() {
	for i := range c.Serial {
		c.Serial[i].ApplyDefaults()
	}
	modbus.ApplyDefaults(c.Modbus)
}

// ApplyDefaults fills zero values with the defaults.
func (s *SerialConfig) ApplyDefaults() {
	if s.Baud == 0 {
		s.Baud = DefaultBaud
	}
	if s.DataBits == 0 {
		s.DataBits = DefaultDataBits
	}
	if s.Parity == "" {
		s.Parity = DefaultParity
	}
	if s.StopBits == "" {
		s.StopBits = DefaultStopBits
	}
	if s.Framing == "" {
		s.Framing = DefaultFraming
	}
	if s.Delimiter == "" && s.Framing == "line" {
		s.Delimiter = DefaultDelimiter
	}
	if s.MaxFrame == 0 {
		s.MaxFrame = DefaultMaxFrame
	}
	if s.Format == "" {
		s.Format = DefaultFormat
	}
	if s.CommandQueue == nil {
		q := DefaultCommandQueue
		s.CommandQueue = &q
	}
	if s.CommandMaxAge == 0 {
		s.CommandMaxAge = DefaultCommandMaxAge
	}
	if s.Reopen.Min == 0 {
		s.Reopen.Min = DefaultReopenMin
	}
	if s.Reopen.Max == 0 {
		s.Reopen.Max = max(DefaultReopenMax, s.Reopen.Min)
	}
}

// Validate reports every problem as a *confkit.KeyError with keys relative to the hardware
// section ("serial[0].baud"), joined with errors.Join. It checks the configuration as given:
// call ApplyDefaults first (New does), or omitted fields are reported as invalid.
func (c *Config) Validate() error {
	var errs []error
	seen := map[string]int{}
	for i := range c.Serial {
		s := &c.Serial[i]
		key := fmt.Sprintf("serial[%d]", i)
		if s.Name != "" {
			if j, dup := seen[s.Name]; dup {
				errs = append(errs, confkit.Errorf(key+".name", "%q is already used by serial[%d]", s.Name, j))
			} else {
				seen[s.Name] = i
			}
		}
		errs = append(errs, confkit.Prefix(key, s.Validate()))
	}
	errs = append(errs, modbus.Validate(c.Modbus))
	return errors.Join(errs...)
}

// Validate checks one port; keys are relative to the port ("baud").
func (s *SerialConfig) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) { errs = append(errs, confkit.Errorf(key, format, args...)) }

	switch {
	case s.Name == "":
		bad("name", "required")
	case strings.IndexFunc(s.Name, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.')
	}) >= 0:
		bad("name", "%q: use letters, digits, '_', '-' and '.'", s.Name)
	}
	switch {
	case s.Port != "" && s.Match != nil:
		bad("port", "set either port or match, not both")
	case s.Port == "" && s.Match == nil:
		bad("port", "required (or match: {vid, pid})")
	case s.Match != nil:
		if !isHex4(s.Match.VID) {
			bad("match.vid", "%q is not a USB vendor id (4 hex digits, e.g. 0403)", s.Match.VID)
		}
		if !isHex4(s.Match.PID) {
			bad("match.pid", "%q is not a USB product id (4 hex digits, e.g. 6001)", s.Match.PID)
		}
	}
	if s.Baud <= 0 || s.Baud > 20_000_000 {
		bad("baud", "%d is not a valid baud rate", s.Baud)
	}
	if s.DataBits < 5 || s.DataBits > 8 {
		bad("data_bits", "%d is not valid (5, 6, 7 or 8)", s.DataBits)
	}
	if _, ok := parities[s.Parity]; !ok {
		bad("parity", "%q is not valid (none, odd, even, mark or space)", s.Parity)
	}
	if _, ok := stopBits[s.StopBits]; !ok {
		bad("stop_bits", "%q is not valid (1, 1.5 or 2)", string(s.StopBits))
	}
	switch s.Framing {
	case "line":
		if len(s.Delimiter) != 1 {
			bad("delimiter", "%q: must be exactly one byte", s.Delimiter)
		}
	case "cobs", "slip":
		if s.Delimiter != "" {
			bad("delimiter", "only used with framing line, not %s", s.Framing)
		}
	default:
		bad("framing", "%q is not valid (line, cobs or slip)", s.Framing)
	}
	if s.MaxFrame <= 0 || s.MaxFrame > maxMaxFrame {
		bad("max_frame", "%d is not valid (1 to 1MiB)", int64(s.MaxFrame))
	}
	switch s.Format {
	case "raw", "json", "cbor":
	default:
		bad("format", "%q is not valid (raw, json or cbor)", s.Format)
	}
	switch s.PublishAs {
	case "":
	case "json":
		if s.Format != "cbor" {
			bad("publish_as", "json needs format cbor (got %q)", s.Format)
		}
	default:
		bad("publish_as", "%q is not valid (json, or empty for as received)", s.PublishAs)
	}
	if err := checkTopic(s.Topic, false); err != nil {
		bad("topic", "%v", err)
	}
	if s.QoS > 2 {
		bad("qos", "%d is not valid (0, 1 or 2)", s.QoS)
	}
	if s.ErrorTopic != "" {
		if err := checkTopic(s.ErrorTopic, false); err != nil {
			bad("error_topic", "%v", err)
		}
	}
	if s.CommandTopic != "" {
		if err := checkTopic(s.CommandTopic, true); err != nil {
			bad("command_topic", "%v", err)
		}
	}
	if s.CommandQueue == nil || *s.CommandQueue < 0 || *s.CommandQueue > 10000 {
		v := "unset"
		if s.CommandQueue != nil {
			v = fmt.Sprint(*s.CommandQueue)
		}
		bad("command_queue", "%s is not valid (0 to 10000)", v)
	}
	if s.CommandMaxAge <= 0 {
		bad("command_max_age", "%v is not valid (must be > 0)", s.CommandMaxAge)
	}
	if s.Reopen.Min <= 0 {
		bad("reopen.min", "%v is not valid (must be > 0)", s.Reopen.Min)
	}
	if s.Reopen.Max < s.Reopen.Min {
		bad("reopen.max", "%v is less than reopen.min %v", s.Reopen.Max, s.Reopen.Min)
	}
	return errors.Join(errs...)
}

var parities = map[string]serial.Parity{
	"none": serial.NoParity, "odd": serial.OddParity, "even": serial.EvenParity,
	"mark": serial.MarkParity, "space": serial.SpaceParity,
}

var stopBits = map[StopBits]serial.StopBits{
	"1": serial.OneStopBit, "1.5": serial.OnePointFiveStopBits, "2": serial.TwoStopBits,
}

// mode is the go.bug.st/serial mode of a validated config. InitialStatusBits stays nil: setting
// modem bits fails on ptys (ENOTTY) and many USB adapters, and the default (DTR, RTS up) suits
// nearly every device.
func (s *SerialConfig) mode() *serial.Mode {
	return &serial.Mode{BaudRate: s.Baud, DataBits: s.DataBits, Parity: parities[s.Parity], StopBits: stopBits[s.StopBits]}
}

func isHex4(s string) bool {
	if len(s) != 4 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F') {
			return false
		}
	}
	return true
}

// checkTopic validates an MQTT topic name, or a topic filter when filter is set.
func checkTopic(t string, filter bool) error {
	if t == "" {
		return errors.New("required")
	}
	if len(t) > 65535 || strings.ContainsRune(t, 0) {
		return fmt.Errorf("%q is not a valid MQTT topic", t)
	}
	if strings.HasPrefix(t, "$") {
		return fmt.Errorf("%q: topics starting with $ are reserved", t)
	}
	levels := strings.Split(t, "/")
	for i, l := range levels {
		if !strings.ContainsAny(l, "+#") {
			continue
		}
		if !filter {
			return fmt.Errorf("%q: wildcards are not allowed in a topic name", t)
		}
		if (l == "#" && i == len(levels)-1) || l == "+" {
			continue
		}
		return fmt.Errorf("%q is not a valid topic filter", t)
	}
	return nil
}
