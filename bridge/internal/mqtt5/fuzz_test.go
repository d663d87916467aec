package mqtt5

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// packetBytes encodes packets as a server would send them.
func packetBytes(tb testing.TB, cps ...*packets.ControlPacket) []byte {
	var b bytes.Buffer
	for _, cp := range cps {
		if _, err := cp.WriteTo(&b); err != nil {
			tb.Fatal(err)
		}
	}
	return b.Bytes()
}

func connackBytes(tb testing.TB, reason byte, props *packets.Properties) []byte {
	var b bytes.Buffer
	if _, err := (&packets.Connack{ReasonCode: reason, Properties: props}).WriteTo(&b); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// FuzzServerPackets: every byte the cloud broker sends is outside bytes, decoded by paho's
// packet reader and acted on by this client. Whatever the CONNACK and the packets after it,
// Connect returns, the client never panics, a QoS 1 publish in flight is completed exactly
// once, and the client notices the end of the connection.
func FuzzServerPackets(f *testing.F) {
	rm, ka := uint16(2), uint16(1)
	good := connackBytes(f, 0, &packets.Properties{ReceiveMaximum: &rm})
	pub := &packets.Publish{QoS: 1, PacketID: 7, Topic: "gw1/cmd/x", Payload: []byte("reboot"), Properties: &packets.Properties{User: []packets.User{{Key: "k", Value: "v"}}}}
	pub2 := &packets.Publish{QoS: 2, PacketID: 8, Topic: "gw1/cmd/y", Payload: []byte{0}, Properties: &packets.Properties{}}
	stream := packetBytes(f,
		&packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.PUBACK}, Content: &packets.Puback{PacketID: 1, ReasonCode: 0x97, Properties: &packets.Properties{ReasonString: "quota"}}},
		pub.ToControlPacket(), pub2.ToControlPacket(), pub2.ToControlPacket(),
		&packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.PUBREL, Flags: 2}, Content: &packets.Pubrel{PacketID: 8, Properties: &packets.Properties{}}},
		&packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.SUBACK}, Content: &packets.Suback{PacketID: 3, Reasons: []byte{1}, Properties: &packets.Properties{}}},
		packets.NewControlPacket(packets.PINGRESP),
		&packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.DISCONNECT}, Content: &packets.Disconnect{ReasonCode: 0x8e, Properties: &packets.Properties{ReasonString: "session taken over"}}},
	)
	f.Add(good, stream)
	f.Add(good, stream[:len(stream)/2])
	f.Add(connackBytes(f, 0x86, &packets.Properties{ReasonString: "bad user name or password"}), []byte{})
	f.Add(connackBytes(f, 0, &packets.Properties{ServerKeepAlive: &ka}), []byte{0x30, 0xff, 0xff, 0xff, 0x7f})
	f.Add([]byte{0x20, 0x02, 0x00}, []byte{})
	f.Fuzz(func(t *testing.T, connack, rest []byte) {
		srv, cli := net.Pipe()
		defer srv.Close()
		go func() {
			br := bufio.NewReader(srv)
			if _, err := packets.ReadPacket(br); err != nil { // CONNECT
				srv.Close()
				return
			}
			go func() { _, _ = io.Copy(io.Discard, br) }() // whatever the client answers
			_, _ = srv.Write(connack)
			_, _ = srv.Write(rest)
			srv.Close()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := Connect(ctx, cli, Options{ClientID: "gw1", KeepAlive: time.Minute, OnPublish: func(p *packets.Publish) error { return nil }})
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("connect did not return before its deadline: %v", err)
			}
			return
		}
		var calls atomic.Int32
		perr := c.PublishAsync(context.Background(), &packets.Publish{QoS: 1, Topic: "up", Payload: []byte("x")}, func(error) { calls.Add(1) })
		_ = c.Flush()
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the client did not notice the server closed the connection")
		}
		_ = c.Close()
		if n := calls.Load(); (perr == nil && n != 1) || (perr != nil && n != 0) {
			t.Fatalf("publish (queued: %v) completed %d times", perr, n)
		}
	})
}

// TestHugePacketRefusedFromHeader: a server announcing a 256 MiB PUBLISH made paho's reader
// allocate 256 MiB before a byte of it arrived (five bytes per reconnect could exhaust a
// gateway's memory). The client now tells the server its Maximum Packet Size in CONNECT and
// ends the connection on the header of a larger packet, without reading or allocating it.
func TestHugePacketRefusedFromHeader(t *testing.T) {
	srv, cli := net.Pipe()
	defer srv.Close()
	connect := make(chan *packets.Connect, 1)
	go func() {
		br := bufio.NewReader(srv)
		cp, err := packets.ReadPacket(br)
		if err != nil {
			return
		}
		connect <- cp.Content.(*packets.Connect)
		go func() { _, _ = io.Copy(io.Discard, br) }()
		_, _ = srv.Write(connackBytes(t, 0, &packets.Properties{}))
		_, _ = srv.Write([]byte{0x30, 0xff, 0xff, 0xff, 0x7f}) // PUBLISH, remaining length 268435455; body never sent
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Connect(ctx, cli, Options{ClientID: "gw1", KeepAlive: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if cp := <-connect; cp.Properties == nil || cp.Properties.MaximumPacketSize == nil || *cp.Properties.MaximumPacketSize != DefaultMaxPacketSize {
		t.Fatalf("CONNECT does not announce the maximum packet size: %+v", cp.Properties)
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the client is still waiting for the body of a 256 MiB packet")
	}
	if !errors.Is(c.Err(), ErrPacketTooLarge) {
		t.Fatalf("err %v, want ErrPacketTooLarge", c.Err())
	}
}

// failingWrites is a connection whose writes fail once fail is set; reads go on.
type failingWrites struct {
	net.Conn
	fail atomic.Bool
}

func (c *failingWrites) Write(b []byte) (int, error) {
	if c.fail.Load() {
		return 0, errors.New("write: broken pipe")
	}
	return c.Conn.Write(b)
}

// TestPublishWriteErrorReportedOnce: when writing a QoS 1 PUBLISH failed, PublishAsync both
// returned the error and called done with ErrClosed (the client had already registered it);
// the caller saw the same failure twice. Now done is the one report.
func TestPublishWriteErrorReportedOnce(t *testing.T) {
	srv, cli := net.Pipe()
	defer srv.Close()
	go func() {
		br := bufio.NewReader(srv)
		if _, err := packets.ReadPacket(br); err != nil {
			return
		}
		_, _ = srv.Write(connackBytes(t, 0, &packets.Properties{}))
		_, _ = io.Copy(io.Discard, br)
	}()
	conn := &failingWrites{Conn: cli}
	c, err := Connect(context.Background(), conn, Options{ClientID: "gw1", KeepAlive: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	conn.fail.Store(true)
	var calls atomic.Int32
	// Larger than the write buffer: written through at once, so the write fails here.
	err = c.PublishAsync(context.Background(), &packets.Publish{QoS: 1, Topic: "up", Payload: make([]byte, 128<<10)}, func(error) { calls.Add(1) })
	if n := calls.Load(); (err == nil) != (n == 1) {
		t.Fatalf("PublishAsync returned %v and done was called %d times: want exactly one report", err, n)
	}
}
