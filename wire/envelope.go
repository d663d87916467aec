package wire

// NOTE: initial contract version; the wire owner extends this file (limits, batch, JSON, fuzz).

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// Version is the envelope format version this build writes.
const Version = 1

// ID is a 16-byte, time-ordered message id (UUIDv7 layout): byte order equals time order, so
// the remote can dedupe on it and sort by it.
type ID [16]byte

var (
	idMu   sync.Mutex
	lastMs int64
	lastSq uint16
)

// NewID returns a UUIDv7 that is strictly increasing within this process even when the clock
// does not move (a 12-bit counter in rand_a).
func NewID() ID {
	var id ID
	_, _ = rand.Read(id[:])
	idMu.Lock()
	ms := time.Now().UnixMilli()
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
	hex.Encode(b[0:8], id[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], id[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], id[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], id[8:10])
	b[23] = '-'
	hex.Encode(b[24:], id[10:])
	return string(b[:])
}

// UserProp is one MQTT 5 user property; order and duplicates are kept as MQTT allows both.
type UserProp struct {
	Key   string `cbor:"0,keyasint"`
	Value string `cbor:"1,keyasint"`
}

// Envelope is one message as edged stores and forwards it.
type Envelope struct {
	Version     uint       `cbor:"0,keyasint"`
	ID          ID         `cbor:"1,keyasint"`
	Topic       string     `cbor:"2,keyasint"`
	Payload     []byte     `cbor:"3,keyasint"`
	QoS         byte       `cbor:"4,keyasint,omitempty"`
	Retain      bool       `cbor:"5,keyasint,omitempty"`
	Time        int64      `cbor:"6,keyasint"` // capture time, Unix milliseconds
	Gateway     string     `cbor:"7,keyasint,omitempty"`
	ClientID    string     `cbor:"8,keyasint,omitempty"`
	UserProps   []UserProp `cbor:"9,keyasint,omitempty"`
	ContentType string     `cbor:"10,keyasint,omitempty"`
}

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	if encMode, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic(err)
	}
	if decMode, err = (cbor.DecOptions{DupMapKey: cbor.DupMapKeyEnforcedAPF, MaxNestedLevels: 16, MaxArrayElements: 65536, MaxMapPairs: 4096}).DecMode(); err != nil {
		panic(err)
	}
}

// ErrVersion reports an envelope written by a newer, incompatible edged.
var ErrVersion = errors.New("unsupported envelope version")

// MarshalEnvelope encodes e in deterministic CBOR.
func MarshalEnvelope(e *Envelope) ([]byte, error) {
	if e.Version == 0 {
		e.Version = Version
	}
	return encMode.Marshal(e)
}

// UnmarshalEnvelope decodes outside bytes into an envelope; it never panics.
func UnmarshalEnvelope(b []byte) (*Envelope, error) {
	var e Envelope
	if err := decMode.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("decode envelope: %w", err)
	}
	if e.Version != Version {
		return nil, fmt.Errorf("decode envelope: %w %d (this build reads %d)", ErrVersion, e.Version, Version)
	}
	return &e, nil
}
