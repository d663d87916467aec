package config

import (
	"testing"
	"time"

	"github.com/edged-dev/edged/bridge"
)

// Traffic-control keys (issue 16) are checked strictly and every problem is located.
func TestTrafficConfigProblems(t *testing.T) {
	doc := `bridge:
  connectors:
    - name: c
      type: http
      url: http://127.0.0.1:9/x
      rate: 32KiB
      rate_burst: -1
      max_requests: fast
      compression: lz4
      forward:
        - {from: "a/#", to: "b/{1}", priority: urgent, ttl: 3 days}
        - {from: "c/#", to: "d/{1}", keep_latest: yes please}
        - {from: "e/#", to: "f/{1}", prio: 1}
`
	ps := problems(t, doc)
	for _, p := range ps {
		t.Log(p.Error())
	}
	wantProblems(t, ps,
		`f:6: bridge.connectors[0].rate: invalid rate "32KiB"`,
		`f:7: bridge.connectors[0].rate_burst: invalid size "-1"`,
		`f:8: bridge.connectors[0].max_requests: invalid rate "fast"`,
		`f:11: bridge.connectors[0].forward[0].from: invalid duration "3 days"`, // a flow mapping: its line's first key
		"f:12: bridge.connectors[0].forward[1].from: cannot use !!str `yes please` into bool",
		"f:13: bridge.connectors[0].forward[2].from: field prio not found in rule",
	)
	// Values that decode but are not valid.
	ps = problems(t, `bridge:
  connectors:
    - name: c
      type: mqtt
      url: tcp://127.0.0.1:9
      rate_burst: 1KiB
      forward:
        - from: "a/#"
          to: "b/{1}"
          priority: urgent
      subscribe:
        - from: "x/#"
          to: "y/{1}"
          keep_latest: true
    - name: h
      type: http
      url: http://127.0.0.1:9/x
      compression: lz4
      max_requests_burst: 3
      forward: [{from: a, to: b}]
`)
	for _, p := range ps {
		t.Log(p.Error())
	}
	wantProblems(t, ps,
		"f:6: bridge.connectors[0].rate_burst: set without rate",
		`f:10: bridge.connectors[0].forward[0].priority: "urgent": want 0..9 or lowest, low, normal, high, highest`,
		"f:12: bridge.connectors[0].subscribe[0]: priority, keep_latest and ttl apply to forward rules only",
		`f:18: bridge.connectors[1].compression: "lz4": want none, zstd or gzip`,
		"f:19: bridge.connectors[1].max_requests_burst: set without max_requests",
	)
}

func TestTrafficConfigValid(t *testing.T) {
	cfg, err := Parse("f", []byte(`bridge:
  connectors:
    - name: c
      type: http
      url: http://127.0.0.1:9/x
      live_first: true
      rate: 32KiB/s
      rate_burst: 8KiB
      max_requests: 1200/min
      max_requests_burst: 5
      compression: zstd
      forward:
        - {from: "a/#", to: "b/{1}", priority: high, ttl: 2d}
        - {from: "c/#", to: "d/{1}", keep_latest: true, priority: 1}
`))
	if err != nil {
		t.Fatal(err)
	}
	h := cfg.Bridge.Connectors[0].(*bridge.HTTPConfig)
	if !h.LiveFirst || h.Rate != 32<<10 || h.RateBurst != 8<<10 || h.MaxRequests != 20 || h.MaxRequestsBurst != 5 ||
		h.Compression != "zstd" {
		t.Fatalf("traffic %+v %+v", h.TrafficConfig, h.HTTPTraffic)
	}
	r0, r1 := h.Forward[0], h.Forward[1]
	if r0.Priority != "high" || time.Duration(r0.TTL) != 48*time.Hour || !r1.KeepLatest || r1.Priority != "1" {
		t.Fatalf("rules %+v %+v", r0, r1)
	}
}
