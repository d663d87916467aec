package hardware

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/edged-dev/edged/wire"
	"github.com/fxamacker/cbor/v2"
)

// Reasons a frame is not published, the label values of edged_serial_invalid_total.
const (
	ReasonOversize    = "oversize"     // longer than max_frame
	ReasonMalformed   = "malformed"    // bad COBS/SLIP encoding
	ReasonInvalidJSON = "invalid_json" // format json, not one JSON value
	ReasonInvalidCBOR = "invalid_cbor" // format cbor, not one well-formed CBOR item
	ReasonTranscode   = "transcode"    // publish_as json, CBOR that has no JSON form
)

// Reasons a message is dropped, the label values of edged_serial_dropped_total.
const (
	DropPublish     = "publish_error" // Local.Publish failed for a frame
	DropPortAway    = "port_away"     // a command arrived while the port is away, no queue
	DropQueueFull   = "queue_full"    // the oldest queued command made room for a new one
	DropExpired     = "expired"       // a queued command was older than command_max_age
	DropWrite       = "write_error"   // writing a command to the port failed
	DropUnframeable = "unframeable"   // a command that line framing cannot carry (contains the delimiter)
	DropShutdown    = "shutdown"      // commands still queued when edged stopped
)

// User property keys set on every published frame.
const (
	PropPort  = "port"       // the configured port name
	PropTime  = "edged-time" // capture time, Unix milliseconds, decimal
	PropError = "error"      // on error_topic: why the frame was rejected
)

// decoder is a streaming frame decoder fed arbitrary chunks.
type decoder interface {
	Feed(p []byte, emit func(frame []byte))
	drops() compatDrops
}

// codec is one port's framing: a decoder factory (one decoder per session, so a reopen starts
// clean) and an encoder for commands.
type codec struct {
	framing string
	delim   byte
	max     int
}

func newCodec(s *SerialConfig) codec {
	c := codec{framing: s.Framing, max: int(s.MaxFrame)}
	if s.Framing == "line" && len(s.Delimiter) == 1 {
		c.delim = s.Delimiter[0]
	}
	return c
}

func (c codec) newDecoder() decoder {
	switch c.framing {
	case "cobs":
		return &compatDelimited{end: 0, max: c.max, decode: compatCOBSDecode}
	case "slip":
		return &compatDelimited{end: 0xC0, max: c.max, decode: compatSLIPDecode}
	default:
		return &compatLine{delim: c.delim, max: c.max}
	}
}

var errUnframeable = errors.New("command contains the line delimiter")

// encode frames a command for the device.
func (c codec) encode(p []byte) ([]byte, error) {
	switch c.framing {
	case "cobs":
		return compatCOBSEncode(p), nil
	case "slip":
		return compatSLIPEncode(p), nil
	default:
		p = bytes.TrimSuffix(p, []byte{c.delim}) // "reboot\n" and "reboot" mean the same
		if bytes.IndexByte(p, c.delim) >= 0 {
			return nil, errUnframeable
		}
		out := make([]byte, len(p)+1)
		copy(out, p)
		out[len(p)] = c.delim
		return out, nil
	}
}

// framer turns decoded frames into messages for one port. It is pure (no I/O), so the fuzz
// target drives it exactly as the read loop does.
type framer struct {
	name      string
	topic     string
	errTopic  string
	qos       byte
	retain    bool
	format    string
	publishAs string
	trimCR    bool
}

func newFramer(s *SerialConfig) *framer {
	return &framer{
		name: s.Name, topic: s.Topic, errTopic: s.ErrorTopic, qos: s.QoS, retain: s.Retain,
		format: s.Format, publishAs: s.PublishAs,
		trimCR: s.Framing == "line" && s.Delimiter == "\n",
	}
}

// build validates one frame and returns the message to publish on the frame topic, or the
// reason it is invalid together with the message for error_topic (nil without one). frame is
// only borrowed: the payload is always a copy.
func (f *framer) build(frame []byte, now time.Time) (msg *message, reason string, errMsg *message) {
	if f.trimCR {
		frame = bytes.TrimSuffix(frame, []byte{'\r'})
	}
	payload, ctype, reason := f.validate(frame)
	if reason != "" {
		if f.errTopic != "" {
			errMsg = f.message(f.errTopic, bytes.Clone(frame), "", now)
			errMsg.QoS, errMsg.Retain = 0, false
			errMsg.UserProps = append(errMsg.UserProps, wire.UserProp{Key: PropError, Value: reason})
		}
		return nil, reason, errMsg
	}
	return f.message(f.topic, payload, ctype, now), "", nil
}

func (f *framer) validate(frame []byte) (payload []byte, contentType, reason string) {
	switch f.format {
	case "json":
		if !json.Valid(frame) {
			return nil, "", ReasonInvalidJSON
		}
		return bytes.Clone(frame), "application/json", ""
	case "cbor":
		if cbor.Wellformed(frame) != nil {
			return nil, "", ReasonInvalidCBOR
		}
		if f.publishAs == "json" {
			j, err := cborToJSON(frame)
			if err != nil {
				return nil, "", ReasonTranscode
			}
			return j, "application/json", ""
		}
		return bytes.Clone(frame), "application/cbor", ""
	default:
		return bytes.Clone(frame), "", ""
	}
}

func (f *framer) message(topic string, payload []byte, ctype string, now time.Time) *message {
	return &message{
		Topic:       topic,
		Payload:     payload,
		QoS:         f.qos,
		Retain:      f.retain,
		ClientID:    "serial-" + f.name,
		ContentType: ctype,
		Inline:      true,
		Time:        now,
		UserProps: []wire.UserProp{
			{Key: PropPort, Value: f.name},
			{Key: PropTime, Value: strconv.FormatInt(now.UnixMilli(), 10)},
		},
	}
}

// cborToJSON is a stand-in until wire.CBORToJSON lands (TEMPORARY, see compat_wire.go).
func cborToJSON(b []byte) ([]byte, error) {
	var v any
	dm, _ := cbor.DecOptions{DefaultMapType: nil, MaxNestedLevels: 32}.DecMode()
	if err := dm.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	v, err := jsonable(v)
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

func jsonable(v any) (any, error) {
	switch t := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(t))
		for k, e := range t {
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("map key %v is not a string", k)
			}
			j, err := jsonable(e)
			if err != nil {
				return nil, err
			}
			m[ks] = j
		}
		return m, nil
	case []any:
		for i := range t {
			j, err := jsonable(t[i])
			if err != nil {
				return nil, err
			}
			t[i] = j
		}
		return t, nil
	case cbor.Tag, cbor.RawTag, []byte, cbor.SimpleValue:
		return nil, fmt.Errorf("%T has no JSON form", v)
	default:
		return v, nil
	}
}
