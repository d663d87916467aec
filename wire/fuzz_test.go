package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// Native fuzz targets; seed corpora live in testdata/fuzz/<FuzzName>/ (regenerate with
// WIRE_WRITE_SEEDS=1 go test -run TestWriteFuzzSeeds ./wire). Run one with e.g.
//
//	go test -run XXX -fuzz FuzzEnvelope -fuzztime 20s ./wire

func FuzzEnvelope(f *testing.F) {
	for _, tt := range envelopeTests {
		f.Add(tt.raw)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if envelopeForm.fuzzRoundTrip(t, data) {
			checkAgainstReference(t, data)
		}
	})
}

func FuzzBatch(f *testing.F) {
	for _, tt := range batchTests {
		f.Add(tt.raw)
	}
	f.Fuzz(func(t *testing.T, data []byte) { batchForm.fuzzRoundTrip(t, data) })
}

// FuzzJSONTranscode feeds each input both as JSON (JSONToCBOR, then back) and as CBOR
// (CBORToJSON, Diagnose), checking that what converts converts back to the same value.
func FuzzJSONTranscode(f *testing.F) {
	for _, s := range []string{`{"t":21.5,"h":[1,2,{"x":null}],"ok":true}`, `[1e300,-0.0,18446744073709551616]`,
		`"\u00fc\ud800"`, `{"a":1,"a":2}`, `[[[[[[[[[[]]]]]]]]]]`} {
		f.Add([]byte(s))
	}
	for _, v := range rfc8949Vectors {
		f.Add(h(v.hex))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if c, err := JSONToCBOR(data); err == nil {
			j, err := CBORToJSON(c)
			if err != nil {
				t.Fatalf("CBORToJSON(JSONToCBOR(%q)) = %v (cbor % x)", data, err, c)
			}
			var a, b any
			if json.Unmarshal(data, &a) == nil {
				if err := json.Unmarshal(j, &b); err != nil || !reflect.DeepEqual(a, b) {
					t.Fatalf("value changed: %s -> %s (%v)", data, j, err)
				}
			}
			c2, err := JSONToCBOR(j)
			if err != nil {
				t.Fatalf("JSONToCBOR(%s): %v", j, err)
			}
			if _, err := CBORToJSON(c2); err != nil {
				t.Fatal(err)
			}
		}
		if j, err := CBORToJSON(data); err == nil {
			if !json.Valid(j) {
				t.Fatalf("invalid JSON %q", j)
			}
			if _, err := JSONToCBOR(j); err != nil {
				t.Fatalf("JSONToCBOR(CBORToJSON(% x) = %s): %v", data, j, err)
			}
		}
		_, _ = Diagnose(data)
		_ = ParseHexOrRaw(data)
	})
}

// fuzzFrames feeds data whole and split in three chunks at a and b (nats parser_fuzz style) and
// checks that both give the same frames and drop counts, that frames respect the maximum, and
// that every frame survives re-encoding.
func fuzzFrames(t *testing.T, framing string, data []byte, a, b uint16, max uint8) {
	maxLen := int(max%64) + 1
	run := func(chunks ...[]byte) ([][]byte, DropStats) {
		d, err := NewFrameDecoder(framing, maxLen)
		if err != nil {
			t.Fatal(err)
		}
		var frames [][]byte
		for _, c := range chunks {
			d.Feed(c, func(fr []byte) {
				if len(fr) == 0 || len(fr) > maxLen {
					t.Fatalf("frame of %d bytes (max %d)", len(fr), maxLen)
				}
				frames = append(frames, bytes.Clone(fr))
			})
		}
		return frames, d.Dropped()
	}
	whole, wd := run(data)
	i, j := int(a)%(len(data)+1), int(b)%(len(data)+1)
	if i > j {
		i, j = j, i
	}
	split, sd := run(data[:i], data[i:j], data[j:])
	if !reflect.DeepEqual(whole, split) || wd != sd {
		t.Fatalf("split at %d,%d differs: %q %+v vs %q %+v", i, j, whole, wd, split, sd)
	}
	for _, fr := range whole {
		if framing == "line" && (bytes.IndexByte(fr, '\n') >= 0) {
			t.Fatalf("line frame contains the delimiter: %q", fr)
		}
		enc, err := EncodeFrame(framing, fr)
		if err != nil {
			if framing == "line" {
				continue
			}
			t.Fatal(err)
		}
		again, d := run(enc)
		if framing == "line" && fr[len(fr)-1] == '\r' {
			continue // CR stripping is lossy by design
		}
		if len(again) != 1 || !bytes.Equal(again[0], fr) || d != (DropStats{}) {
			t.Fatalf("re-encoded frame %q decodes to %q %+v", fr, again, d)
		}
	}
}

func addFrameSeeds(f *testing.F, framing string) {
	for _, tt := range frameTests {
		if tt.framing == framing {
			f.Add(tt.raw, uint16(len(tt.raw)/3), uint16(len(tt.raw)/2), uint8(tt.max))
		}
	}
}

func FuzzLineDecoder(f *testing.F) {
	addFrameSeeds(f, "line")
	f.Fuzz(func(t *testing.T, data []byte, a, b uint16, max uint8) { fuzzFrames(t, "line", data, a, b, max) })
}

func FuzzCOBSDecoder(f *testing.F) {
	addFrameSeeds(f, "cobs")
	f.Fuzz(func(t *testing.T, data []byte, a, b uint16, max uint8) { fuzzFrames(t, "cobs", data, a, b, max) })
}

func FuzzSLIPDecoder(f *testing.F) {
	addFrameSeeds(f, "slip")
	f.Fuzz(func(t *testing.T, data []byte, a, b uint16, max uint8) { fuzzFrames(t, "slip", data, a, b, max) })
}

// TestWriteFuzzSeeds writes the f.Add seeds above into testdata/fuzz in the `go test fuzz v1`
// format, so that the corpus is visible and versioned. Only with WIRE_WRITE_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("WIRE_WRITE_SEEDS") == "" {
		t.Skip("set WIRE_WRITE_SEEDS=1 to regenerate testdata/fuzz seeds")
	}
	write := func(name string, i int, vals ...any) {
		var b bytes.Buffer
		b.WriteString("go test fuzz v1\n")
		for _, v := range vals {
			switch v := v.(type) {
			case []byte:
				fmt.Fprintf(&b, "[]byte(%q)\n", v)
			case uint16:
				fmt.Fprintf(&b, "uint16(%d)\n", v)
			case uint8:
				fmt.Fprintf(&b, "byte('\\x%02x')\n", v)
			}
		}
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%03d", i)), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, tt := range envelopeTests {
		write("FuzzEnvelope", i, tt.raw)
	}
	for i, tt := range batchTests {
		write("FuzzBatch", i, tt.raw)
	}
	for i, s := range []string{`{"t":21.5,"h":[1,2,{"x":null}],"ok":true}`, `[1e300,-0.0,18446744073709551616]`, `{"a":1,"a":2}`} {
		write("FuzzJSONTranscode", i, []byte(s))
	}
	for i, v := range rfc8949Vectors {
		write("FuzzJSONTranscode", 100+i, h(v.hex))
	}
	names := map[string]string{"line": "FuzzLineDecoder", "cobs": "FuzzCOBSDecoder", "slip": "FuzzSLIPDecoder"}
	for i, tt := range frameTests {
		write(names[tt.framing], i, tt.raw, uint16(len(tt.raw)/3), uint16(len(tt.raw)/2), uint8(tt.max))
	}
}
