package main

// A deliberately small MQTT 3.1.1 client over net.Conn for load generation: pre-sized
// buffers, pipelined writes, no per-message goroutines or allocations on the hot path, so
// the generator is not what the benchmark measures. Only what the benchmark needs:
// CONNECT, PUBLISH (QoS 0/1), PUBACK, SUBSCRIBE.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

const (
	pktConnect    = 1
	pktConnack    = 2
	pktPublish    = 3
	pktPuback     = 4
	pktSubscribe  = 8
	pktSuback     = 9
	pktPingreq    = 12
	pktPingresp   = 13
	pktDisconnect = 14
)

type client struct {
	nc  net.Conn
	r   *bufio.Reader
	wmu sync.Mutex
	w   *bufio.Writer
	buf []byte // scratch for building one packet
	in  []byte // last packet read (valid until the next read)
}

// dial connects and completes CONNECT/CONNACK. keepalive 0: no pings needed.
func dial(addr, clientID string, clean bool) (*client, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := &client{nc: nc, r: bufio.NewReaderSize(nc, 256<<10), w: bufio.NewWriterSize(nc, 64<<10)}
	var flags byte
	if clean {
		flags = 0x02
	}
	vh := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, flags, 0, 0}
	body := appendStr(vh, clientID)
	c.buf = appendHeader(c.buf[:0], pktConnect<<4, len(body))
	c.buf = append(c.buf, body...)
	if _, err := c.w.Write(c.buf); err != nil {
		nc.Close()
		return nil, err
	}
	if err := c.w.Flush(); err != nil {
		nc.Close()
		return nil, err
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, _, body, err := c.read()
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("connack: %w", err)
	}
	_ = nc.SetReadDeadline(time.Time{})
	if typ != pktConnack || len(body) < 2 || body[1] != 0 {
		nc.Close()
		return nil, fmt.Errorf("connect refused: type %d body %x", typ, body)
	}
	return c, nil
}

func appendStr(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendHeader(b []byte, first byte, remaining int) []byte {
	b = append(b, first)
	for {
		d := byte(remaining % 128)
		remaining /= 128
		if remaining > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if remaining == 0 {
			return b
		}
	}
}

// read returns the next packet; body aliases an internal buffer.
func (c *client) read() (typ, flags byte, body []byte, err error) {
	h, body, err := readPacket(c.r, c.in)
	if err != nil {
		return 0, 0, nil, err
	}
	c.in = body
	return h >> 4, h & 0x0f, body, nil
}

// readPacket reads one MQTT packet: its first byte and its body, in buf when buf is large
// enough (nil: a new slice the caller may keep).
func readPacket(r *bufio.Reader, buf []byte) (first byte, body []byte, err error) {
	first, err = r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mul := 0, 1
	for i := 0; ; i++ {
		d, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(d&0x7f) * mul
		if d&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("malformed remaining length")
		}
		mul *= 128
	}
	if cap(buf) < n {
		buf = make([]byte, n, n*2)
	}
	body = buf[:n]
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return first, body, nil
}

// subscribe sends SUBSCRIBE and waits for SUBACK (nothing else may arrive before it).
func (c *client) subscribe(filter string, qos byte) error {
	b := binary.BigEndian.AppendUint16(nil, 1)
	b = appendStr(b, filter)
	b = append(b, qos)
	c.wmu.Lock()
	c.buf = appendHeader(c.buf[:0], pktSubscribe<<4|0x02, len(b))
	c.buf = append(c.buf, b...)
	_, err := c.w.Write(c.buf)
	if err == nil {
		err = c.w.Flush()
	}
	c.wmu.Unlock()
	if err != nil {
		return err
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer func() { _ = c.nc.SetReadDeadline(time.Time{}) }()
	typ, _, body, err := c.read()
	if err != nil {
		return fmt.Errorf("suback: %w", err)
	}
	if typ != pktSuback || len(body) < 3 || body[2] >= 0x80 {
		return fmt.Errorf("subscribe %s refused: type %d body %x", filter, typ, body)
	}
	return nil
}

// publish buffers one PUBLISH; the caller flushes (or the buffer fills and flushes itself).
func (c *client) publish(topic string, payload []byte, qos byte, id uint16) error {
	n := 2 + len(topic) + len(payload)
	if qos > 0 {
		n += 2
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.buf = appendHeader(c.buf[:0], pktPublish<<4|qos<<1, n)
	c.buf = appendStr(c.buf, topic)
	if qos > 0 {
		c.buf = binary.BigEndian.AppendUint16(c.buf, id)
	}
	c.buf = append(c.buf, payload...)
	_, err := c.w.Write(c.buf)
	return err
}

func (c *client) puback(id uint16) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.w.Write([]byte{pktPuback << 4, 2, byte(id >> 8), byte(id)})
	return err
}

func (c *client) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.w.Flush()
}

func (c *client) close() {
	c.wmu.Lock()
	_, _ = c.w.Write([]byte{0xe0, 0})
	_ = c.w.Flush()
	c.wmu.Unlock()
	_ = c.nc.Close()
}

// parsePublish splits a PUBLISH body into topic, packet id (0 for QoS 0) and payload.
func parsePublish(flags byte, body []byte) (topic []byte, id uint16, payload []byte, err error) {
	if len(body) < 2 {
		return nil, 0, nil, errors.New("short publish")
	}
	tl := int(binary.BigEndian.Uint16(body))
	if len(body) < 2+tl {
		return nil, 0, nil, errors.New("short publish topic")
	}
	topic, rest := body[2:2+tl], body[2+tl:]
	if qos := (flags >> 1) & 3; qos > 0 {
		if len(rest) < 2 {
			return nil, 0, nil, errors.New("short publish id")
		}
		id, rest = binary.BigEndian.Uint16(rest), rest[2:]
	}
	return topic, id, rest, nil
}
