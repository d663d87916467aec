package mqtt5

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
)

// chunkConn returns its bytes at most n at a time.
type chunkConn struct {
	net.Conn
	b []byte
	n int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	k := min(len(p), c.n, len(c.b))
	copy(p, c.b[:k])
	c.b = c.b[k:]
	return k, nil
}

// refusalAt walks the MQTT framing of b and returns the offset of the remaining-length byte
// that completes (or overruns) a header announcing more than max bytes, -1 if none does.
func refusalAt(b []byte, max int) int {
	for i := 0; i < len(b); {
		i++ // the packet's first byte
		remaining, mult := 0, 1
		for k := 0; ; k++ {
			if i >= len(b) {
				return -1
			}
			c := b[i]
			remaining += int(c&0x7f) * mult
			mult *= 128
			if c&0x80 != 0 && k < 3 {
				i++
				continue
			}
			if c&0x80 != 0 || 1+k+1+remaining > max {
				return i
			}
			i += 1 + remaining
			break
		}
	}
	return -1
}

// FuzzLimitConn: LimitReads passes a server's bytes through unchanged, however the reads
// split them, up to the length byte of the first header that announces more than the limit;
// there it stops with ErrPacketTooLarge.
func FuzzLimitConn(f *testing.F) {
	for _, s := range [][]byte{{0x20, 2, 0, 0}, {0x30, 7, 0, 3, 'a', '/', 'b', 'x', 'y'}, {0x90, 3, 0, 1, 0x80}, {0xd0, 0}} {
		f.Add(bytes.Join([][]byte{s, s}, nil), uint8(3), uint16(64))
	}
	f.Add([]byte{0x20, 2, 0, 0, 0x30, 0xff, 0xff, 0xff, 0x7f}, uint8(1), uint16(1024))
	f.Add([]byte{0x30, 0x80, 0x80, 0x80, 0x80, 0x01}, uint8(7), uint16(1024))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8, limit uint16) {
		max := int(limit) + 2
		c := LimitReads(&chunkConn{b: in, n: int(chunk)%16 + 1}, max)
		out, err := io.ReadAll(c)
		want := refusalAt(in, max)
		switch {
		case want < 0 && (err != nil || !bytes.Equal(out, in)):
			t.Fatalf("no refusal due: got %d of %d bytes, %v", len(out), len(in), err)
		case want >= 0 && (!errors.Is(err, ErrPacketTooLarge) || !bytes.Equal(out, in[:want])):
			t.Fatalf("refusal due at byte %d: got %d bytes, %v", want, len(out), err)
		}
	})
}
