package broker

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// selGate is a gateCapturer that only wants topics under "keep/"; other topics it is still
// handed (queued behind a captured message) it keeps nothing of, at once, as the bridge does.
type selGate struct {
	*gateCapturer
	passed *atomic.Int64
}

func newSelGate() selGate { return selGate{newGate(), new(atomic.Int64)} }

func (s selGate) Captures(topic string) bool { return strings.HasPrefix(topic, "keep/") }

var _ CaptureSelector = selGate{}

func (s selGate) Capture(ctx context.Context, m *Message) error {
	if !s.Captures(m.Topic) {
		s.passed.Add(1)
		return nil
	}
	return s.gateCapturer.Capture(ctx, m)
}

// A message no rule captures is acked and delivered without Capture; a captured one still
// waits for Capture.
func TestShortcutUncapturedTopic(t *testing.T) {
	g := newSelGate()
	b := startCapture(t, g, false)
	watcher := dialRaw(t, addr(b, 0), 5, "watcher", noProps)
	watcher.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "#", Qos: 0}}})
	watcher.expect(packets.Suback)
	rc := dialRaw(t, addr(b, 0), 5, "pub", noProps)

	rc.publish("local/1", 1, 1, []byte("a"), noProps)
	if ack := rc.expect(packets.Puback); ack.PacketID != 1 || ack.ReasonCode != 0 {
		t.Fatalf("puback %+v", ack)
	}
	if d := watcher.expect(packets.Publish); d.TopicName != "local/1" {
		t.Fatalf("delivered %s", d.TopicName)
	}
	rc.publish("local/2", 0, 0, []byte("b"), noProps)
	if d := watcher.expect(packets.Publish); d.TopicName != "local/2" {
		t.Fatalf("delivered %s", d.TopicName)
	}
	if n := g.passed.Load(); n != 0 {
		t.Fatalf("Capture called for %d uncaptured messages on an idle pipe", n)
	}

	rc.publish("keep/1", 1, 2, []byte("c"), noProps)
	if m := g.waitEntered(t); m.Topic != "keep/1" {
		t.Fatalf("captured %s", m.Topic)
	}
	noPacket(t, rc, "captured qos1 publisher")
	g.release <- nil
	if ack := rc.expect(packets.Puback); ack.PacketID != 2 {
		t.Fatalf("puback %+v", ack)
	}
	if d := watcher.expect(packets.Publish); d.TopicName != "keep/1" {
		t.Fatalf("delivered %s", d.TopicName)
	}
}

// An uncaptured message behind a captured one still in the pipe waits for it: the client's
// messages reach subscribers (and acks the client) in the order it sent them.
func TestShortcutKeepsClientOrder(t *testing.T) {
	g := newSelGate()
	b := startCapture(t, g, false)
	watcher := dialRaw(t, addr(b, 0), 5, "watcher", noProps)
	watcher.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: "#", Qos: 0}}})
	watcher.expect(packets.Suback)
	rc := dialRaw(t, addr(b, 0), 5, "pub", noProps)

	rc.publish("keep/1", 1, 1, []byte("a"), noProps)
	g.waitEntered(t)
	rc.publish("local/2", 1, 2, []byte("b"), noProps)
	rc.publish("local/3", 0, 0, []byte("c"), noProps)
	noPacket(t, watcher, "subscriber while the first message is being captured")
	noPacket(t, rc, "publisher while the first message is being captured")
	g.release <- nil
	for i, want := range []string{"keep/1", "local/2", "local/3"} {
		if d := watcher.expect(packets.Publish); d.TopicName != want {
			t.Fatalf("delivery %d: %s, want %s", i, d.TopicName, want)
		}
	}
	for _, id := range []uint16{1, 2} {
		if ack := rc.expect(packets.Puback); ack.PacketID != id {
			t.Fatalf("puback %d, want %d", ack.PacketID, id)
		}
	}
	// The pipe is idle again: the shortcut applies.
	rc.publish("local/4", 1, 3, []byte("d"), noProps)
	if ack := rc.expect(packets.Puback); ack.PacketID != 3 {
		t.Fatalf("puback %+v", ack)
	}
	if d := watcher.expect(packets.Publish); d.TopicName != "local/4" {
		t.Fatalf("delivered %s", d.TopicName)
	}
}
