package modbus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"
)

// codec converts between a point's registers (or bits) and its published value. It is pure, so
// the fuzz target drives it with arbitrary registers.
type codec struct {
	dataType string
	lowFirst bool
	count    int
	scale    float64
	offset   float64
}

func newCodec(p *PointConfig) codec {
	return codec{dataType: p.DataType, lowFirst: p.WordOrder == "low_first", count: p.Count, scale: *p.Scale, offset: p.Offset}
}

// identity: no scaling, so integers are published as integers (exact up to 64 bits).
func (c codec) identity() bool { return c.scale == 1 && c.offset == 0 }

// words returns the registers in most-significant-first order.
func (c codec) words(regs []uint16) []uint16 {
	if !c.lowFirst || len(regs) < 2 {
		return regs
	}
	out := make([]uint16, len(regs))
	for i, r := range regs {
		out[len(regs)-1-i] = r
	}
	return out
}

func join(ws []uint16) uint64 {
	var v uint64
	for _, w := range ws {
		v = v<<16 | uint64(w)
	}
	return v
}

// decodeRegisters turns count registers into the point's value: bool, string, int64, uint64 or
// float64. Scaling turns numbers into float64.
func (c codec) decodeRegisters(regs []uint16) (any, error) {
	if len(regs) != c.count {
		return nil, fmt.Errorf("decode %s: got %d registers, want %d", c.dataType, len(regs), c.count)
	}
	var raw any
	switch c.dataType {
	case "bool":
		return regs[0] != 0, nil
	case "string":
		b := make([]byte, 0, 2*len(regs))
		for _, r := range regs {
			b = binary.BigEndian.AppendUint16(b, r)
		}
		s := strings.TrimRight(string(b), "\x00 ")
		if !utf8.ValidString(s) {
			s = strings.ToValidUTF8(s, "\uFFFD")
		}
		return s, nil
	case "int16":
		raw = int64(int16(regs[0]))
	case "uint16":
		raw = uint64(regs[0])
	case "int32":
		raw = int64(int32(uint32(join(c.words(regs)))))
	case "uint32":
		raw = join(c.words(regs))
	case "float32":
		raw = float64(math.Float32frombits(uint32(join(c.words(regs)))))
	case "int64":
		raw = int64(join(c.words(regs)))
	case "uint64":
		raw = join(c.words(regs))
	case "float64":
		raw = math.Float64frombits(join(c.words(regs)))
	default:
		return nil, fmt.Errorf("decode: unknown data type %q", c.dataType)
	}
	return c.scaleOut(raw), nil
}

func (c codec) scaleOut(raw any) any {
	if c.identity() {
		return raw
	}
	var f float64
	switch v := raw.(type) {
	case int64:
		f = float64(v)
	case uint64:
		f = float64(v)
	case float64:
		f = v
	}
	return f*c.scale + c.offset
}

var (
	errRange = errors.New("out of range for the data type")
	errType  = errors.New("wrong value type")
)

// encodeRegisters is the inverse of decodeRegisters for a written value (JSON-decoded: bool,
// float64, or json.Number-like int64/uint64 via toFloat/toInt).
func (c codec) encodeRegisters(v any) ([]uint16, error) {
	if c.dataType == "bool" {
		b, err := toBool(v)
		if err != nil {
			return nil, err
		}
		if b {
			return []uint16{1}, nil
		}
		return []uint16{0}, nil
	}
	f, err := toFloat(v)
	if err != nil {
		return nil, err
	}
	raw := (f - c.offset) / c.scale
	if math.IsNaN(raw) || math.IsInf(raw, 0) {
		if c.dataType != "float32" && c.dataType != "float64" {
			return nil, errRange
		}
	}
	var bits uint64
	switch c.dataType {
	case "int16", "int32", "int64":
		r := math.Round(raw)
		lim := math.Ldexp(1, 16*c.count-1)
		if r < -lim || r >= lim {
			return nil, errRange
		}
		bits = uint64(int64(r))
		if c.count < 4 {
			bits &= 1<<(16*c.count) - 1
		}
	case "uint16", "uint32", "uint64":
		r := math.Round(raw)
		if r < 0 || r >= math.Ldexp(1, 16*c.count) {
			return nil, errRange
		}
		bits = uint64(r)
	case "float32":
		if !math.IsInf(raw, 0) && !math.IsNaN(raw) && math.Abs(raw) > math.MaxFloat32 {
			return nil, errRange
		}
		bits = uint64(math.Float32bits(float32(raw)))
	case "float64":
		bits = math.Float64bits(raw)
	default:
		return nil, fmt.Errorf("%s points cannot be written", c.dataType)
	}
	regs := make([]uint16, c.count)
	for i := c.count - 1; i >= 0; i-- {
		regs[i] = uint16(bits)
		bits >>= 16
	}
	if c.lowFirst {
		for i, j := 0, len(regs)-1; i < j; i, j = i+1, j-1 {
			regs[i], regs[j] = regs[j], regs[i]
		}
	}
	return regs, nil
}

func toBool(v any) (bool, error) {
	switch x := v.(type) {
	case bool:
		return x, nil
	case float64:
		if x == 0 || x == 1 {
			return x == 1, nil
		}
	case int64:
		if x == 0 || x == 1 {
			return x == 1, nil
		}
	case uint64:
		if x == 0 || x == 1 {
			return x == 1, nil
		}
	}
	return false, fmt.Errorf("%w: want true, false, 0 or 1", errType)
}

func toFloat(v any) (float64, error) {
	switch x := v.(type) {
	case float64:
		return x, nil
	case float32:
		return float64(x), nil
	case int64:
		return float64(x), nil
	case uint64:
		return float64(x), nil
	case bool:
		if x {
			return 1, nil
		}
		return 0, nil
	}
	return 0, fmt.Errorf("%w: want a number", errType)
}
