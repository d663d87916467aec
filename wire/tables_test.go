package wire

import (
	"bytes"
	"encoding/hex"
	"strings"
)

// The byte tables shared by encode and decode tests (mochi's packets/tpackets.go style): every
// entry is raw bytes, the value they stand for, and the error decoding them must wrap. Entries
// with canonical set are also what the encoder must produce for the value.

// h decodes hex written with optional spaces.
func h(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func rep(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

func seq(from, to int) []byte {
	var b []byte
	for i := from; i <= to; i++ {
		b = append(b, byte(i))
	}
	return b
}

// tid is the id used by the tables: 2024-08-01T07:57:13.998Z plus fixed random bits.
var tid = ID(h("0191 0cf1 6b8e 7a01 9c3d 4b1e 2f3a 4b5c"))

var tidBytes = cat(h("50"), tid[:]) // bstr .size 16

type envelopeTest struct {
	name      string
	raw       []byte
	env       *Envelope // nil when err is set
	err       error     // errors.Is target for decode
	canonical bool      // MarshalEnvelope(env) == raw
}

var envelopeTests = []envelopeTest{
	{
		name: "minimal",
		raw:  cat(h("a4 00 01 01"), tidBytes, h("02 61 61 03 40")),
		env:  &Envelope{Version: 1, ID: tid, Topic: "a", Time: tid.Millis()},
		// {0: 1, 1: h'..', 2: "a", 3: h''}
		canonical: true,
	},
	{
		name: "telemetry",
		raw: cat(h("a7 00 01 01"), tidBytes,
			h("02 6f"), []byte("sensors/t1/temp"),
			h("03 4c"), []byte(`{"t":21.375}`),
			h("04 01"),
			h("07 63"), []byte("gw1"),
			h("08 62"), []byte("t1")),
		env: &Envelope{Version: 1, ID: tid, Topic: "sensors/t1/temp", Payload: []byte(`{"t":21.375}`),
			QoS: 1, Time: tid.Millis(), Gateway: "gw1", ClientID: "t1"},
		canonical: true,
	},
	{
		name: "all fields",
		raw: cat(h("ab 00 01 01"), tidBytes,
			h("02 63"), []byte("c/x"),
			h("03 43 00 ff c0"),
			h("04 02 05 f5"),
			h("06 1b 0000018f4df73e00"), // time 1715000000000 != id time
			h("07 63"), []byte("gw2"),
			h("08 60"), // client id "" is omitted by the encoder... but see below
			h("09 82 82 61 6b 61 76 82 61 6b 62 76 32"),
			h("0a 70"), []byte("application/cbor")),
		env: &Envelope{Version: 1, ID: tid, Topic: "c/x", Payload: []byte{0, 0xff, 0xc0}, QoS: 2, Retain: true,
			Time: 1715000000000, Gateway: "gw2", UserProps: []UserProp{{"k", "v"}, {"k", "v2"}}, ContentType: "application/cbor"},
	},
	{
		name: "all fields canonical",
		raw: cat(h("aa 00 01 01"), tidBytes,
			h("02 63"), []byte("c/x"),
			h("03 43 00 ff c0"),
			h("04 02 05 f5"),
			h("06 1b 0000018f4df73e00"),
			h("07 63"), []byte("gw2"),
			h("09 82 82 61 6b 61 76 82 61 6b 62 76 32"),
			h("0a 70"), []byte("application/cbor")),
		env: &Envelope{Version: 1, ID: tid, Topic: "c/x", Payload: []byte{0, 0xff, 0xc0}, QoS: 2, Retain: true,
			Time: 1715000000000, Gateway: "gw2", UserProps: []UserProp{{"k", "v"}, {"k", "v2"}}, ContentType: "application/cbor"},
		canonical: true,
	},
	{
		name:      "time zero is written",
		raw:       cat(h("a5 00 01 01"), tidBytes, h("02 61 61 03 40 06 00")),
		env:       &Envelope{Version: 1, ID: tid, Topic: "a"},
		canonical: true,
	},
	{
		name:      "negative time",
		raw:       cat(h("a5 00 01 01"), tidBytes, h("02 61 61 03 40 06 38 63")),
		env:       &Envelope{Version: 1, ID: tid, Topic: "a", Time: -100},
		canonical: true,
	},
	{
		name: "keys out of order, non-shortest heads",
		raw:  cat(h("a5 03 40 04 18 01 02 78 01 61 01"), tidBytes, h("00 19 0001")),
		env:  &Envelope{Version: 1, ID: tid, Topic: "a", QoS: 1, Time: tid.Millis()},
	},
	{
		name: "unknown keys ignored",
		raw: cat(h("a6 00 01 01"), tidBytes, h("02 61 61 03 40"),
			h("0b 9f 01 a1 61 78 f6 c1 1a 00 00 00 01 5f 41 00 ff ff"), // 11: [_ 1, {"x": null}, 1(1), (_ h'00')]
			h("19 03e8 fb 3ff8000000000000")),                          // 1000: 1.5
		env: &Envelope{Version: 1, ID: tid, Topic: "a", Time: tid.Millis()},
	},

	{name: "empty input", raw: nil, err: ErrMalformed},
	{name: "not a map", raw: h("80"), err: ErrMalformed},
	{name: "indefinite map", raw: cat(h("bf 00 01 01"), tidBytes, h("02 61 61 ff")), err: ErrMalformed},
	{name: "version 2", raw: cat(h("a3 00 02 01"), tidBytes, h("02 61 61")), err: ErrVersion},
	{name: "version 0", raw: cat(h("a3 00 00 01"), tidBytes, h("02 61 61")), err: ErrVersion},
	{name: "missing version", raw: cat(h("a2 01"), tidBytes, h("02 61 61")), err: ErrMalformed},
	{name: "missing id", raw: h("a2 00 01 02 61 61"), err: ErrMalformed},
	{name: "missing topic", raw: cat(h("a2 00 01 01"), tidBytes), err: ErrMalformed},
	{name: "short id", raw: cat(h("a3 00 01 01 4f"), tid[:15], h("02 61 61")), err: ErrMalformed},
	{name: "long id", raw: cat(h("a3 00 01 01 51"), tid[:], h("00 02 61 61")), err: ErrLimit},
	{name: "duplicate key", raw: cat(h("a4 00 01 01"), tidBytes, h("02 61 61 02 61 62")), err: ErrMalformed},
	{name: "duplicate unknown key", raw: cat(h("a5 00 01 01"), tidBytes, h("02 61 61 18 63 00 18 63 00")), err: ErrMalformed},
	{name: "text key", raw: cat(h("a4 00 01 01"), tidBytes, h("02 61 61 61 78 00")), err: ErrMalformed},
	{name: "qos 3", raw: cat(h("a4 00 01 01"), tidBytes, h("02 61 61 04 03")), err: ErrMalformed},
	{name: "retain not bool", raw: cat(h("a4 00 01 01"), tidBytes, h("02 61 61 05 01")), err: ErrMalformed},
	{name: "topic invalid utf8", raw: cat(h("a3 00 01 01"), tidBytes, h("02 62 c3 28")), err: ErrMalformed},
	{name: "topic as bytes", raw: cat(h("a3 00 01 01"), tidBytes, h("02 41 61")), err: ErrMalformed},
	{name: "time overflows int64", raw: cat(h("a4 00 01 01"), tidBytes, h("02 61 61 06 1b ffffffffffffffff")), err: ErrMalformed},
	{name: "payload length beyond data", raw: cat(h("a4 00 01 01"), tidBytes, h("02 61 61 03 5a ffffffff 00")), err: ErrMalformed},
	{name: "payload indefinite", raw: cat(h("a4 00 01 01"), tidBytes, h("02 61 61 03 5f 41 00 ff")), err: ErrMalformed},
	{name: "map count beyond data", raw: h("b9 ffff 00 01"), err: ErrLimit},
	{name: "map count beyond data (small)", raw: h("b8 80 00 01"), err: ErrMalformed},
	{name: "user prop of 3", raw: cat(h("a4 00 01 01"), tidBytes, h("02 61 61 09 81 83 61 6b 61 76 61 77")), err: ErrMalformed},
	{name: "user props count beyond data", raw: cat(h("a4 00 01 01"), tidBytes, h("02 61 61 09 99 0400 80")), err: ErrMalformed},
	{name: "unknown key nested too deep", raw: cat(h("a4 00 01 01"), tidBytes, h("02 61 61 0b"), rep(0x81, 40), h("00")), err: ErrLimit},
	{name: "unknown key truncated", raw: cat(h("a4 00 01 01"), tidBytes, h("02 61 61 0b 82 01")), err: ErrMalformed},
	{name: "reserved additional info", raw: cat(h("a4 00 01 01"), tidBytes, h("02 61 61 0b 1c")), err: ErrMalformed},
	{name: "invalid simple value", raw: cat(h("a4 00 01 01"), tidBytes, h("02 61 61 0b f8 10")), err: ErrMalformed},
	{name: "stray break", raw: cat(h("a4 00 01 01"), tidBytes, h("02 61 61 0b ff")), err: ErrMalformed},
	{name: "trailing bytes", raw: cat(h("a3 00 01 01"), tidBytes, h("02 61 61 00")), err: ErrMalformed},
	{name: "truncated", raw: cat(h("a3 00 01 01"), tid[:8]), err: ErrMalformed},
}

type batchTest struct {
	name      string
	raw       []byte
	batch     *Batch
	err       error
	canonical bool
}

var tid2 = ID(h("0191 0cf1 6b8f 7a01 9c3d 4b1e 2f3a 4b5d"))

var batchTests = []batchTest{
	{
		name:      "empty",
		raw:       cat(h("a5 00 01 01 63"), []byte("gw1"), h("02 50"), make([]byte, 16), h("03 50"), make([]byte, 16), h("04 80")),
		batch:     &Batch{Gateway: "gw1"},
		canonical: true,
	},
	{
		name: "two envelopes, gateway elided and kept",
		raw: cat(h("a5 00 01 01 63"), []byte("gw1"), h("02"), tidBytes, h("03 50"), tid2[:], h("04 82"),
			h("a3 01"), tidBytes, h("02 61 61 03 41 31"), // gateway = batch gateway: no key 7
			h("a4 01 50"), tid2[:], h("02 61 62 03 40 07 60")), // gateway "" kept
		batch: &Batch{Gateway: "gw1", First: tid, Last: tid2, Envelopes: []*Envelope{
			{Version: 1, ID: tid, Topic: "a", Payload: []byte("1"), Time: tid.Millis(), Gateway: "gw1"},
			{Version: 1, ID: tid2, Topic: "b", Time: tid2.Millis()},
		}},
		canonical: true,
	},
	{name: "version 2", raw: cat(h("a5 00 02 01 63"), []byte("gw1"), h("02 50"), make([]byte, 16), h("03 50"), make([]byte, 16), h("04 80")), err: ErrVersion},
	{name: "missing envelopes", raw: cat(h("a4 00 01 01 63"), []byte("gw1"), h("02 50"), make([]byte, 16), h("03 50"), make([]byte, 16)), err: ErrMalformed},
	{
		name: "first does not match",
		raw: cat(h("a5 00 01 01 63"), []byte("gw1"), h("02 50"), tid2[:], h("03 50"), tid2[:], h("04 81"),
			h("a3 01"), tidBytes, h("02 61 61 03 41 31")),
		err: ErrMalformed,
	},
	{name: "envelope count beyond data", raw: cat(h("a5 00 01 01 63"), []byte("gw1"), h("02 50"), make([]byte, 16), h("03 50"), make([]byte, 16), h("04 9a 00ffffff")), err: ErrMalformed},
	{
		name: "nested envelope of version 2",
		raw: cat(h("a5 00 01 01 63"), []byte("gw1"), h("02"), tidBytes, h("03"), tidBytes, h("04 81"),
			h("a4 00 02 01"), tidBytes, h("02 61 61 03 41 31")),
		err: ErrVersion,
	},
}

type frameTest struct {
	name    string
	framing string
	max     int
	raw     []byte   // wire bytes
	frames  [][]byte // decoded frames, in order
	drops   DropStats
	encode  bool // EncodeFrame(framing, frames[0]) == raw
}

var frameTests = []frameTest{
	// line
	{name: "line", framing: "line", raw: []byte("abc\n"), frames: [][]byte{[]byte("abc")}, encode: true},
	{name: "line crlf", framing: "line", raw: []byte("a\r\nb\n\r\n\n"), frames: [][]byte{[]byte("a"), []byte("b")}},
	{name: "line partial tail kept", framing: "line", raw: []byte("a\nbc"), frames: [][]byte{[]byte("a")}},
	{name: "line max exact with cr", framing: "line", max: 3, raw: []byte("abc\r\nabcd\nab\n"), frames: [][]byte{[]byte("abc"), []byte("ab")}, drops: DropStats{Oversize: 1}},
	{name: "line oversize resync", framing: "line", max: 4, raw: []byte("0123456789\nok\n"), frames: [][]byte{[]byte("ok")}, drops: DropStats{Oversize: 1}},
	{name: "line binary", framing: "line", raw: []byte("\x00\xff\xc0\n"), frames: [][]byte{{0, 0xff, 0xc0}}, encode: true},
	// COBS, the examples of the COBS paper / Wikipedia
	{name: "cobs 00", framing: "cobs", raw: h("01 01 00"), frames: [][]byte{h("00")}, encode: true},
	{name: "cobs 00 00", framing: "cobs", raw: h("01 01 01 00"), frames: [][]byte{h("00 00")}, encode: true},
	{name: "cobs 00 11 00", framing: "cobs", raw: h("01 02 11 01 00"), frames: [][]byte{h("00 11 00")}, encode: true},
	{name: "cobs 11 22 00 33", framing: "cobs", raw: h("03 11 22 02 33 00"), frames: [][]byte{h("11 22 00 33")}, encode: true},
	{name: "cobs 11 22 33 44", framing: "cobs", raw: h("05 11 22 33 44 00"), frames: [][]byte{h("11 22 33 44")}, encode: true},
	{name: "cobs 11 00 00 00", framing: "cobs", raw: h("02 11 01 01 01 00"), frames: [][]byte{h("11 00 00 00")}, encode: true},
	{name: "cobs 01..fe", framing: "cobs", raw: cat(h("ff"), seq(1, 0xfe), h("00")), frames: [][]byte{seq(1, 0xfe)}, encode: true},
	{name: "cobs 00..fe", framing: "cobs", raw: cat(h("01 ff"), seq(1, 0xfe), h("00")), frames: [][]byte{seq(0, 0xfe)}, encode: true},
	{name: "cobs 01..ff", framing: "cobs", raw: cat(h("ff"), seq(1, 0xfe), h("02 ff 00")), frames: [][]byte{seq(1, 0xff)}, encode: true},
	{name: "cobs 02..ff 00", framing: "cobs", raw: cat(h("ff"), seq(2, 0xff), h("01 01 00")), frames: [][]byte{cat(seq(2, 0xff), h("00"))}, encode: true},
	{name: "cobs 03..ff 00 01", framing: "cobs", raw: cat(h("fe"), seq(3, 0xff), h("02 01 00")), frames: [][]byte{cat(seq(3, 0xff), h("00 01"))}, encode: true},
	{name: "cobs empty frames skipped", framing: "cobs", raw: h("00 00 02 41 00 00"), frames: [][]byte{h("41")}},
	{name: "cobs truncated block then resync", framing: "cobs", raw: h("05 41 42 00 02 43 00"), frames: [][]byte{h("43")}, drops: DropStats{Malformed: 1}},
	{name: "cobs oversize then resync", framing: "cobs", max: 3, raw: h("05 41 42 43 44 00 02 43 00 01 01 01 01 01 00"), frames: [][]byte{h("43")}, drops: DropStats{Oversize: 2}},
	// SLIP
	{name: "slip", framing: "slip", raw: cat(h("c0"), []byte("hello"), h("c0")), frames: [][]byte{[]byte("hello")}, encode: true},
	{name: "slip escapes", framing: "slip", raw: h("c0 01 db dc 02 db dd 03 c0"), frames: [][]byte{h("01 c0 02 db 03")}, encode: true},
	{name: "slip no leading end", framing: "slip", raw: h("41 c0 42 c0 c0 c0"), frames: [][]byte{h("41"), h("42")}},
	{name: "slip bad escape then resync", framing: "slip", raw: h("c0 41 db 41 42 c0 43 c0"), frames: [][]byte{h("43")}, drops: DropStats{Malformed: 1}},
	{name: "slip esc end", framing: "slip", raw: h("41 db c0 43 c0"), frames: [][]byte{h("43")}, drops: DropStats{Malformed: 1}},
	{name: "slip oversize", framing: "slip", max: 2, raw: h("41 42 43 c0 41 db dc c0 41 42 db dd c0"), frames: [][]byte{h("41 c0")}, drops: DropStats{Oversize: 2}},
}
