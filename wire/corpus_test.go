package wire

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"os"
	"testing"
)

// The telemetry corpus (testdata/corpus/telemetry.jsonl) is one device message per line:
// topic, qos, retain, client_id, content_type, user_props as in the envelope JSON, and the
// payload as the device sent it: "payload" is either a JSON string, meaning those text bytes
// (serial text lines, "online", "TARE"), or any other JSON value, meaning its compact JSON
// encoding; "payload_hex" is a binary payload (Modbus, wM-Bus, BLE, CAN frames, a JPEG
// thumbnail, a firmware chunk). Envelopes get UUIDv7 ids 137 ms apart, gateway "gw-plant-01",
// and a capture time equal to the id time except for serial messages (no client id), whose
// capture time (edged-time) is 3 ms earlier.

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

func loadCorpus(tb testing.TB) []*Envelope {
	tb.Helper()
	f, err := os.Open("testdata/corpus/telemetry.jsonl")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(11, 12))
	var envs []*Envelope
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for i := 0; sc.Scan(); i++ {
		var l corpusLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			tb.Fatalf("corpus line %d: %v", i+1, err)
		}
		e := &Envelope{Version: 1, Topic: l.Topic, QoS: l.QoS, Retain: l.Retain, ClientID: l.ClientID,
			ContentType: l.ContentType, Gateway: "gw-plant-01"}
		for _, kv := range l.UserProps {
			e.UserProps = append(e.UserProps, UserProp{kv[0], kv[1]})
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
			tb.Fatalf("corpus line %d: %v", i+1, err)
		}
		ms := int64(1718000000000) + 137*int64(i)
		e.ID = ID{byte(ms >> 40), byte(ms >> 32), byte(ms >> 24), byte(ms >> 16), byte(ms >> 8), byte(ms)}
		for j := 6; j < 16; j++ {
			e.ID[j] = byte(r.Uint32())
		}
		e.ID[6] = 0x70 | e.ID[6]&0x0f
		e.ID[8] = 0x80 | e.ID[8]&0x3f
		e.Time = ms
		if l.ClientID == "" {
			e.Time = ms - 3
		}
		envs = append(envs, e)
	}
	if len(envs) < 50 {
		tb.Fatalf("corpus has %d messages, want >= 50", len(envs))
	}
	return envs
}

// transcodeJSONPayloads models a rule with `format: cbor`: JSON payloads become CBOR
// (content type application/cbor); everything else stays opaque.
func transcodeJSONPayloads(tb testing.TB, envs []*Envelope) []*Envelope {
	out := make([]*Envelope, len(envs))
	for i, e := range envs {
		c := *e
		if len(e.Payload) > 0 && (e.Payload[0] == '{' || e.Payload[0] == '[') {
			p, err := JSONToCBOR(e.Payload)
			if err != nil {
				tb.Fatal(err)
			}
			c.Payload, c.ContentType = p, "application/cbor"
		}
		out[i] = &c
	}
	return out
}

type corpusSizes struct {
	cbor, json, cborBatch, jsonBatch int
}

func measureCorpus(tb testing.TB, envs []*Envelope) corpusSizes {
	var s corpusSizes
	for _, e := range envs {
		c, err := MarshalEnvelope(e)
		if err != nil {
			tb.Fatal(err)
		}
		j, err := MarshalEnvelopeJSON(e)
		if err != nil {
			tb.Fatal(err)
		}
		s.cbor += len(c)
		s.json += len(j)
	}
	b := &Batch{Gateway: "gw-plant-01", Envelopes: envs}
	cb, err := MarshalBatch(b)
	if err != nil {
		tb.Fatal(err)
	}
	jb, err := MarshalBatchJSON(b)
	if err != nil {
		tb.Fatal(err)
	}
	s.cborBatch, s.jsonBatch = len(cb), len(jb)
	return s
}

func ratio(a, b int) float64 { return float64(a) / float64(b) }

// TestCorpusSizeRatio: CBOR envelope bytes / JSON envelope bytes over the telemetry corpus.
func TestCorpusSizeRatio(t *testing.T) {
	envs := loadCorpus(t)
	raw := measureCorpus(t, envs)
	tc := measureCorpus(t, transcodeJSONPayloads(t, envs))
	var payload int
	for _, e := range envs {
		payload += len(e.Payload)
	}
	t.Logf("%d messages, %d payload bytes", len(envs), payload)
	t.Logf("opaque payloads:  envelope cbor/json = %d/%d = %.3f; batch = %d/%d = %.3f",
		raw.cbor, raw.json, ratio(raw.cbor, raw.json), raw.cborBatch, raw.jsonBatch, ratio(raw.cborBatch, raw.jsonBatch))
	t.Logf("format: cbor (JSON payloads transcoded): envelope cbor/json = %d/%d = %.3f; batch = %.3f",
		tc.cbor, raw.json, ratio(tc.cbor, raw.json), ratio(tc.cborBatch, raw.jsonBatch))
	var text []*Envelope // the subset whose payloads JSON can inline (no base64 inflation)
	for _, e := range envs {
		if inlineJSON(e.Payload) {
			text = append(text, e)
		}
	}
	ts := measureCorpus(t, text)
	t.Logf("subset of %d JSON payloads only: envelope cbor/json = %d/%d = %.3f; batch = %.3f",
		len(text), ts.cbor, ts.json, ratio(ts.cbor, ts.json), ratio(ts.cborBatch, ts.jsonBatch))
	if r := ratio(raw.cbor, raw.json); r >= 0.6 {
		t.Errorf("CBOR/JSON envelope size ratio %.3f, target < 0.6", r)
	}
}

func BenchmarkCorpusRatio(b *testing.B) {
	envs := loadCorpus(b)
	tenvs := transcodeJSONPayloads(b, envs)
	b.ReportAllocs()
	var raw, tc corpusSizes
	for b.Loop() {
		raw = measureCorpus(b, envs)
		tc = measureCorpus(b, tenvs)
	}
	b.ReportMetric(ratio(raw.cbor, raw.json), "cbor/json")
	b.ReportMetric(ratio(raw.cborBatch, raw.jsonBatch), "batch-cbor/json")
	b.ReportMetric(ratio(tc.cbor, raw.json), "cbor-transcoded/json")
	b.ReportMetric(0, "ns/op")
}
