package bridge_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/internal/testutil"
	"github.com/edged-dev/edged/storage"
)

// bareBridge is a Bridge on a fresh store with its own registry, without a local broker:
// messages go in through Capture.
type bareBridge struct {
	b    *bridge.Bridge
	db   *storage.DB
	reg  *prometheus.Registry
	logs *testutil.LockedBuffer
}

func startBareBridge(t *testing.T, cfgs ...bridge.ConnectorConfig) *bareBridge {
	t.Helper()
	x := &bareBridge{reg: prometheus.NewRegistry(), logs: &testutil.LockedBuffer{}}
	log := slog.New(slog.NewJSONHandler(x.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	db, err := storage.Open(storage.Options{Dir: t.TempDir(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	x.db = db
	b, err := bridge.New(bridge.Options{Connectors: cfgs, GatewayID: "gw1", DB: db, Defaults: storage.Defaults(), Logger: log, Registerer: x.reg})
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	x.b = b
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; db.Close() })
	return x
}

func (x *bareBridge) capture(t *testing.T, topic string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := x.b.Capture(context.Background(), &broker.Message{Topic: topic, Payload: []byte(fmt.Sprintf("seq=%d", i)), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
}

func (x *bareBridge) status(t *testing.T, name string) bridge.ConnectorStatus {
	for _, st := range x.b.Status() {
		if st.Name == name {
			return st
		}
	}
	t.Fatalf("no connector %q", name)
	return bridge.ConnectorStatus{}
}

// TestNoRedirects: a 301 (which Go would re-send as a body-less GET, and a 200 to it would
// delete messages never delivered) and a 307 (which would carry the body, the signature and
// the API key header to another host) are failures: nothing is deleted, the second server
// gets nothing, status says why, and the failure is counted as reason "redirect". The same
// for a redirected WebSocket handshake and MQTT over WebSocket.
func TestNoRedirects(t *testing.T) {
	var stolen atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stolen.Add(1)
		w.WriteHeader(http.StatusOK) // the trap: a 200 here used to confirm the batch
	}))
	defer other.Close()
	for _, c := range []struct {
		name, typ, scheme string
		code              int
		extra             string
	}{
		{"http301", "http", "http", http.StatusMovedPermanently, "headers: {X-Api-Key: " + secretHeader + "}\nbatch: {max_messages: 10}\n"},
		{"http307", "http", "http", http.StatusTemporaryRedirect, "headers: {X-Api-Key: " + secretHeader + "}\nauth: {type: hmac, key_id: k, secret_file: " + writeSecret(t, "hmac", "hmacsecretvalue") + "}\n"},
		{"http308", "http", "http", http.StatusPermanentRedirect, ""},
		{"ws302", "websocket", "ws", http.StatusFound, "headers: {X-Api-Key: " + secretHeader + "}\n"},
		{"mqttws301", "mqtt", "ws", http.StatusMovedPermanently, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			stolen.Store(0)
			var asked atomic.Int32
			first := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				asked.Add(1)
				http.Redirect(w, r, other.URL+"/steal?token="+secretToken, c.code)
			}))
			defer first.Close()
			u := strings.Replace(first.URL, "http", c.scheme, 1) + "/v1"
			cfg := decodeConnector(t, fmt.Sprintf("name: %s\ntype: %s\nurl: %s\nbackoff: {min: 10ms, max: 50ms}\nbreaker: {failures: -1}\n%sforward: [{from: \"t/#\", to: \"r\"}]\n",
				c.name, c.typ, u, c.extra))
			x := startBareBridge(t, cfg)
			x.capture(t, "t/a", 30)
			waitFor(t, 20*time.Second, func() error {
				v, _ := testutil.MetricValue(t, x.reg, "edged_bridge_failed_total", map[string]string{"connector": c.name, "reason": "redirect"})
				if v < 3 || asked.Load() < 3 {
					st := x.status(t, c.name)
					return fmt.Errorf("%v redirect failures, %d requests; state %s: %s", v, asked.Load(), st.State, st.LastError)
				}
				return nil
			})
			st := x.status(t, c.name)
			if st.Depth != 30 || st.Sent != 0 || st.DeadLetters != 0 {
				t.Fatalf("messages left the outbox: depth %d sent %d dead %d", st.Depth, st.Sent, st.DeadLetters)
			}
			if n := stolen.Load(); n != 0 {
				t.Fatalf("the redirect target got %d request(s)", n)
			}
			want := fmt.Sprintf("http %d: redirected to %s/steal?token=REDACTED; fix the url", c.code, other.URL)
			if !strings.Contains(st.LastError, want) {
				t.Fatalf("last_error %q lacks %q", st.LastError, want)
			}
			if st.State != bridge.StateBackingOff && st.State != bridge.StateConnecting && st.State != bridge.StateConnected {
				t.Fatalf("state %s", st.State)
			}
			assertNoSecret(t, "log", x.logs.String())
		})
	}
}
