package bridge

import (
	"testing"

	"github.com/fxamacker/cbor/v2"

	"github.com/edged-dev/edged/wire"
)

// FuzzWSFrame: every frame a websocket server sends is outside bytes. Whatever arrives, the
// classifier returns a control, an envelope or an error, never a panic; a control always names
// an id.
func FuzzWSFrame(f *testing.F) {
	env := &wire.Envelope{ID: wire.NewID(), Topic: "cmd/meter1", Payload: []byte("reset"), QoS: 1}
	cb, _ := wire.MarshalEnvelope(env)
	js, _ := wire.MarshalEnvelopeJSON(env)
	ack, _ := cbor.Marshal(wsControl{Ack: env.ID.String()})
	for _, seed := range []struct {
		text bool
		b    []byte
	}{
		{true, []byte(`{"ack":"0190a5a0-0000-7000-8000-000000000001"}`)},
		{true, []byte(`{"reject":"0190a5a0-0000-7000-8000-000000000001","error":"bad"}`)},
		{true, js},
		{false, cb},
		{false, ack},
		{true, []byte(`{"ack":`)},
		{false, []byte{0xbf, 0xff}},
		{true, []byte(`[]`)},
	} {
		f.Add(seed.text, seed.b)
	}
	f.Fuzz(func(t *testing.T, text bool, b []byte) {
		cm, e, err := decodeWSFrame(wire.Limits{}, text, b)
		switch {
		case err != nil:
			if cm != nil || e != nil {
				t.Fatal("error with a result")
			}
		case cm != nil:
			if cm.Ack == "" && cm.Reject == "" {
				t.Fatalf("control without id: %+v", cm)
			}
		case e == nil:
			t.Fatal("no error and no result")
		}
	})
}

func TestWSFrameClassify(t *testing.T) {
	env := &wire.Envelope{ID: wire.NewID(), Topic: "cmd/x", Payload: []byte("p")}
	cb, _ := wire.MarshalEnvelope(env)
	if cm, e, err := decodeWSFrame(wire.Limits{}, false, cb); err != nil || cm != nil || e == nil || e.Topic != "cmd/x" {
		t.Fatalf("cbor envelope: %+v %+v %v", cm, e, err)
	}
	if cm, _, err := decodeWSFrame(wire.Limits{}, true, []byte(`{"ack":"abc"}`)); err != nil || cm == nil || cm.Ack != "abc" {
		t.Fatalf("json ack: %+v %v", cm, err)
	}
	if _, _, err := decodeWSFrame(wire.Limits{}, true, []byte(`hello`)); err == nil {
		t.Fatal("garbage accepted")
	}
}
