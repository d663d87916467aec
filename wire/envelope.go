package wire

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
	"unicode/utf8"
)

// Version is the envelope format version this build writes (and the only one it reads).
const Version = 1

// ID is a 16-byte, time-ordered message id (UUIDv7 layout): byte order equals time order, so
// the remote can dedupe on it and sort by it. In CBOR it is a 16-byte byte string, in JSON the
// canonical lowercase 8-4-4-4-12 string.
type ID [16]byte

var (
	idMu   sync.Mutex
	lastMs int64
	lastSq uint16
)

// NewID returns a UUIDv7 that is strictly increasing within this process even when the clock
// does not move (a 12-bit counter in rand_a).
func NewID() ID {
	return newIDAt(time.Now().UnixMilli())
}

func newIDAt(now int64) ID {
	var id ID
	_, _ = rand.Read(id[:])
	idMu.Lock()
	ms := now
	if ms <= lastMs {
		lastSq++
		if lastSq >= 1<<12 {
			lastMs++
			lastSq = 0
		}
		ms = lastMs
	} else {
		lastMs, lastSq = ms, 0
	}
	sq := lastSq
	idMu.Unlock()
	id[0], id[1], id[2], id[3], id[4], id[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	id[6] = 0x70 | byte(sq>>8)
	id[7] = byte(sq)
	id[8] = 0x80 | id[8]&0x3f
	return id
}

// String is the canonical 8-4-4-4-12 hex form.
func (id ID) String() string {
	var b [36]byte
	id.encodeHex(b[:])
	return string(b[:])
}

func (id ID) encodeHex(b []byte) {
	hex.Encode(b[0:8], id[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], id[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], id[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], id[8:10])
	b[23] = '-'
	hex.Encode(b[24:], id[10:])
}

// Millis is the Unix millisecond timestamp in the first 48 bits of a UUIDv7.
func (id ID) Millis() int64 {
	return int64(id[0])<<40 | int64(id[1])<<32 | int64(id[2])<<24 | int64(id[3])<<16 | int64(id[4])<<8 | int64(id[5])
}

// IsZero reports whether id is the zero id.
func (id ID) IsZero() bool { return id == ID{} }

// ParseID parses the canonical 8-4-4-4-12 form (either case).
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return id, fmt.Errorf("parse id %q: %w: want 8-4-4-4-12 hex", s, ErrMalformed)
	}
	j := 0
	for i := 0; i < 36; {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			i++
			continue
		}
		hi, ok1 := unhex(s[i])
		lo, ok2 := unhex(s[i+1])
		if !ok1 || !ok2 {
			return ID{}, fmt.Errorf("parse id %q: %w: not hex", s, ErrMalformed)
		}
		id[j] = hi<<4 | lo
		j++
		i += 2
	}
	return id, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// MarshalText implements encoding.TextMarshaler (the canonical string).
func (id ID) MarshalText() ([]byte, error) {
	b := make([]byte, 36)
	id.encodeHex(b)
	return b, nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// UserProp is one MQTT 5 user property; order and duplicates are kept as MQTT allows both.
// In CBOR a property is the 2-element array [key, value].
type UserProp struct {
	Key   string
	Value string
}

// Envelope is one message as edged stores and forwards it.
//
// CBOR form (a map with unsigned integer keys, Core Deterministic Encoding, RFC 8949 §4.2.1):
//
//	key  field        type        presence
//	0    Version      uint        required (1); omitted inside a batch (the batch has it)
//	1    ID           bstr .size 16 required
//	2    Topic        tstr        required
//	3    Payload      bstr        required (may be empty), opaque bytes
//	4    QoS          uint 0..2   omitted when 0
//	5    Retain       bool        omitted when false
//	6    Time         int         capture time, Unix ms; omitted when equal to ID.Millis()
//	7    Gateway      tstr        omitted when empty (inside a batch: when equal to the batch's)
//	8    ClientID     tstr        omitted when empty
//	9    UserProps    [* [tstr, tstr]] omitted when empty
//	10   ContentType  tstr        omitted when empty
//
// Readers ignore unsigned integer keys (< 2^32) they do not know (forward compatibility); any other key
// type, a duplicate key, a wrong type or a limit overrun is an error. Indefinite lengths are
// rejected for the known fields; unknown values may be any well-formed CBOR.
type Envelope struct {
	Version     uint       // 0 when built by a producer: written as Version
	ID          ID         // time-ordered message id; the remote dedupes on it
	Topic       string     // local MQTT topic
	Payload     []byte     // opaque bytes, at most Limits.MaxPayload
	QoS         byte       // 0, 1 or 2
	Retain      bool       // MQTT retain flag
	Time        int64      // capture time, Unix milliseconds
	Gateway     string     // gateway id of the producer
	ClientID    string     // MQTT client id of the publisher ("" for inline publishes)
	UserProps   []UserProp // MQTT 5 user properties, order kept
	ContentType string     // MQTT 5 content type (e.g. application/json, application/cbor)
}

// Envelope CBOR keys.
const (
	keyVersion = iota
	keyID
	keyTopic
	keyPayload
	keyQoS
	keyRetain
	keyTime
	keyGateway
	keyClientID
	keyUserProps
	keyContentType
)

// ErrVersion reports an envelope written by a newer, incompatible edged.
var ErrVersion = errors.New("unsupported envelope version")

func (e *Envelope) check(maxPayload int) error {
	if e.Version != 0 && e.Version != Version {
		return fmt.Errorf("%w %d (this build writes %d)", ErrVersion, e.Version, Version)
	}
	if len(e.Payload) > maxPayload {
		return fmt.Errorf("payload: %w: %d bytes > %d", ErrLimit, len(e.Payload), maxPayload)
	}
	if e.QoS > 2 {
		return fmt.Errorf("qos: %w: %d", ErrMalformed, e.QoS)
	}
	if len(e.UserProps) > MaxUserProps {
		return fmt.Errorf("user props: %w: %d > %d", ErrLimit, len(e.UserProps), MaxUserProps)
	}
	if err := checkString("topic", e.Topic, MaxTopic); err != nil {
		return err
	}
	if err := checkString("gateway", e.Gateway, MaxString); err != nil {
		return err
	}
	if err := checkString("client id", e.ClientID, MaxString); err != nil {
		return err
	}
	if err := checkString("content type", e.ContentType, MaxString); err != nil {
		return err
	}
	for i := range e.UserProps {
		if err := checkString("user prop key", e.UserProps[i].Key, MaxString); err != nil {
			return err
		}
		if err := checkString("user prop value", e.UserProps[i].Value, MaxString); err != nil {
			return err
		}
	}
	return nil
}

func checkString(what, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%s: %w: %d bytes > %d", what, ErrLimit, len(s), max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s: %w: invalid UTF-8", what, ErrMalformed)
	}
	return nil
}

// MarshalEnvelope encodes e in deterministic CBOR. It does not modify e. It fails on a payload
// or string beyond the decode limits, invalid UTF-8, QoS > 2 or a Version other than 0 / 1.
func MarshalEnvelope(e *Envelope) ([]byte, error) { return Limits{}.MarshalEnvelope(e) }

// MarshalEnvelope is MarshalEnvelope within l.
func (l Limits) MarshalEnvelope(e *Envelope) ([]byte, error) {
	if err := e.check(l.maxPayload()); err != nil {
		return nil, fmt.Errorf("encode envelope: %w", err)
	}
	return appendEnvelope(make([]byte, 0, envelopeSize(e, false, "")), e, false, ""), nil
}

// AppendEnvelope appends the CBOR encoding of e to dst (no allocation when dst has room).
func AppendEnvelope(dst []byte, e *Envelope) ([]byte, error) { return Limits{}.AppendEnvelope(dst, e) }

// AppendEnvelope is AppendEnvelope within l.
func (l Limits) AppendEnvelope(dst []byte, e *Envelope) ([]byte, error) {
	if err := e.check(l.maxPayload()); err != nil {
		return dst, fmt.Errorf("encode envelope: %w", err)
	}
	return appendEnvelope(dst, e, false, ""), nil
}

// envelopeFields returns which optional keys are written.
func envelopeFields(e *Envelope, inBatch bool, batchGW string) (pairs int, wTime, wGW bool) {
	pairs = 3 // id, topic, payload
	if !inBatch {
		pairs++
	}
	if e.QoS != 0 {
		pairs++
	}
	if e.Retain {
		pairs++
	}
	if wTime = e.Time != e.ID.Millis(); wTime {
		pairs++
	}
	if inBatch {
		wGW = e.Gateway != batchGW
	} else {
		wGW = e.Gateway != ""
	}
	if wGW {
		pairs++
	}
	if e.ClientID != "" {
		pairs++
	}
	if len(e.UserProps) > 0 {
		pairs++
	}
	if e.ContentType != "" {
		pairs++
	}
	return
}

func strSize(n int) int { return headLen(uint64(n)) + n }

// envelopeSize is the exact encoded size of e.
func envelopeSize(e *Envelope, inBatch bool, batchGW string) int {
	pairs, wTime, wGW := envelopeFields(e, inBatch, batchGW)
	n := 1 + pairs // map head (pairs <= 11) + one byte per key
	if !inBatch {
		n++
	}
	n += 17 + strSize(len(e.Topic)) + strSize(len(e.Payload))
	if e.QoS != 0 {
		n++
	}
	if e.Retain {
		n++
	}
	if wTime {
		t := e.Time
		if t < 0 {
			t = -(t + 1)
		}
		n += headLen(uint64(t))
	}
	if wGW {
		n += strSize(len(e.Gateway))
	}
	if e.ClientID != "" {
		n += strSize(len(e.ClientID))
	}
	if len(e.UserProps) > 0 {
		n += headLen(uint64(len(e.UserProps)))
		for i := range e.UserProps {
			n += 1 + strSize(len(e.UserProps[i].Key)) + strSize(len(e.UserProps[i].Value))
		}
	}
	if e.ContentType != "" {
		n += strSize(len(e.ContentType))
	}
	return n
}

func appendEnvelope(b []byte, e *Envelope, inBatch bool, batchGW string) []byte {
	pairs, wTime, wGW := envelopeFields(e, inBatch, batchGW)
	b = appendHead(b, majorMap, uint64(pairs))
	if !inBatch {
		b = append(b, keyVersion, Version)
	}
	b = append(b, keyID, majorBytes<<5|16)
	b = append(b, e.ID[:]...)
	b = append(b, keyTopic)
	b = appendText(b, e.Topic)
	b = append(b, keyPayload)
	b = appendBytes(b, e.Payload)
	if e.QoS != 0 {
		b = append(b, keyQoS, e.QoS)
	}
	if e.Retain {
		b = append(b, keyRetain, 0xf5)
	}
	if wTime {
		b = append(b, keyTime)
		b = appendInt(b, e.Time)
	}
	if wGW {
		b = append(b, keyGateway)
		b = appendText(b, e.Gateway)
	}
	if e.ClientID != "" {
		b = append(b, keyClientID)
		b = appendText(b, e.ClientID)
	}
	if len(e.UserProps) > 0 {
		b = append(b, keyUserProps)
		b = appendHead(b, majorArray, uint64(len(e.UserProps)))
		for i := range e.UserProps {
			b = append(b, majorArray<<5|2)
			b = appendText(b, e.UserProps[i].Key)
			b = appendText(b, e.UserProps[i].Value)
		}
	}
	if e.ContentType != "" {
		b = append(b, keyContentType)
		b = appendText(b, e.ContentType)
	}
	return b
}

// UnmarshalEnvelope decodes outside bytes into an envelope. It never panics, allocates at most
// a small multiple of len(b), and returns an error wrapping ErrVersion, ErrMalformed or
// ErrLimit. The envelope does not alias b.
func UnmarshalEnvelope(b []byte) (*Envelope, error) { return Limits{}.UnmarshalEnvelope(b) }

// UnmarshalEnvelope is UnmarshalEnvelope within l.
func (l Limits) UnmarshalEnvelope(b []byte) (*Envelope, error) {
	e := new(Envelope)
	r := reader{b: b, maxPayload: l.maxPayload()}
	if err := decodeEnvelope(&r, e, false, ""); err != nil {
		return nil, fmt.Errorf("decode envelope: %w", err)
	}
	if r.off != len(b) {
		return nil, fmt.Errorf("decode envelope: %w: %d trailing bytes", ErrMalformed, len(b)-r.off)
	}
	return e, nil
}

// keySet records the keys of one map to reject duplicates.
type keySet struct {
	low  uint64   // keys 0..63
	high []uint64 // other keys (rare: only from newer writers)
	buf  [4]uint64
}

func (s *keySet) add(k uint64) bool {
	if k < 64 {
		if s.low&(1<<k) != 0 {
			return false
		}
		s.low |= 1 << k
		return true
	}
	if s.high == nil {
		s.high = s.buf[:0]
	}
	for _, h := range s.high {
		if h == k {
			return false
		}
	}
	s.high = append(s.high, k)
	return true
}

func (s *keySet) has(k uint64) bool { return s.low&(1<<k) != 0 }

func mapHead(r *reader, what string) (int, error) {
	n, err := r.expect(majorMap, what)
	if err != nil {
		return 0, err
	}
	if n > maxEnvelopePairs {
		return 0, fmt.Errorf("%w: %s: %d keys > %d", ErrLimit, what, n, maxEnvelopePairs)
	}
	if n > uint64(r.remaining())/2 {
		return 0, errTruncated
	}
	return int(n), nil
}

func decodeEnvelope(r *reader, e *Envelope, inBatch bool, batchGW string) error {
	n, err := mapHead(r, "envelope")
	if err != nil {
		return err
	}
	var seen keySet
	for range n {
		k, err := r.uint("envelope key")
		if err != nil {
			return err
		}
		if k > math.MaxUint32 {
			return fmt.Errorf("%w: envelope key %d out of range", ErrMalformed, k)
		}
		if !seen.add(k) {
			return fmt.Errorf("%w: duplicate key %d", ErrMalformed, k)
		}
		switch k {
		case keyVersion:
			v, err := r.uint("version")
			if err != nil {
				return err
			}
			if v != Version {
				return fmt.Errorf("%w %d (this build reads %d)", ErrVersion, v, Version)
			}
			e.Version = Version
		case keyID:
			p, err := r.span(majorBytes, 16, "id")
			if err != nil {
				return err
			}
			if len(p) != 16 {
				return fmt.Errorf("%w: id: %d bytes, want 16", ErrMalformed, len(p))
			}
			copy(e.ID[:], p)
		case keyTopic:
			if e.Topic, err = r.text(MaxTopic, "topic"); err != nil {
				return err
			}
		case keyPayload:
			p, err := r.span(majorBytes, r.maxPayload, "payload")
			if err != nil {
				return err
			}
			if len(p) > 0 {
				e.Payload = append([]byte(nil), p...)
			}
		case keyQoS:
			q, err := r.uint("qos")
			if err != nil {
				return err
			}
			if q > 2 {
				return fmt.Errorf("%w: qos %d", ErrMalformed, q)
			}
			e.QoS = byte(q)
		case keyRetain:
			if e.Retain, err = r.bool("retain"); err != nil {
				return err
			}
		case keyTime:
			if e.Time, err = r.int("time"); err != nil {
				return err
			}
		case keyGateway:
			if e.Gateway, err = r.text(MaxString, "gateway"); err != nil {
				return err
			}
		case keyClientID:
			if e.ClientID, err = r.text(MaxString, "client id"); err != nil {
				return err
			}
		case keyUserProps:
			if e.UserProps, err = decodeUserProps(r); err != nil {
				return err
			}
		case keyContentType:
			if e.ContentType, err = r.text(MaxString, "content type"); err != nil {
				return err
			}
		default:
			if err := r.skip(1); err != nil {
				return err
			}
		}
	}
	switch {
	case !inBatch && !seen.has(keyVersion):
		return fmt.Errorf("%w: missing version (key 0)", ErrMalformed)
	case !seen.has(keyID):
		return fmt.Errorf("%w: missing id (key 1)", ErrMalformed)
	case !seen.has(keyTopic):
		return fmt.Errorf("%w: missing topic (key 2)", ErrMalformed)
	}
	e.Version = Version
	if !seen.has(keyTime) {
		e.Time = e.ID.Millis()
	}
	if inBatch && !seen.has(keyGateway) {
		e.Gateway = batchGW
	}
	return nil
}

func decodeUserProps(r *reader) ([]UserProp, error) {
	n, err := r.expect(majorArray, "user props")
	if err != nil {
		return nil, err
	}
	if n > uint64(MaxUserProps) {
		return nil, fmt.Errorf("%w: user props: %d > %d", ErrLimit, n, MaxUserProps)
	}
	if n > uint64(r.remaining())/3 {
		return nil, errTruncated
	}
	if n == 0 {
		return nil, nil
	}
	props := make([]UserProp, n)
	for i := range props {
		l, err := r.expect(majorArray, "user prop")
		if err != nil {
			return nil, err
		}
		if l != 2 {
			return nil, fmt.Errorf("%w: user prop: %d elements, want 2", ErrMalformed, l)
		}
		if props[i].Key, err = r.text(MaxString, "user prop key"); err != nil {
			return nil, err
		}
		if props[i].Value, err = r.text(MaxString, "user prop value"); err != nil {
			return nil, err
		}
	}
	return props, nil
}
