package hwkit

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edged-dev/edged/internal/confkit"
)

// Defaults of Away, the same for serial ports and Modbus buses.
const (
	DefaultCommandQueue  = 16
	DefaultCommandMaxAge = 30 * time.Second
	DefaultReopenMin     = 250 * time.Millisecond
	DefaultReopenMax     = 30 * time.Second

	// MaxCommandQueue bounds command_queue.
	MaxCommandQueue = 10000
	// MaxBaud bounds baud; real UARTs stop well below it.
	MaxBaud = 20_000_000
)

// Line is a serial device and how its line is set. It is embedded inline, so its keys stand
// beside the port's own (hardware.serial[]) or the bus's (hardware.modbus[].rtu). What a key
// defaults to and accepts depends on the kind of device: see LineRules.
type Line struct {
	// Port is the device path, e.g. /dev/ttyUSB0 or a stable /dev/serial/by-id/... link.
	// Exactly one of port and match is required.
	Port string `yaml:"port"`
	// Match finds the device by its USB identity instead of a path, so the device is found again
	// when it comes back at another /dev/ttyUSB* after a replug. Re-resolved before every open.
	Match *USBMatch `yaml:"match"`
	// Baud is the line speed in bit/s. Default 115200 on a serial port, 19200 on a Modbus RTU
	// bus.
	Baud int `yaml:"baud"`
	// DataBits is the character size: 5, 6, 7 or 8 on a serial port, 7 or 8 on a Modbus RTU
	// bus. Default 8.
	DataBits int `yaml:"data_bits"`
	// Parity is none, odd, even, mark or space on a serial port (default none); none, even or
	// odd on a Modbus RTU bus (default even, the Modbus serial line spec's 8E1).
	Parity string `yaml:"parity"`
	// StopBits is 1, 1.5 or 2 on a serial port (default 1; Linux cannot set 1.5, opening such a
	// port fails); 1 or 2 on a Modbus RTU bus (default 1, or 2 with parity none, as the Modbus
	// serial line spec asks). A YAML number is taken as written: 1.5 stays "1.5".
	StopBits string `yaml:"stop_bits"`
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

// LineRules is what one kind of device defaults to and accepts. The accepted lists are in the
// order the error messages name them.
type LineRules struct {
	Baud     int    // default baud
	DataBits int    // default data bits
	Parity   string // default parity
	StopBits string // default stop bits
	// StopBitsNoParity, when set, is the default stop bits with parity none instead of StopBits.
	StopBitsNoParity string

	ValidDataBits []int
	ValidParities []string
	ValidStopBits []string
}

// ApplyDefaults fills zero values with the defaults of r.
func (l *Line) ApplyDefaults(r *LineRules) {
	confkit.Default(&l.Baud, r.Baud)
	confkit.Default(&l.DataBits, r.DataBits)
	confkit.Default(&l.Parity, r.Parity)
	if l.Parity == "none" && r.StopBitsNoParity != "" {
		confkit.Default(&l.StopBits, r.StopBitsNoParity)
	}
	confkit.Default(&l.StopBits, r.StopBits)
}

// Validate checks the line against r; keys are relative to the section that embeds it
// ("baud", "match.vid"), joined with errors.Join.
func (l *Line) Validate(r *LineRules) error {
	var probs Problems
	switch {
	case l.Port != "" && l.Match != nil:
		probs.Add("port", "set either port or match, not both")
	case l.Port == "" && l.Match == nil:
		probs.Add("port", "required (or match: {vid, pid})")
	case l.Match != nil:
		if !isHex4(l.Match.VID) {
			probs.Add("match.vid", "%q is not a USB vendor id (4 hex digits, e.g. 0403)", l.Match.VID)
		}
		if !isHex4(l.Match.PID) {
			probs.Add("match.pid", "%q is not a USB product id (4 hex digits, e.g. 6001)", l.Match.PID)
		}
	}
	if l.Baud <= 0 || l.Baud > MaxBaud {
		probs.Add("baud", "%d is not a valid baud rate", l.Baud)
	}
	if !slices.Contains(r.ValidDataBits, l.DataBits) {
		probs.Add("data_bits", "%d is not valid (%s)", l.DataBits, orList(r.ValidDataBits))
	}
	if !slices.Contains(r.ValidParities, l.Parity) {
		probs.Add("parity", "%q is not valid (%s)", l.Parity, orList(r.ValidParities))
	}
	if !slices.Contains(r.ValidStopBits, l.StopBits) {
		probs.Add("stop_bits", "%q is not valid (%s)", l.StopBits, orList(r.ValidStopBits))
	}
	return probs.Err()
}

// orList writes "a, b or c".
func orList[T any](vs []T) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = fmt.Sprint(v)
	}
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
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

// Away is how a serial port or Modbus bus behaves while its device is away: how it retries the
// device, and which commands it keeps for it meanwhile. Embedded inline beside the device's
// other keys.
type Away struct {
	// CommandQueue is how many commands (writes) are held while the device is away, and behind a
	// slow write; the oldest is dropped and counted when it is full. 0 holds none while the
	// device is away: a command arriving then is dropped and counted (on a Modbus bus, answered
	// with an error); while it is open, one command still waits behind a write in progress. Default 16, at most 10000.
	CommandQueue *int `yaml:"command_queue"`
	// CommandMaxAge drops (and counts) queued commands older than this when the device comes
	// back, instead of replaying stale commands to it. Default 30s.
	CommandMaxAge time.Duration `yaml:"command_max_age"`
	// Reopen is the backoff between attempts to (re)open a missing or failed device (serial
	// line or TCP connection). Default 250ms..30s.
	Reopen confkit.Backoff `yaml:"reopen"`
}

// ApplyDefaults fills zero values with the defaults.
func (a *Away) ApplyDefaults() {
	confkit.DefaultPtr(&a.CommandQueue, DefaultCommandQueue)
	confkit.Default(&a.CommandMaxAge, DefaultCommandMaxAge)
	a.Reopen.ApplyDefaults(DefaultReopenMin, DefaultReopenMax)
}

// Validate checks the settings; keys are relative to the section that embeds them.
func (a *Away) Validate() error {
	var probs Problems
	if a.CommandQueue == nil || *a.CommandQueue < 0 || *a.CommandQueue > MaxCommandQueue {
		probs.Add("command_queue", "%s is not valid (0 to %d)", IntOrUnset(a.CommandQueue), MaxCommandQueue)
	}
	if a.CommandMaxAge <= 0 {
		probs.Add("command_max_age", "%v is not valid (must be > 0)", a.CommandMaxAge)
	}
	probs.Join(a.Reopen.Validate("reopen"))
	return probs.Err()
}

// IntOrUnset shows an optional number in an error message.
func IntOrUnset(p *int) string {
	if p == nil {
		return "unset"
	}
	return strconv.Itoa(*p)
}

// CheckName validates the name of a port, bus, unit or point: it shows in topics, metric labels
// and logs, so it is required and kept to [A-Za-z0-9_.-].
func CheckName(s string) error {
	if s == "" {
		return errors.New("required")
	}
	if strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.')
	}) >= 0 {
		return fmt.Errorf("%q: use letters, digits, '_', '-' and '.'", s)
	}
	return nil
}

// CheckTopic validates t as an MQTT topic name, or a topic filter when filter is set. Messages
// quote shown, which is t or the template t was expanded from.
func CheckTopic(t, shown string, filter bool) error {
	if t == "" {
		return errors.New("required")
	}
	if len(t) > 65535 || strings.ContainsRune(t, 0) {
		return fmt.Errorf("%q is not a valid MQTT topic", shown)
	}
	if strings.HasPrefix(t, "$") {
		return fmt.Errorf("%q: topics starting with $ are reserved", shown)
	}
	levels := strings.Split(t, "/")
	for i, l := range levels {
		if !strings.ContainsAny(l, "+#") {
			continue
		}
		if !filter {
			return fmt.Errorf("%q: wildcards are not allowed in a topic name", shown)
		}
		if (l == "#" && i == len(levels)-1) || l == "+" {
			continue
		}
		return fmt.Errorf("%q is not a valid topic filter", shown)
	}
	return nil
}
