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

// startShortcut starts a pipelined broker capturing into a selGate, with a raw subscriber
// to everything (watcher) and a raw publisher (rc).
func startShortcut(t *testing.T) (g selGate, watcher, rc *rawClient) {
	g = newSelGate()
	b := startCapture(t, g, false)
	watcher = dialRaw(t, addr(b, 0), 5, "watcher", noProps)
	watcher.subscribe(1, packets.Subscription{Filter: "#"})
	return g, watcher, dialRaw(t, addr(b, 0), 5, "pub", noProps)
}

// A message no rule captures is acked and delivered without Capture; a captured one still
// waits for Capture.
func TestShortcutUncapturedTopic(t *testing.T) {
	g, watcher, rc := startShortcut(t)

	rc.publish("local/1", 1, 1, []byte("a"), noProps)
	rc.expectAck(packets.Puback, 1)
	watcher.expectPublish("local/1")
	rc.publish("local/2", 0, 0, []byte("b"), noProps)
	watcher.expectPublish("local/2")
	if n := g.passed.Load(); n != 0 {
		t.Fatalf("Capture called for %d uncaptured messages on an idle pipe", n)
	}

	rc.publish("keep/1", 1, 2, []byte("c"), noProps)
	if m := g.waitEntered(t); m.Topic != "keep/1" {
		t.Fatalf("captured %s", m.Topic)
	}
	noPacket(t, rc, "captured qos1 publisher")
	g.release <- nil
	rc.expectAck(packets.Puback, 2)
	watcher.expectPublish("keep/1")
}

// An uncaptured message behind a captured one still in the pipe waits for it: the client's
// messages reach subscribers (and acks the client) in the order it sent them.
func TestShortcutKeepsClientOrder(t *testing.T) {
	g, watcher, rc := startShortcut(t)

	rc.publish("keep/1", 1, 1, []byte("a"), noProps)
	g.waitEntered(t)
	rc.publish("local/2", 1, 2, []byte("b"), noProps)
	rc.publish("local/3", 0, 0, []byte("c"), noProps)
	noPacket(t, watcher, "subscriber while the first message is being captured")
	noPacket(t, rc, "publisher while the first message is being captured")
	g.release <- nil
	for _, want := range []string{"keep/1", "local/2", "local/3"} {
		watcher.expectPublish(want)
	}
	for _, id := range []uint16{1, 2} {
		rc.expectAck(packets.Puback, id)
	}
	// The pipe is idle again: the shortcut applies.
	rc.publish("local/4", 1, 3, []byte("d"), noProps)
	rc.expectAck(packets.Puback, 3)
	watcher.expectPublish("local/4")
}
