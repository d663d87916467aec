// Package mqtt5 is the small MQTT 5 client the bridge's mqtt connector uses for protocol 5.
//
// It exists because the forwarder needs three things general-purpose clients hide: strictly
// ordered, pipelined QoS 1 publishing (one writer, many PUBACKs outstanding), the PUBACK reason
// code of every message, and the server's Receive Maximum as a hard in-flight bound. It speaks
// only what the bridge needs: CONNECT/CONNACK, PUBLISH QoS 0/1 out, PUBLISH QoS 0/1/2 in
// (QoS 2 exactly once: see QoS2Set), SUBSCRIBE/SUBACK, PINGREQ/PINGRESP and DISCONNECT, using
// paho.golang's packet codec.
//
// A Client is one connection; it is not redialled. The caller (the connector) dials again.
package mqtt5

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// Options describe one connection.
type Options struct {
	ClientID      string
	Username      string
	Password      []byte
	CleanStart    bool
	SessionExpiry uint32        // seconds; 0 = session ends with the connection
	KeepAlive     time.Duration // 0 = 30s
	// ReceiveMaximum is how many QoS 1/2 messages we accept in flight from the server.
	ReceiveMaximum uint16
	// MaxInflight bounds our own QoS 1 publishes awaiting PUBACK; the server's Receive Maximum
	// lowers it further. 0 = the server's Receive Maximum.
	MaxInflight int
	// OnPublish receives downlink messages on the reader goroutine; the PUBACK (or PUBREC) is
	// sent after it returns, with reason 0x80 when it returns an error (0x97 for ErrQuota).
	// A QoS 2 message is handed over once per packet id until the server's PUBREL.
	OnPublish func(p *packets.Publish) error
	// QoS2 holds the ids of incoming QoS 2 messages delivered but not yet released. Pass the
	// same set to every connection of one session so a redelivery after a reconnect is not
	// delivered twice; nil = a set private to this connection. It is cleared when the server
	// starts a new session (CONNACK session present = 0).
	QoS2 *QoS2Set
	// Will is published by the server when the connection ends without a normal DISCONNECT
	// (keepalive timeout, a dropped link): the last will of MQTT 5 section 3.1.2.5. nil = none.
	Will *Will
	// MaxPacketSize is the largest packet accepted from the server (the whole packet, fixed
	// header included), sent as the CONNECT Maximum Packet Size; a larger one ends the
	// connection before its body is read. 0 = DefaultMaxPacketSize.
	MaxPacketSize int
}

// DefaultMaxPacketSize is Options.MaxPacketSize when not set: room for a 1 MiB payload with
// its topic and properties.
const DefaultMaxPacketSize = 1<<20 + 64<<10

// ErrPacketTooLarge: the server announced a packet above Options.MaxPacketSize.
var ErrPacketTooLarge = errors.New("mqtt5: packet from the server exceeds the maximum packet size")

// Will is the last-will message of a connection.
type Will struct {
	Topic       string
	Payload     []byte
	QoS         byte
	Retain      bool
	ContentType string
}

// QoS2Set is the receiver's state of the MQTT 5 QoS 2 exchange (spec 4.3.3, method B): a
// packet id is stored when its PUBLISH is delivered and answered with PUBREC, and released at
// PUBREL (answered with PUBCOMP). While an id is held, a PUBLISH with that id (the server's
// redelivery, DUP set, after a lost PUBREC or a reconnect) is acknowledged again but not
// delivered again. Safe for concurrent use.
type QoS2Set struct {
	mu  sync.Mutex
	ids map[uint16]struct{}
}

// NewQoS2Set returns an empty set.
func NewQoS2Set() *QoS2Set { return &QoS2Set{ids: map[uint16]struct{}{}} }

func (q *QoS2Set) held(id uint16) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.ids[id]
	return ok
}

func (q *QoS2Set) hold(id uint16) {
	q.mu.Lock()
	q.ids[id] = struct{}{}
	q.mu.Unlock()
}

// release forgets id and reports whether it was held.
func (q *QoS2Set) release(id uint16) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.ids[id]
	delete(q.ids, id)
	return ok
}

func (q *QoS2Set) reset() {
	q.mu.Lock()
	clear(q.ids)
	q.mu.Unlock()
}

// Len is the number of ids held (delivered, not yet released).
func (q *QoS2Set) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.ids)
}

// ErrQuota may be returned by OnPublish to answer "quota exceeded" (0x97).
var ErrQuota = errors.New("quota exceeded")

// ErrClosed is returned once the connection is gone.
var ErrClosed = errors.New("mqtt5: connection closed")

// ReasonError is a negative PUBACK/SUBACK/CONNACK reason code (>= 0x80).
type ReasonError struct {
	Packet string
	Code   byte
	Reason string
}

func (e *ReasonError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("%s reason 0x%02x: %s", e.Packet, e.Code, e.Reason)
	}
	return fmt.Sprintf("%s reason 0x%02x", e.Packet, e.Code)
}

// Client is one MQTT 5 connection.
type Client struct {
	conn net.Conn
	opts Options

	wmu sync.Mutex
	bw  *bufio.Writer

	mu       sync.Mutex
	pending  map[uint16]func(error)
	subs     map[uint16]chan *packets.Suback
	nextID   uint16
	err      error
	inflight int

	// ServerReceiveMax is the server's Receive Maximum (65535 when absent).
	ServerReceiveMax uint16
	// SessionPresent reports whether the server resumed a session.
	SessionPresent bool

	sem      chan struct{}
	done     chan struct{}
	lastRead chan struct{}
	wg       sync.WaitGroup
	closeOne sync.Once
}

// Connect sends CONNECT on an established conn and waits for CONNACK. On error conn is closed.
func Connect(ctx context.Context, conn net.Conn, o Options) (*Client, error) {
	if o.KeepAlive <= 0 {
		o.KeepAlive = 30 * time.Second
	}
	if o.ReceiveMaximum == 0 {
		o.ReceiveMaximum = 100
	}
	if o.QoS2 == nil {
		o.QoS2 = NewQoS2Set()
	}
	if o.MaxPacketSize <= 0 {
		o.MaxPacketSize = DefaultMaxPacketSize
	}
	c := &Client{conn: conn, opts: o, bw: bufio.NewWriterSize(conn, 64<<10), pending: map[uint16]func(error){},
		subs: map[uint16]chan *packets.Suback{}, done: make(chan struct{}), lastRead: make(chan struct{}, 1)}
	cp := &packets.Connect{ProtocolName: "MQTT", ProtocolVersion: 5, ClientID: o.ClientID, CleanStart: o.CleanStart,
		KeepAlive: uint16(o.KeepAlive / time.Second), Properties: &packets.Properties{}}
	if o.SessionExpiry > 0 {
		se := o.SessionExpiry
		cp.Properties.SessionExpiryInterval = &se
	}
	if w := o.Will; w != nil {
		cp.WillFlag, cp.WillTopic, cp.WillMessage, cp.WillQOS, cp.WillRetain = true, w.Topic, w.Payload, w.QoS, w.Retain
		cp.WillProperties = &packets.Properties{ContentType: w.ContentType}
	}
	rm := o.ReceiveMaximum
	cp.Properties.ReceiveMaximum = &rm
	mp := uint32(o.MaxPacketSize)
	cp.Properties.MaximumPacketSize = &mp
	if o.Username != "" {
		cp.UsernameFlag, cp.Username = true, o.Username
	}
	if o.Password != nil {
		cp.PasswordFlag, cp.Password = true, o.Password
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	// A packet above MaxPacketSize ends the link at its header (LimitReads).
	br := bufio.NewReaderSize(LimitReads(conn, o.MaxPacketSize), 64<<10)
	if _, err := cp.WriteTo(conn); err != nil {
		conn.Close()
		return nil, fmt.Errorf("mqtt5: send connect: %w", err)
	}
	pk, err := packets.ReadPacket(br)
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("mqtt5: wait for connack: %w", ctx.Err())
		}
		return nil, fmt.Errorf("mqtt5: wait for connack: %w", err)
	}
	ca, ok := pk.Content.(*packets.Connack)
	if !ok {
		conn.Close()
		return nil, fmt.Errorf("mqtt5: expected CONNACK, got packet type %d", pk.Type)
	}
	if ca.ReasonCode >= 0x80 {
		conn.Close()
		re := &ReasonError{Packet: "connack", Code: ca.ReasonCode}
		if ca.Properties != nil {
			re.Reason = ca.Properties.ReasonString
		}
		return nil, re
	}
	if !stop() {
		conn.Close()
		return nil, ctx.Err()
	}
	_ = conn.SetDeadline(time.Time{})
	c.SessionPresent = ca.SessionPresent
	if !ca.SessionPresent {
		// A new session: the server will not redeliver anything of the old one.
		o.QoS2.reset()
	}
	c.ServerReceiveMax = 65535
	if ca.Properties != nil && ca.Properties.ReceiveMaximum != nil && *ca.Properties.ReceiveMaximum > 0 {
		c.ServerReceiveMax = *ca.Properties.ReceiveMaximum
	}
	keep := o.KeepAlive
	if ca.Properties != nil && ca.Properties.ServerKeepAlive != nil && *ca.Properties.ServerKeepAlive > 0 {
		keep = time.Duration(*ca.Properties.ServerKeepAlive) * time.Second
	}
	win := int(c.ServerReceiveMax)
	if o.MaxInflight > 0 && o.MaxInflight < win {
		win = o.MaxInflight
	}
	c.sem = make(chan struct{}, win)
	c.wg.Add(2)
	go c.reader(br)
	go c.pinger(keep)
	return c, nil
}

// Window is the effective in-flight limit: min(MaxInflight, server Receive Maximum).
func (c *Client) Window() int { return cap(c.sem) }

// Done is closed when the connection has failed or was closed.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is why the connection ended.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Inflight is the number of QoS 1 publishes awaiting PUBACK.
func (c *Client) Inflight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inflight
}

func (c *Client) fail(err error) {
	c.closeOne.Do(func() {
		c.mu.Lock()
		c.err = err
		pend := c.pending
		c.pending = map[uint16]func(error){}
		for _, ch := range c.subs {
			close(ch)
		}
		c.subs = map[uint16]chan *packets.Suback{}
		c.mu.Unlock()
		close(c.done)
		_ = c.conn.Close()
		for _, cb := range pend {
			cb(fmt.Errorf("%w: %v", ErrClosed, err)) //nolint:errorlint // callers decide on ErrClosed; the cause is context
		}
	})
}

// Close sends DISCONNECT (best effort) and closes the connection; idempotent.
func (c *Client) Close() error {
	c.wmu.Lock()
	_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = packets.NewControlPacket(packets.DISCONNECT).WriteTo(c.bw)
	_ = c.bw.Flush()
	c.wmu.Unlock()
	c.fail(ErrClosed)
	c.wg.Wait()
	return nil
}

func (c *Client) write(cp *packets.ControlPacket, flush bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := cp.WriteTo(c.bw); err != nil {
		c.fail(err)
		return err
	}
	if flush {
		if err := c.bw.Flush(); err != nil {
			c.fail(err)
			return err
		}
	}
	return nil
}

// Flush writes buffered packets to the connection.
func (c *Client) Flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.bw.Flush(); err != nil {
		c.fail(err)
		return err
	}
	return nil
}

// PublishAsync queues p behind every earlier publish (order on the wire = call order) and
// returns once it is buffered. For QoS 1, done is called exactly once with nil on a successful
// PUBACK, a *ReasonError for reason >= 0x80, or an error wrapping ErrClosed. It blocks while
// the server's Receive Maximum is reached (flushing first). For QoS 0, done is called after the
// packet is buffered. Call Flush after a burst. An error return means done is never called.
func (c *Client) PublishAsync(ctx context.Context, p *packets.Publish, done func(error)) error {
	select {
	case <-c.done:
		return c.closedErr()
	default:
	}
	if p.QoS == 0 {
		if err := c.write(p.ToControlPacket(), false); err != nil {
			return err
		}
		done(nil)
		return nil
	}
	select {
	case c.sem <- struct{}{}:
	default:
		if err := c.Flush(); err != nil {
			return err
		}
		select {
		case c.sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.done:
			return c.closedErr()
		}
	}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		<-c.sem
		return c.closedErr()
	}
	for {
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		if _, used := c.pending[c.nextID]; !used {
			break
		}
	}
	p.PacketID = c.nextID
	c.pending[p.PacketID] = done
	c.inflight++
	c.mu.Unlock()
	// A failed write fails the client, and fail hands every pending done, this one included,
	// its ErrClosed: that is the one report, so the error is not returned as well (the caller
	// saw both: FuzzServerPackets).
	_ = c.write(p.ToControlPacket(), false)
	return nil
}

func (c *Client) closedErr() error {
	if err := c.Err(); err != nil && !errors.Is(err, ErrClosed) {
		return fmt.Errorf("%w: %v", ErrClosed, err) //nolint:errorlint // callers decide on ErrClosed; the cause is context
	}
	return ErrClosed
}

// Subscribe sends one SUBSCRIBE and returns the SUBACK reason codes.
func (c *Client) Subscribe(ctx context.Context, subs []packets.SubOptions) ([]byte, error) {
	ch := make(chan *packets.Suback, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return nil, c.closedErr()
	}
	var id uint16
	for {
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		_, used := c.pending[c.nextID]
		_, used2 := c.subs[c.nextID]
		if !used && !used2 {
			id = c.nextID
			break
		}
	}
	c.subs[id] = ch
	c.mu.Unlock()
	sp := &packets.Subscribe{PacketID: id, Subscriptions: subs, Properties: &packets.Properties{}}
	cp := &packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.SUBSCRIBE, Flags: 2}, Content: sp}
	if err := c.write(cp, true); err != nil {
		return nil, err
	}
	select {
	case sa, ok := <-ch:
		if !ok {
			return nil, c.closedErr()
		}
		return sa.Reasons, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.subs, id)
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}

func (c *Client) reader(br *bufio.Reader) {
	defer c.wg.Done()
	for {
		pk, err := packets.ReadPacket(br)
		if err != nil {
			c.fail(err)
			return
		}
		select {
		case c.lastRead <- struct{}{}:
		default:
		}
		switch p := pk.Content.(type) {
		case *packets.Puback:
			c.mu.Lock()
			cb, ok := c.pending[p.PacketID]
			if ok {
				delete(c.pending, p.PacketID)
				c.inflight--
			}
			c.mu.Unlock()
			if !ok {
				continue
			}
			<-c.sem
			if p.ReasonCode >= 0x80 {
				re := &ReasonError{Packet: "puback", Code: p.ReasonCode}
				if p.Properties != nil {
					re.Reason = p.Properties.ReasonString
				}
				cb(re)
			} else {
				cb(nil)
			}
		case *packets.Suback:
			c.mu.Lock()
			ch, ok := c.subs[p.PacketID]
			delete(c.subs, p.PacketID)
			c.mu.Unlock()
			if ok {
				ch <- p
			}
		case *packets.Publish:
			c.incoming(p)
		case *packets.Pubrel:
			// Release the id: a later PUBLISH with it is a new message. An id we do not hold
			// (state lost with a restart) is still completed, as the server only wants to
			// finish the exchange; the message was delivered before PUBREC was sent.
			c.opts.QoS2.release(p.PacketID)
			_ = c.write(&packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.PUBCOMP}, Content: &packets.Pubcomp{PacketID: p.PacketID, Properties: &packets.Properties{}}}, true)
		case *packets.Pingresp:
		case *packets.Disconnect:
			re := &ReasonError{Packet: "disconnect", Code: p.ReasonCode}
			if p.Properties != nil {
				re.Reason = p.Properties.ReasonString
			}
			c.fail(re)
			return
		default:
			// PUBREC/PUBCOMP are never expected (we publish QoS <= 1); AUTH unsupported.
		}
	}
}

func (c *Client) incoming(p *packets.Publish) {
	if p.QoS == 2 && c.opts.QoS2.held(p.PacketID) {
		// Delivered already and not yet released: the server did not get our PUBREC (or we
		// reconnected). Acknowledge again, do not deliver again.
		_ = c.write((&packets.Pubrec{PacketID: p.PacketID}).ToControlPacket(), true)
		return
	}
	var err error
	if c.opts.OnPublish != nil {
		err = c.opts.OnPublish(p)
	}
	if p.QoS == 2 && err == nil {
		// Hold the id before PUBREC leaves, so a redelivery racing the PUBREC is caught.
		c.opts.QoS2.hold(p.PacketID)
	}
	reason := byte(0)
	if err != nil {
		reason = 0x80
		if errors.Is(err, ErrQuota) {
			reason = 0x97
		}
	}
	switch p.QoS {
	case 1:
		_ = c.write(&packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.PUBACK}, Content: &packets.Puback{PacketID: p.PacketID, ReasonCode: reason, Properties: &packets.Properties{}}}, true)
	case 2:
		_ = c.write((&packets.Pubrec{PacketID: p.PacketID, ReasonCode: reason}).ToControlPacket(), true)
	}
}

func (c *Client) pinger(keep time.Duration) {
	defer c.wg.Done()
	t := time.NewTicker(keep / 2)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-c.done:
			return
		case <-c.lastRead:
			last = time.Now()
		case <-t.C:
			if time.Since(last) > keep*3/2 {
				c.fail(fmt.Errorf("mqtt5: no packet from server for %v (keepalive)", time.Since(last).Round(time.Millisecond)))
				return
			}
			_ = c.write(packets.NewControlPacket(packets.PINGREQ), true)
		}
	}
}
