package modbus

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/edged-dev/edged/hardware/hwkit"
	"github.com/edged-dev/edged/internal/confkit"
	"gopkg.in/yaml.v3"
)

// Defaults applied by ApplyDefaults to zero values.
const (
	DefaultBaud           = 19200
	DefaultDataBits       = 8
	DefaultParity         = "even" // the Modbus serial line spec's default (8E1)
	DefaultTimeout        = 300 * time.Millisecond
	DefaultRetries        = 1
	DefaultOfflineAfter   = 3
	DefaultOfflineMin     = 2 * time.Second
	DefaultOfflineMax     = 60 * time.Second
	DefaultPoll           = time.Second
	DefaultFormat         = "json"
	DefaultTopic          = "modbus/{bus}/{unit}/{point}"
	replySuffix           = "/reply"
	maxReadRegisters      = 125  // protocol limit of function codes 3 and 4
	maxReadBits           = 2000 // protocol limit of function codes 1 and 2
	maxWriteRegisters     = 123  // protocol limit of function code 16
	maxStringRegisters    = maxReadRegisters
	maxPointsPerUnit      = 10000
	minPoll               = 10 * time.Millisecond
	minTimeout            = 10 * time.Millisecond
	maxRetries            = 10
	rtuDefaultStopBitsStr = "1"
)

// rtuLine is what an RTU bus's line defaults to and accepts.
var rtuLine = hwkit.LineRules{
	Baud: DefaultBaud, DataBits: DefaultDataBits, Parity: DefaultParity, StopBits: rtuDefaultStopBitsStr,
	StopBitsNoParity: "2", // an RTU character is 11 bits: the parity bit's place goes to a stop bit
	ValidDataBits:    []int{7, 8},
	ValidParities:    []string{"none", "even", "odd"},
	ValidStopBits:    []string{"1", "2"},
}

// Register types (BusConfig.Units[].Points[].Type).
const (
	Coil          = "coil"
	DiscreteInput = "discrete_input"
	Holding       = "holding"
	Input         = "input"
)

// BusConfig is one Modbus bus: an RTU serial line or a TCP connection, and the units on it.
type BusConfig struct {
	// Name identifies the bus in topics ({bus}), status, metrics (label bus) and logs.
	// Required, unique, [A-Za-z0-9_.-].
	Name string `yaml:"name"`
	// RTU is a serial line (Modbus RTU). Exactly one of rtu and tcp is required.
	RTU *RTUConfig `yaml:"rtu"`
	// TCP is the host:port of a Modbus TCP device or gateway.
	TCP string `yaml:"tcp"`
	// Timeout is how long one request waits for its response. Default 300ms.
	Timeout time.Duration `yaml:"timeout"`
	// Retries is how often a timed-out request is repeated before the poll counts as failed.
	// Default 1 (0 allowed: `retries: 0`). Offline units are probed once, without retries.
	Retries *int `yaml:"retries"`
	// OfflineAfter failed polls in a row mark a unit offline: its points go stale and it is
	// probed with backoff (offline_backoff) instead of at its poll rate, so a dead unit costs the
	// bus one timeout per backoff period. Default 3.
	OfflineAfter int `yaml:"offline_after"`
	// OfflineBackoff is the probe interval of an offline unit: from min, doubling to max.
	// Default 2s..60s.
	OfflineBackoff Backoff `yaml:"offline_backoff"`
	// Poll is the default poll interval of the points. Default 1s.
	Poll time.Duration `yaml:"poll"`
	// Format of published values: json ({"v":..,"t":..,"q":..}) or cbor (the same map in CBOR).
	// Default json.
	Format string `yaml:"format"`
	// Topic is the default topic of the points; {bus}, {unit} and {point} are replaced by the
	// names. Default "modbus/{bus}/{unit}/{point}".
	Topic string `yaml:"topic"`
	// QoS is the default QoS of the points: 0, 1 or 2.
	QoS byte `yaml:"qos"`
	// Retain is the default retain flag of the points.
	Retain bool `yaml:"retain"`
	// Away is what the bus does while its device is away: command_queue (writes held; 0:
	// writes arriving while the bus is away are refused), command_max_age (queued writes older
	// than this are answered with error "expired" and counted) and the reopen backoff of the
	// serial line or TCP connection.
	hwkit.Away `yaml:",inline"`
	// Units lists the slaves polled on this bus. At least one.
	Units []UnitConfig `yaml:"units"`
}

// RTUConfig is the serial line of an RTU bus, with the serial ports' keys (see hwkit.Line;
// defaults 19200 8E1, and 2 stop bits with parity none).
type RTUConfig struct {
	hwkit.Line `yaml:",inline"`
}

// USBMatch identifies a USB serial adapter, as in hardware.serial[].match.
type USBMatch = hwkit.USBMatch

// Backoff is a delay range that doubles from Min to Max (confkit.Backoff).
type Backoff = confkit.Backoff

// UnitConfig is one slave on a bus.
type UnitConfig struct {
	// Name is the unit's name in topics ({unit}), status and metrics (label unit). Required,
	// unique on the bus, [A-Za-z0-9_.-].
	Name string `yaml:"name"`
	// ID is the slave id: 1..247 on RTU, 0..255 on TCP. Required.
	ID *int `yaml:"id"`
	// CommandTopic, when set, takes writes for any `writable` point of the unit; the payload is
	// {"point": "<name>", "v": <value>}. Placeholders {bus} and {unit} are replaced.
	CommandTopic string `yaml:"command_topic"`
	// ReplyTopic receives the result of each write. Default: command_topic + "/reply".
	ReplyTopic string `yaml:"reply_topic"`
	// Points are the values read from the unit. At least one.
	Points []PointConfig `yaml:"points"`
}

// PointConfig is one value of a unit.
type PointConfig struct {
	// Name is the point's name in topics ({point}) and writes. Required, unique in the unit.
	Name string `yaml:"name"`
	// Type is the register type: coil, discrete_input, holding or input. Required.
	Type string `yaml:"type"`
	// Address is the 0-based protocol address (register 40001 is holding address 0).
	Address *int `yaml:"address"`
	// DataType decodes the registers: bool, int16, uint16, int32, uint32, float32, int64,
	// uint64, float64 or string. Default bool for coils and discrete inputs, uint16 for
	// registers.
	DataType string `yaml:"data_type"`
	// WordOrder of 32 and 64 bit values: high_first (the usual big-endian) or low_first. Bytes
	// within a register are always big-endian, as the protocol defines.
	WordOrder string `yaml:"word_order"`
	// Count is the number of registers of a string (2 characters each). Other data types have
	// a fixed width; count may be given but must match it.
	Count int `yaml:"count"`
	// Scale and Offset turn the raw number into the published one: v = raw*scale + offset
	// (writes apply the inverse). Default scale 1, offset 0; then integers stay integers.
	Scale  *float64 `yaml:"scale"`
	Offset float64  `yaml:"offset"`
	// Unit is the engineering unit, sent as the MQTT 5 user property "unit".
	Unit string `yaml:"unit"`
	// Poll is this point's poll interval. Default: the bus's poll.
	Poll time.Duration `yaml:"poll"`
	// Topic overrides the bus's topic for this point (placeholders as there).
	Topic string `yaml:"topic"`
	// QoS and Retain override the bus's.
	QoS    *byte `yaml:"qos"`
	Retain *bool `yaml:"retain"`
	// Deadband publishes a numeric value only when it moved more than this from the last
	// published value: absolute (0.5) or percent of the last value ("2%").
	Deadband *Deadband `yaml:"deadband"`
	// OnChange publishes only when the value differs from the last published one.
	OnChange bool `yaml:"on_change"`
	// MaxInterval publishes an unchanged value at least this often (with deadband or on_change).
	MaxInterval time.Duration `yaml:"max_interval"`
	// Writable lets the unit's command_topic write this point (coil or holding only).
	Writable bool `yaml:"writable"`
	// CommandTopic takes writes for this point alone; the payload is the value (JSON, or
	// {"v": value}). Implies writable. Placeholders as in topic.
	CommandTopic string `yaml:"command_topic"`
	// ReplyTopic receives the result of each write. Default: command_topic + "/reply".
	ReplyTopic string `yaml:"reply_topic"`
}

// Deadband is an absolute or percent threshold.
type Deadband struct {
	Value   float64
	Percent bool
}

// UnmarshalYAML accepts a number (absolute) or "N%" (percent).
func (d *Deadband) UnmarshalYAML(n *yaml.Node) error {
	// A *yaml.TypeError with "line N: ..." is how the config loader locates the problem.
	if n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want a number or a percentage such as \"2%%\"", n.Line)}}
	}
	s := strings.TrimSpace(n.Value)
	pct := strings.HasSuffix(s, "%")
	v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(s, "%")), 64)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %q is not a number or a percentage such as \"2%%\"", n.Line, n.Value)}}
	}
	*d = Deadband{Value: v, Percent: pct}
	return nil
}

// MarshalYAML writes the deadband back as written.
func (d Deadband) MarshalYAML() (any, error) {
	if d.Percent {
		return strconv.FormatFloat(d.Value, 'g', -1, 64) + "%", nil
	}
	return d.Value, nil
}

// ApplyDefaults fills zero values with the defaults, for every bus.
func ApplyDefaults(buses []BusConfig) {
	for i := range buses {
		buses[i].ApplyDefaults()
	}
}

// ApplyDefaults fills zero values with the defaults.
func (b *BusConfig) ApplyDefaults() {
	if b.RTU != nil {
		b.RTU.ApplyDefaults(&rtuLine)
	}
	if b.Timeout == 0 {
		b.Timeout = DefaultTimeout
	}
	if b.Retries == nil {
		n := DefaultRetries
		b.Retries = &n
	}
	if b.OfflineAfter == 0 {
		b.OfflineAfter = DefaultOfflineAfter
	}
	b.OfflineBackoff.ApplyDefaults(DefaultOfflineMin, DefaultOfflineMax)
	if b.Poll == 0 {
		b.Poll = DefaultPoll
	}
	if b.Format == "" {
		b.Format = DefaultFormat
	}
	if b.Topic == "" {
		b.Topic = DefaultTopic
	}
	b.Away.ApplyDefaults()
	for i := range b.Units {
		u := &b.Units[i]
		if u.CommandTopic != "" && u.ReplyTopic == "" {
			u.ReplyTopic = u.CommandTopic + replySuffix
		}
		for j := range u.Points {
			p := &u.Points[j]
			if p.DataType == "" {
				p.DataType = "uint16"
				if p.Type == Coil || p.Type == DiscreteInput {
					p.DataType = "bool"
				}
			}
			if p.WordOrder == "" {
				p.WordOrder = "high_first"
			}
			if p.Count == 0 {
				p.Count = width(p.DataType)
			}
			if p.Scale == nil {
				one := 1.0
				p.Scale = &one
			}
			if p.Poll == 0 {
				p.Poll = b.Poll
			}
			if p.Topic == "" {
				p.Topic = b.Topic
			}
			if p.QoS == nil {
				q := b.QoS
				p.QoS = &q
			}
			if p.Retain == nil {
				r := b.Retain
				p.Retain = &r
			}
			if p.CommandTopic != "" {
				p.Writable = true
				if p.ReplyTopic == "" {
					p.ReplyTopic = p.CommandTopic + replySuffix
				}
			}
		}
	}
}

// width is the number of registers (or bits) of a fixed-width data type, 0 for string.
func width(dataType string) int {
	switch dataType {
	case "bool", "int16", "uint16":
		return 1
	case "int32", "uint32", "float32":
		return 2
	case "int64", "uint64", "float64":
		return 4
	}
	return 0
}

// Validate reports every problem as a *confkit.KeyError with keys relative to the hardware
// section ("modbus[0].units[1].points[2].address"), joined with errors.Join. Call
// ApplyDefaults first.
func Validate(buses []BusConfig) error {
	return hwkit.ValidateList("modbus", buses,
		func(b *BusConfig) string { return b.Name },
		func(_ int, b *BusConfig) error { return b.Validate() })
}

// Validate checks one bus; keys are relative to it ("units[0].id").
func (b *BusConfig) Validate() error {
	var probs hwkit.Problems
	probs.Name(b.Name)
	switch {
	case b.RTU != nil && b.TCP != "":
		probs.Add("tcp", "set either rtu or tcp, not both")
	case b.RTU == nil && b.TCP == "":
		probs.Add("rtu", "required (or tcp: host:port)")
	case b.RTU != nil:
	default:
		host, port, err := splitHostPort(b.TCP)
		if err != nil || host == "" || port == "" {
			probs.Add("tcp", "%q is not host:port", b.TCP)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			probs.Add("tcp", "%q: port must be 1..65535", b.TCP)
		}
	}
	if b.RTU != nil {
		probs.Join(confkit.Prefix("rtu", b.RTU.Validate(&rtuLine)))
	}
	if b.Timeout < minTimeout {
		probs.Add("timeout", "%v is too short (at least %v)", b.Timeout, minTimeout)
	}
	if b.Retries == nil || *b.Retries < 0 || *b.Retries > maxRetries {
		probs.Add("retries", "%s is not valid (0 to %d)", hwkit.IntOrUnset(b.Retries), maxRetries)
	}
	if b.OfflineAfter < 1 {
		probs.Add("offline_after", "%d is not valid (at least 1)", b.OfflineAfter)
	}
	probs.Join(b.OfflineBackoff.Validate("offline_backoff"))
	if b.Poll < minPoll {
		probs.Add("poll", "%v is too short (at least %v)", b.Poll, minPoll)
	}
	switch b.Format {
	case "json", "cbor":
	default:
		probs.Add("format", "%q is not valid (json or cbor)", b.Format)
	}
	if err := checkTopicTemplate(b.Topic, false, true); err != nil {
		probs.Add("topic", "%v", err)
	}
	if b.QoS > 2 {
		probs.Add("qos", "%d is not valid (0, 1 or 2)", b.QoS)
	}
	probs.Join(b.Away.Validate())
	if len(b.Units) == 0 {
		probs.Add("units", "at least one unit is required")
	}
	ids := map[int]int{}
	probs.Join(hwkit.ValidateList("units", b.Units,
		func(u *UnitConfig) string { return u.Name },
		func(i int, u *UnitConfig) error {
			var dup error
			if u.ID != nil {
				if j, seen := ids[*u.ID]; seen {
					dup = confkit.Errorf("id", "%d is already used by units[%d]", *u.ID, j)
				} else {
					ids[*u.ID] = i
				}
			}
			return errors.Join(dup, u.validate(b.RTU != nil))
		}))
	return probs.Err()
}

func (u *UnitConfig) validate(rtu bool) error {
	var probs hwkit.Problems
	probs.Name(u.Name)
	switch {
	case u.ID == nil:
		probs.Add("id", "required (the slave id)")
	case rtu && (*u.ID < 1 || *u.ID > 247):
		probs.Add("id", "%d is not valid on RTU (1 to 247; 0 is broadcast)", *u.ID)
	case *u.ID < 0 || *u.ID > 255:
		probs.Add("id", "%d is not valid (0 to 255)", *u.ID)
	}
	checkCommandTopics(&probs, u.CommandTopic, u.ReplyTopic, false)
	if len(u.Points) == 0 {
		probs.Add("points", "at least one point is required")
	}
	if len(u.Points) > maxPointsPerUnit {
		probs.Add("points", "%d points; at most %d per unit", len(u.Points), maxPointsPerUnit)
	}
	anyWritable := false
	probs.Join(hwkit.ValidateList("points", u.Points,
		func(p *PointConfig) string { return p.Name },
		func(_ int, p *PointConfig) error {
			anyWritable = anyWritable || p.Writable
			return p.validate()
		}))
	if u.CommandTopic != "" && !anyWritable {
		probs.Add("command_topic", "no point of the unit is writable (set writable: true on a coil or holding point)")
	}
	return probs.Err()
}

func (p *PointConfig) validate() error {
	var probs hwkit.Problems
	probs.Name(p.Name)
	bits := false
	switch p.Type {
	case Coil, DiscreteInput:
		bits = true
	case Holding, Input:
	case "":
		probs.Add("type", "required (coil, discrete_input, holding or input)")
	default:
		probs.Add("type", "%q is not valid (coil, discrete_input, holding or input)", p.Type)
	}
	w := width(p.DataType)
	switch {
	case p.DataType == "string":
		if bits {
			probs.Add("data_type", "string needs registers (holding or input), not %s", p.Type)
		}
		if p.Count < 1 || p.Count > maxStringRegisters {
			probs.Add("count", "%d is not valid for a string (1 to %d registers)", p.Count, maxStringRegisters)
		}
	case w == 0:
		probs.Add("data_type", "%q is not valid (bool, int16, uint16, int32, uint32, float32, int64, uint64, float64 or string)", p.DataType)
	case bits && p.DataType != "bool":
		probs.Add("data_type", "%s points are bool, not %s", p.Type, p.DataType)
	case p.Count != w:
		probs.Add("count", "%d does not match data_type %s (%d)", p.Count, p.DataType, w)
	}
	switch p.WordOrder {
	case "high_first", "low_first":
	default:
		probs.Add("word_order", "%q is not valid (high_first or low_first)", p.WordOrder)
	}
	if p.Address == nil {
		probs.Add("address", "required (0-based protocol address)")
	} else if *p.Address < 0 || *p.Address+max(p.Count, 1) > 65536 {
		probs.Add("address", "%d is not valid (0 to 65535, and the point must end by 65535)", *p.Address)
	}
	if p.Scale == nil || *p.Scale == 0 || math.IsNaN(*p.Scale) || math.IsInf(*p.Scale, 0) {
		probs.Add("scale", "must be a finite number other than 0")
	}
	if math.IsNaN(p.Offset) || math.IsInf(p.Offset, 0) {
		probs.Add("offset", "must be a finite number")
	}
	if (p.DataType == "bool" || p.DataType == "string") && (p.Scale != nil && *p.Scale != 1 || p.Offset != 0) {
		probs.Add("scale", "scale and offset apply to numbers, not %s", p.DataType)
	}
	if p.Poll < minPoll {
		probs.Add("poll", "%v is too short (at least %v)", p.Poll, minPoll)
	}
	if err := checkTopicTemplate(p.Topic, false, true); err != nil {
		probs.Add("topic", "%v", err)
	}
	if p.QoS == nil || *p.QoS > 2 {
		probs.Add("qos", "is not valid (0, 1 or 2)")
	}
	if d := p.Deadband; d != nil {
		switch {
		case math.IsNaN(d.Value) || math.IsInf(d.Value, 0) || d.Value < 0:
			probs.Add("deadband", "must be a finite number >= 0")
		case p.DataType == "bool" || p.DataType == "string":
			probs.Add("deadband", "applies to numbers; use on_change for %s", p.DataType)
		}
	}
	if p.MaxInterval < 0 {
		probs.Add("max_interval", "%v is not valid (must be >= 0)", p.MaxInterval)
	}
	if p.MaxInterval > 0 && p.Deadband == nil && !p.OnChange {
		probs.Add("max_interval", "only means something with deadband or on_change (without them every read is published)")
	}
	if p.Writable && p.Type != Coil && p.Type != Holding {
		probs.Add("writable", "only coil and holding points can be written, not %s", p.Type)
	}
	if p.Writable && p.DataType == "string" {
		// Strings are read-only: padding and encoding rules differ too much between devices.
		probs.Add("writable", "string points are read-only")
	}
	if p.Writable && p.Type == Holding && p.Count > maxWriteRegisters {
		probs.Add("count", "%d registers cannot be written in one request (at most %d)", p.Count, maxWriteRegisters)
	}
	checkCommandTopics(&probs, p.CommandTopic, p.ReplyTopic, true)
	return probs.Err()
}

func splitHostPort(s string) (host, port string, err error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", "", errors.New("missing port")
	}
	host, port = s[:i], s[i+1:]
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	return host, port, nil
}

// checkCommandTopics checks the command_topic (a filter) and reply_topic of a unit, or of a
// point (withPoint: {point} is known there).
func checkCommandTopics(probs *hwkit.Problems, command, reply string, withPoint bool) {
	if command == "" {
		if reply != "" {
			probs.Add("reply_topic", "needs command_topic")
		}
		return
	}
	if err := checkTopicTemplate(command, true, withPoint); err != nil {
		probs.Add("command_topic", "%v", err)
	} else if err := checkTopicTemplate(reply, false, withPoint); err != nil {
		probs.Add("reply_topic", "%v", err)
	}
}

// expand replaces the placeholders of a topic template.
func expand(t, bus, unit, point string) string {
	return strings.NewReplacer("{bus}", bus, "{unit}", unit, "{point}", point).Replace(t)
}

// checkTopicTemplate validates a topic name (or filter) after its placeholders are replaced
// by a sample name; {point} is only known where withPoint is set.
func checkTopicTemplate(t string, filter, withPoint bool) error {
	if t == "" {
		return errors.New("required")
	}
	if !withPoint && strings.Contains(t, "{point}") {
		return fmt.Errorf("%q: {point} is not known here (the point is in the payload)", t)
	}
	s := expand(t, "b", "u", "p")
	if strings.ContainsAny(s, "{}") {
		return fmt.Errorf("%q: unknown placeholder (known: {bus}, {unit}, {point})", t)
	}
	return hwkit.CheckTopic(s, t, filter)
}
