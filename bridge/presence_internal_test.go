package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/internal/testutil"
	"github.com/edged-dev/edged/storage"
)

// Health reports carry each outbox's drops since the previous report, not since start.
func TestHealthReportDropsSinceLast(t *testing.T) {
	db, err := storage.Open(storage.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	cfg := decode(t, "mqtt", "name: cloud\ntype: mqtt\nurl: tcp://127.0.0.1:1\noutbox: {max_messages: 5}\nforward: [{from: \"s/#\", to: \"up/{topic}\"}]\n")
	b, err := New(Options{Connectors: []ConnectorConfig{cfg}, GatewayID: "gw1", DB: db, Defaults: storage.Defaults(), Version: "v9"})
	if err != nil {
		t.Fatal(err)
	}
	report := b.healthReporter()
	capture := func(n int) {
		for i := 0; i < n; i++ {
			if err := b.Capture(context.Background(), &broker.Message{Topic: "s/x", Payload: []byte(fmt.Sprint(i)), QoS: 1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	capture(12)
	r := report()
	if r.Version != "v9" || r.Gateway != "gw1" || r.DiskFree <= 0 || len(r.Connectors) != 1 {
		t.Fatalf("report %+v", r)
	}
	if c := r.Connectors[0]; c.Depth != 5 || c.DropsSinceLast != 7 {
		t.Fatalf("first report: depth %d, drops since last %d; want 5 and 7", c.Depth, c.DropsSinceLast)
	}
	if c := report().Connectors[0]; c.DropsSinceLast != 0 {
		t.Fatalf("second report: drops since last %d, want 0", c.DropsSinceLast)
	}
	capture(2)
	if c := report().Connectors[0]; c.DropsSinceLast != 2 {
		t.Fatalf("third report: drops since last %d, want 2", c.DropsSinceLast)
	}
}

// A probe needs the protocol: mosquitto passes it (both protocol versions); an endpoint that
// accepts TCP and never answers fails it within the probe's deadline.
func TestMQTTProbe(t *testing.T) {
	cloud := testutil.StartMosquitto(t, 0, "")
	hole, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := hole.Accept()
			if err != nil {
				return
			}
			held <- c // accepted, never answered
		}
	}()
	t.Cleanup(func() {
		hole.Close()
		for {
			select {
			case c := <-held:
				c.Close()
			default:
				return
			}
		}
	})
	for _, proto := range []string{"5", "3.1.1"} {
		cfg := decode(t, "mqtt", fmt.Sprintf("name: c\ntype: mqtt\nprotocol: %q\nurls: [tcp://%s, tcp://%s]\nforward: [{from: a, to: b}]\n", proto, cloud.Addr, hole.Addr()))
		conn, err := newMQTT(cfg, Env{Name: "c", GatewayID: "gw1", Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		fo := conn.(Failoverable)
		if eps := fo.Endpoints(); len(eps) != 2 || !strings.Contains(eps[1], hole.Addr().String()) {
			t.Fatalf("endpoints %v", eps)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := fo.Probe(ctx, 0); err != nil {
			t.Errorf("protocol %s: probe of mosquitto: %v", proto, err)
		}
		cancel()
		ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
		began := time.Now()
		if err := fo.Probe(ctx, 1); err == nil {
			t.Errorf("protocol %s: probe of a silent endpoint passed", proto)
		}
		cancel()
		if took := time.Since(began); took > 3*time.Second {
			t.Errorf("protocol %s: probe of a silent endpoint took %v, want about its 300ms deadline", proto, took)
		}
	}
}
