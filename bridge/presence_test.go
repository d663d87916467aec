package bridge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/internal/testutil"
	"github.com/edged-dev/edged/wire"
)

// arrival is one message a cloud subscriber received.
type arrival struct {
	Cloud   string
	Topic   string
	Payload []byte
	ID      string // MQTT 5 user property id
	At      time.Time
}

// arrivals is a log shared by subscribers on several clouds, in arrival order.
type arrivals struct {
	mu  sync.Mutex
	log []arrival
}

func (a *arrivals) snapshot() []arrival {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]arrival(nil), a.log...)
}

// count is the number of messages cloud received.
func (a *arrivals) count(cloud string) int {
	n := 0
	for _, m := range a.snapshot() {
		if m.Cloud == cloud {
			n++
		}
	}
	return n
}

// record logs the envelopes a cloud of an http or websocket connector received.
func (a *arrivals) record(cloud string, envs []*wire.Envelope) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range envs {
		a.log = append(a.log, arrival{Cloud: cloud, Topic: e.Topic, Payload: e.Payload, ID: e.ID.String(), At: time.Now()})
	}
}

// checkFailedBack checks that seq 0..total-1 arrived over all clouds in order (checkSeqs),
// the last one at the primary.
func (a *arrivals) checkFailedBack(t testing.TB, total int) {
	t.Helper()
	all := a.snapshot()
	msgs := make([]cloudMsg, 0, len(all))
	for _, m := range all {
		msgs = append(msgs, cloudMsg{Topic: m.Topic, Payload: m.Payload, ID: m.ID})
	}
	checkSeqs(t, msgs, total, rawSeq)
	if last := all[len(all)-1]; last.Cloud != "primary" {
		t.Fatalf("the last message arrived at %s, want primary", last.Cloud)
	}
}

// subscribe attaches a subscriber named cloud to addr with filter, recording into a.
func (a *arrivals) subscribe(t testing.TB, cloud, addr, filter string) {
	t.Helper()
	subscribeV5(t, addr, "", "", filter, func(m cloudMsg) {
		a.mu.Lock()
		a.log = append(a.log, arrival{Cloud: cloud, Topic: m.Topic, Payload: m.Payload, ID: m.ID, At: time.Now()})
		a.mu.Unlock()
	})
}

// presencePayload is the word of a status message in format (raw, or an envelope's payload).
func presencePayload(t testing.TB, format string, b []byte) string {
	t.Helper()
	switch format {
	case bridge.FormatJSON:
		e, err := wire.UnmarshalEnvelopeJSON(b)
		if err != nil {
			t.Fatalf("status message is not a JSON envelope: %v: %q", err, b)
		}
		return string(e.Payload)
	case bridge.FormatCBOR:
		e, err := wire.UnmarshalEnvelope(b)
		if err != nil {
			t.Fatalf("status message is not a CBOR envelope: %v", err)
		}
		return string(e.Payload)
	}
	return string(b)
}

// The cloud learns that the gateway is gone within 1.5 x keepalive of its link going silent
// (the remote broker's keepalive timeout publishes the retained will `offline`), and sees
// `online` and a health report once the link is back. The link is blackholed, not closed: a
// closed socket would tell the broker at once, a dead radio link or a frozen process does not.
func TestPresenceWillOnBlackholedLink(t *testing.T) {
	// mosquitto 2.0 checks keepalives on a 5 s scan; mochi (the broker edged embeds, here as
	// the cloud) holds each connection to a read deadline of exactly 1.5 x keepalive, so with it
	// the bound is measured without the cloud's own slack.
	for _, tc := range []struct{ cloud, protocol, format string }{{"mosquitto", "5", "raw"}, {"mosquitto", "3.1.1", "json"},
		{"mochi", "5", "raw"}, {"mochi", "3.1.1", "json"}} {
		t.Run(tc.cloud+"_mqtt"+tc.protocol+"_"+tc.format, func(t *testing.T) {
			var cloudAddr string
			slack := 7 * time.Second
			if tc.cloud == "mosquitto" {
				cloud := testutil.StartMosquitto(t, 0, "log_type all\nlog_timestamp_format %T")
				defer func() {
					if t.Failed() {
						t.Logf("mosquitto:\n%s", cloud.Out.String())
					}
				}()
				cloudAddr = cloud.Addr
			} else {
				cloudAddr = startMochiCloud(t)
				// The broker's deadline is exact; what remains is delivery to the subscriber
				// and this test's polling.
				slack = 500 * time.Millisecond
			}
			var rec arrivals
			rec.subscribe(t, "cloud", cloudAddr, "gw1/#")
			px := testutil.StartRelay(t, cloudAddr, testutil.RelayForward)
			const keepalive = 2 * time.Second
			cfg := decodeConnector(t, fmt.Sprintf(`
name: cloud
type: mqtt
url: tcp://%s
protocol: "%s"
format: %s
keepalive: %v
connect_timeout: 2s
backoff: {min: 100ms, max: 1s}
presence: {topic: "{gateway_id}/status", health_topic: "{gateway_id}/health", health_interval: 1s}
forward:
  - {from: "sensors/#", to: "gw1/data/{topic}", qos: 1}
`, px.Addr(), tc.protocol, tc.format, keepalive))
			s := startStack(t, "", cfg)
			s.waitConnected("cloud")

			status := func() []string {
				var out []string
				for _, a := range rec.snapshot() {
					if a.Topic == "gw1/status" {
						out = append(out, presencePayload(t, tc.format, a.Payload))
					}
				}
				return out
			}
			healthAfter := func(from time.Time) *bridge.HealthReport {
				for _, a := range rec.snapshot() {
					if a.Topic != "gw1/health" || a.At.Before(from) {
						continue
					}
					body := []byte(presencePayload(t, tc.format, a.Payload))
					var r bridge.HealthReport
					if err := json.Unmarshal(body, &r); err != nil {
						t.Fatalf("health report is not JSON: %v: %q", err, body)
					}
					return &r
				}
				return nil
			}
			waitFor(t, 10*time.Second, func() error {
				if got := status(); len(got) < 1 || got[0] != bridge.PresenceOnline {
					return fmt.Errorf("status messages %v, want online", got)
				}
				if healthAfter(time.Time{}) == nil {
					return fmt.Errorf("no health report yet")
				}
				return nil
			})
			r := healthAfter(time.Time{})
			if r.Gateway != "gw1" || len(r.Connectors) != 1 || r.Connectors[0].Name != "cloud" || r.Time.IsZero() {
				t.Fatalf("health report %+v", r)
			}

			cut := time.Now()
			px.SetMode(testutil.RelayBlackhole)
			lastUp := px.LastUp()
			var took time.Duration
			waitFor(t, 4*keepalive+10*time.Second, func() error {
				got := status()
				if got[len(got)-1] != bridge.PresenceOffline {
					return fmt.Errorf("status messages %v, want offline last", got)
				}
				for _, a := range rec.snapshot() {
					if a.Topic == "gw1/status" && presencePayload(t, tc.format, a.Payload) == bridge.PresenceOffline {
						took = a.At.Sub(lastUp)
					}
				}
				return nil
			})
			t.Logf("offline seen %v after the last packet from edged, %v after the cut (keepalive %v; 1.5 x = %v)",
				took.Round(time.Millisecond), time.Since(cut).Round(time.Millisecond), keepalive, keepalive*3/2)
			// The broker decides when: mosquitto 2.0 scans keepalives every 5 s and compares
			// whole seconds strictly (now - last > 1.5 x keepalive), which adds up to 5 s + 2 s
			// to the 1.5 x keepalive of silence; mochi's read deadline is exact.
			if limit := keepalive*3/2 + slack; took > limit {
				t.Fatalf("offline %v after the last packet, want within 1.5 x keepalive (+%v of the %s broker's keepalive check) = %v", took, slack, tc.cloud, limit)
			}

			back := time.Now()
			px.SetMode(testutil.RelayForward)
			waitFor(t, 15*time.Second, func() error {
				got := status()
				if got[len(got)-1] != bridge.PresenceOnline || len(got) < 3 {
					return fmt.Errorf("status messages %v, want online again", got)
				}
				if healthAfter(back) == nil {
					return fmt.Errorf("no health report since the link returned")
				}
				return nil
			})
			if got := strings.Join(status(), ","); got != "online,offline,online" {
				t.Fatalf("status sequence %s", got)
			}
		})
	}
}

// A clean stop says offline itself (the remote does not publish a will after DISCONNECT), and
// the retained status a late subscriber reads is the last word.
func TestPresenceOfflineOnCleanStop(t *testing.T) {
	cloud := testutil.StartMosquitto(t, 0, "")
	cfg := decodeConnector(t, fmt.Sprintf(`
name: cloud
type: mqtt
url: tcp://%s
presence: {topic: "{gateway_id}/status"}
forward:
  - {from: "sensors/#", to: "gw1/data/{topic}", qos: 1}
`, cloud.Addr))
	s := startStack(t, "", cfg)
	s.waitConnected("cloud")
	var rec arrivals
	rec.subscribe(t, "cloud", cloud.Addr, "gw1/status")
	waitFor(t, 10*time.Second, func() error {
		if a := rec.snapshot(); len(a) == 0 || string(a[0].Payload) != bridge.PresenceOnline {
			return fmt.Errorf("retained status %v, want online", a)
		}
		return nil
	})
	s.stop()
	var late arrivals
	late.subscribe(t, "late", cloud.Addr, "gw1/status")
	waitFor(t, 10*time.Second, func() error {
		if a := late.snapshot(); len(a) == 0 || string(a[len(a)-1].Payload) != bridge.PresenceOffline {
			return fmt.Errorf("retained status after stop %v, want offline", a)
		}
		return nil
	})
}

// startMochiCloud runs edged's own broker (mochi) as a cloud on a loopback port: anonymous,
// in-memory state, retained messages and wills as any MQTT broker.
func startMochiCloud(t *testing.T) string {
	t.Helper()
	br, err := broker.New(broker.Options{Config: broker.Config{Listeners: []broker.Listener{{Type: "tcp", Address: "127.0.0.1:0"}}},
		State: testutil.NewMemState(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := br.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = br.Close() })
	return br.Status().Listeners[0].Bound
}
