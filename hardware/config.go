package hardware

import (
	"errors"

	"github.com/edged-dev/edged/hardware/hwkit"
	"github.com/edged-dev/edged/hardware/modbus"
	"github.com/edged-dev/edged/internal/confkit"
	"go.bug.st/serial"
)

// Defaults applied by ApplyDefaults to zero values.
const (
	DefaultBaud      = 115200
	DefaultDataBits  = 8
	DefaultParity    = "none"
	DefaultStopBits  = "1"
	DefaultFraming   = "line"
	DefaultDelimiter = "\n"
	DefaultMaxFrame  = 4096
	DefaultFormat    = "raw"

	maxMaxFrame = 1 << 20
)

// serialLine is what a serial port's line defaults to and accepts.
var serialLine = hwkit.LineRules{
	Baud: DefaultBaud, DataBits: DefaultDataBits, Parity: DefaultParity, StopBits: DefaultStopBits,
	ValidDataBits: []int{5, 6, 7, 8},
	ValidParities: []string{"none", "odd", "even", "mark", "space"},
	ValidStopBits: []string{"1", "1.5", "2"},
}

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
	// Line is the device (port or match) and its line settings: port, match, baud, data_bits,
	// parity, stop_bits.
	hwkit.Line `yaml:",inline"`
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
	// Away is what the port does while its device is away: command_queue, command_max_age and
	// the reopen backoff.
	hwkit.Away `yaml:",inline"`
}

// USBMatch identifies a USB serial adapter (match: in a port or a Modbus RTU bus).
type USBMatch = hwkit.USBMatch

// Backoff is a delay range that doubles from Min to Max (confkit.Backoff).
type Backoff = confkit.Backoff

// ApplyDefaults fills zero values with the defaults.
func (c *Config) ApplyDefaults() {
	for i := range c.Serial {
		c.Serial[i].ApplyDefaults()
	}
	modbus.ApplyDefaults(c.Modbus)
}

// ApplyDefaults fills zero values with the defaults.
func (s *SerialConfig) ApplyDefaults() {
	s.Line.ApplyDefaults(&serialLine)
	confkit.Default(&s.Framing, DefaultFraming)
	if s.Framing == "line" {
		confkit.Default(&s.Delimiter, DefaultDelimiter)
	}
	confkit.Default(&s.MaxFrame, DefaultMaxFrame)
	confkit.Default(&s.Format, DefaultFormat)
	s.Away.ApplyDefaults()
}

// Validate reports every problem as a *confkit.KeyError with keys relative to the hardware
// section ("serial[0].baud"), joined with errors.Join. It checks the configuration as given:
// call ApplyDefaults first (New does), or omitted fields are reported as invalid.
func (c *Config) Validate() error {
	return errors.Join(
		hwkit.ValidateList("serial", c.Serial,
			func(s *SerialConfig) string { return s.Name },
			func(_ int, s *SerialConfig) error { return s.Validate() }),
		modbus.Validate(c.Modbus))
}

// Validate checks one port; keys are relative to the port ("baud").
func (s *SerialConfig) Validate() error {
	var probs hwkit.Problems
	probs.Name(s.Name)
	probs.Join(s.Line.Validate(&serialLine))
	switch s.Framing {
	case "line":
		if len(s.Delimiter) != 1 {
			probs.Add("delimiter", "%q: must be exactly one byte", s.Delimiter)
		}
	case "cobs", "slip":
		if s.Delimiter != "" {
			probs.Add("delimiter", "only used with framing line, not %s", s.Framing)
		}
	default:
		probs.Add("framing", "%q is not valid (line, cobs or slip)", s.Framing)
	}
	if s.MaxFrame <= 0 || s.MaxFrame > maxMaxFrame {
		probs.Add("max_frame", "%d is not valid (1 to 1MiB)", int64(s.MaxFrame))
	}
	switch s.Format {
	case "raw", "json", "cbor":
	default:
		probs.Add("format", "%q is not valid (raw, json or cbor)", s.Format)
	}
	switch s.PublishAs {
	case "":
	case "json":
		if s.Format != "cbor" {
			probs.Add("publish_as", "json needs format cbor (got %q)", s.Format)
		}
	default:
		probs.Add("publish_as", "%q is not valid (json, or empty for as received)", s.PublishAs)
	}
	if err := checkTopic(s.Topic, false); err != nil {
		probs.Add("topic", "%v", err)
	}
	if s.QoS > 2 {
		probs.Add("qos", "%d is not valid (0, 1 or 2)", s.QoS)
	}
	if s.ErrorTopic != "" {
		if err := checkTopic(s.ErrorTopic, false); err != nil {
			probs.Add("error_topic", "%v", err)
		}
	}
	if s.CommandTopic != "" {
		if err := checkTopic(s.CommandTopic, true); err != nil {
			probs.Add("command_topic", "%v", err)
		}
	}
	probs.Join(s.Away.Validate())
	return probs.Err()
}

var parities = map[string]serial.Parity{
	"none": serial.NoParity, "odd": serial.OddParity, "even": serial.EvenParity,
	"mark": serial.MarkParity, "space": serial.SpaceParity,
}

var stopBits = map[string]serial.StopBits{
	"1": serial.OneStopBit, "1.5": serial.OnePointFiveStopBits, "2": serial.TwoStopBits,
}

// mode is the go.bug.st/serial mode of a validated config. InitialStatusBits stays nil: setting
// modem bits fails on ptys (ENOTTY) and many USB adapters, and the default (DTR, RTS up) suits
// nearly every device.
func (s *SerialConfig) mode() *serial.Mode {
	return &serial.Mode{BaudRate: s.Baud, DataBits: s.DataBits, Parity: parities[s.Parity], StopBits: stopBits[s.StopBits]}
}

// checkTopic validates an MQTT topic name, or a topic filter when filter is set.
func checkTopic(t string, filter bool) error { return hwkit.CheckTopic(t, t, filter) }
