package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/edged-dev/edged/wire"
)

// corpusLine is one line of wire/testdata/corpus/*.jsonl, the format the wire tests read:
// "payload" is a JSON string (those text bytes) or any other JSON value (its compact
// encoding); "payload_hex" is a binary payload.
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

// loadCorpus builds envelopes from every *.jsonl in dir, as a gateway would capture them:
// UUIDv7 ids 137 ms apart, gateway "gw-plant-01", capture time = id time.
func loadCorpus(dir string) ([]*wire.Envelope, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no *.jsonl in %s", dir)
	}
	sort.Strings(files)
	var envs []*wire.Envelope
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 1<<20)
		for n := 1; sc.Scan(); n++ {
			var l corpusLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				return nil, fmt.Errorf("%s:%d: %w", f, n, err)
			}
			e := &wire.Envelope{Version: wire.Version, Topic: l.Topic, QoS: l.QoS, Retain: l.Retain,
				ClientID: l.ClientID, ContentType: l.ContentType, Gateway: "gw-plant-01"}
			for _, kv := range l.UserProps {
				if len(kv) == 2 {
					e.UserProps = append(e.UserProps, wire.UserProp{Key: kv[0], Value: kv[1]})
				}
			}
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
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", f, n, err)
			}
			ms := int64(1718000000000) + 137*int64(len(envs))
			e.ID = wire.NewID()
			for i := 0; i < 6; i++ {
				e.ID[i] = byte(ms >> (40 - 8*i))
			}
			e.Time = ms
			envs = append(envs, e)
		}
	}
	return envs, nil
}

func wireSection(dir string) string {
	var w bytes.Buffer
	fmt.Fprintf(&w, "### Bytes on the wire: CBOR vs JSON envelopes (%s)\n\n", dir)
	envs, err := loadCorpus(dir)
	if err != nil || len(envs) == 0 {
		fmt.Fprintf(&w, "corpus not available (%v): nothing measured.\n", err)
		return w.String()
	}
	var cb, jb, tb int // CBOR, JSON, CBOR with JSON payloads transcoded to CBOR
	transcoded := 0
	for _, e := range envs {
		c, err1 := wire.MarshalEnvelope(e)
		j, err2 := wire.MarshalEnvelopeJSON(e)
		if err1 != nil || err2 != nil {
			fmt.Fprintf(&w, "marshal %s: %v %v\n", e.Topic, err1, err2)
			return w.String()
		}
		cb, jb = cb+len(c), jb+len(j)
		t := *e
		if len(e.Payload) > 0 && (e.Payload[0] == '{' || e.Payload[0] == '[') {
			if p, err := wire.JSONToCBOR(e.Payload); err == nil {
				t.Payload, t.ContentType = p, "application/cbor"
				transcoded++
			}
		}
		tc, err := wire.MarshalEnvelope(&t)
		if err != nil {
			tc = c
		}
		tb += len(tc)
	}
	batch := &wire.Batch{Gateway: "gw-plant-01", First: envs[0].ID, Last: envs[len(envs)-1].ID, Envelopes: envs}
	bc, err1 := wire.MarshalBatch(batch)
	bj, err2 := wire.MarshalBatchJSON(batch)
	fmt.Fprintf(&w, "| form | bytes | CBOR / JSON |\n| --- | ---: | ---: |\n")
	fmt.Fprintf(&w, "| %d JSON envelopes (`wire.MarshalEnvelopeJSON`) | %d | |\n", len(envs), jb)
	fmt.Fprintf(&w, "| %d CBOR envelopes (`wire.MarshalEnvelope`), payloads as is | %d | %.2f |\n", len(envs), cb, float64(cb)/float64(jb))
	fmt.Fprintf(&w, "| CBOR envelopes, %d JSON payloads transcoded to CBOR (`wire.JSONToCBOR`, as `format: cbor` does) | %d | %.2f |\n", transcoded, tb, float64(tb)/float64(jb))
	if err1 == nil && err2 == nil {
		fmt.Fprintf(&w, "| one batch of all: CBOR `MarshalBatch` vs JSON `MarshalBatchJSON` | %d vs %d | %.2f |\n", len(bc), len(bj), float64(len(bc))/float64(len(bj)))
	} else {
		fmt.Fprintf(&w, "| one batch of all | batch marshal failed: %v %v | |\n", err1, err2)
	}
	w.WriteString(compressSection(envs)) // compress.go
	return w.String()
}
