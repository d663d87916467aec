package wire

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// Benchmarks: go test -run XXX -bench . -benchmem ./wire

func benchEnvelope() *Envelope {
	return &Envelope{Version: 1, ID: tid, Topic: "sensors/greenhouse-1/climate", QoS: 1, Time: tid.Millis(),
		Payload: []byte(`{"temp":11.77,"rh":39.1,"co2":1066,"ts":1718000000}`), Gateway: "gw-plant-01", ClientID: "climate-greenhouse-1"}
}

func BenchmarkMarshalEnvelope(b *testing.B) { benchEncode(b, MarshalEnvelope, benchEnvelope()) }

func BenchmarkAppendEnvelope(b *testing.B) {
	e := benchEnvelope()
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = AppendEnvelope(buf[:0], e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnmarshalEnvelope(b *testing.B) {
	raw, _ := MarshalEnvelope(benchEnvelope())
	benchDecode(b, UnmarshalEnvelope, raw, true)
}

// The cbor library's reflection codec on the same schema, for comparison.
func BenchmarkReferenceMarshalEnvelope(b *testing.B) {
	benchEncode[any](b, transEnc.Marshal, toRef(benchEnvelope()))
}

func BenchmarkReferenceUnmarshalEnvelope(b *testing.B) {
	raw, _ := MarshalEnvelope(benchEnvelope())
	b.ReportAllocs()
	for b.Loop() {
		var r refEnvelope
		if err := transDec.Unmarshal(raw, &r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMarshalEnvelopeJSON(b *testing.B) { benchEncode(b, MarshalEnvelopeJSON, benchEnvelope()) }

func BenchmarkUnmarshalEnvelopeJSON(b *testing.B) {
	raw, _ := MarshalEnvelopeJSON(benchEnvelope())
	benchDecode(b, UnmarshalEnvelopeJSON, raw, false)
}

func benchBatch(b *testing.B) *Batch {
	envs := loadCorpus(b)
	bt := &Batch{Gateway: "gw-plant-01"}
	for len(bt.Envelopes) < 100 {
		bt.Envelopes = append(bt.Envelopes, envs[len(bt.Envelopes)%len(envs)])
	}
	return bt
}

// Batches of 100 corpus envelopes; ns/op is per batch.
func BenchmarkMarshalBatch100(b *testing.B) { benchEncode(b, MarshalBatch, benchBatch(b)) }

func BenchmarkUnmarshalBatch100(b *testing.B) {
	raw, _ := MarshalBatch(benchBatch(b))
	benchDecode(b, UnmarshalBatch, raw, true)
}

func BenchmarkMarshalBatchJSON100(b *testing.B) { benchEncode(b, MarshalBatchJSON, benchBatch(b)) }

func BenchmarkJSONToCBOR(b *testing.B) { benchDecode(b, JSONToCBOR, benchEnvelope().Payload, false) }

func BenchmarkCBORToJSON(b *testing.B) {
	p, _ := JSONToCBOR(benchEnvelope().Payload)
	benchDecode(b, CBORToJSON, p, false)
}

// Frame decoder throughput over a stream of 64-byte-ish frames fed in 256-byte chunks (a
// serial read's typical size).
func benchFrames(b *testing.B, framing string) {
	r := rand.New(rand.NewPCG(5, 6))
	var stream []byte
	for len(stream) < 1<<20 {
		f := make([]byte, 40+r.IntN(48))
		for i := range f {
			f[i] = byte(r.IntN(256))
		}
		if framing == "line" {
			f = bytes.ReplaceAll(f, []byte{'\n'}, []byte{'.'})
			f = append(f, '\r')
		}
		enc, _ := EncodeFrame(framing, f)
		stream = append(stream, enc...)
	}
	d, _ := NewFrameDecoder(framing, 0)
	n := 0
	emit := func([]byte) { n++ }
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		for p := stream; len(p) > 0; {
			c := min(256, len(p))
			d.Feed(p[:c], emit)
			p = p[c:]
		}
	}
}

func BenchmarkLineDecoder(b *testing.B) { benchFrames(b, "line") }
func BenchmarkCOBSDecoder(b *testing.B) { benchFrames(b, "cobs") }
func BenchmarkSLIPDecoder(b *testing.B) { benchFrames(b, "slip") }
