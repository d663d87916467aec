package broker

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged-dev/edged/wire"
)

func TestRoundTripV3(t *testing.T) {
	b := startBroker(t, Options{Config: localConfig()}, nil)
	sub := mustV3(t, addr(b, 0), "sub", v3opts{clean: true})
	got := make(chan pahov3.Message, 10)
	must(t, waitTok(t, sub.Subscribe("t/#", 2, func(_ pahov3.Client, m pahov3.Message) { got <- m })))
	pub := mustV3(t, addr(b, 0), "pub", v3opts{clean: true})
	for qos := byte(0); qos <= 2; qos++ {
		payload := fmt.Sprintf("qos%d", qos)
		must(t, waitTok(t, pub.Publish("t/x", qos, false, payload)))
		m := recv(t, got, 10*time.Second, fmt.Sprintf("qos %d not delivered", qos))
		if string(m.Payload()) != payload || m.Qos() != qos || m.Topic() != "t/x" {
			t.Fatalf("got %q qos %d topic %s", m.Payload(), m.Qos(), m.Topic())
		}
	}
}

func TestRoundTripV5(t *testing.T) {
	b := startBroker(t, Options{Config: localConfig()}, nil)
	sub := mustV5(t, addr(b, 0), "sub5")
	sa, err := sub.Subscribe(ctx10(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "t/#", QoS: 2}}})
	must(t, err)
	if sa.Reasons[0] != 2 {
		t.Fatalf("suback %v", sa.Reasons)
	}
	pub := mustV5(t, addr(b, 0), "pub5")
	for qos := byte(0); qos <= 2; qos++ {
		payload := fmt.Sprintf("qos%d", qos)
		_, err := pub.Publish(ctx10(t), &paho.Publish{Topic: "t/y", QoS: qos, Payload: []byte(payload),
			Properties: &paho.PublishProperties{ContentType: "text/plain", User: paho.UserProperties{{Key: "k", Value: "v"}}}})
		must(t, err)
		m := recv(t, sub.msgs, 10*time.Second, fmt.Sprintf("qos %d not delivered", qos))
		if string(m.Payload) != payload || m.QoS != qos || m.Properties.ContentType != "text/plain" || m.Properties.User.Get("k") != "v" {
			t.Fatalf("got %+v", m)
		}
	}
}

func TestRetained(t *testing.T) {
	b := startBroker(t, Options{Config: localConfig()}, nil)
	pub := mustV3(t, addr(b, 0), "pub", v3opts{clean: true})
	must(t, waitTok(t, pub.Publish("r/a", 1, true, "kept")))
	sub := mustV5(t, addr(b, 0), "late")
	_, err := sub.Subscribe(ctx10(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "r/#", QoS: 1}}})
	must(t, err)
	m := recv(t, sub.msgs, 10*time.Second, "retained message not delivered")
	if string(m.Payload) != "kept" || !m.Retain {
		t.Fatalf("got %q retain=%v", m.Payload, m.Retain)
	}
	// empty retained payload clears it
	must(t, waitTok(t, pub.Publish("r/a", 1, true, "")))
	eventually(t, 5*time.Second, "retained cleared", func() bool { return b.Status().Retained == 0 })
}

func TestWill(t *testing.T) {
	b := startBroker(t, Options{Config: localConfig()}, nil)
	sub := mustV3(t, addr(b, 0), "watcher", v3opts{clean: true})
	got := make(chan string, 1)
	must(t, waitTok(t, sub.Subscribe("status/#", 1, func(_ pahov3.Client, m pahov3.Message) { got <- string(m.Payload()) })))
	// a raw connection with a will, dropped without DISCONNECT
	rc := dialRawWill(t, addr(b, 0), "dev1", "status/dev1", "offline")
	_ = rc.Close()
	p := recv(t, got, 10*time.Second, "will not delivered")
	if p != "offline" {
		t.Fatalf("will payload %q", p)
	}
}

func TestPersistentSessionAcrossRestart(t *testing.T) {
	st := newMemState()
	o := Options{Config: localConfig(), State: st}
	b1, err := New(o)
	must(t, err)
	must(t, b1.Start(context.Background()))
	// persistent subscriber (clean session false), then offline
	sub, err := connectV3(t, addr(b1, 0), "persist", v3opts{clean: false})
	must(t, err)
	must(t, waitTok(t, sub.Subscribe("q/#", 1, func(pahov3.Client, pahov3.Message) {})))
	sub.Disconnect(100)
	eventually(t, 5*time.Second, "subscriber offline", func() bool { return b1.Status().ClientsConnected == 0 })
	pub := mustV3(t, addr(b1, 0), "pub", v3opts{clean: true})
	for i := range 3 {
		must(t, waitTok(t, pub.Publish("q/x", 1, false, fmt.Sprintf("m%d", i))))
	}
	must(t, waitTok(t, pub.Publish("q/retained", 1, true, "r")))
	eventually(t, 5*time.Second, "inflight persisted", func() bool { return len(st.keys(keyInflight)) == 4 })
	must(t, b1.Close())

	b2 := startBroker(t, o, nil)
	var mu sync.Mutex
	var got []string
	opts := pahov3.NewClientOptions().AddBroker("tcp://" + addr(b2, 0)).SetClientID("persist").SetCleanSession(false).
		SetAutoReconnect(false).SetDefaultPublishHandler(func(_ pahov3.Client, m pahov3.Message) {
		mu.Lock()
		got = append(got, string(m.Payload()))
		mu.Unlock()
	})
	c := pahov3.NewClient(opts)
	must(t, waitTok(t, c.Connect()))
	defer c.Disconnect(0)
	eventually(t, 10*time.Second, "queued messages after restart", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 4
	})
	mu.Lock()
	// mochi re-sends a session's queued messages sorted by creation second only, so the order
	// within one second is not kept (see report); compare as a set.
	sort.Strings(got)
	if strings.Join(got, ",") != "m0,m1,m2,r" {
		t.Errorf("got %v", got)
	}
	mu.Unlock()
	eventually(t, 5*time.Second, "inflight cleared after ack", func() bool { return len(st.keys(keyInflight)) == 0 })
	if len(st.keys(keyRetained)) != 1 || b2.Status().Retained < 1 {
		t.Errorf("retained not restored: %v", st.keys(keyRetained))
	}
}

func TestCleanSessionsNotPersisted(t *testing.T) {
	st := newMemState()
	b := startBroker(t, Options{Config: localConfig(), State: st}, nil)
	c := mustV3(t, addr(b, 0), "clean", v3opts{clean: true})
	must(t, waitTok(t, c.Subscribe("x/#", 1, func(pahov3.Client, pahov3.Message) {})))
	must(t, waitTok(t, c.Publish("x/1", 1, false, "a")))
	if k := st.keys(""); len(k) != 0 {
		t.Fatalf("clean session wrote %v", k)
	}
}

func TestTakeover(t *testing.T) {
	b := startBroker(t, Options{Config: localConfig()}, nil)
	lost := make(chan error, 1)
	first := mustV3(t, addr(b, 0), "same", v3opts{clean: true, onLost: func(err error) { lost <- err }})
	_ = first
	second := mustV3(t, addr(b, 0), "same", v3opts{clean: true})
	recv(t, lost, 10*time.Second, "first connection not taken over")
	got := make(chan string, 1)
	must(t, waitTok(t, second.Subscribe("to/#", 1, func(_ pahov3.Client, m pahov3.Message) { got <- string(m.Payload()) })))
	must(t, waitTok(t, second.Publish("to/me", 1, false, "hi")))
	recv(t, got, 10*time.Second, "second connection does not work")
	if n := b.Status().ClientsConnected; n != 1 {
		t.Fatalf("clients connected %d", n)
	}
}

func TestOversizedPacketRefused(t *testing.T) {
	cfg := localConfig()
	cfg.MaxPacketSize = 1024
	b := startBroker(t, Options{Config: cfg}, nil)
	c, ca, err := connectV5(t, addr(b, 0), &paho.Connect{ClientID: "big", CleanStart: true})
	must(t, err)
	if ca.Properties.MaximumPacketSize == nil || *ca.Properties.MaximumPacketSize != 1024 {
		t.Errorf("CONNACK maximum packet size %v", ca.Properties.MaximumPacketSize)
	}
	_ = c
	// paho refuses to send above the announced maximum itself, so send raw
	rc := dialRaw(t, addr(b, 0), 4, "raw-big", noProps)
	rc.publish("big/x", 1, 1, bytes.Repeat([]byte("x"), 2048), noProps)
	if pk, err := rc.read(10 * time.Second); err == nil {
		t.Fatalf("oversized publish answered with packet type %d", pk.FixedHeader.Type)
	}
	// others keep working
	small := mustV3(t, addr(b, 0), "small", v3opts{clean: true})
	must(t, waitTok(t, small.Publish("small/x", 1, false, "ok")))
}

func TestInlinePublishSubscribe(t *testing.T) {
	cap := &recCapturer{}
	b := startBroker(t, Options{Config: localConfig()}, cap)
	got := make(chan *Message, 10)
	unsub, err := b.Subscribe("cmd/#", func(m *Message) { got <- m })
	must(t, err)
	// from a network client to the inline subscription
	pub := mustV5(t, addr(b, 0), "pubber")
	_, err = pub.Publish(ctx10(t), &paho.Publish{Topic: "cmd/dev", QoS: 1, Payload: []byte("on")})
	must(t, err)
	m := <-got
	if m.Topic != "cmd/dev" || string(m.Payload) != "on" || m.ClientID != "pubber" {
		t.Fatalf("inline subscriber got %+v", m)
	}
	// inline publish to a network subscriber, capture time from edged-time
	sub := mustV5(t, addr(b, 0), "subber")
	_, err = sub.Subscribe(ctx10(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "sensors/#", QoS: 1}}})
	must(t, err)
	must(t, b.Publish(&Message{Topic: "sensors/meter1", Payload: []byte("42"), QoS: 1,
		UserProps: []wire.UserProp{{Key: "unit", Value: "W"}, {Key: TimeProp, Value: "1700000000123"}}}))
	p := recv(t, sub.msgs, 10*time.Second, "inline publish not delivered")
	if string(p.Payload) != "42" || p.Properties.User.Get("unit") != "W" || p.Properties.User.Get(TimeProp) != "" {
		t.Fatalf("network subscriber got %+v props %+v", p, p.Properties.User)
	}
	cm := cap.find("sensors/meter1")
	if cm == nil || !cm.Inline || cm.Time.UnixMilli() != 1700000000123 || len(cm.UserProps) != 1 || cm.UserProps[0].Key != "unit" {
		t.Fatalf("captured inline %+v", cm)
	}
	unsub()
	unsub()
	if err := b.Publish(&Message{Topic: "bad/+"}); err == nil {
		t.Fatal("publish to wildcard topic accepted")
	}
}

func TestStatusAndMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := localConfig()
	cfg.Listeners = append(cfg.Listeners, Listener{Type: ListenerWebsocket, Address: "127.0.0.1:0"})
	b := startBroker(t, Options{Config: cfg, Registerer: reg}, nil)
	st := b.Status()
	for i, l := range st.Listeners {
		if l.Bound == "" || strings.HasSuffix(l.Bound, ":0") {
			t.Errorf("listener %d bound %q", i, l.Bound)
		}
	}
	c := mustV3(t, addr(b, 0), "m", v3opts{clean: true})
	must(t, waitTok(t, c.Publish("m/x", 1, false, "x")))
	eventually(t, 5*time.Second, "metrics", func() bool {
		return gatherValue(t, reg, "edged_clients_connected") == 1 &&
			gatherValue(t, reg, "edged_messages_received_total") >= 1
	})
	if mfs, err := reg.Gather(); err != nil || len(mfs) != 10 { // 7 + 2 backpressure + refusals
		t.Fatalf("metric families %d %v", len(mfs), err)
	}
}

func gatherValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	must(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			return m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func TestCloseIdempotentAndNoLeaks(t *testing.T) {
	before := countGoroutines()
	for range 2 {
		cfg := localConfig()
		cfg.Listeners = append(cfg.Listeners, Listener{Type: ListenerWebsocket, Address: "127.0.0.1:0"})
		b, err := New(Options{Config: cfg, State: newMemState()})
		must(t, err)
		b.SetCapturer(&recCapturer{})
		must(t, b.Start(context.Background()))
		c, err := connectV3(t, addr(b, 0), "leak", v3opts{clean: true})
		must(t, err)
		must(t, waitTok(t, c.Publish("x/y", 1, false, "z")))
		ws, err := connectV3(t, addr(b, 1), "leakws", v3opts{clean: true, scheme: "ws"})
		must(t, err)
		_ = ws
		idle := dialIdle(t, addr(b, 0)) // connected, never sends CONNECT
		must(t, b.Close())
		must(t, b.Close())
		_ = idle.Close()
		c.Disconnect(0)
		ws.Disconnect(0)
		if err := b.Start(context.Background()); err == nil {
			t.Fatal("Start after Close succeeded")
		}
	}
	eventually(t, 10*time.Second, fmt.Sprintf("goroutines back to %d", before), func() bool { return countGoroutines() <= before })
	// never started
	b, err := New(Options{Config: localConfig()})
	must(t, err)
	must(t, b.Close())
}

func TestStartBindError(t *testing.T) {
	b1 := startBroker(t, Options{Config: localConfig()}, nil)
	cfg := localConfig()
	cfg.Listeners = append(cfg.Listeners, Listener{Type: ListenerTCP, Address: addr(b1, 0)})
	b2, err := New(Options{Config: cfg})
	must(t, err)
	err = b2.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "listeners[1]") || !strings.Contains(err.Error(), addr(b1, 0)) {
		t.Fatalf("bind error = %v", err)
	}
	must(t, b2.Close())
}

// Close while clients disconnect on their own must not hang: mochi v2.7.9's
// Clients.GetByListener re-enters its read lock and deadlocks against a concurrent Delete, so
// the broker closes listener clients itself (closeListenerClients). The interleaving is a narrow
// race this test does not reliably hit (it was seen once in a full -race run under load); it
// guards the shutdown path with clients leaving at the same time.
func TestCloseWhileClientsDisconnect(t *testing.T) {
	for round := range 15 {
		b := startBroker(t, Options{Config: localConfig()}, nil)
		var clients []pahov3.Client
		for i := range 20 {
			clients = append(clients, mustV3(t, addr(b, 0), fmt.Sprintf("r%d-c%d", round, i), v3opts{clean: true}))
		}
		done := make(chan struct{})
		go func() {
			for _, c := range clients {
				go c.Disconnect(0) // clean sessions: mochi deletes each client as it leaves
			}
		}()
		go func() { _ = b.Close(); close(done) }()
		recv(t, done, 10*time.Second, fmt.Sprintf("round %d: Close hung while clients disconnected", round))
	}
}
