package wire

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"
)

var (
	transEnc  cbor.EncMode
	transDec  cbor.DecMode
	diagMode  cbor.DiagMode
	errDepth  = fmt.Errorf("%w: nesting deeper than %d", ErrLimit, MaxNesting)
	errItems  = fmt.Errorf("%w: more than %d items in one array or map", ErrLimit, MaxItems)
	errNumber = fmt.Errorf("%w: number out of range", ErrMalformed)
)

func init() {
	var err error
	// Core Deterministic Encoding: shortest ints and floats (float16 when lossless), sorted map
	// keys, definite lengths; big integers as bignums only when they do not fit 64 bits.
	if transEnc, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic(err)
	}
	if transDec, err = (cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:  MaxNesting,
		MaxArrayElements: MaxItems,
		MaxMapPairs:      MaxItems,
		IndefLength:      cbor.IndefLengthAllowed,
		UTF8:             cbor.UTF8RejectInvalid,
	}).DecMode(); err != nil {
		panic(err)
	}
	if diagMode, err = (cbor.DiagOptions{
		ByteStringEncoding: cbor.ByteStringBase16Encoding,
		CBORSequence:       true,
		MaxNestedLevels:    MaxNesting,
		MaxArrayElements:   MaxItems,
		MaxMapPairs:        MaxItems,
	}).DiagMode(); err != nil {
		panic(err)
	}
}

// JSONToCBOR transcodes one JSON value (a payload) to deterministic CBOR:
//
//   - objects become maps with text keys (sorted as RFC 8949 §4.2.1 requires; JSON member
//     order is not kept), a duplicate member name is an error;
//   - integers become CBOR integers (major type 0/1), beyond 64 bits bignums (tags 2/3);
//   - other numbers become the shortest float (16, 32 or 64 bits) that holds the float64
//     value exactly; a number beyond float64 range is an error;
//   - strings, true, false, null map to their CBOR counterparts.
//
// The input is limited to MaxTranscode bytes, MaxNesting levels and MaxItems per container.
func JSONToCBOR(j []byte) ([]byte, error) {
	if len(j) > MaxTranscode {
		return nil, fmt.Errorf("json to cbor: %w: %d bytes > %d", ErrLimit, len(j), MaxTranscode)
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	v, err := readJSON(dec, 0)
	if err != nil {
		return nil, fmt.Errorf("json to cbor: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("json to cbor: %w: data after the JSON value", ErrMalformed)
	}
	out, err := transEnc.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("json to cbor: %w", err)
	}
	return out, nil
}

func readJSON(dec *json.Decoder, depth int) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	switch t := tok.(type) {
	case json.Delim:
		if depth >= MaxNesting {
			return nil, errDepth
		}
		switch t {
		case '{':
			m := make(map[string]any)
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
				}
				k, _ := kt.(string)
				if _, dup := m[k]; dup {
					return nil, fmt.Errorf("%w: duplicate member %q", ErrMalformed, k)
				}
				if len(m) >= MaxItems {
					return nil, errItems
				}
				if m[k], err = readJSON(dec, depth+1); err != nil {
					return nil, err
				}
			}
			if _, err := dec.Token(); err != nil { // '}'
				return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
			}
			return m, nil
		case '[':
			a := []any{}
			for dec.More() {
				if len(a) >= MaxItems {
					return nil, errItems
				}
				v, err := readJSON(dec, depth+1)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			if _, err := dec.Token(); err != nil { // ']'
				return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
			}
			return a, nil
		}
		return nil, fmt.Errorf("%w: unexpected %v", ErrMalformed, t)
	case json.Number:
		return jsonNumber(string(t))
	default: // string, bool, nil
		return t, nil
	}
}

func jsonNumber(s string) (any, error) {
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i, nil
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return u, nil
		}
		if len(s) <= 1000 {
			if bi, ok := new(big.Int).SetString(s, 10); ok {
				return bi, nil
			}
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return nil, errNumber
	}
	return f, nil
}

// CBORToJSON transcodes one CBOR data item (a payload) to compact JSON, following RFC 8949
// §6.1 "Converting from CBOR to JSON":
//
//   - integers, including bignums (tags 2/3), become JSON numbers; floats become numbers,
//     NaN and infinities become null;
//   - byte strings become base64url strings without padding;
//   - text strings, arrays, true, false, null map directly; undefined and other simple
//     values become null;
//   - maps become objects with members sorted by name; integer keys become their decimal
//     string, byte string keys are not accepted, other key types are an error, and so is a
//     collision (e.g. keys 1 and "1");
//   - tags are dropped and their content converted, except tag 0/1 (date/time), which
//     becomes an RFC 3339 string.
//
// Indefinite lengths are accepted. The input must be exactly one item, well-formed, valid
// (UTF-8 text, no duplicate keys), within MaxTranscode, MaxNesting and MaxItems.
func CBORToJSON(c []byte) ([]byte, error) {
	if len(c) > MaxTranscode {
		return nil, fmt.Errorf("cbor to json: %w: %d bytes > %d", ErrLimit, len(c), MaxTranscode)
	}
	var v any
	if err := transDec.Unmarshal(c, &v); err != nil {
		return nil, fmt.Errorf("cbor to json: %w: %w", ErrMalformed, err)
	}
	j, err := toJSONValue(v, 0)
	if err != nil {
		return nil, fmt.Errorf("cbor to json: %w", err)
	}
	var buf bytes.Buffer
	buf.Grow(len(c) * 2)
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(j); err != nil {
		return nil, fmt.Errorf("cbor to json: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}

func toJSONValue(v any, depth int) (any, error) {
	if depth > MaxNesting+1 {
		return nil, errDepth
	}
	switch t := v.(type) {
	case nil, bool, string, uint64, int64:
		return t, nil
	case float64:
		if math.IsNaN(t) || math.IsInf(t, 0) {
			return nil, nil
		}
		return t, nil
	case big.Int:
		return json.Number(t.String()), nil
	case *big.Int:
		return json.Number(t.String()), nil
	case []byte:
		return base64.RawURLEncoding.EncodeToString(t), nil
	case time.Time:
		return t.Format(time.RFC3339Nano), nil
	case cbor.Tag:
		return toJSONValue(t.Content, depth+1)
	case cbor.SimpleValue:
		return nil, nil
	case []any:
		out := make([]any, len(t))
		for i := range t {
			var err error
			if out[i], err = toJSONValue(t[i], depth+1); err != nil {
				return nil, err
			}
		}
		return out, nil
	case map[any]any:
		out := make(map[string]any, len(t))
		for k, val := range t {
			var ks string
			switch kt := k.(type) {
			case string:
				ks = kt
			case uint64:
				ks = strconv.FormatUint(kt, 10)
			case int64:
				ks = strconv.FormatInt(kt, 10)
			default:
				return nil, fmt.Errorf("%w: map key of type %T has no JSON form", ErrMalformed, k)
			}
			if _, dup := out[ks]; dup {
				return nil, fmt.Errorf("%w: map keys collide as JSON member %q", ErrMalformed, ks)
			}
			jv, err := toJSONValue(val, depth+1)
			if err != nil {
				return nil, err
			}
			out[ks] = jv
		}
		return out, nil
	default:
		return nil, fmt.Errorf("%w: CBOR value of type %T has no JSON form", ErrMalformed, v)
	}
}

// Diagnose renders CBOR in RFC 8949 §8 diagnostic notation (byte strings as h'..'), for
// `edged cbor decode`. A CBOR sequence (RFC 8742) is rendered as comma-separated items. The
// input is limited like CBORToJSON; malformed input is an error, never a panic.
func Diagnose(c []byte) (string, error) {
	if len(c) > MaxTranscode {
		return "", fmt.Errorf("diagnose: %w: %d bytes > %d", ErrLimit, len(c), MaxTranscode)
	}
	if len(c) == 0 {
		return "", fmt.Errorf("diagnose: %w: empty input", ErrMalformed)
	}
	s, err := diagMode.Diagnose(c)
	if err != nil {
		return "", fmt.Errorf("diagnose: %w: %w", ErrMalformed, err)
	}
	return s, nil
}

// ParseHexOrRaw returns the bytes b stands for when b is hex text, else b itself. Hex text is
// hex digit pairs, optionally separated by whitespace, each whitespace-separated group
// optionally prefixed with 0x or 0X ("a1 01 02", "0xa10102\n"). Raw CBOR that happens to
// consist only of such characters is taken as hex: pass hex to be unambiguous.
func ParseHexOrRaw(b []byte) []byte {
	fields := bytes.Fields(b)
	if len(fields) == 0 {
		return b
	}
	var digits []byte
	for _, f := range fields {
		if len(f) >= 2 && f[0] == '0' && (f[1] == 'x' || f[1] == 'X') {
			f = f[2:]
		}
		for _, c := range f {
			if _, ok := unhex(c); !ok {
				return b
			}
		}
		digits = append(digits, f...)
	}
	if len(digits) == 0 || len(digits)%2 != 0 {
		return b
	}
	out := make([]byte, len(digits)/2)
	if _, err := hex.Decode(out, digits); err != nil {
		return b
	}
	return out
}
