package broker

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// The hook reads mochi's unexported write queue; a mochi upgrade that renames it must fail
// here (and in TestMochiOutboundQueue) rather than silently turn backpressure off.
func TestBackpressureQueueLen(t *testing.T) {
	cfg := localConfig()
	cfg.MaxQueued = 64
	b := startBroker(t, Options{Config: cfg}, nil)
	if b.bp == nil {
		t.Fatal("backpressure hook not installed (mochi Client.State.outbound not found?)")
	}
	mustV3(t, addr(b, 0), "ql", v3opts{clean: true})
	var cl *mqtt.Client
	eventually(t, 5*time.Second, "client", func() bool { cl, _ = b.srv.Clients.Get("ql"); return cl != nil })
	if n := queueLen(cl); n != 0 {
		t.Fatalf("queueLen = %d, want 0", n)
	}
	if c := reflect.ValueOf(cl).Elem().FieldByIndex(outboundField).Cap(); c != 64 {
		t.Fatalf("queue capacity %d, want max_queued 64", c)
	}
	if b.bp.high != 48 || b.bp.low != 16 {
		t.Fatalf("marks %d/%d, want 48/16", b.bp.high, b.bp.low)
	}

	off := localConfig()
	off.BackpressureWait = -1
	if b2 := startBroker(t, Options{Config: off}, nil); b2.bp != nil {
		t.Fatal("backpressure_wait < 0 must turn the hook off")
	}
}

// dialSmallBuffer connects with a small receive buffer, so that the kernel holds few
// messages for a subscriber that reads slowly or not at all and mochi's queue really fills.
func dialSmallBuffer(t testing.TB, address string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", address)
	must(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// slowSubscriber is an MQTT 5 paho client whose handler reads steadily but slowly (1 ms per
// every 5 messages), on a small receive buffer. It counts distinct payloads.
type slowSubscriber struct {
	mu   sync.Mutex
	seen map[string]bool
	n    atomic.Int64
}

func newSlowSubscriber(t *testing.T, address, topic string, pause bool, qos byte) *slowSubscriber {
	t.Helper()
	s := &slowSubscriber{seen: map[string]bool{}}
	conn := dialSmallBuffer(t, address)
	var got int
	c := paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			s.mu.Lock()
			s.seen[string(pr.Packet.Payload[:16])] = true
			s.mu.Unlock()
			s.n.Add(1)
			if got++; pause && got%5 == 0 {
				time.Sleep(time.Millisecond)
			}
			return true, nil
		}},
	})
	if _, err := c.Connect(ctx10(t), &paho.Connect{ClientID: "slow-" + topic, CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	if _, err := c.Subscribe(ctx10(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: qos}}}); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *slowSubscriber) distinct() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

// publishAll runs n paho publishers sending per QoS 0 messages each (payload starts with a
// unique 16-byte id, padded to size) as fast as paho takes them, and waits for them.
func publishAll(t *testing.T, address, topic string, n, per, size int, qos byte) {
	t.Helper()
	var wg sync.WaitGroup
	for p := range n {
		c := mustV3(t, address, fmt.Sprintf("pub%d-%s", p, topic), v3opts{clean: true})
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last pahov3.Token
			for i := range per {
				payload := make([]byte, size)
				copy(payload, fmt.Sprintf("%04d-%011d", p, i))
				last = c.Publish(topic, qos, false, payload)
			}
			if !last.WaitTimeout(60 * time.Second) {
				t.Errorf("publisher %d: last publish not sent", p)
			}
		}()
	}
	wg.Wait()
}

// Four fast QoS 0 publishers, one subscriber that reads steadily but slower than all of them
// together, max_queued 64: nothing is dropped, the publishers are held back instead. The
// wait is long (5 s) so that a scheduling hiccup under -race cannot time it out.
func TestBackpressureNoDrops(t *testing.T) {
	const pubs, per, size = 4, 2500, 1000
	for _, mode := range []string{"capture", "no-capturer"} {
		t.Run(mode, func(t *testing.T) {
			var c Capturer
			if mode == "capture" {
				c = &countCapturer{}
			}
			b := startBackpressure(t, 5*time.Second, c, func(cfg *Config) { cfg.MaxQueued = 64 })
			sub := newSlowSubscriber(t, addr(b, 0), "bp/"+mode, true, 0)
			start := time.Now()
			publishAll(t, addr(b, 0), "bp/"+mode, pubs, per, size, 0)
			eventually(t, 60*time.Second, "all messages delivered", func() bool { return sub.n.Load() >= pubs*per })
			st := b.Status()
			t.Logf("%d messages in %s; waits %d, timeouts %d, dropped %d", sub.n.Load(), time.Since(start).Round(time.Millisecond),
				st.BackpressureWaits, st.BackpressureTimeouts, st.MessagesDropped)
			if st.MessagesDropped != 0 {
				t.Errorf("dropped %d messages", st.MessagesDropped)
			}
			if d := sub.distinct(); d != pubs*per {
				t.Errorf("subscriber got %d distinct messages, want %d", d, pubs*per)
			}
			if st.BackpressureWaits == 0 {
				t.Error("no backpressure wait: the scenario did not fill the subscriber's queue")
			}
			if st.BackpressureTimeouts != 0 {
				t.Errorf("%d timeouts", st.BackpressureTimeouts)
			}
		})
	}
}

// The same with QoS 1 and a small in-flight window: mochi drops a QoS 1 delivery when the
// subscriber already has max_inflight unacknowledged messages; the publishers wait instead.
func TestBackpressureInflightNoDrops(t *testing.T) {
	const pubs, per, size = 4, 1500, 200
	// 64: the marks (48 / 16) leave more headroom above high water than the four
	// publishers can add between their checks.
	b := startBackpressure(t, 5*time.Second, &countCapturer{}, func(cfg *Config) { cfg.MaxInflight = 64 })
	sub := newSlowSubscriber(t, addr(b, 0), "bpq1/x", true, 1)
	publishAll(t, addr(b, 0), "bpq1/x", pubs, per, size, 1)
	eventually(t, 60*time.Second, "all messages delivered", func() bool {
		if sub.distinct() >= pubs*per {
			return true
		}
		if st := b.Status(); st.MessagesDropped > 0 {
			t.Fatalf("dropped %d messages (waits %d, timeouts %d)", st.MessagesDropped, st.BackpressureWaits, st.BackpressureTimeouts)
		}
		return false
	})
	st := b.Status()
	t.Logf("waits %d, timeouts %d, dropped %d", st.BackpressureWaits, st.BackpressureTimeouts, st.MessagesDropped)
	if st.MessagesDropped != 0 {
		t.Errorf("dropped %d messages", st.MessagesDropped)
	}
	if st.BackpressureWaits == 0 {
		t.Error("no backpressure wait: the scenario did not fill the in-flight window")
	}
}

// startBackpressure starts a broker with backpressure_wait wait and the limits set sets,
// capturing into c.
func startBackpressure(t *testing.T, wait time.Duration, c Capturer, set func(*Config)) *Broker {
	t.Helper()
	cfg := localConfig()
	cfg.BackpressureWait = wait
	set(&cfg)
	return startBroker(t, Options{Config: cfg}, c)
}

// countCapturer accepts everything (recCapturer would keep 10 MB of messages).
type countCapturer struct{ n atomic.Int64 }

func (c *countCapturer) Capture(context.Context, *Message) error { c.n.Add(1); return nil }

// stalledSubscriber connects and subscribes over raw TCP, then never reads again.
func stalledSubscriber(t *testing.T, address, topic string) {
	t.Helper()
	conn := dialSmallBuffer(t, address)
	rc := &rawClient{t: t, conn: conn, r: bufio.NewReader(conn), v: 4}
	rc.send(packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect:     packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: "stalled", Keepalive: 60, Clean: true},
	})
	rc.expect(packets.Connack)
	rc.subscribe(1, packets.Subscription{Filter: topic})
}

// A subscriber that stops reading costs the publishers one timeout episode: after it, a
// second, fast subscriber receives everything, and the stalled one's messages are dropped.
func TestBackpressureStalledSubscriber(t *testing.T) {
	const pubs, per, size = 4, 2500, 1000
	b := startBackpressure(t, 300*time.Millisecond, &countCapturer{}, func(cfg *Config) { cfg.MaxQueued = 64 })
	stalledSubscriber(t, addr(b, 0), "st/x")
	fast := newSlowSubscriber(t, addr(b, 0), "st/x", false, 0)

	start := time.Now()
	publishAll(t, addr(b, 0), "st/x", pubs, per, size, 0)
	for deadline := time.Now().Add(30 * time.Second); fast.n.Load() < pubs*per && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if n := fast.n.Load(); n < pubs*per {
		st := b.Status()
		t.Fatalf("fast subscriber got %d of %d in 30s; waits %d, timeouts %d, dropped %d", n, pubs*per,
			st.BackpressureWaits, st.BackpressureTimeouts, st.MessagesDropped)
	}
	took := time.Since(start)
	st := b.Status()
	t.Logf("%d messages in %s; waits %d, timeouts %d, dropped %d", fast.n.Load(), took.Round(time.Millisecond),
		st.BackpressureWaits, st.BackpressureTimeouts, st.MessagesDropped)
	if d := fast.distinct(); d != pubs*per {
		t.Errorf("fast subscriber got %d distinct messages, want %d", d, pubs*per)
	}
	// One episode: every distributing goroutine (one per publisher) waits at most once.
	if st.BackpressureTimeouts < 1 || st.BackpressureTimeouts > pubs {
		t.Errorf("%d timeouts, want 1..%d (one episode)", st.BackpressureTimeouts, pubs)
	}
	if st.MessagesDropped == 0 {
		t.Error("nothing dropped for the stalled subscriber")
	}
}

// Close releases publishers waiting for a stalled subscriber at once, and nothing leaks.
func TestBackpressureCloseWhileWaiting(t *testing.T) {
	before := countGoroutines()
	cfg := localConfig()
	cfg.MaxQueued = 16
	cfg.BackpressureWait = 10 * time.Second
	b, err := New(Options{Config: cfg})
	must(t, err)
	b.SetCapturer(&countCapturer{})
	must(t, b.Start(context.Background()))
	stalledSubscriber(t, addr(b, 0), "cl/x")
	var pcs []pahov3.Client
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for p := range 2 {
		c := mustV3(t, addr(b, 0), fmt.Sprintf("clpub%d", p), v3opts{clean: true})
		pcs = append(pcs, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := make([]byte, 1000)
			for {
				select {
				case <-stop:
					return
				default:
				}
				c.Publish("cl/x", 0, false, payload).WaitTimeout(100 * time.Millisecond)
			}
		}()
	}
	// Inline publishes wait too (on the caller's goroutine).
	inlineDone := make(chan struct{})
	go func() {
		defer close(inlineDone)
		for b.Publish(&Message{Topic: "cl/x", Payload: make([]byte, 1000)}) == nil {
		}
	}()
	eventually(t, 20*time.Second, "a publisher waiting", func() bool { return b.Status().BackpressureWaits > 0 })
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	must(t, recv(t, closed, 3*time.Second, "Close hangs while publishers wait"))
	recv(t, inlineDone, 3*time.Second, "Broker.Publish still blocked after Close")
	if n := b.Status().BackpressureTimeouts; n != 0 {
		t.Errorf("%d timeouts: Close should have released the waiters", n)
	}
	close(stop)
	wg.Wait()
	for _, c := range pcs {
		c.Disconnect(0)
	}
	eventually(t, 10*time.Second, fmt.Sprintf("goroutines back to %d", before), func() bool { return countGoroutines() <= before })
}

func TestBackpressureConfig(t *testing.T) {
	c := localConfig()
	c.ApplyDefaults()
	if c.BackpressureWait != DefaultBackpressure {
		t.Fatalf("default backpressure_wait %s", c.BackpressureWait)
	}
	c.BackpressureWait = 11 * time.Second
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "backpressure_wait") {
		t.Fatalf("11s accepted: %v", err)
	}
	c.BackpressureWait = -1
	must(t, c.Validate())
}
