package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
)

// gateCapturer blocks every Capture until the test releases it with a result.
type gateCapturer struct {
	entered chan *Message
	release chan error
}

func newGate() *gateCapturer {
	return &gateCapturer{entered: make(chan *Message, 100), release: make(chan error, 100)}
}

func (g *gateCapturer) Capture(ctx context.Context, m *Message) error {
	g.entered <- m
	select {
	case err := <-g.release:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gateCapturer) waitEntered(t *testing.T) *Message {
	t.Helper()
	return recv(t, g.entered, 10*time.Second, "Capture not called")
}

// captureModes runs a test with the pipelined capture and with synchronous capture.
func captureModes(t *testing.T, f func(t *testing.T, sync bool)) {
	for _, sync := range []bool{false, true} {
		name := "pipelined"
		if sync {
			name = "sync"
		}
		t.Run(name, func(t *testing.T) { f(t, sync) })
	}
}

func startCapture(t *testing.T, c Capturer, sync bool) *Broker {
	b := startBroker(t, Options{Config: localConfig()}, c)
	b.capture.syn = sync
	return b
}

// noPacket asserts that nothing arrives for a short while: the one place a test has to wait
// for an absence.
func noPacket(t *testing.T, rc *rawClient, what string) {
	t.Helper()
	if pk, err := rc.read(150 * time.Millisecond); err == nil {
		t.Fatalf("%s: got packet type %d reason %#x before capture returned", what, pk.FixedHeader.Type, pk.ReasonCode)
	}
}

func TestAckOnlyAfterCapture(t *testing.T) {
	captureModes(t, func(t *testing.T, sync bool) {
		g := newGate()
		b := startCapture(t, g, sync)
		watcher := dialRaw(t, addr(b, 0), 5, "watcher", noProps)
		watcher.subscribe(1, packets.Subscription{Filter: "d/#", Qos: 1})

		for _, v := range []byte{4, 5} {
			rc := dialRaw(t, addr(b, 0), v, fmt.Sprintf("pub-v%d", v), noProps)
			// QoS 1: PUBACK only after Capture returned nil; QoS 2: PUBREC only after Capture
			// returned nil, then PUBREL/PUBCOMP
			for _, p := range []struct {
				topic string
				qos   byte
				id    uint16
				ack   byte
			}{{"d/1", 1, 7, packets.Puback}, {"d/2", 2, 8, packets.Pubrec}} {
				rc.publish(p.topic, p.qos, p.id, []byte(p.topic), noProps)
				g.waitEntered(t)
				noPacket(t, rc, fmt.Sprintf("v%d qos%d publisher", v, p.qos))
				g.release <- nil
				rc.expectAck(p.ack, p.id)
				if p.qos == 2 {
					rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: p.id})
					rc.expectAck(packets.Pubcomp, p.id)
				}
				watcher.expectPublish(p.topic)
			}
			// the watcher's delivery must be acked or mochi keeps it inflight; not needed here
		}
	})
}

func TestCaptureQuotaExceeded(t *testing.T) {
	captureModes(t, func(t *testing.T, sync bool) {
		g := newGate()
		b := startCapture(t, g, sync)
		got := make(chan *Message, 10)
		_, err := b.Subscribe("q/#", func(m *Message) { got <- m })
		must(t, err)
		rc := dialRaw(t, addr(b, 0), 5, "q5", noProps)
		for qos, typ := range map[byte]byte{1: packets.Puback, 2: packets.Pubrec} {
			rc.publish("q/x", qos, 3, []byte("x"), noProps)
			g.waitEntered(t)
			g.release <- fmt.Errorf("outbox cloud full: %w", ErrQuotaExceeded)
			ack := rc.expect(typ)
			if ack.ReasonCode != 0x97 {
				t.Fatalf("qos %d: reason %#x, want 0x97", qos, ack.ReasonCode)
			}
		}
		select {
		case m := <-got:
			t.Fatalf("refused message distributed: %+v", m)
		default:
		}
		if b.Status().CaptureFailures != 2 {
			t.Fatalf("capture failures %d", b.Status().CaptureFailures)
		}
	})
}

func TestCaptureFailureNotAcked(t *testing.T) {
	captureModes(t, func(t *testing.T, sync bool) {
		g := newGate()
		b := startCapture(t, g, sync)
		// MQTT 5: PUBACK 0x80 unspecified error, connection stays
		rc := dialRaw(t, addr(b, 0), 5, "f5", noProps)
		rc.publish("f/x", 1, 1, []byte("x"), noProps)
		g.waitEntered(t)
		g.release <- errors.New("disk on fire")
		if ack := rc.expect(packets.Puback); ack.ReasonCode != 0x80 {
			t.Fatalf("v5 reason %#x", ack.ReasonCode)
		}
		// MQTT 3.1.1: no ack at all, the connection is closed so the client resends
		rc3 := dialRaw(t, addr(b, 0), 4, "f3", noProps)
		rc3.publish("f/x", 1, 1, []byte("x"), noProps)
		g.waitEntered(t)
		g.release <- errors.New("disk on fire")
		pk, err := rc3.read(10 * time.Second)
		if err == nil {
			t.Fatalf("v3 got packet type %d reason %#x after failed capture", pk.FixedHeader.Type, pk.ReasonCode)
		}
		if strings.Contains(err.Error(), "timeout") {
			t.Fatalf("v3 connection not closed: %v", err)
		}
	})
}

func TestPubackHasNoEchoedUserProperties(t *testing.T) {
	for _, c := range []Capturer{nil, &recCapturer{}} {
		b := startBroker(t, Options{Config: localConfig()}, c)
		cl := mustV5(t, addr(b, 0), "props")
		for _, qos := range []byte{1, 2} {
			pr, err := cl.Publish(ctx10(t), &paho.Publish{Topic: "p/x", QoS: qos, Payload: []byte("x"),
				Properties: &paho.PublishProperties{User: paho.UserProperties{{Key: "trace", Value: "abc"}}}})
			must(t, err)
			if pr.Properties != nil && len(pr.Properties.User) > 0 {
				t.Fatalf("capturer %T qos %d: ack echoes user properties %v", c, qos, pr.Properties.User)
			}
		}
	}
}

func TestCapturedMessage(t *testing.T) {
	rec := &recCapturer{}
	cfg := aclConfig(t)
	b := startBroker(t, Options{Config: cfg}, rec)
	cl, _, err := connectV5(t, addr(b, 0), v5login("dev", "devpw", "dev-7"))
	must(t, err)
	before := time.Now()
	_, err = cl.Publish(ctx10(t), &paho.Publish{Topic: "sensors/dev-7/t", QoS: 1, Retain: true, Payload: []byte("21.5"),
		Properties: &paho.PublishProperties{ContentType: "text/plain", User: paho.UserProperties{{Key: "a", Value: "1"}, {Key: "b", Value: "2"}}}})
	must(t, err)
	m := rec.find("sensors/dev-7/t")
	if m == nil {
		t.Fatal("not captured")
	}
	if string(m.Payload) != "21.5" || m.QoS != 1 || !m.Retain || m.ClientID != "dev-7" || m.Username != "dev" ||
		m.ContentType != "text/plain" || len(m.UserProps) != 2 || m.UserProps[1].Value != "2" || m.Inline || m.Time.Before(before.Add(-time.Second)) {
		t.Fatalf("captured %+v", m)
	}
	// $SYS is never captured; only our own publish was
	if n := rec.count(); n != 1 {
		t.Fatalf("captured %d messages", n)
	}
}

// batchRec is a BatchCapturer recording batches.
type batchRec struct {
	mu      sync.Mutex
	topics  []string
	batches int
}

func (c *batchRec) Capture(ctx context.Context, m *Message) error {
	return c.CaptureBatch(ctx, []*Message{m})[0]
}

func (c *batchRec) CaptureBatch(_ context.Context, ms []*Message) []error {
	time.Sleep(200 * time.Microsecond) // a commit
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batches++
	for _, m := range ms {
		c.topics = append(c.topics, m.Topic)
	}
	return nil
}

func TestPipelinedOrder(t *testing.T) {
	rec := &batchRec{}
	b := startBroker(t, Options{Config: localConfig()}, rec)
	watcher := dialRaw(t, addr(b, 0), 4, "w", noProps)
	watcher.subscribe(1, packets.Subscription{Filter: "o/#"})
	rc := dialRaw(t, addr(b, 0), 5, "fast", noProps)
	const n = 500
	go func() {
		for i := 1; i <= n; i++ {
			rc.publish(fmt.Sprintf("o/%d", i), 1, uint16(i), nil, noProps)
		}
	}()
	for i := 1; i <= n; i++ {
		rc.expectAck(packets.Puback, uint16(i))
		watcher.expectPublish(fmt.Sprintf("o/%d", i))
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for i, topic := range rec.topics {
		if topic != fmt.Sprintf("o/%d", i+1) {
			t.Fatalf("capture order broken at %d: %s", i, topic)
		}
	}
	if rec.batches >= n {
		t.Errorf("no batching: %d batches for %d messages", rec.batches, n)
	}
	t.Logf("%d messages in %d capture batches", n, rec.batches)
}
