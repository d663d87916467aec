package wire

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"
)

// JSON form of an envelope, for JSON connectors (HTTP/IM, MQTT with format: json). Cloud
// services implement against this schema:
//
//	{
//	  "v": 1,                          // format version, required; other values are rejected
//	  "id": "0190f3b4-8f2e-7a01-9c3d-4b1e2f3a4b5c", // UUIDv7, canonical lowercase, required
//	  "topic": "sensors/meter1",       // local MQTT topic, required
//	  "qos": 1,                        // omitted when 0
//	  "retain": true,                  // omitted when false
//	  "time": 1718000000123,           // capture time, Unix milliseconds (integer), always written
//	  "gateway": "gw1",                // omitted when empty
//	  "client_id": "sensor-17",        // omitted when empty
//	  "user_props": [["k", "v"]],      // MQTT 5 user properties in order; omitted when empty
//	  "content_type": "application/json", // MQTT 5 content type; omitted when empty
//	  "payload_encoding": "base64",    // present only when "payload" is base64 (see below)
//	  "payload": {"t": 21.5}           // omitted when the payload is empty
//	}
//
// "payload" is the payload itself, inlined verbatim, when the payload is valid UTF-8 JSON with no
// leading or trailing whitespace (so a JSON string payload appears as a JSON string, "null" as
// null, ...). Otherwise it is a JSON string holding the standard, padded base64 (RFC 4648 §4)
// of the payload bytes and "payload_encoding" is "base64". Readers must check
// "payload_encoding" before interpreting "payload"; the only values are absent and "base64".
// Writers emit the keys in the order above; readers accept any order and ignore unknown keys.
//
// A batch in JSON:
//
//	{"v": 1, "gateway": "gw1", "first": "<id>", "last": "<id>", "envelopes": [<envelope>, ...]}
//
// where every element of "envelopes" is a complete envelope as above (with its own "v" and
// "gateway"), and "first"/"last" are the ids of the first and last envelope.
type jsonEnvelope struct {
	V               *uint           `json:"v"`
	ID              string          `json:"id"`
	Topic           *string         `json:"topic"`
	QoS             byte            `json:"qos"`
	Retain          bool            `json:"retain"`
	Time            *int64          `json:"time"`
	Gateway         string          `json:"gateway"`
	ClientID        string          `json:"client_id"`
	UserProps       [][]string      `json:"user_props"`
	ContentType     string          `json:"content_type"`
	PayloadEncoding string          `json:"payload_encoding"`
	Payload         json.RawMessage `json:"payload"`
}

type jsonBatch struct {
	V         *uint          `json:"v"`
	Gateway   string         `json:"gateway"`
	First     string         `json:"first"`
	Last      string         `json:"last"`
	Envelopes []jsonEnvelope `json:"envelopes"`
}

// MarshalEnvelopeJSON encodes e in the JSON form documented above. It does not modify e.
func MarshalEnvelopeJSON(e *Envelope) ([]byte, error) { return Limits{}.MarshalEnvelopeJSON(e) }

// MarshalEnvelopeJSON is MarshalEnvelopeJSON within l.
func (l Limits) MarshalEnvelopeJSON(e *Envelope) ([]byte, error) {
	if err := e.check(l.maxPayload()); err != nil {
		return nil, fmt.Errorf("encode envelope json: %w", err)
	}
	return appendEnvelopeJSON(make([]byte, 0, jsonSizeHint(e)), e), nil
}

func jsonSizeHint(e *Envelope) int {
	n := 160 + len(e.Topic) + len(e.Gateway) + len(e.ClientID) + len(e.ContentType) + len(e.Payload)*4/3
	for _, p := range e.UserProps {
		n += 8 + len(p.Key) + len(p.Value)
	}
	return n
}

// inlineJSON reports whether p is emitted verbatim as the JSON payload.
func inlineJSON(p []byte) bool {
	if len(p) == 0 || isJSONSpace(p[0]) || isJSONSpace(p[len(p)-1]) {
		return false
	}
	return utf8.Valid(p) && json.Valid(p)
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func appendEnvelopeJSON(b []byte, e *Envelope) []byte {
	b = append(b, `{"v":1,"id":"`...)
	b = slices.Grow(b, 36)[:len(b)+36]
	e.ID.encodeHex(b[len(b)-36:])
	b = append(b, `","topic":`...)
	b = appendJSONString(b, e.Topic)
	if e.QoS != 0 {
		b = append(b, `,"qos":`...)
		b = strconv.AppendUint(b, uint64(e.QoS), 10)
	}
	if e.Retain {
		b = append(b, `,"retain":true`...)
	}
	b = append(b, `,"time":`...)
	b = strconv.AppendInt(b, e.Time, 10)
	if e.Gateway != "" {
		b = append(b, `,"gateway":`...)
		b = appendJSONString(b, e.Gateway)
	}
	if e.ClientID != "" {
		b = append(b, `,"client_id":`...)
		b = appendJSONString(b, e.ClientID)
	}
	if len(e.UserProps) > 0 {
		b = append(b, `,"user_props":[`...)
		for i, p := range e.UserProps {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '[')
			b = appendJSONString(b, p.Key)
			b = append(b, ',')
			b = appendJSONString(b, p.Value)
			b = append(b, ']')
		}
		b = append(b, ']')
	}
	if e.ContentType != "" {
		b = append(b, `,"content_type":`...)
		b = appendJSONString(b, e.ContentType)
	}
	if len(e.Payload) > 0 {
		if inlineJSON(e.Payload) {
			b = append(b, `,"payload":`...)
			b = append(b, e.Payload...)
		} else {
			b = append(b, `,"payload_encoding":"base64","payload":"`...)
			b = base64.StdEncoding.AppendEncode(b, e.Payload)
			b = append(b, '"')
		}
	}
	return append(b, '}')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s (valid UTF-8, checked by the caller) as a JSON string. Only what
// RFC 8259 requires is escaped (quote, backslash, control characters); no HTML escaping.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// UnmarshalEnvelopeJSON decodes the JSON form. Unknown keys are ignored; the same limits as
// UnmarshalEnvelope apply.
func UnmarshalEnvelopeJSON(p []byte) (*Envelope, error) { return Limits{}.UnmarshalEnvelopeJSON(p) }

// UnmarshalEnvelopeJSON is UnmarshalEnvelopeJSON within l.
func (l Limits) UnmarshalEnvelopeJSON(p []byte) (*Envelope, error) {
	if len(p) > MaxTranscode {
		return nil, fmt.Errorf("decode envelope json: %w: %d bytes > %d", ErrLimit, len(p), MaxTranscode)
	}
	var j jsonEnvelope
	if err := json.Unmarshal(p, &j); err != nil {
		return nil, fmt.Errorf("decode envelope json: %w: %w", ErrMalformed, err)
	}
	e := new(Envelope)
	if err := j.to(e, true, l.maxPayload()); err != nil {
		return nil, fmt.Errorf("decode envelope json: %w", err)
	}
	return e, nil
}

func (j *jsonEnvelope) to(e *Envelope, needVersion bool, maxPayload int) error {
	if j.V == nil {
		if needVersion {
			return fmt.Errorf("%w: missing \"v\"", ErrMalformed)
		}
	} else if *j.V != Version {
		return fmt.Errorf("%w %d (this build reads %d)", ErrVersion, *j.V, Version)
	}
	id, err := ParseID(j.ID)
	if err != nil {
		return err
	}
	if j.Topic == nil {
		return fmt.Errorf("%w: missing \"topic\"", ErrMalformed)
	}
	*e = Envelope{Version: Version, ID: id, Topic: *j.Topic, QoS: j.QoS, Retain: j.Retain,
		Gateway: j.Gateway, ClientID: j.ClientID, ContentType: j.ContentType}
	if j.Time != nil {
		e.Time = *j.Time
	} else {
		e.Time = id.Millis()
	}
	if len(j.UserProps) > MaxUserProps {
		return fmt.Errorf("%w: user props: %d > %d", ErrLimit, len(j.UserProps), MaxUserProps)
	}
	if len(j.UserProps) > 0 {
		e.UserProps = make([]UserProp, len(j.UserProps))
		for i, kv := range j.UserProps {
			if len(kv) != 2 {
				return fmt.Errorf("%w: user prop %d: %d elements, want 2", ErrMalformed, i, len(kv))
			}
			e.UserProps[i] = UserProp{Key: kv[0], Value: kv[1]}
		}
	}
	switch j.PayloadEncoding {
	case "":
		if len(j.Payload) > 0 {
			e.Payload = j.Payload
		}
	case "base64":
		var s string
		if err := json.Unmarshal(j.Payload, &s); err != nil {
			return fmt.Errorf("%w: payload: base64 payload is not a JSON string", ErrMalformed)
		}
		if base64.StdEncoding.DecodedLen(len(s)) > maxPayload+3 {
			return fmt.Errorf("payload: %w: > %d bytes", ErrLimit, maxPayload)
		}
		if e.Payload, err = base64.StdEncoding.DecodeString(s); err != nil {
			return fmt.Errorf("%w: payload: %w", ErrMalformed, err)
		}
		if len(e.Payload) == 0 {
			e.Payload = nil
		}
	default:
		return fmt.Errorf("%w: unknown payload_encoding %q", ErrMalformed, j.PayloadEncoding)
	}
	return e.check(maxPayload)
}

// MarshalBatchJSON encodes b in the JSON batch form documented at jsonEnvelope's schema.
func MarshalBatchJSON(b *Batch) ([]byte, error) { return Limits{}.MarshalBatchJSON(b) }

// MarshalBatchJSON is MarshalBatchJSON within l.
func (l Limits) MarshalBatchJSON(b *Batch) ([]byte, error) {
	first, last, err := b.header()
	if err != nil {
		return nil, fmt.Errorf("encode batch json: %w", err)
	}
	size := 128 + len(b.Gateway)
	for i, e := range b.Envelopes {
		if err := e.check(l.maxPayload()); err != nil {
			return nil, fmt.Errorf("encode batch json: envelope %d: %w", i, err)
		}
		size += jsonSizeHint(e)
	}
	out := make([]byte, 0, size)
	out = append(out, `{"v":1,"gateway":`...)
	out = appendJSONString(out, b.Gateway)
	out = append(out, `,"first":"`...)
	out = append(out, first.String()...)
	out = append(out, `","last":"`...)
	out = append(out, last.String()...)
	out = append(out, `","envelopes":[`...)
	for i, e := range b.Envelopes {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendEnvelopeJSON(out, e)
	}
	return append(out, "]}"...), nil
}

// UnmarshalBatchJSON decodes the JSON batch form with the limits of UnmarshalBatch.
func UnmarshalBatchJSON(p []byte) (*Batch, error) { return Limits{}.UnmarshalBatchJSON(p) }

// UnmarshalBatchJSON is UnmarshalBatchJSON within l.
func (l Limits) UnmarshalBatchJSON(p []byte) (*Batch, error) {
	return decodeWithin(l, "batch json", p, unmarshalBatchJSON)
}

func unmarshalBatchJSON(p []byte, maxPayload int) (*Batch, error) {
	if len(p) > MaxTranscode {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrLimit, len(p), MaxTranscode)
	}
	var j jsonBatch
	if err := json.Unmarshal(p, &j); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if j.V == nil {
		return nil, fmt.Errorf("%w: missing \"v\"", ErrMalformed)
	}
	if *j.V != Version {
		return nil, fmt.Errorf("%w %d (this build reads %d)", ErrVersion, *j.V, Version)
	}
	if len(j.Envelopes) > MaxBatch {
		return nil, fmt.Errorf("%w: %d envelopes > %d", ErrLimit, len(j.Envelopes), MaxBatch)
	}
	b := &Batch{Gateway: j.Gateway}
	var err error
	if j.First != "" || len(j.Envelopes) > 0 {
		if b.First, err = ParseID(j.First); err != nil {
			return nil, fmt.Errorf("first: %w", err)
		}
		if b.Last, err = ParseID(j.Last); err != nil {
			return nil, fmt.Errorf("last: %w", err)
		}
	}
	if err := checkString("gateway", b.Gateway, MaxString); err != nil {
		return nil, err
	}
	if n := len(j.Envelopes); n > 0 {
		envs := make([]Envelope, n)
		b.Envelopes = make([]*Envelope, n)
		for i := range j.Envelopes {
			if err := j.Envelopes[i].to(&envs[i], false, maxPayload); err != nil {
				return nil, fmt.Errorf("envelope %d: %w", i, err)
			}
			b.Envelopes[i] = &envs[i]
		}
		if b.First != envs[0].ID || b.Last != envs[n-1].ID {
			return nil, fmt.Errorf("%w: first/last do not match the envelopes", ErrMalformed)
		}
	}
	return b, nil
}
