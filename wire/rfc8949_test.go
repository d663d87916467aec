package wire

import (
	"encoding/hex"
	"strings"
	"testing"
)

// rfc8949Vectors are all the examples of RFC 8949 Appendix A: encoded bytes, the RFC's
// diagnostic notation (Diagnose renders every one of them exactly as the RFC prints it), and
// what CBORToJSON makes of them following §6.1.
type rfc8949Vector struct {
	hex, diag, json string
}

var rfc8949Vectors = []rfc8949Vector{
	{"00", "0", "0"},
	{"01", "1", "1"},
	{"0a", "10", "10"},
	{"17", "23", "23"},
	{"1818", "24", "24"},
	{"1819", "25", "25"},
	{"1864", "100", "100"},
	{"1903e8", "1000", "1000"},
	{"1a000f4240", "1000000", "1000000"},
	{"1b000000e8d4a51000", "1000000000000", "1000000000000"},
	{"1bffffffffffffffff", "18446744073709551615", "18446744073709551615"},
	{"c249010000000000000000", "18446744073709551616", "18446744073709551616"},
	{"3bffffffffffffffff", "-18446744073709551616", "-18446744073709551616"},
	{"c349010000000000000000", "-18446744073709551617", "-18446744073709551617"},
	{"20", "-1", "-1"},
	{"29", "-10", "-10"},
	{"3863", "-100", "-100"},
	{"3903e7", "-1000", "-1000"},
	{"f90000", "0.0", "0"},
	{"f98000", "-0.0", "-0"},
	{"f93c00", "1.0", "1"},
	{"fb3ff199999999999a", "1.1", "1.1"},
	{"f93e00", "1.5", "1.5"},
	{"f97bff", "65504.0", "65504"},
	{"fa47c35000", "100000.0", "100000"},
	{"fa7f7fffff", "3.4028234663852886e+38", "3.4028234663852886e+38"},
	{"fb7e37e43c8800759c", "1.0e+300", "1e+300"},
	{"f90001", "5.960464477539063e-8", "5.960464477539063e-8"},
	{"f90400", "0.00006103515625", "0.00006103515625"},
	{"f9c400", "-4.0", "-4"},
	{"fbc010666666666666", "-4.1", "-4.1"},
	{"f97c00", "Infinity", "null"},
	{"f97e00", "NaN", "null"},
	{"f9fc00", "-Infinity", "null"},
	{"fa7f800000", "Infinity", "null"},
	{"fa7fc00000", "NaN", "null"},
	{"faff800000", "-Infinity", "null"},
	{"fb7ff0000000000000", "Infinity", "null"},
	{"fb7ff8000000000000", "NaN", "null"},
	{"fbfff0000000000000", "-Infinity", "null"},
	{"f4", "false", "false"},
	{"f5", "true", "true"},
	{"f6", "null", "null"},
	{"f7", "undefined", "null"},
	{"f0", "simple(16)", "null"},
	{"f8ff", "simple(255)", "null"},
	{"c074323031332d30332d32315432303a30343a30305a", `0("2013-03-21T20:04:00Z")`, `"2013-03-21T20:04:00Z"`},
	{"c11a514b67b0", "1(1363896240)", `"2013-03-21T20:04:00Z"`},
	{"c1fb41d452d9ec200000", "1(1363896240.5)", `"2013-03-21T20:04:00.5Z"`},
	{"d74401020304", "23(h'01020304')", `"AQIDBA"`},
	{"d818456449455446", "24(h'6449455446')", `"ZElFVEY"`},
	{"d82076687474703a2f2f7777772e6578616d706c652e636f6d", `32("http://www.example.com")`, `"http://www.example.com"`},
	{"40", "h''", `""`},
	{"4401020304", "h'01020304'", `"AQIDBA"`},
	{"60", `""`, `""`},
	{"6161", `"a"`, `"a"`},
	{"6449455446", `"IETF"`, `"IETF"`},
	{"62225c", `"\"\\"`, `"\"\\"`},
	{"62c3bc", `"\u00fc"`, `"ü"`},
	{"63e6b0b4", `"\u6c34"`, `"水"`},
	{"64f0908591", `"\ud800\udd51"`, `"𐅑"`},
	{"80", "[]", "[]"},
	{"83010203", "[1, 2, 3]", "[1,2,3]"},
	{"8301820203820405", "[1, [2, 3], [4, 5]]", "[1,[2,3],[4,5]]"},
	{"98190102030405060708090a0b0c0d0e0f101112131415161718181819",
		"[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25]",
		"[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25]"},
	{"a0", "{}", "{}"},
	{"a201020304", "{1: 2, 3: 4}", `{"1":2,"3":4}`},
	{"a26161016162820203", `{"a": 1, "b": [2, 3]}`, `{"a":1,"b":[2,3]}`},
	{"826161a161626163", `["a", {"b": "c"}]`, `["a",{"b":"c"}]`},
	{"a56161614161626142616361436164614461656145", `{"a": "A", "b": "B", "c": "C", "d": "D", "e": "E"}`,
		`{"a":"A","b":"B","c":"C","d":"D","e":"E"}`},
	{"5f42010243030405ff", "(_ h'0102', h'030405')", `"AQIDBAU"`},
	{"7f657374726561646d696e67ff", `(_ "strea", "ming")`, `"streaming"`},
	{"9fff", "[_ ]", "[]"},
	{"9f018202039f0405ffff", "[_ 1, [2, 3], [_ 4, 5]]", "[1,[2,3],[4,5]]"},
	{"9f01820203820405ff", "[_ 1, [2, 3], [4, 5]]", "[1,[2,3],[4,5]]"},
	{"83018202039f0405ff", "[1, [2, 3], [_ 4, 5]]", "[1,[2,3],[4,5]]"},
	{"83019f0203ff820405", "[1, [_ 2, 3], [4, 5]]", "[1,[2,3],[4,5]]"},
	{"9f0102030405060708090a0b0c0d0e0f101112131415161718181819ff",
		"[_ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25]",
		"[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25]"},
	{"bf61610161629f0203ffff", `{_ "a": 1, "b": [_ 2, 3]}`, `{"a":1,"b":[2,3]}`},
	{"826161bf61626163ff", `["a", {_ "b": "c"}]`, `["a",{"b":"c"}]`},
	{"bf6346756ef563416d7421ff", `{_ "Fun": true, "Amt": -2}`, `{"Amt":-2,"Fun":true}`},
}

func TestRFC8949Diagnose(t *testing.T) {
	eachVector(t, Diagnose, func(v rfc8949Vector, got string) {
		if got != v.diag {
			t.Errorf("%s: Diagnose = %s, want %s", v.hex, got, v.diag)
		}
	})
}

func TestRFC8949ToJSON(t *testing.T) {
	eachVector(t, CBORToJSON, func(v rfc8949Vector, got []byte) {
		if string(got) != v.json {
			t.Errorf("%s (%s): CBORToJSON = %s, want %s", v.hex, v.diag, got, v.json)
		}
		// and JSON back to CBOR is the deterministic encoding of the JSON value: for the
		// vectors that are already deterministic JSON-model values it is the same bytes.
		if _, err := JSONToCBOR(got); err != nil {
			t.Errorf("%s: JSONToCBOR(%s): %v", v.hex, got, err)
		}
	})
}

// eachVector converts every vector's bytes with conv and hands the result to check; a
// conversion error is reported for its vector.
func eachVector[T any](t *testing.T, conv func([]byte) (T, error), check func(v rfc8949Vector, got T)) {
	t.Helper()
	for _, v := range rfc8949Vectors {
		got, err := conv(h(v.hex))
		if err != nil {
			t.Errorf("%s: %v", v.hex, err)
			continue
		}
		check(v, got)
	}
}

// TestRFC8949ReEncode: the JSON-model vectors that RFC 8949 encodes in preferred
// serialisation come back byte for byte from JSONToCBOR(CBORToJSON(x)).
func TestRFC8949ReEncode(t *testing.T) {
	for _, v := range rfc8949Vectors {
		switch {
		case strings.Contains(v.diag, "_"), // indefinite lengths: JSONToCBOR writes definite
			strings.HasSuffix(v.diag, ".0"),                                                 // integral floats come back as integers
			v.json == "null" && v.diag != "null",                                            // NaN, infinities, undefined, simple values
			strings.ContainsAny(v.diag[:1], "0123456789h") && strings.Contains(v.diag, "("), // tags
			strings.HasPrefix(v.diag, "h'"),                                                 // byte strings become base64url text
			v.diag == "{1: 2, 3: 4}":                                                        // integer keys become text keys
			continue
		}
		b, _ := hex.DecodeString(v.hex)
		j, err := CBORToJSON(b)
		if err != nil {
			t.Fatal(err)
		}
		c, err := JSONToCBOR(j)
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(c) != v.hex {
			t.Errorf("%s: JSONToCBOR(%s) = %x", v.hex, j, c)
		}
	}
}
