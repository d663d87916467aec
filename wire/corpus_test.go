package wire

import (
	"os"
	"testing"
)

// loadCorpus is the telemetry corpus (testdata/corpus, see LoadCorpus).
func loadCorpus(tb testing.TB) []*Envelope {
	tb.Helper()
	envs, err := LoadCorpus(os.DirFS("testdata/corpus"))
	if err != nil {
		tb.Fatal(err)
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
	size := func(b []byte, err error) int {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
		return len(b)
	}
	var s corpusSizes
	for _, e := range envs {
		s.cbor += size(MarshalEnvelope(e))
		s.json += size(MarshalEnvelopeJSON(e))
	}
	b := &Batch{Gateway: "gw-plant-01", Envelopes: envs}
	s.cborBatch, s.jsonBatch = size(MarshalBatch(b)), size(MarshalBatchJSON(b))
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
