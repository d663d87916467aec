package bridge_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/internal/testutil"
)

// histogramCount is the sample count of the histogram series name{connector}.
func histogramCount(t testing.TB, g prometheus.Gatherer, name, connector string) uint64 {
	t.Helper()
	n, ok := testutil.MetricValue(t, g, name, map[string]string{"connector": connector})
	if !ok {
		t.Fatalf("no histogram %s{connector=%q}", name, connector)
	}
	return uint64(n)
}

// Every delivered message is one observation of both latency histograms; status carries the
// same figures as quantiles; bytes on the wire are counted.
func TestDeliveryMetricsMQTT(t *testing.T) {
	cloud := testutil.StartMosquitto(t, 0, "")
	sub := subscribeCloud(t, cloud.Addr, "gw1/#")
	cfg := decodeConnector(t, fmt.Sprintf(`
name: cloud
type: mqtt
url: tcp://%s
forward:
  - {from: "sensors/#", to: "gw1/{topic}", qos: 1}
`, cloud.Addr))
	s := startStack(t, "", cfg)
	s.waitConnected("cloud")
	const n = 3000
	pub := localClient(t, s.addr, "pub")
	publishN(t, pub, "sensors/x", 0, n)
	waitFor(t, 30*time.Second, func() error {
		if st := s.status("cloud"); st.Depth != 0 || sub.count() < n {
			return fmt.Errorf("depth %d, cloud has %d", st.Depth, sub.count())
		}
		return nil
	})
	sent, _ := testutil.MetricValue(t, s.reg, "edged_bridge_sent_total", map[string]string{"connector": "cloud"})
	lat := histogramCount(t, s.reg, "edged_bridge_delivery_latency_seconds", "cloud")
	rtt := histogramCount(t, s.reg, "edged_bridge_ack_round_trip_seconds", "cloud")
	if sent != n || lat != n || rtt != n {
		t.Fatalf("sent_total %v, latency observations %d, round-trip observations %d; want %d each", sent, lat, rtt, n)
	}
	wire := 0
	for i := 0; i < n; i++ {
		wire += len(fmt.Sprintf("seq=%d", i)) + len("gw1/sensors/x")
	}
	bytes, _ := testutil.MetricValue(t, s.reg, "edged_bridge_bytes_sent_total", map[string]string{"connector": "cloud"})
	st := s.status("cloud")
	d := st.Delivery
	t.Logf("delivery: %+v", d)
	if int(bytes) < wire || d.BytesSent != uint64(bytes) {
		t.Fatalf("bytes_sent_total %v, status %d, want >= %d and equal", bytes, d.BytesSent, wire)
	}
	if d.WindowMessages != n || d.LatencyP50Ms <= 0 || d.LatencyP99Ms < d.LatencyP50Ms || d.RoundTripP50Ms <= 0 || d.RoundTripP99Ms < d.RoundTripP50Ms {
		t.Fatalf("status delivery figures %+v", d)
	}
	if v, _ := testutil.MetricValue(t, s.reg, "edged_bridge_endpoint_active", map[string]string{"connector": "cloud", "endpoint_index": "0"}); v != 1 {
		t.Fatalf("endpoint_active{endpoint_index=0} = %v", v)
	}

	// The cloud goes away: network failures, by class.
	cloud.Stop()
	waitFor(t, 30*time.Second, func() error {
		v, _ := testutil.MetricValue(t, s.reg, "edged_bridge_failures_total", map[string]string{"connector": "cloud", "class": bridge.ClassNetwork})
		if v < 1 || s.status("cloud").Delivery.FailuresByClass[bridge.ClassNetwork] < 1 {
			return fmt.Errorf("network failures %v", v)
		}
		return nil
	})
}

// An HTTP remote answering 401, 429, 503, 302 and 400 to the first message: each failure is
// counted under its class, and only delivered messages are observed by the histograms.
func TestDeliveryFailureClassesHTTP(t *testing.T) {
	script := []int{401, 429, 503, 302, 400}
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		code := 200
		if len(script) > 0 {
			code, script = script[0], script[1:]
		}
		mu.Unlock()
		if code == 302 {
			w.Header().Set("Location", "http://127.0.0.1:1/elsewhere")
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	cfg := imConnector(t, srv.URL+"/v1/messages", `
batch: {max_messages: 1}
backoff: {min: 10ms, max: 50ms}
breaker: {failures: -1}
forward:
  - {from: "alerts/#", to: "alerts", qos: 1}
`)
	s := startStack(t, "", cfg)
	pub := localClient(t, s.addr, "pub")
	publishN(t, pub, "alerts/x", 0, 3)
	waitFor(t, 30*time.Second, func() error {
		if st := s.status("im"); st.Depth != 0 || st.Sent != 2 {
			return fmt.Errorf("depth %d, sent %d", st.Depth, st.Sent)
		}
		return nil
	})
	want := map[string]float64{bridge.ClassAuth: 1, bridge.ClassThrottled: 2, bridge.ClassRedirect: 1, bridge.ClassRejected: 1, bridge.ClassNetwork: 0}
	st := s.status("im")
	for class, w := range want {
		v, _ := testutil.MetricValue(t, s.reg, "edged_bridge_failures_total", map[string]string{"connector": "im", "class": class})
		if v != w || float64(st.Delivery.FailuresByClass[class]) != w {
			t.Errorf("failures_total{class=%s} = %v, status %d, want %v", class, v, st.Delivery.FailuresByClass[class], w)
		}
	}
	if lat := histogramCount(t, s.reg, "edged_bridge_delivery_latency_seconds", "im"); lat != 2 {
		t.Errorf("latency observations %d, want 2 (the delivered messages)", lat)
	}
}
