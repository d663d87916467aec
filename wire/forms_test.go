package wire

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// form is one encoded form (envelope or batch) through its package functions, so that the
// envelope and the batch tests and fuzz targets share one body.
type form[T any] struct {
	name                     string
	marshal, marshalJSON     func(T) ([]byte, error)
	unmarshal, unmarshalJSON func([]byte) (T, error)
}

var (
	envelopeForm = form[*Envelope]{"envelope", MarshalEnvelope, MarshalEnvelopeJSON, UnmarshalEnvelope, UnmarshalEnvelopeJSON}
	batchForm    = form[*Batch]{"batch", MarshalBatch, MarshalBatchJSON, UnmarshalBatch, UnmarshalBatchJSON}
)

// checkDecode checks one table row: decoding raw fails with wantErr (then it returns false)
// or gives want (then true).
func (f form[T]) checkDecode(t *testing.T, raw []byte, wantErr error, want T) bool {
	t.Helper()
	got, err := f.unmarshal(raw)
	if wantErr != nil {
		if !errors.Is(err, wantErr) {
			t.Fatalf("decode err = %v, want %v", err, wantErr)
		}
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decode got %+v\nwant %+v", got, want)
	}
	return true
}

// checkEncode checks that v encodes to exactly raw, in a buffer of exactly that size, and
// returns the encoding.
func (f form[T]) checkEncode(t *testing.T, v T, raw []byte) []byte {
	t.Helper()
	got, err := f.marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, raw) || cap(got) != len(got) {
		t.Fatalf("encode got % x\nwant % x (cap %d)", got, raw, cap(got))
	}
	return got
}

// fuzzRoundTrip checks that data, if it decodes, re-encodes, decodes to the same value and
// survives the JSON form. It reports whether data decoded.
func (f form[T]) fuzzRoundTrip(t *testing.T, data []byte) bool {
	v, err := f.unmarshal(data)
	if err != nil {
		return false
	}
	enc, err := f.marshal(v)
	if err != nil {
		t.Fatalf("re-encode of a decoded %s: %v", f.name, err)
	}
	v2, err := f.unmarshal(enc)
	if err != nil || !reflect.DeepEqual(v, v2) {
		t.Fatalf("round trip: %v\n%+v\n%+v", err, v, v2)
	}
	j, err := f.marshalJSON(v)
	if err != nil {
		t.Fatal(err)
	}
	vj, err := f.unmarshalJSON(j)
	if err != nil || !reflect.DeepEqual(v, vj) {
		t.Fatalf("json round trip: %v\n%s", err, j)
	}
	return true
}

// roundTrip checks that v encodes and decodes back to itself; it returns the encoding.
func roundTrip[T any](t *testing.T, what string, v T, enc func(T) ([]byte, error), dec func([]byte) (T, error)) []byte {
	t.Helper()
	b, err := enc(v)
	if err != nil {
		t.Fatalf("%s: encode: %v", what, err)
	}
	got, err := dec(b)
	if err != nil {
		t.Fatalf("%s: decode %q: %v", what, b, err)
	}
	if !reflect.DeepEqual(got, v) {
		t.Fatalf("%s round trip\n got %+v\nwant %+v", what, got, v)
	}
	return b
}

// benchEncode measures enc(v).
func benchEncode[T any](b *testing.B, enc func(T) ([]byte, error), v T) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := enc(v); err != nil {
			b.Fatal(err)
		}
	}
}

// benchDecode measures dec(raw), a decoder or converter of bytes; with perByte it also reports MB/s of raw.
func benchDecode[T any](b *testing.B, dec func([]byte) (T, error), raw []byte, perByte bool) {
	if perByte {
		b.SetBytes(int64(len(raw)))
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := dec(raw); err != nil {
			b.Fatal(err)
		}
	}
}
