package wire

import (
	"errors"
	"reflect"
	"testing"
)

// The JSON forms arrive from outside too (websocket text frames, HTTP bodies, the CLI), not
// only as the re-encoding of a CBOR value that FuzzEnvelope and FuzzBatch check. These targets
// start from JSON: whatever decodes within a payload limit respects it and survives both
// forms; whatever fails says why with one of wire's errors.

// checkDecodeError: a refusal is ErrMalformed, ErrLimit or ErrVersion, so callers can class it.
func checkDecodeError(t *testing.T, data []byte, err error) {
	t.Helper()
	if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrLimit) && !errors.Is(err, ErrVersion) {
		t.Fatalf("decode %q: error %v is none of ErrMalformed, ErrLimit, ErrVersion", data, err)
	}
}

func FuzzEnvelopeJSON(f *testing.F) {
	for _, tt := range jsonTests {
		f.Add([]byte(tt.json), uint16(0))
	}
	for _, tt := range envelopeTests {
		if tt.err == nil {
			if e, err := UnmarshalEnvelope(tt.raw); err == nil {
				if j, err := MarshalEnvelopeJSON(e); err == nil {
					f.Add(j, uint16(4))
				}
			}
		}
	}
	f.Add([]byte(`{"v":1,"id":"01910cf1-6b8e-7a01-9c3d-4b1e2f3a4b5c","topic":"m","payload_encoding":"base64","payload":"!!"}`), uint16(0))
	f.Add([]byte(`{"v":2,"topic":"m"}`), uint16(0))
	f.Add([]byte(`{"v":1,"topic":"m","user_props":[["k"]],"payload":[1,2,3]}`), uint16(2))
	f.Fuzz(func(t *testing.T, data []byte, max uint16) {
		lim := Limits{MaxPayload: int(max)}
		e, err := lim.UnmarshalEnvelopeJSON(data)
		if err != nil {
			if e != nil {
				t.Fatal("envelope with an error")
			}
			checkDecodeError(t, data, err)
			return
		}
		if len(e.Payload) > lim.maxPayload() {
			t.Fatalf("payload of %d bytes within a limit of %d", len(e.Payload), lim.maxPayload())
		}
		c, err := lim.MarshalEnvelope(e)
		if err != nil {
			t.Fatalf("a decoded JSON envelope does not encode as CBOR: %v\n%+v", err, e)
		}
		e2, err := lim.UnmarshalEnvelope(c)
		if err != nil || !reflect.DeepEqual(e, e2) {
			t.Fatalf("cbor round trip: %v\n%+v\n%+v", err, e, e2)
		}
		j, err := lim.MarshalEnvelopeJSON(e)
		if err != nil {
			t.Fatal(err)
		}
		e3, err := lim.UnmarshalEnvelopeJSON(j)
		if err != nil || !reflect.DeepEqual(e, e3) {
			t.Fatalf("json round trip: %v\n%s\n%+v\n%+v", err, j, e, e3)
		}
	})
}

func FuzzBatchJSON(f *testing.F) {
	for _, tt := range batchTests {
		if b, err := UnmarshalBatch(tt.raw); err == nil {
			if j, err := MarshalBatchJSON(b); err == nil {
				f.Add(j, uint16(0))
			}
		}
	}
	f.Add([]byte(`{"v":1,"gateway":"gw1","envelopes":[]}`), uint16(0))
	f.Add([]byte(`{"v":1,"first":"01910cf1-6b8e-7a01-9c3d-4b1e2f3a4b5c","envelopes":[{"topic":"a","payload":{"x":1}},{"topic":"b","payload_encoding":"base64","payload":"AAH+"}]}`), uint16(3))
	f.Add([]byte(`{"v":1,"envelopes":[{"topic":"a"}]}`), uint16(0))
	f.Add([]byte(`{"envelopes":null}`), uint16(0))
	f.Fuzz(func(t *testing.T, data []byte, max uint16) {
		lim := Limits{MaxPayload: int(max)}
		b, err := lim.UnmarshalBatchJSON(data)
		if err != nil {
			if b != nil {
				t.Fatal("batch with an error")
			}
			checkDecodeError(t, data, err)
			return
		}
		for i, e := range b.Envelopes {
			if len(e.Payload) > lim.maxPayload() {
				t.Fatalf("envelope %d: payload of %d bytes within a limit of %d", i, len(e.Payload), lim.maxPayload())
			}
		}
		c, err := lim.MarshalBatch(b)
		if err != nil {
			t.Fatalf("a decoded JSON batch does not encode as CBOR: %v\n%+v", err, b)
		}
		b2, err := lim.UnmarshalBatch(c)
		if err != nil || !reflect.DeepEqual(b, b2) {
			t.Fatalf("cbor round trip: %v\n%+v\n%+v", err, b, b2)
		}
		j, err := lim.MarshalBatchJSON(b)
		if err != nil {
			t.Fatal(err)
		}
		b3, err := lim.UnmarshalBatchJSON(j)
		if err != nil || !reflect.DeepEqual(b, b3) {
			t.Fatalf("json round trip: %v\n%s\n%+v\n%+v", err, j, b, b3)
		}
	})
}
