package modbus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/fxamacker/cbor/v2"
)

const maxCommand = 4096

// parsePointCommand decodes a point command: a bare value (true, 12.5) or {"v": value}, as JSON
// or CBOR.
func parsePointCommand(b []byte) (any, error) {
	v, err := decodeAny(b)
	if err != nil {
		return nil, err
	}
	if m, ok := v.(map[string]any); ok {
		x, ok := m["v"]
		if !ok || len(m) != 1 {
			return nil, errors.New("invalid command: want a value or {\"v\": value}")
		}
		v = x
	}
	return checkScalar(v)
}

// parseUnitCommand decodes {"point": "name", "v": value}.
func parseUnitCommand(b []byte) (string, any, error) {
	v, err := decodeAny(b)
	if err != nil {
		return "", nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return "", nil, errors.New(`invalid command: want {"point": "name", "v": value}`)
	}
	name, _ := m["point"].(string)
	x, hasV := m["v"]
	if name == "" || !hasV || len(m) != 2 {
		return name, nil, errors.New(`invalid command: want {"point": "name", "v": value}`)
	}
	x, err = checkScalar(x)
	return name, x, err
}

func checkScalar(v any) (any, error) {
	switch v.(type) {
	case bool, float64, int64, uint64:
		return v, nil
	}
	return nil, fmt.Errorf("invalid command: %T is not a writable value (want a number or a bool)", v)
}

// decodeAny decodes JSON, or CBOR when the payload is not JSON. Numbers become float64
// (JSON) or int64/uint64/float64 (CBOR); maps have string keys.
func decodeAny(b []byte) (any, error) {
	if len(b) == 0 || len(b) > maxCommand {
		return nil, fmt.Errorf("invalid command: %d bytes (want 1 to %d)", len(b), maxCommand)
	}
	if json.Valid(b) {
		d := json.NewDecoder(bytes.NewReader(b))
		var v any
		if err := d.Decode(&v); err != nil {
			return nil, fmt.Errorf("invalid command: %w", err)
		}
		return v, nil
	}
	var v any
	dm, _ := cbor.DecOptions{DefaultMapType: mapStringAny, MaxNestedLevels: 4}.DecMode()
	if err := dm.Unmarshal(b, &v); err != nil {
		s := strings.TrimSpace(string(b))
		if len(s) > 32 {
			s = s[:32] + "..."
		}
		return nil, fmt.Errorf("invalid command: neither JSON nor CBOR (%q)", s)
	}
	return v, nil
}

var mapStringAny = reflect.TypeOf(map[string]any(nil))

// replyPayload is the JSON result of a write: {"unit","point","ok":true,"t"} or with "ok":false
// an "error" text and, for an exception response, its "exception" code.
func replyPayload(r reply) []byte {
	out := struct {
		Unit      string `json:"unit"`
		Point     string `json:"point"`
		OK        bool   `json:"ok"`
		Error     string `json:"error,omitempty"`
		Exception int    `json:"exception,omitempty"`
		T         int64  `json:"t"`
	}{Unit: r.unit, Point: r.point, OK: r.err == nil, T: r.at.UnixMilli()}
	if r.err != nil {
		out.Error = r.err.Error()
		var ex *exceptionError
		if errors.As(r.err, &ex) {
			out.Exception = ex.code
		}
	}
	b, _ := json.Marshal(out)
	return b
}
