package mqtt5

import (
	"fmt"
	"net"
)

// LimitReads returns conn with its reads bounded to MQTT packets of at most max bytes: a
// client library reads a packet by allocating the remaining length its fixed header announces
// (up to 256 MiB) before the body arrives, so five bytes from a broken or hostile server made
// the gateway allocate 256 MiB, on every reconnect. The MQTT 5 client reads through it, and so
// does the bridge's MQTT 3.1.1 connector (paho.mqtt.golang, whose protocol cannot announce a
// maximum). Writes, deadlines and Close are conn's.
func LimitReads(conn net.Conn, max int) net.Conn { return &limitConn{Conn: conn, max: max} }

// limitConn passes a server's bytes through unchanged while following the MQTT packet framing,
// and fails the read that would complete a fixed header announcing more than max bytes: paho
// gets the bytes before that length's last byte, then the error, so it never allocates.
type limitConn struct {
	net.Conn
	max int
	err error // sticky: the refused header

	state     int // 0: next byte is a packet's first, 1: in the remaining length, 2: in the body
	remaining int // the remaining length read so far (state 1) or body bytes left (state 2)
	mult      int
	lenBytes  int
}

func (c *limitConn) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.Conn.Read(p)
	for i := 0; i < n; i++ {
		switch c.state {
		case 0:
			c.state, c.remaining, c.mult, c.lenBytes = 1, 0, 1, 0
		case 1:
			b := p[i]
			c.remaining += int(b&0x7f) * c.mult
			c.mult *= 128
			c.lenBytes++
			if b&0x80 != 0 && c.lenBytes < 4 {
				continue
			}
			if total := 1 + c.lenBytes + c.remaining; b&0x80 != 0 || total > c.max {
				// Hand over what came before this byte; the header is never completed.
				c.err = fmt.Errorf("%w: the server announced %d bytes, the limit is %d", ErrPacketTooLarge, 1+c.lenBytes+c.remaining, c.max)
				if i == 0 {
					return 0, c.err
				}
				return i, nil
			}
			c.state = 2
			if c.remaining == 0 {
				c.state = 0
			}
		case 2:
			skip := min(c.remaining, n-i)
			c.remaining -= skip
			i += skip - 1
			if c.remaining == 0 {
				c.state = 0
			}
		}
	}
	return n, err
}
