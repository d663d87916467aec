package hardware

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/edged-dev/edged/broker"
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

// codec is one port's framing, in terms of package wire's codecs: a decoder per session (a
// reopen starts clean, mid-frame bytes of the old device are gone) and an encoder for commands.
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

func (c codec) newDecoder() wire.FrameDecoder {
	switch c.framing {
	case wire.FramingCOBS:
		return wire.NewCOBSDecoder(c.max)
	case wire.FramingSLIP:
		return wire.NewSLIPDecoder(c.max)
	default:
		d := wire.NewLineDecoder(c.delim, c.max)
		d.StripCR = c.delim == '\n' // "\r\n" devices; other delimiters keep every byte
		return d
	}
}

var errUnframeable = errors.New("command contains the line delimiter")

// encode frames a command for the device.
func (c codec) encode(p []byte) ([]byte, error) {
	switch c.framing {
	case wire.FramingCOBS:
		return wire.EncodeCOBS(p), nil
	case wire.FramingSLIP:
		return wire.EncodeSLIP(p), nil
	default:
		// "reboot\n" and "reboot" mean the same; a delimiter inside would split the command.
		if bytes.IndexByte(bytes.TrimSuffix(p, []byte{c.delim}), c.delim) >= 0 {
			return nil, errUnframeable
		}
		return wire.EncodeLine(p, c.delim), nil
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
}

func newFramer(s *SerialConfig) *framer {
	return &framer{
		name: s.Name, topic: s.Topic, errTopic: s.ErrorTopic, qos: s.QoS, retain: s.Retain,
		format: s.Format, publishAs: s.PublishAs,
	}
}

// build validates one frame and returns the message to publish on the frame topic, or the
// reason it is invalid together with the message for error_topic (nil without one). frame is
// only borrowed: the payload is always a copy.
func (f *framer) build(frame []byte, now time.Time) (msg *broker.Message, reason string, errMsg *broker.Message) {
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
			j, err := wire.CBORToJSON(frame)
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

func (f *framer) message(topic string, payload []byte, ctype string, now time.Time) *broker.Message {
	return &broker.Message{
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
