package hardware

// TEMPORARY: frame codecs live in package wire (design.md: "wire owns bytes"). Until its
// streaming decoders land, this file carries minimal versions with the same shape so hardware
// compiles and is tested; it is deleted when wire provides NewLineDecoder/NewCOBSDecoder/
// NewSLIPDecoder and EncodeLine/EncodeCOBS/EncodeSLIP.

import "errors"

type compatDrops struct{ oversize, malformed uint64 }

type compatLine struct {
	delim   byte
	max     int
	buf     []byte
	discard bool
	d       compatDrops
}

func (l *compatLine) Feed(p []byte, emit func([]byte)) {
	for _, b := range p {
		if b == l.delim {
			if !l.discard {
				emit(l.buf)
			}
			l.buf, l.discard = l.buf[:0], false
			continue
		}
		if l.discard {
			continue
		}
		if len(l.buf) >= l.max {
			l.discard = true
			l.d.oversize++
			l.buf = l.buf[:0]
			continue
		}
		l.buf = append(l.buf, b)
	}
}

func (l *compatLine) drops() compatDrops { return l.d }

// compatDelimited collects raw bytes up to a 0x00 (COBS) or 0xC0 (SLIP) and decodes them.
type compatDelimited struct {
	end     byte
	max     int // decoded max; raw limit allows the codec's overhead
	raw     []byte
	out     []byte
	discard bool
	decode  func(dst, src []byte) ([]byte, error)
	d       compatDrops
}

func (c *compatDelimited) Feed(p []byte, emit func([]byte)) {
	for _, b := range p {
		if b == c.end {
			if !c.discard && len(c.raw) > 0 {
				out, err := c.decode(c.out[:0], c.raw)
				switch {
				case err != nil:
					c.d.malformed++
				case len(out) > c.max:
					c.d.oversize++
				default:
					emit(out)
				}
				c.out = out
			}
			c.raw, c.discard = c.raw[:0], false
			continue
		}
		if c.discard {
			continue
		}
		if len(c.raw) >= 2*c.max+2 {
			c.discard = true
			c.d.oversize++
			c.raw = c.raw[:0]
			continue
		}
		c.raw = append(c.raw, b)
	}
}

func (c *compatDelimited) drops() compatDrops { return c.d }

var errCompatFrame = errors.New("malformed frame")

func compatCOBSDecode(dst, src []byte) ([]byte, error) {
	for i := 0; i < len(src); {
		code := int(src[i])
		if code == 0 || i+code > len(src) {
			return dst, errCompatFrame
		}
		dst = append(dst, src[i+1:i+code]...)
		i += code
		if code < 0xFF && i < len(src) {
			dst = append(dst, 0)
		}
	}
	return dst, nil
}

func compatCOBSEncode(frame []byte) []byte {
	out := make([]byte, 0, len(frame)+len(frame)/254+2)
	ci := len(out)
	out = append(out, 0)
	code := byte(1)
	for _, b := range frame {
		if b == 0 {
			out[ci] = code
			ci, code = len(out), 1
			out = append(out, 0)
			continue
		}
		out = append(out, b)
		code++
		if code == 0xFF {
			out[ci] = code
			ci, code = len(out), 1
			out = append(out, 0)
		}
	}
	out[ci] = code
	return append(out, 0)
}

func compatSLIPDecode(dst, src []byte) ([]byte, error) {
	for i := 0; i < len(src); i++ {
		b := src[i]
		if b != 0xDB {
			dst = append(dst, b)
			continue
		}
		i++
		if i == len(src) {
			return dst, errCompatFrame
		}
		switch src[i] {
		case 0xDC:
			dst = append(dst, 0xC0)
		case 0xDD:
			dst = append(dst, 0xDB)
		default:
			return dst, errCompatFrame
		}
	}
	return dst, nil
}

func compatSLIPEncode(frame []byte) []byte {
	out := make([]byte, 0, len(frame)+2)
	out = append(out, 0xC0)
	for _, b := range frame {
		switch b {
		case 0xC0:
			out = append(out, 0xDB, 0xDC)
		case 0xDB:
			out = append(out, 0xDB, 0xDD)
		default:
			out = append(out, b)
		}
	}
	return append(out, 0xC0)
}
