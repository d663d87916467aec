package wire

import (
	"bytes"
	"fmt"
)

// Serial frame codecs. A FrameDecoder is a small state machine fed the bytes a serial port
// delivers, in whatever chunks the port happens to return; it calls emit once per complete
// frame. Feeding the same bytes split at any points emits the same frames and counts the same
// drops as feeding them at once (the fuzz targets check exactly that).
//
// A decoder never holds more than about 2*maxLen bytes: a frame longer than maxLen is dropped
// (counted as oversize) and the decoder skips to the next delimiter, which is also how it
// resynchronises after garbage, a malformed frame, or starting in the middle of a frame.
// Empty frames (two delimiters in a row, which senders use to flush line noise) are skipped and
// not counted.
//
// The frame passed to emit may alias the decoder's buffer or the fed slice: it is valid only
// until emit returns; copy it to keep it. A decoder is not safe for concurrent use.

// DefaultMaxFrame is the maximum decoded frame length used when a constructor gets maxLen <= 0.
const DefaultMaxFrame = 64 << 10

// DropStats counts the frames a decoder dropped, by reason.
type DropStats struct {
	Oversize  uint64 // longer than the decoder's maximum frame length
	Malformed uint64 // invalid COBS / SLIP encoding (bad code byte, truncated block, bad escape)
}

// FrameDecoder turns a byte stream into frames.
type FrameDecoder interface {
	// Feed consumes p (any length, including 0) and calls emit for each complete frame.
	Feed(p []byte, emit func(frame []byte))
	// Dropped reports the frames dropped so far.
	Dropped() DropStats
	// Reset discards a partial frame (e.g. after the port was reopened); counters are kept.
	Reset()
}

// Framings accepted by NewFrameDecoder and EncodeFrame.
const (
	FramingLine = "line"
	FramingCOBS = "cobs"
	FramingSLIP = "slip"
)

// NewFrameDecoder returns the decoder for framing ("line": '\n'-delimited with CR stripping,
// "cobs", "slip"); maxLen <= 0 means DefaultMaxFrame, above DefaultMaxPayload is an error.
func NewFrameDecoder(framing string, maxLen int) (FrameDecoder, error) {
	if maxLen > DefaultMaxPayload {
		return nil, fmt.Errorf("frame decoder: max frame length %d: %w (max payload %d)", maxLen, ErrLimit, DefaultMaxPayload)
	}
	switch framing {
	case FramingLine:
		return NewLineDecoder('\n', maxLen), nil
	case FramingCOBS:
		return NewCOBSDecoder(maxLen), nil
	case FramingSLIP:
		return NewSLIPDecoder(maxLen), nil
	}
	return nil, fmt.Errorf("frame decoder: unknown framing %q (want line, cobs or slip)", framing)
}

// EncodeFrame encodes one command frame for framing. For "line" the frame must not contain
// '\n' except as its last byte (a missing trailing '\n' is added).
func EncodeFrame(framing string, frame []byte) ([]byte, error) {
	switch framing {
	case FramingLine:
		body := bytes.TrimSuffix(frame, []byte{'\n'})
		if bytes.IndexByte(body, '\n') >= 0 {
			return nil, fmt.Errorf("encode line frame: %w: frame contains the delimiter", ErrMalformed)
		}
		return EncodeLine(frame, '\n'), nil
	case FramingCOBS:
		return EncodeCOBS(frame), nil
	case FramingSLIP:
		return EncodeSLIP(frame), nil
	}
	return nil, fmt.Errorf("encode frame: unknown framing %q (want line, cobs or slip)", framing)
}

func maxOrDefault(max int) int {
	if max <= 0 {
		return DefaultMaxFrame
	}
	return max
}

// ---- line ----

// LineDecoder splits on a delimiter byte. With StripCR (the default) one '\r' before the
// delimiter is removed, so "\r\n" devices work; the maximum applies after stripping.
type LineDecoder struct {
	StripCR bool

	delim      byte
	max        int
	buf        []byte
	discarding bool
	drops      DropStats
}

// NewLineDecoder returns a line decoder with StripCR set.
func NewLineDecoder(delim byte, max int) *LineDecoder {
	return &LineDecoder{StripCR: true, delim: delim, max: maxOrDefault(max)}
}

func (d *LineDecoder) limit() int {
	if d.StripCR {
		return d.max + 1
	}
	return d.max
}

// Feed implements FrameDecoder.
func (d *LineDecoder) Feed(p []byte, emit func(frame []byte)) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, d.delim)
		if i < 0 {
			if d.discarding {
				return
			}
			if len(d.buf)+len(p) > d.limit() {
				d.drops.Oversize++
				d.discarding = true
				d.buf = d.buf[:0]
				return
			}
			d.buf = append(d.buf, p...)
			return
		}
		chunk := p[:i]
		p = p[i+1:]
		if d.discarding {
			d.discarding = false
			continue
		}
		line := chunk
		if len(d.buf) > 0 {
			if len(d.buf)+len(chunk) > d.limit() {
				d.drops.Oversize++
				d.buf = d.buf[:0]
				continue
			}
			d.buf = append(d.buf, chunk...)
			line = d.buf
		}
		if d.StripCR && len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		switch {
		case len(line) > d.max:
			d.drops.Oversize++
		case len(line) > 0:
			emit(line)
		}
		d.buf = d.buf[:0]
	}
}

// Dropped implements FrameDecoder.
func (d *LineDecoder) Dropped() DropStats { return d.drops }

// Reset implements FrameDecoder.
func (d *LineDecoder) Reset() { d.buf, d.discarding = d.buf[:0], false }

// EncodeLine returns frame followed by delim (not doubled when frame already ends with it).
func EncodeLine(frame []byte, delim byte) []byte {
	out := make([]byte, 0, len(frame)+1)
	out = append(out, frame...)
	if len(frame) == 0 || frame[len(frame)-1] != delim {
		out = append(out, delim)
	}
	return out
}

// ---- COBS ----

// COBSDecoder decodes Consistent Overhead Byte Stuffing frames (Cheshire & Baker, 1999), each
// terminated by 0x00.
type COBSDecoder struct {
	max     int
	buf     []byte
	left    int  // data bytes left in the current block; 0: next byte is a code byte
	zero    bool // the current block ends with an implied zero (code < 0xff)
	started bool // a code byte of this frame was seen
	bad     bool // frame dropped; skip to the next 0x00
	drops   DropStats
}

// NewCOBSDecoder returns a COBS decoder for frames of at most max decoded bytes.
func NewCOBSDecoder(max int) *COBSDecoder { return &COBSDecoder{max: maxOrDefault(max)} }

func (d *COBSDecoder) reset() {
	d.buf, d.left, d.zero, d.started, d.bad = d.buf[:0], 0, false, false, false
}

// Reset implements FrameDecoder.
func (d *COBSDecoder) Reset() { d.reset() }

// Dropped implements FrameDecoder.
func (d *COBSDecoder) Dropped() DropStats { return d.drops }

func (d *COBSDecoder) oversize() {
	d.drops.Oversize++
	d.bad = true
	d.buf = d.buf[:0]
}

// Feed implements FrameDecoder.
func (d *COBSDecoder) Feed(p []byte, emit func(frame []byte)) {
	for len(p) > 0 {
		c := p[0]
		if c == 0 {
			p = p[1:]
			switch {
			case d.bad || !d.started:
			case d.left != 0:
				d.drops.Malformed++ // truncated block
			case len(d.buf) > 0: // "01 00" encodes the empty frame: skipped like "00"
				emit(d.buf)
			}
			d.reset()
			continue
		}
		if d.bad {
			i := bytes.IndexByte(p, 0)
			if i < 0 {
				return
			}
			p = p[i:]
			continue
		}
		if d.left == 0 { // code byte
			p = p[1:]
			if d.started && d.zero {
				if len(d.buf) >= d.max {
					d.oversize()
					continue
				}
				d.buf = append(d.buf, 0)
			}
			d.started = true
			d.left = int(c) - 1
			d.zero = c < 0xff
			continue
		}
		// data bytes of the current block, up to a 0x00 (which would end the frame early)
		n := min(d.left, len(p))
		if i := bytes.IndexByte(p[:n], 0); i >= 0 {
			n = i
		}
		if len(d.buf)+n > d.max {
			d.oversize()
			continue
		}
		d.buf = append(d.buf, p[:n]...)
		d.left -= n
		p = p[n:]
	}
}

// EncodeCOBS returns the COBS encoding of frame followed by the 0x00 delimiter.
func EncodeCOBS(frame []byte) []byte {
	out := make([]byte, 0, len(frame)+len(frame)/254+2)
	ci := len(out) // index of the current code byte
	out = append(out, 0)
	code := byte(1)
	for i, c := range frame {
		if c == 0 {
			out[ci] = code
			ci = len(out)
			out = append(out, 0)
			code = 1
			continue
		}
		out = append(out, c)
		code++
		if code == 0xff && i < len(frame)-1 { // a full block; start another only if data follows
			out[ci] = code
			ci = len(out)
			out = append(out, 0)
			code = 1
		}
	}
	out[ci] = code
	return append(out, 0)
}

// ---- SLIP ----

// SLIP (RFC 1055) special bytes.
const (
	slipEnd    = 0xc0
	slipEsc    = 0xdb
	slipEscEnd = 0xdc
	slipEscEsc = 0xdd
)

// SLIPDecoder decodes RFC 1055 SLIP frames. An ESC followed by anything but ESC_END/ESC_ESC
// makes the frame malformed (dropped and counted).
type SLIPDecoder struct {
	max   int
	buf   []byte
	esc   bool
	bad   bool
	drops DropStats
}

// NewSLIPDecoder returns a SLIP decoder for frames of at most max decoded bytes.
func NewSLIPDecoder(max int) *SLIPDecoder { return &SLIPDecoder{max: maxOrDefault(max)} }

// Reset implements FrameDecoder.
func (d *SLIPDecoder) Reset() { d.buf, d.esc, d.bad = d.buf[:0], false, false }

// Dropped implements FrameDecoder.
func (d *SLIPDecoder) Dropped() DropStats { return d.drops }

func (d *SLIPDecoder) add(c byte) {
	if len(d.buf) >= d.max {
		d.drops.Oversize++
		d.bad = true
		d.buf = d.buf[:0]
		return
	}
	d.buf = append(d.buf, c)
}

// Feed implements FrameDecoder.
func (d *SLIPDecoder) Feed(p []byte, emit func(frame []byte)) {
	for len(p) > 0 {
		c := p[0]
		if c == slipEnd {
			p = p[1:]
			switch {
			case d.bad:
			case d.esc:
				d.drops.Malformed++
			case len(d.buf) > 0:
				emit(d.buf)
			}
			d.Reset()
			continue
		}
		if d.bad {
			i := bytes.IndexByte(p, slipEnd)
			if i < 0 {
				return
			}
			p = p[i:]
			continue
		}
		if d.esc {
			p = p[1:]
			d.esc = false
			switch c {
			case slipEscEnd:
				d.add(slipEnd)
			case slipEscEsc:
				d.add(slipEsc)
			default:
				d.drops.Malformed++
				d.bad = true
				d.buf = d.buf[:0]
			}
			continue
		}
		if c == slipEsc {
			p = p[1:]
			d.esc = true
			continue
		}
		// run of ordinary bytes
		n := 1
		for n < len(p) && p[n] != slipEnd && p[n] != slipEsc {
			n++
		}
		if len(d.buf)+n > d.max {
			d.drops.Oversize++
			d.bad = true
			d.buf = d.buf[:0]
			continue
		}
		d.buf = append(d.buf, p[:n]...)
		p = p[n:]
	}
}

// EncodeSLIP returns END, frame with END/ESC escaped, END (the leading END flushes line noise
// at the receiver, as RFC 1055 recommends).
func EncodeSLIP(frame []byte) []byte {
	out := make([]byte, 0, len(frame)+len(frame)/8+2)
	out = append(out, slipEnd)
	for _, c := range frame {
		switch c {
		case slipEnd:
			out = append(out, slipEsc, slipEscEnd)
		case slipEsc:
			out = append(out, slipEsc, slipEscEsc)
		default:
			out = append(out, c)
		}
	}
	return append(out, slipEnd)
}

// Interface guards.
var (
	_ FrameDecoder = (*LineDecoder)(nil)
	_ FrameDecoder = (*COBSDecoder)(nil)
	_ FrameDecoder = (*SLIPDecoder)(nil)
)
