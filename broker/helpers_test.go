package broker

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/edged-dev/edged/internal/testutil"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"
)

// memState is an in-memory StateStore.
type memState struct{ *testutil.MemState }

func newMemState() *memState { return &memState{testutil.NewMemState()} }

func (s *memState) keys(prefix string) []string {
	var out []string
	_ = s.Scan(prefix, func(k string, _ []byte) error { out = append(out, k); return nil })
	return out
}

// eventually polls cond until it is true or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func hash(t testing.TB, pw string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	must(t, err)
	return string(h)
}

func localConfig() Config {
	return Config{Listeners: []Listener{{Type: ListenerTCP, Address: "127.0.0.1:0"}}}
}

// startBroker starts a broker and closes it at the end of the test.
func startBroker(t testing.TB, o Options, c Capturer) *Broker {
	t.Helper()
	b, err := New(o)
	must(t, err)
	if c != nil {
		b.SetCapturer(c)
	}
	must(t, b.Start(context.Background()))
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func addr(b *Broker, i int) string { return b.Status().Listeners[i].Bound }

// --- paho.mqtt.golang (MQTT 3.1.1) ---

type v3opts struct {
	user, pass string
	clean      bool
	will       *[2]string // topic, payload
	tls        *tls.Config
	onLost     func(error)
	scheme     string
}

func connectV3(t testing.TB, address, id string, o v3opts) (pahov3.Client, error) {
	t.Helper()
	scheme := o.scheme
	if scheme == "" {
		scheme = "tcp"
	}
	opts := pahov3.NewClientOptions().AddBroker(scheme + "://" + address).SetClientID(id).
		SetCleanSession(o.clean).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).SetWriteTimeout(5 * time.Second).SetOrderMatters(false)
	if o.user != "" {
		opts.SetUsername(o.user).SetPassword(o.pass)
	}
	if o.will != nil {
		opts.SetWill(o.will[0], o.will[1], 1, false)
	}
	if o.tls != nil {
		opts.SetTLSConfig(o.tls)
	}
	if o.onLost != nil {
		opts.SetConnectionLostHandler(func(_ pahov3.Client, err error) { o.onLost(err) })
	}
	c := pahov3.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect timeout")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

func mustV3(t testing.TB, address, id string, o v3opts) pahov3.Client {
	t.Helper()
	c, err := connectV3(t, address, id, o)
	must(t, err)
	return c
}

func waitTok(t testing.TB, tok pahov3.Token) error {
	t.Helper()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatal("paho v3 token timeout")
	}
	return tok.Error()
}

// --- paho.golang (MQTT 5) ---

type v5client struct {
	*paho.Client
	msgs chan *paho.Publish
}

func connectV5(t testing.TB, address string, cp *paho.Connect) (*v5client, *paho.Connack, error) {
	t.Helper()
	conn, err := net.Dial("tcp", address)
	if err != nil {
		return nil, nil, err
	}
	msgs := make(chan *paho.Publish, 1000)
	c := paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			msgs <- pr.Packet
			return true, nil
		}},
	})
	if cp.KeepAlive == 0 {
		cp.KeepAlive = 30
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	if err != nil {
		_ = conn.Close()
		return nil, ca, err
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}); _ = conn.Close() })
	return &v5client{Client: c, msgs: msgs}, ca, nil
}

func mustV5(t testing.TB, address, id string) *v5client {
	t.Helper()
	c, _, err := connectV5(t, address, &paho.Connect{ClientID: id, CleanStart: true})
	must(t, err)
	return c
}

func ctx10(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// --- raw MQTT client: exact control over what is sent and what comes back ---

type rawClient struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
	v    byte
}

func dialRaw(t testing.TB, address string, version byte, id string, props packets.Properties) *rawClient {
	t.Helper()
	conn, err := net.Dial("tcp", address)
	must(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	rc := &rawClient{t: t, conn: conn, r: bufio.NewReader(conn), v: version}
	name := []byte("MQTT")
	rc.send(packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: version,
		Connect:         packets.ConnectParams{ProtocolName: name, ClientIdentifier: id, Keepalive: 30, Clean: true},
		Properties:      props,
	})
	ack, err := rc.read(5 * time.Second)
	must(t, err)
	if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0 {
		t.Fatalf("connect: got type %d reason %#x", ack.FixedHeader.Type, ack.ReasonCode)
	}
	return rc
}

func (rc *rawClient) send(pk packets.Packet) {
	rc.t.Helper()
	_, err := rc.conn.Write(encode(rc.t, pk, rc.v))
	must(rc.t, err)
}

// encoders and decoders are mochi's codecs (the same code clients are tested against) by
// packet type.
var (
	encoders = map[byte]func(*packets.Packet, *bytes.Buffer) error{
		packets.Connect:     (*packets.Packet).ConnectEncode,
		packets.Publish:     (*packets.Packet).PublishEncode,
		packets.Puback:      (*packets.Packet).PubackEncode,
		packets.Pubrec:      (*packets.Packet).PubrecEncode,
		packets.Pubrel:      (*packets.Packet).PubrelEncode,
		packets.Pubcomp:     (*packets.Packet).PubcompEncode,
		packets.Subscribe:   (*packets.Packet).SubscribeEncode,
		packets.Unsubscribe: (*packets.Packet).UnsubscribeEncode,
		packets.Pingreq:     (*packets.Packet).PingreqEncode,
		packets.Disconnect:  (*packets.Packet).DisconnectEncode,
		packets.Auth:        (*packets.Packet).AuthEncode,
	}
	decoders = map[byte]func(*packets.Packet, []byte) error{
		packets.Connack:    (*packets.Packet).ConnackDecode,
		packets.Puback:     (*packets.Packet).PubackDecode,
		packets.Pubrec:     (*packets.Packet).PubrecDecode,
		packets.Pubcomp:    (*packets.Packet).PubcompDecode,
		packets.Publish:    (*packets.Packet).PublishDecode,
		packets.Suback:     (*packets.Packet).SubackDecode,
		packets.Unsuback:   (*packets.Packet).UnsubackDecode,
		packets.Disconnect: (*packets.Packet).DisconnectDecode,
	}
)

// encode serialises a packet for protocol version v.
func encode(t testing.TB, pk packets.Packet, v byte) []byte {
	t.Helper()
	enc := encoders[pk.FixedHeader.Type]
	if enc == nil {
		t.Fatalf("encode: type %d", pk.FixedHeader.Type)
	}
	pk.ProtocolVersion = v
	var buf bytes.Buffer
	must(t, enc(&pk, &buf))
	return buf.Bytes()
}

func (rc *rawClient) publish(topic string, qos byte, id uint16, payload []byte, props packets.Properties) {
	rc.t.Helper()
	rc.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
		TopicName:   topic, PacketID: id, Payload: payload, Properties: props,
	})
}

// read returns the next packet, or an error (timeout, EOF) after d.
func (rc *rawClient) read(d time.Duration) (packets.Packet, error) {
	_ = rc.conn.SetReadDeadline(time.Now().Add(d))
	var pk packets.Packet
	hb, err := rc.r.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(rc.r)
	if err != nil {
		return pk, err
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(rc.r, body); err != nil {
		return pk, err
	}
	pk.ProtocolVersion = rc.v
	pk.FixedHeader.Remaining = n
	if dec := decoders[pk.FixedHeader.Type]; dec != nil {
		err = dec(&pk, body)
	}
	return pk, err
}

func (rc *rawClient) expect(typ byte) packets.Packet {
	rc.t.Helper()
	pk, err := rc.read(10 * time.Second)
	must(rc.t, err)
	if pk.FixedHeader.Type != typ {
		rc.t.Fatalf("got packet type %d, want %d", pk.FixedHeader.Type, typ)
	}
	return pk
}

// subscribe sends one SUBSCRIBE with id and filters and returns its SUBACK.
func (rc *rawClient) subscribe(id uint16, filters ...packets.Subscription) packets.Packet {
	rc.t.Helper()
	rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: id, Filters: filters})
	return rc.expect(packets.Suback)
}

// expectPublish reads the next packet, which must be a PUBLISH to topic.
func (rc *rawClient) expectPublish(topic string) packets.Packet {
	rc.t.Helper()
	d := rc.expect(packets.Publish)
	if d.TopicName != topic {
		rc.t.Fatalf("delivered %s, want %s", d.TopicName, topic)
	}
	return d
}

// expectAck reads the next packet, which must be of type typ for packet id with reason 0.
func (rc *rawClient) expectAck(typ byte, id uint16) packets.Packet {
	rc.t.Helper()
	ack := rc.expect(typ)
	if ack.PacketID != id || ack.ReasonCode != 0 {
		rc.t.Fatalf("ack type %d: %+v, want packet id %d reason 0", typ, ack, id)
	}
	return ack
}

var noProps packets.Properties

// dialRawWill connects a 3.1.1 client with a will and returns its connection.
func dialRawWill(t testing.TB, address, id, topic, payload string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", address)
	must(t, err)
	rc := &rawClient{t: t, conn: conn, r: bufio.NewReader(conn), v: 4}
	rc.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: id, Keepalive: 30, Clean: true,
			WillFlag: true, WillTopic: topic, WillPayload: []byte(payload), WillQos: 1},
	})
	rc.expect(packets.Connack)
	return conn
}

// dialIdle opens a TCP connection that never sends CONNECT.
func dialIdle(t testing.TB, address string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", address)
	must(t, err)
	return conn
}

// recv returns the next value from ch; it fails the test with what when none came within d.
func recv[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatal(what)
		var zero T
		return zero
	}
}

func countGoroutines() int { return runtime.NumGoroutine() }

// recCapturer records every captured message and succeeds.
type recCapturer struct {
	mu   sync.Mutex
	msgs []*Message
}

func (c *recCapturer) Capture(_ context.Context, m *Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.msgs = append(c.msgs, m)
	return nil
}

func (c *recCapturer) find(topic string) *Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range c.msgs {
		if m.Topic == topic {
			return m
		}
	}
	return nil
}

func (c *recCapturer) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}
