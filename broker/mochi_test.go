package broker

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edged-dev/edged/internal/testutil"
)

// One test per assumption listed in mochi.go.

// Any mochi upgrade must re-read mochi.go: the assumptions there were checked against v2.7.9,
// which go.mod pins.
func TestMochiVersion(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "go.mod"))
	must(t, err)
	m := regexp.MustCompile(`(?m)^\s*github.com/mochi-mqtt/server/v2 (\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("mochi not required in go.mod")
	}
	if v := string(m[1]); v != "v2.7.9" {
		t.Fatalf("mochi %s: re-check every assumption in broker/mochi.go (written for v2.7.9), then update this test", v)
	}
}

// Assumption 1.
func TestMochiOutboundQueue(t *testing.T) {
	if outboundField == nil {
		t.Fatal("mochi Client.State.outbound (chan *packets.Packet) not found: backpressure would be disabled")
	}
	cfg := localConfig()
	cfg.MaxQueued = 32
	b := startBroker(t, Options{Config: cfg}, nil)
	stalledSubscriber(t, addr(b, 0), "q/x")
	cl, ok := b.srv.Clients.Get("stalled")
	if !ok {
		t.Fatal("no client")
	}
	// a subscriber that does not read: its queue must fill up to max_queued, then mochi drops
	eventually(t, 30*time.Second, "queue full", func() bool {
		_ = b.Publish(&Message{Topic: "q/x", Payload: make([]byte, 4096)})
		return queueLen(cl) >= cfg.MaxQueued*3/4 || b.Status().MessagesDropped > 0
	})
	if n := queueLen(cl); n > cfg.MaxQueued {
		t.Fatalf("queue length %d above max_queued %d", n, cfg.MaxQueued)
	}
}

type aclTap struct {
	mqtt.HookBase
	n atomic.Int64
}

func (h *aclTap) ID() string           { return "test-tap" }
func (h *aclTap) Provides(b byte) bool { return b == mqtt.OnACLCheck }
func (h *aclTap) OnACLCheck(_ *mqtt.Client, topic string, write bool) bool {
	if topic == "tap/x" && !write {
		h.n.Add(1)
	}
	return false
}

// Assumption 2: one read ACL check per delivery, and a hook answering false before one that
// grants does not deny. On a bare mochi server with the tap first, as in New.
func TestMochiACLCheckPerDelivery(t *testing.T) {
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	tap := &aclTap{}
	must(t, srv.AddHook(tap, nil))
	must(t, srv.AddHook(new(auth.AllowHook), nil))
	l := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	must(t, srv.AddListener(l))
	must(t, srv.Serve())
	t.Cleanup(func() { _ = srv.Close() })
	var subs []*v5client
	for _, id := range []string{"s1", "s2", "s3"} {
		s := mustV5(t, l.Address(), id)
		_, err := s.Subscribe(ctx10(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "tap/+", QoS: 1}}})
		must(t, err)
		subs = append(subs, s)
	}
	must(t, srv.Publish("tap/x", []byte("x"), false, 1))
	for _, s := range subs {
		recv(t, s.msgs, 10*time.Second, "delivery denied or lost")
	}
	if n := tap.n.Load(); n != 3 {
		t.Fatalf("OnACLCheck called %d times for 3 deliveries", n)
	}
}

// Assumption 3: a captured QoS 2 flow completes (PUBREC by us, PUBREL/PUBCOMP by mochi),
// distribution through the shadow honours NoLocal and the counters count one message.
func TestMochiRejectAndShadowInject(t *testing.T) {
	capt := &recCapturer{}
	b := startBroker(t, Options{Config: localConfig()}, capt)
	rc := dialRaw(t, addr(b, 0), 5, "q2", noProps)
	rc.subscribe(1, packets.Subscription{Filter: "nl/#", Qos: 2, NoLocal: true})
	other := mustV5(t, addr(b, 0), "other")
	_, err := other.Subscribe(ctx10(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "nl/#", QoS: 2}}})
	must(t, err)
	received0 := b.Status().MessagesReceived
	for i := uint16(10); i < 13; i++ { // more than once: the receive quota must come back
		rc.publish("nl/x", 2, i, []byte("x"), noProps)
		if ack := rc.expect(packets.Pubrec); ack.ReasonCode != 0 || ack.PacketID != i {
			t.Fatalf("PUBREC %+v", ack)
		}
		rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: i})
		if pk := rc.expect(packets.Pubcomp); pk.PacketID != i {
			t.Fatalf("PUBCOMP for %d, want %d (NoLocal delivered to the publisher?)", pk.PacketID, i)
		}
		recv(t, other.msgs, 10*time.Second, "not distributed")
	}
	if d := b.Status().MessagesReceived - received0; d != 3 {
		t.Fatalf("messages_received grew by %d for 3 messages", d)
	}
	if capt.count() != 3 {
		t.Fatalf("captured %d", capt.count())
	}
	// mochi decrements after writing PUBCOMP, and the deliveries to "other" have their own flows
	eventually(t, 10*time.Second, "no inflight after completed QoS 2 flows", func() bool { return b.Status().Inflight == 0 })
}

// Assumption 4: our listeners close their clients with Broker.closeListenerClients.
func TestMochiListenerCloseReplaced(t *testing.T) {
	b := startBroker(t, Options{Config: localConfig()}, nil)
	for _, l := range *b.listeners.Load() {
		if l.closeClients == nil {
			t.Fatalf("listener %s closes clients with mochi's GetByListener (issue #488)", l.id)
		}
	}
}

// Assumption 5: a Reserved-type packet is not written, and DisconnectClient still closes.
func TestMochiUnwritablePacket(t *testing.T) {
	b := startBroker(t, Options{Config: localConfig()}, nil)
	rc := dialRaw(t, addr(b, 0), 4, "uw", noProps)
	cl, ok := b.srv.Clients.Get("uw")
	if !ok {
		t.Fatal("no client")
	}
	err := cl.WritePacket(unwritable(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}}))
	if err == nil {
		t.Fatal("WritePacket accepted an unwritable packet")
	}
	_ = b.srv.DisconnectClient(cl, packets.ErrNotAuthorized) // limitsHook makes it unwritable for 3.1.1
	_ = rc.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(rc.conn)
	var ne net.Error
	if len(got) != 0 || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("3.1.1 client got % x (err %v), want a plain close", got, err)
	}
}

// Assumption 6: the empty topic matches nothing.
func TestMochiEmptyTopicMatchesNothing(t *testing.T) {
	b := startBroker(t, Options{Config: localConfig()}, nil)
	unsub, err := b.Subscribe("#", func(*Message) {})
	must(t, err)
	defer unsub()
	obs := mustV5(t, addr(b, 0), "observer")
	_, err = obs.Subscribe(ctx10(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "#"}, {Topic: "+"}, {Topic: "$share/g/#"}}})
	must(t, err)
	if s := b.srv.Topics.Subscribers(""); len(s.Subscriptions)+len(s.InlineSubscriptions)+len(s.Shared) != 0 {
		t.Fatalf("mochi matches the empty topic: %+v", s)
	}
	if w := droppedWill(); w.TopicName != "" || w.Retain {
		t.Fatalf("droppedWill %+v", w)
	}
}

// Assumption 7 (the SUBACK codes and the store are checked by TestTopicLimitsSubscribe).
func TestMochiRefusedFilter(t *testing.T) {
	if mqtt.IsValidFilter(refusedFilter, false) {
		t.Fatalf("mochi accepts %q as a filter", refusedFilter)
	}
}
