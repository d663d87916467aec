package wire

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"sort"
)

// A telemetry corpus (testdata/corpus/*.jsonl) is one device message per line: topic, qos,
// retain, client_id, content_type, user_props as in the envelope JSON, and the payload as the
// device sent it: "payload" is either a JSON string, meaning those text bytes (serial text
// lines, "online", "TARE"), or any other JSON value, meaning its compact JSON encoding;
// "payload_hex" is a binary payload (Modbus, wM-Bus, BLE, CAN frames, a JPEG thumbnail, a
// firmware chunk). The wire tests measure sizes on it and the benchmark reports them.
type corpusLine struct {
	Topic       string          `json:"topic"`
	QoS         byte            `json:"qos"`
	Retain      bool            `json:"retain"`
	ClientID    string          `json:"client_id"`
	ContentType string          `json:"content_type"`
	UserProps   [][]string      `json:"user_props"`
	Payload     json.RawMessage `json:"payload"`
	PayloadHex  string          `json:"payload_hex"`
}

// corpusStartMs is the capture time of a corpus's first message (2024-06-10, Unix ms).
const corpusStartMs = 1718000000000

// LoadCorpus reads every *.jsonl file at the root of fsys (os.DirFS of a corpus directory: the
// caller opens the file system, wire opens nothing itself), in name order, into envelopes as a gateway
// would have captured them: UUIDv7 ids 137 ms apart (their random bits from a fixed seed, so
// every load gives the same bytes), gateway "gw-plant-01", and a capture time equal to the id
// time except for serial messages (no client id), whose capture time (edged-time) is 3 ms
// earlier.
func LoadCorpus(fsys fs.FS) ([]*Envelope, error) {
	files, err := fs.Glob(fsys, "*.jsonl")
	if err != nil {
		return nil, fmt.Errorf("load corpus: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("load corpus: no *.jsonl files")
	}
	sort.Strings(files)
	r := rand.New(rand.NewPCG(11, 12))
	var envs []*Envelope
	for _, f := range files {
		b, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, fmt.Errorf("load corpus: %w", err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 1<<20)
		for n := 1; sc.Scan(); n++ {
			e, err := corpusEnvelope(sc.Bytes())
			if err != nil {
				return nil, fmt.Errorf("load corpus %s:%d: %w", f, n, err)
			}
			ms := corpusStartMs + 137*int64(len(envs))
			e.ID = ID{byte(ms >> 40), byte(ms >> 32), byte(ms >> 24), byte(ms >> 16), byte(ms >> 8), byte(ms)}
			for j := 6; j < 16; j++ {
				e.ID[j] = byte(r.Uint32())
			}
			e.ID[6] = 0x70 | e.ID[6]&0x0f
			e.ID[8] = 0x80 | e.ID[8]&0x3f
			e.Time = ms
			if e.ClientID == "" {
				e.Time = ms - 3
			}
			envs = append(envs, e)
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("load corpus %s: %w", f, err)
		}
	}
	return envs, nil
}

// corpusEnvelope decodes one corpus line; the caller assigns id and time.
func corpusEnvelope(line []byte) (*Envelope, error) {
	var l corpusLine
	if err := json.Unmarshal(line, &l); err != nil {
		return nil, err
	}
	e := &Envelope{Version: Version, Topic: l.Topic, QoS: l.QoS, Retain: l.Retain, ClientID: l.ClientID,
		ContentType: l.ContentType, Gateway: "gw-plant-01"}
	for _, kv := range l.UserProps {
		if len(kv) != 2 {
			return nil, fmt.Errorf("user_props entry %q is not [key, value]", kv)
		}
		e.UserProps = append(e.UserProps, UserProp{kv[0], kv[1]})
	}
	var err error
	switch {
	case l.PayloadHex != "":
		e.Payload, err = hex.DecodeString(l.PayloadHex)
	case len(l.Payload) > 0 && l.Payload[0] == '"':
		var s string
		err = json.Unmarshal(l.Payload, &s)
		e.Payload = []byte(s)
	default:
		e.Payload = []byte(l.Payload)
	}
	return e, err
}
