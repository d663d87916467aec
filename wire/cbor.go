package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"
)

// Low-level CBOR (RFC 8949) writing and reading used by the hand-written envelope and batch
// codecs. The writer always produces the preferred (shortest) serialisation with definite
// lengths, which together with ascending integer map keys is Core Deterministic Encoding
// (RFC 8949 §4.2.1). The reader is liberal where that is safe (non-shortest integer heads are
// accepted) and strict where it protects us: every length is checked against the bytes that
// are actually left before anything is allocated, nesting is bounded, text must be UTF-8.

const (
	majorUint   = 0
	majorNeg    = 1
	majorBytes  = 2
	majorText   = 3
	majorArray  = 4
	majorMap    = 5
	majorTag    = 6
	majorSimple = 7

	aiIndefinite = 31
)

var (
	// ErrMalformed reports bytes that are not well-formed CBOR / JSON, or that do not follow the
	// envelope or batch schema (wrong types, missing required keys, duplicate keys).
	ErrMalformed = errors.New("malformed")
	// ErrLimit reports outside bytes that exceed a decode limit (Limits.MaxPayload, MaxTopic, ...).
	ErrLimit = errors.New("limit exceeded")

	errTruncated  = fmt.Errorf("%w: unexpected end of data", ErrMalformed)
	errIndefinite = fmt.Errorf("%w: indefinite length not allowed here", ErrMalformed)
)

// appendHead appends a CBOR head (major type + argument) in its shortest form.
func appendHead(b []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(b, m|byte(n))
	case n <= math.MaxUint8:
		return append(b, m|24, byte(n))
	case n <= math.MaxUint16:
		return append(b, m|25, byte(n>>8), byte(n))
	case n <= math.MaxUint32:
		return append(b, m|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	default:
		return append(b, m|27, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32),
			byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

func appendInt(b []byte, v int64) []byte {
	if v >= 0 {
		return appendHead(b, majorUint, uint64(v))
	}
	return appendHead(b, majorNeg, uint64(-(v + 1)))
}

func appendText(b []byte, s string) []byte {
	b = appendHead(b, majorText, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b []byte, p []byte) []byte {
	b = appendHead(b, majorBytes, uint64(len(p)))
	return append(b, p...)
}

// headLen is the size of the shortest head for argument n.
func headLen(n uint64) int {
	switch {
	case n < 24:
		return 1
	case n <= math.MaxUint8:
		return 2
	case n <= math.MaxUint16:
		return 3
	case n <= math.MaxUint32:
		return 5
	default:
		return 9
	}
}

// reader walks a CBOR byte slice. It never allocates except where a method says so.
type reader struct {
	b          []byte
	off        int
	maxPayload int // Limits.MaxPayload of the envelopes read
}

func (r *reader) remaining() int { return len(r.b) - r.off }

// head reads one head. For major types 0-6 ai 31 (indefinite) is returned as indef=true.
// For major 7 the raw additional information is returned in ai and the argument in n.
func (r *reader) head() (major, ai byte, n uint64, indef bool, err error) {
	if r.off >= len(r.b) {
		return 0, 0, 0, false, errTruncated
	}
	c := r.b[r.off]
	r.off++
	major, ai = c>>5, c&0x1f
	switch {
	case ai < 24:
		return major, ai, uint64(ai), false, nil
	case ai == 24:
		if r.off+1 > len(r.b) {
			return 0, 0, 0, false, errTruncated
		}
		n = uint64(r.b[r.off])
		r.off++
		if major == majorSimple && n < 32 {
			return 0, 0, 0, false, fmt.Errorf("%w: invalid simple value %d", ErrMalformed, n)
		}
	case ai == 25:
		if r.off+2 > len(r.b) {
			return 0, 0, 0, false, errTruncated
		}
		n = uint64(binary.BigEndian.Uint16(r.b[r.off:]))
		r.off += 2
	case ai == 26:
		if r.off+4 > len(r.b) {
			return 0, 0, 0, false, errTruncated
		}
		n = uint64(binary.BigEndian.Uint32(r.b[r.off:]))
		r.off += 4
	case ai == 27:
		if r.off+8 > len(r.b) {
			return 0, 0, 0, false, errTruncated
		}
		n = binary.BigEndian.Uint64(r.b[r.off:])
		r.off += 8
	case ai == aiIndefinite:
		if major == majorUint || major == majorNeg || major == majorTag {
			return 0, 0, 0, false, fmt.Errorf("%w: indefinite length on major type %d", ErrMalformed, major)
		}
		return major, ai, 0, true, nil
	default:
		return 0, 0, 0, false, fmt.Errorf("%w: reserved additional information %d", ErrMalformed, ai)
	}
	return major, ai, n, false, nil
}

// expect reads a definite head of the given major type.
func (r *reader) expect(major byte, what string) (uint64, error) {
	m, _, n, indef, err := r.head()
	if err != nil {
		return 0, err
	}
	if m != major {
		return 0, fmt.Errorf("%w: %s: got major type %d, want %d", ErrMalformed, what, m, major)
	}
	if indef {
		return 0, fmt.Errorf("%w: %s", errIndefinite, what)
	}
	return n, nil
}

func (r *reader) uint(what string) (uint64, error) { return r.expect(majorUint, what) }

func (r *reader) int(what string) (int64, error) {
	m, _, n, indef, err := r.head()
	if err != nil {
		return 0, err
	}
	if indef || (m != majorUint && m != majorNeg) {
		return 0, fmt.Errorf("%w: %s: not an integer", ErrMalformed, what)
	}
	if n > math.MaxInt64 {
		return 0, fmt.Errorf("%w: %s: integer overflows int64", ErrMalformed, what)
	}
	if m == majorNeg {
		return -1 - int64(n), nil
	}
	return int64(n), nil
}

func (r *reader) bool(what string) (bool, error) {
	if r.off >= len(r.b) {
		return false, errTruncated
	}
	switch r.b[r.off] {
	case 0xf4:
		r.off++
		return false, nil
	case 0xf5:
		r.off++
		return true, nil
	}
	return false, fmt.Errorf("%w: %s: not a boolean", ErrMalformed, what)
}

// span reads a definite string of the given major type and returns a slice aliasing the input.
func (r *reader) span(major byte, max int, what string) ([]byte, error) {
	n, err := r.expect(major, what)
	if err != nil {
		return nil, err
	}
	if n > uint64(r.remaining()) {
		return nil, errTruncated
	}
	if n > uint64(max) {
		return nil, fmt.Errorf("%w: %s: %d bytes > %d", ErrLimit, what, n, max)
	}
	p := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	return p, nil
}

// text reads a UTF-8 text string (allocates the string).
func (r *reader) text(max int, what string) (string, error) {
	p, err := r.span(majorText, max, what)
	if err != nil {
		return "", err
	}
	if !utf8.Valid(p) {
		return "", fmt.Errorf("%w: %s: invalid UTF-8", ErrMalformed, what)
	}
	return string(p), nil
}

// skip skips one complete data item (any type, indefinite lengths allowed), checking
// well-formedness with bounded depth. Every iteration consumes input, so it always ends.
func (r *reader) skip(depth int) error {
	if depth > MaxNesting {
		return fmt.Errorf("%w: nesting deeper than %d", ErrLimit, MaxNesting)
	}
	major, _, n, indef, err := r.head()
	if err != nil {
		return err
	}
	switch major {
	case majorUint, majorNeg:
		return nil
	case majorBytes, majorText:
		if !indef {
			if n > uint64(r.remaining()) {
				return errTruncated
			}
			r.off += int(n)
			return nil
		}
		for {
			if r.off >= len(r.b) {
				return errTruncated
			}
			if r.b[r.off] == 0xff {
				r.off++
				return nil
			}
			m, _, cn, cindef, err := r.head()
			if err != nil {
				return err
			}
			if m != major || cindef {
				return fmt.Errorf("%w: bad chunk in indefinite-length string", ErrMalformed)
			}
			if cn > uint64(r.remaining()) {
				return errTruncated
			}
			r.off += int(cn)
		}
	case majorArray, majorMap:
		per := uint64(1)
		if major == majorMap {
			per = 2
		}
		if !indef {
			if n > uint64(r.remaining())/per {
				return errTruncated
			}
			for i := uint64(0); i < n*per; i++ {
				if err := r.skip(depth + 1); err != nil {
					return err
				}
			}
			return nil
		}
		for i := uint64(0); ; i++ {
			if r.off >= len(r.b) {
				return errTruncated
			}
			if r.b[r.off] == 0xff {
				if i%per != 0 {
					return fmt.Errorf("%w: map with a key and no value", ErrMalformed)
				}
				r.off++
				return nil
			}
			if err := r.skip(depth + 1); err != nil {
				return err
			}
		}
	case majorTag:
		return r.skip(depth + 1)
	default: // major 7
		if indef {
			return fmt.Errorf("%w: unexpected break", ErrMalformed)
		}
		return nil
	}
}
