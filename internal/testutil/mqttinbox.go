package testutil

import (
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Subscribe subscribes c to filter at QoS 1; the messages arrive on the returned channel
// (buffered: a test reads them with Expect).
func Subscribe(t testing.TB, c mqtt.Client, filter string) <-chan mqtt.Message {
	t.Helper()
	ch := make(chan mqtt.Message, 64)
	// Registered after the client's own cleanup, so it runs first: a handler blocked on a full
	// channel returns, and the client's Disconnect (which waits for its handlers) cannot hang.
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	tok := c.Subscribe(filter, 1, func(_ mqtt.Client, m mqtt.Message) {
		select {
		case ch <- m:
		case <-done:
		}
	})
	if !tok.WaitTimeout(20 * time.Second) {
		t.Fatalf("subscribe %s: no SUBACK within 20s", filter)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("subscribe %s: %v", filter, err)
	}
	return ch
}

// Expect waits up to within for the next message on ch and fails unless it has topic and
// payload.
func Expect(t testing.TB, ch <-chan mqtt.Message, topic, payload string, within time.Duration) {
	t.Helper()
	select {
	case m := <-ch:
		if m.Topic() != topic || string(m.Payload()) != payload {
			t.Fatalf("got %s %q, want %s %q", m.Topic(), m.Payload(), topic, payload)
		}
	case <-time.After(within):
		t.Fatalf("no message on %s within %v", topic, within)
	}
}
