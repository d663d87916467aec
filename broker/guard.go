package broker

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"

	"github.com/mochi-mqtt/server/v2/packets"
)

// The packet guard stands between a client's socket and mochi-mqtt. mochi v2.7.9 decodes a
// packet on the client's connection goroutine with no recover, so a decoder that panics on
// malformed bytes ends the whole process: an MQTT 5 SUBSCRIBE whose last filter lacks its
// options byte (upstream mochi-mqtt/server#501, fixed there after v2.7.9, the last release)
// takes the gateway down from any client allowed to connect. Recovering above mochi would not
// do: the panic unwinds past mochi's disconnect handling, leaving the client in its session
// table with its subscriptions, and leaving edged's hooks' per-client state behind.
//
// So the guard reads the client's bytes itself, a whole packet at a time, and decodes each
// packet once with mochi's own decoder for its type under recover, before mochi sees it:
//   - a packet that decodes, or fails with an error, is handed to mochi byte for byte (mochi
//     then decodes it again and handles an error as it always does);
//   - a packet on which the decoder panics is refused: mochi gets a read error instead, and
//     ends the client through its normal path (will, hooks, session cleanup), as for a broken
//     connection. Counted as edged_broker_refusals_total{reason="malformed_packet"} and logged,
//     rate-limited, with the packet type and the panic (never the packet's bytes).
//
// The fixed header and the remaining length are read with mochi's own functions, and a packet
// beyond max_packet_size is passed on unread for mochi to refuse, so the guard never holds
// more than one packet of the configured maximum. Its cost is one extra decode and copy per
// packet (see BenchmarkDeliverQoS0).

// refuseMalformed counts packets refused because mochi's decoder panicked on them.
const refuseMalformed = "malformed_packet"

// errMalformedPacket is the read error mochi gets for a refused packet.
var errMalformedPacket = errors.New("malformed packet refused: mochi's decoder failed on it")

// packetGuard holds what every guarded connection of a broker shares.
type packetGuard struct {
	maxPacket uint32 // max_packet_size; 0 means no limit
	ref       *refusals
	log       *slog.Logger
}

// wrap returns c guarded; listener names it in the log.
func (g *packetGuard) wrap(c net.Conn, listener string) net.Conn {
	return &guardConn{Conn: c, g: g, listener: listener, r: bufio.NewReaderSize(c, 2048)}
}

// guardConn is the net.Conn mochi reads a guarded client from.
type guardConn struct {
	net.Conn
	g        *packetGuard
	listener string
	r        *bufio.Reader // the client's bytes, before the check
	buf      []byte        // the packet being checked; reused
	pending  []byte        // checked bytes mochi has not read yet
	version  byte          // protocol version, from the CONNECT; 0 before it
	err      error         // what Read returns once pending is empty
}

// ConnectionState passes the TLS state of the connection through for client-certificate auth
// (see peerCommonName); a plain connection has none.
func (c *guardConn) ConnectionState() tls.ConnectionState {
	if s, ok := c.Conn.(interface{ ConnectionState() tls.ConnectionState }); ok {
		return s.ConnectionState()
	}
	return tls.ConnectionState{}
}

func (c *guardConn) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		c.pending, c.err = c.next()
		if len(c.pending) == 0 {
			return 0, c.err
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// recorder is the io.ByteReader mochi's DecodeLength reads the remaining length from, keeping
// the bytes it read for mochi.
type recorder struct{ c *guardConn }

func (r recorder) ReadByte() (byte, error) {
	b, err := r.c.r.ReadByte()
	if err == nil {
		r.c.buf = append(r.c.buf, b)
	}
	return b, err
}

// next reads one packet and checks it. It returns the bytes for mochi and the error for after
// them: a framing or I/O problem passes on the bytes read so far (mochi meets the same problem
// in them and ends the client its usual way), then io.EOF or the read error.
func (c *guardConn) next() ([]byte, error) {
	if cap(c.buf) > 64<<10 {
		c.buf = nil // one big packet does not pin its buffer for the connection's life
	}
	c.buf = c.buf[:0]
	first, err := c.r.ReadByte()
	if err != nil {
		return nil, err
	}
	c.buf = append(c.buf, first)
	var fh packets.FixedHeader
	if err := fh.Decode(first); err != nil {
		return c.buf, io.EOF
	}
	remaining, _, err := packets.DecodeLength(recorder{c})
	if errors.Is(err, packets.ErrMalformedVariableByteInteger) {
		return c.buf, io.EOF
	}
	if err != nil { // the reader's own error, as DecodeLength returns it
		return c.buf, err
	}
	if c.g.maxPacket > 0 && uint64(remaining)+1 > uint64(c.g.maxPacket) {
		return c.buf, io.EOF // mochi refuses it from the header (ErrPacketTooLarge)
	}
	head := len(c.buf)
	c.buf = append(c.buf, make([]byte, remaining)...)
	if n, err := io.ReadFull(c.r, c.buf[head:]); err != nil {
		return c.buf[:head+n], err
	}
	fh.Remaining = remaining
	if p := c.check(fh, c.buf[head:]); p != nil {
		c.g.ref.add(refuseMalformed)
		if ok, n := c.g.ref.log.Allow(refuseMalformed); ok {
			c.g.log.Warn("packet refused: malformed in a way mochi's decoder cannot handle", "listener", c.listener,
				"remote", c.RemoteAddr().String(), "packet_type", fh.Type, "bytes", remaining, "error", p, "suppressed", n)
		}
		return nil, errMalformedPacket
	}
	return c.buf, nil
}

// check decodes body as mochi's ReadPacket would (same decoder per type, same protocol
// version) and returns what the decoder panicked with, nil if it did not. A decode error is
// not the guard's business: mochi meets it again and answers it.
func (c *guardConn) check(fh packets.FixedHeader, body []byte) (panicked any) {
	defer func() {
		if r := recover(); r != nil {
			panicked = fmt.Sprint(r)
		}
	}()
	pk := packets.Packet{FixedHeader: fh, ProtocolVersion: c.version}
	// The decoders keep slices of their input (payload, properties); pk is dropped here and
	// mochi decodes its own copy, so they may point into c.buf. Decode errors are ignored.
	switch fh.Type {
	case packets.Connect:
		if err := pk.ConnectDecode(body); err == nil && c.version == 0 {
			c.version = pk.ProtocolVersion
		}
	case packets.Disconnect:
		_ = pk.DisconnectDecode(body)
	case packets.Connack:
		_ = pk.ConnackDecode(body)
	case packets.Publish:
		_ = pk.PublishDecode(body)
	case packets.Puback:
		_ = pk.PubackDecode(body)
	case packets.Pubrec:
		_ = pk.PubrecDecode(body)
	case packets.Pubrel:
		_ = pk.PubrelDecode(body)
	case packets.Pubcomp:
		_ = pk.PubcompDecode(body)
	case packets.Subscribe:
		_ = pk.SubscribeDecode(body)
	case packets.Suback:
		_ = pk.SubackDecode(body)
	case packets.Unsubscribe:
		_ = pk.UnsubscribeDecode(body)
	case packets.Unsuback:
		_ = pk.UnsubackDecode(body)
	case packets.Auth:
		_ = pk.AuthDecode(body)
	}
	return nil
}
