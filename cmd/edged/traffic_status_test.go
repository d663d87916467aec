package main

import (
	"bytes"
	"testing"

	"github.com/edged-dev/edged/bridge"
)

func TestPrintTraffic(t *testing.T) {
	var b bytes.Buffer
	printTraffic(&b, bridge.ConnectorStatus{Name: "cloud", Depth: 5})
	if b.Len() != 0 {
		t.Fatalf("one lane, no cap: printed %q", b.String())
	}
	printTraffic(&b, bridge.ConnectorStatus{Name: "cloud", Traffic: bridge.TrafficStatus{UplinkRate: 32000, RateLimit: 32768, DrainSeconds: 95,
		Lanes: []bridge.LaneStatus{{Name: "p8", Depth: 0}, {Name: "p2", Depth: 3000, OldestAgeSeconds: 61}}}})
	want := "  cloud: uplink 31 KiB/s of 32 KiB/s cap, backlog drains in ~1m35s; lanes p8 0 p2 3,000 (oldest 1m01s)\n"
	if b.String() != want {
		t.Fatalf("got  %q\nwant %q", b.String(), want)
	}
}
