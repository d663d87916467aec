package broker

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// The client table lists real connections with user, address, protocol, subscription count
// and connect time, and Disconnect closes one (an MQTT 5 client hears 0x98).
func TestClientTableListAndDisconnect(t *testing.T) {
	cfg := localConfig()
	cfg.AllowAnonymous = true
	b, err := New(Options{Config: cfg})
	must(t, err)
	tbl, err := b.NewClientTable()
	must(t, err)
	must(t, b.Start(context.Background()))
	t.Cleanup(func() { _ = b.Close() })

	before := time.Now()
	v3 := mustV3(t, addr(b, 0), "dev-v3", v3opts{clean: true})
	if tok := v3.Subscribe("a/#", 1, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	if tok := v3.Subscribe("b/+", 0, nil); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	var reason byte
	var mu sync.Mutex
	gone := make(chan struct{})
	conn, err := net.Dial("tcp", addr(b, 0))
	must(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	c5 := paho.NewClient(paho.ClientConfig{Conn: conn, OnServerDisconnect: func(d *paho.Disconnect) {
		mu.Lock()
		reason = d.ReasonCode
		mu.Unlock()
		close(gone)
	}})
	_, err = c5.Connect(ctx10(t), &paho.Connect{ClientID: "dev-v5", CleanStart: true, KeepAlive: 30})
	must(t, err)

	var list []ClientInfo
	// mochi lists a client before OnSessionEstablished (which records the connect time) has
	// run, and that runs after the CONNACK is written: wait for both.
	eventually(t, 5*time.Second, "two clients listed with their connect times", func() bool {
		list = tbl.List()
		return len(list) == 2 && list[0].Subscriptions == 2 && !list[0].ConnectedAt.IsZero() && !list[1].ConnectedAt.IsZero()
	})
	if list[0].ID != "dev-v3" || list[1].ID != "dev-v5" {
		t.Fatalf("ids: %+v", list)
	}
	if list[0].ProtocolVersion != 4 || list[1].ProtocolVersion != 5 {
		t.Fatalf("protocol versions: %d %d", list[0].ProtocolVersion, list[1].ProtocolVersion)
	}
	for _, c := range list {
		if c.ConnectedAt.Before(before.Add(-time.Second)) || c.ConnectedAt.After(time.Now()) {
			t.Fatalf("%s connected_at %v, test began %v", c.ID, c.ConnectedAt, before)
		}
		if c.Remote == "" || c.Listener != "tcp0" {
			t.Fatalf("%s remote %q listener %q", c.ID, c.Remote, c.Listener)
		}
	}

	must(t, tbl.Disconnect("dev-v5"))
	recv(t, gone, 10*time.Second, "dev-v5 was not disconnected")
	mu.Lock()
	if reason != 0x98 {
		t.Fatalf("disconnect reason %#x, want 0x98 administrative action", reason)
	}
	mu.Unlock()
	eventually(t, 5*time.Second, "dev-v5 gone from the list", func() bool { return len(tbl.List()) == 1 })
	if err := tbl.Disconnect("dev-v5"); !errors.Is(err, ErrNoClient) {
		t.Fatalf("second disconnect: %v, want ErrNoClient", err)
	}
	if err := tbl.Disconnect("inline"); !errors.Is(err, ErrNoClient) {
		t.Fatalf("disconnect of the inline client: %v, want ErrNoClient", err)
	}
}

// A tap sees live publishes (with the publisher's id) and marks the retained replay.
func TestTap(t *testing.T) {
	cfg := localConfig()
	cfg.AllowAnonymous = true
	b := startBroker(t, Options{Config: cfg}, nil)
	pub := mustV3(t, addr(b, 0), "pub1", v3opts{clean: true})
	if tok := pub.Publish("s/kept", 1, true, "old"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	eventually(t, 5*time.Second, "retained stored", func() bool { return b.Status().Retained == 1 })

	got := make(chan TapMessage, 10)
	stop, err := b.Tap("s/#", func(m TapMessage) { got <- m })
	must(t, err)
	first := <-got
	if first.Topic != "s/kept" || !first.Replayed {
		t.Fatalf("first tap message %+v, want the retained replay", first)
	}
	if tok := pub.Publish("s/live", 0, false, "new"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	for live := false; !live; {
		m := recv(t, got, 5*time.Second, "tap saw no live message")
		// The retained publish may still be on its way to subscribers when the tap
		// starts (mochi stores the retained copy first), so it can come once more.
		if m.Topic == "s/kept" {
			continue
		}
		if m.Topic != "s/live" || string(m.Payload) != "new" || m.ClientID != "pub1" || m.Replayed {
			t.Fatalf("live tap message %+v replayed=%v", m.Message, m.Replayed)
		}
		live = true
	}
	stop()
	stop()
	if tok := pub.Publish("s/after", 0, false, "x"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	// A round trip through a second tap proves the publish was distributed before we look.
	seen := make(chan struct{}, 1)
	stop2, err := b.Tap("s/probe", func(TapMessage) { seen <- struct{}{} })
	must(t, err)
	defer stop2()
	if tok := pub.Publish("s/probe", 0, false, "p"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	<-seen
	select {
	case m := <-got:
		t.Fatalf("stopped tap still delivered %q", m.Topic)
	default:
	}
	if _, err := b.Tap("a/#/b", func(TapMessage) {}); err == nil {
		t.Fatal("invalid filter accepted")
	}
}
