package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// jsonTests: envelope <-> JSON bytes, shared by encode and decode.
var jsonTests = []struct {
	name string
	env  *Envelope
	json string
}{
	{"json payload inlined",
		&Envelope{Version: 1, ID: tid, Topic: "sensors/t1", Payload: []byte(`{"t":21.5,"u":"C"}`), QoS: 1, Time: 1722499033998,
			Gateway: "gw1", ClientID: "t1", UserProps: []UserProp{{"k", "v"}}, ContentType: "application/json"},
		`{"v":1,"id":"01910cf1-6b8e-7a01-9c3d-4b1e2f3a4b5c","topic":"sensors/t1","qos":1,"time":1722499033998,"gateway":"gw1","client_id":"t1","user_props":[["k","v"]],"content_type":"application/json","payload":{"t":21.5,"u":"C"}}`},
	{"binary payload as base64",
		&Envelope{Version: 1, ID: tid, Topic: "m", Payload: []byte{0, 1, 0xfe}, Retain: true, Time: 5},
		`{"v":1,"id":"01910cf1-6b8e-7a01-9c3d-4b1e2f3a4b5c","topic":"m","retain":true,"time":5,"payload_encoding":"base64","payload":"AAH+"}`},
	{"text that is not JSON is base64",
		&Envelope{Version: 1, ID: tid, Topic: "m", Payload: []byte("on"), Time: 5},
		`{"v":1,"id":"01910cf1-6b8e-7a01-9c3d-4b1e2f3a4b5c","topic":"m","time":5,"payload_encoding":"base64","payload":"b24="}`},
	{"JSON with surrounding whitespace is base64 (kept byte for byte)",
		&Envelope{Version: 1, ID: tid, Topic: "m", Payload: []byte("1\n"), Time: 5},
		`{"v":1,"id":"01910cf1-6b8e-7a01-9c3d-4b1e2f3a4b5c","topic":"m","time":5,"payload_encoding":"base64","payload":"MQo="}`},
	{"JSON string and null payloads inline",
		&Envelope{Version: 1, ID: tid, Topic: "q\"\\\n\x01<>", Payload: []byte(`"on"`), Time: 5},
		`{"v":1,"id":"01910cf1-6b8e-7a01-9c3d-4b1e2f3a4b5c","topic":"q\"\\\n\u0001<>","time":5,"payload":"on"}`},
	{"empty payload omitted",
		&Envelope{Version: 1, ID: tid, Topic: "é", Time: -1},
		`{"v":1,"id":"01910cf1-6b8e-7a01-9c3d-4b1e2f3a4b5c","topic":"é","time":-1}`},
}

func TestEnvelopeJSONTable(t *testing.T) {
	for _, tt := range jsonTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := MarshalEnvelopeJSON(tt.env)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.json {
				t.Fatalf("encode\n got %s\nwant %s", got, tt.json)
			}
			if !json.Valid(got) {
				t.Fatal("invalid JSON")
			}
			e, err := UnmarshalEnvelopeJSON([]byte(tt.json))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(e, tt.env) {
				t.Fatalf("decode\n got %+v\nwant %+v", e, tt.env)
			}
		})
	}
}

func TestEnvelopeJSONDecode(t *testing.T) {
	id := `"01910cf1-6b8e-7a01-9c3d-4b1e2f3a4b5c"`
	// pretty-printed, other key order, unknown keys, no time (-> id time)
	e, err := UnmarshalEnvelopeJSON([]byte(`{
		"payload": {"a": [1, 2]}, "extra": {"x": 1}, "topic": "t", "id": ` + id + `, "v": 1}`))
	if err != nil {
		t.Fatal(err)
	}
	if string(e.Payload) != `{"a": [1, 2]}` || e.Time != tid.Millis() {
		t.Fatalf("%+v", e)
	}
	for _, c := range []struct {
		in  string
		err error
	}{
		{`{"v":2,"id":` + id + `,"topic":"t"}`, ErrVersion},
		{`{"id":` + id + `,"topic":"t"}`, ErrMalformed},
		{`{"v":1,"id":"x","topic":"t"}`, ErrMalformed},
		{`{"v":1,"id":` + id + `}`, ErrMalformed},
		{`{"v":1,"id":` + id + `,"topic":"t","payload_encoding":"hex","payload":"00"}`, ErrMalformed},
		{`{"v":1,"id":` + id + `,"topic":"t","payload_encoding":"base64","payload":{}}`, ErrMalformed},
		{`{"v":1,"id":` + id + `,"topic":"t","payload_encoding":"base64","payload":"!!"}`, ErrMalformed},
		{`{"v":1,"id":` + id + `,"topic":"t","user_props":[["a"]]}`, ErrMalformed},
		{`{"v":1,"id":` + id + `,"topic":"t","qos":3}`, ErrMalformed},
		{`{"v":1,"id":` + id + `,"topic":"t"`, ErrMalformed},
		{`[]`, ErrMalformed},
	} {
		if _, err := UnmarshalEnvelopeJSON([]byte(c.in)); !errors.Is(err, c.err) {
			t.Errorf("%s: %v, want %v", c.in, err, c.err)
		}
	}
}

func TestBatchJSON(t *testing.T) {
	b := &Batch{Gateway: "gw1", Envelopes: []*Envelope{jsonTests[0].env, jsonTests[1].env}}
	j, err := MarshalBatchJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"v":1,"gateway":"gw1","first":"01910cf1-6b8e-7a01-9c3d-4b1e2f3a4b5c","last":"01910cf1-6b8e-7a01-9c3d-4b1e2f3a4b5c","envelopes":[` +
		jsonTests[0].json + "," + jsonTests[1].json + "]}"
	if string(j) != want {
		t.Fatalf("got  %s\nwant %s", j, want)
	}
	got, err := UnmarshalBatchJSON(j)
	if err != nil {
		t.Fatal(err)
	}
	b.First, b.Last = tid, tid
	if !reflect.DeepEqual(got, b) {
		t.Fatalf("%+v", got)
	}
	empty, _ := MarshalBatchJSON(&Batch{})
	if _, err := UnmarshalBatchJSON(empty); err != nil {
		t.Fatalf("%s: %v", empty, err)
	}
	bad := strings.Replace(want, `"first":"01910cf1-6b8e-7a01-9c3d-4b1e2f3a4b5c"`, `"first":"01910cf1-6b8e-7a01-9c3d-4b1e2f3a4b5d"`, 1)
	if _, err := UnmarshalBatchJSON([]byte(bad)); !errors.Is(err, ErrMalformed) {
		t.Fatal(err)
	}
}

func TestJSONToCBOR(t *testing.T) {
	for _, c := range []struct{ json, cbor string }{
		{`{"t":21.5,"h":40,"ok":true,"s":null}`, `a4 61 68 18 28 61 73 f6 61 74 f9 4d 60 62 6f 6b f5`},
		{`[1,-1,1.1,1e3,"x",[],{}]`, `87 01 20 fb 3ff199999999999a f9 63d0 61 78 80 a0`},
		{`18446744073709551616`, `c2 49 010000000000000000`},
		{` "a" `, `61 61`},
	} {
		got, err := JSONToCBOR([]byte(c.json))
		if err != nil {
			t.Fatalf("%s: %v", c.json, err)
		}
		if !bytes.Equal(got, h(c.cbor)) {
			t.Errorf("%s: got % x, want %s", c.json, got, c.cbor)
		}
	}
	for _, c := range []struct {
		json string
		err  error
	}{
		{`{"a":1,"a":2}`, ErrMalformed},
		{`{"a":1}{}`, ErrMalformed},
		{`1e400`, ErrMalformed},
		{`{"a":`, ErrMalformed},
		{``, ErrMalformed},
		{strings.Repeat("[", MaxNesting+1) + strings.Repeat("]", MaxNesting+1), ErrLimit},
	} {
		if _, err := JSONToCBOR([]byte(c.json)); !errors.Is(err, c.err) {
			t.Errorf("%q: %v, want %v", c.json, err, c.err)
		}
	}
	if _, err := JSONToCBOR([]byte(strings.Repeat("[", MaxNesting) + strings.Repeat("]", MaxNesting))); err != nil {
		t.Errorf("MaxNesting levels rejected: %v", err)
	}
}

func TestCBORToJSONErrors(t *testing.T) {
	for _, c := range []string{
		"a2 01 00 61 31 00",    // keys 1 and "1" collide
		"a1 f5 00",             // bool key
		"a2 61 61 00 61 61 01", // duplicate key
		"62 c3 28",             // invalid UTF-8
		"01 02",                // two items
		"5f 61 61 ff",          // text chunk in byte string
		"",
	} {
		if _, err := CBORToJSON(h(c)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", c, err)
		}
	}
	deep := cat(rep(0x81, MaxNesting+1), h("00"))
	if _, err := CBORToJSON(deep); err == nil {
		t.Error("deep nesting accepted")
	}
	if _, err := Diagnose(deep); err == nil {
		t.Error("diagnose: deep nesting accepted")
	}
	if _, err := CBORToJSON(h("9b 00000000ffffffff 00")); err == nil {
		t.Error("huge array count accepted")
	}
}

func TestDiagnoseSequenceAndErrors(t *testing.T) {
	s, err := Diagnose(h("01 a1 61 61 42 0102"))
	if err != nil || s != `1, {"a": h'0102'}` {
		t.Fatalf("%q %v", s, err)
	}
	for _, c := range []string{"", "18", "ff", "5a ffffffff"} {
		if _, err := Diagnose(h(c)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: %v", c, err)
		}
	}
	env, _ := MarshalEnvelope(jsonTests[0].env)
	s, err = Diagnose(env)
	if err != nil || !strings.HasPrefix(s, `{0: 1, 1: h'01910cf16b8e7a019c3d4b1e2f3a4b5c', 2: "sensors/t1"`) {
		t.Fatalf("%s %v", s, err)
	}
}

func TestParseHexOrRaw(t *testing.T) {
	for in, want := range map[string][]byte{
		"a10102":            {0xa1, 0x01, 0x02},
		"0xA10102\n":        {0xa1, 0x01, 0x02},
		"a1 01 02":          {0xa1, 0x01, 0x02},
		" 0xa1 0x01\t0x02 ": {0xa1, 0x01, 0x02},
		"a1 0":              []byte("a1 0"), // odd digit count: raw
		"\xa1\x01\x02":      {0xa1, 0x01, 0x02},
		"":                  {},
		"0x":                []byte("0x"),
		"hello":             []byte("hello"),
	} {
		if got := ParseHexOrRaw([]byte(in)); !bytes.Equal(got, want) {
			t.Errorf("%q: got % x, want % x", in, got, want)
		}
	}
}
