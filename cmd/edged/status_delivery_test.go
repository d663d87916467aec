package main

import (
	"strings"
	"testing"

	"github.com/edged-dev/edged/bridge"
)

// The human status shows the endpoint in use, latency quantiles and failures by class.
func TestPrintDelivery(t *testing.T) {
	var b strings.Builder
	printDelivery(&b, []bridge.ConnectorStatus{
		{Name: "cloud", Endpoint: "tcp://b:1883", EndpointIndex: 1, Endpoints: 2, Failovers: 1, Delivery: bridge.DeliveryStatus{
			WindowMessages: 3000, LatencyP50Ms: 51.7, LatencyP99Ms: 80.8, RoundTripP50Ms: 0.4, RoundTripP99Ms: 21.2, BytesSent: 61890,
			FailuresByClass: map[string]uint64{bridge.ClassNetwork: 1, bridge.ClassAuth: 0}}},
		{Name: "idle", Endpoint: "http://x/v1"},
	})
	out := b.String()
	for _, want := range []string{"tcp://b:1883 [2/2, 1 failovers]", "52ms / 81ms", "400µs / 21ms", "3,000 msgs/5m", "60 KiB", "network 1",
		"idle   http://x/v1", "none"} {
		if !strings.Contains(out, want) {
			t.Errorf("lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "auth 0") {
		t.Errorf("shows a zero class:\n%s", out)
	}
}
