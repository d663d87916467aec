package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/hardware"
	"github.com/edged-dev/edged/hardware/modbus"
	"github.com/edged-dev/edged/internal/admin"
	"github.com/edged-dev/edged/storage"
)

// FuzzStatusReport: `edged status` renders what the admin address answers, and whatever
// listens there answers: any JSON that decodes into the status document prints without a
// panic, whatever its numbers (negative ages, NaN rates, durations beyond time.Duration).
func FuzzStatusReport(f *testing.F) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	size := int64(123456789)
	full := statusDoc{Version: "1.2.3", GatewayID: "gw1", StartedAt: now.Add(-time.Hour), UptimeSeconds: 3600, DataDirBytes: &size,
		Broker:     &broker.Status{},
		Storage:    &storageDoc{Outboxes: []outboxDoc{{OutboxStats: storage.OutboxStats{Name: "cloud", Depth: 5}, OldestAgeSeconds: 42.5}}},
		Connectors: []bridge.ConnectorStatus{{Name: "cloud", Endpoint: "tcp://b:1883", Delivery: bridge.DeliveryStatus{LatencyP50Ms: 51.7, LatencyP99Ms: 80.8}}},
		Serial:     []hardware.PortStatus{{}},
		Health:     &admin.Health{Verdict: "degraded", Reasons: []string{"cloud: disconnected"}},
		Modbus:     []modbus.BusStatus{{Name: "b", Units: []modbus.UnitStatus{{}}}},
		Reload:     &reloadReport{At: now, By: "signal", Result: "refused", Problems: []string{"f:1: x: bad"}},
		Orphaned:   []string{"old"},
	}
	if b, err := json.Marshal(full); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`{"storage":{"outboxes":[{"name":"a","depth":1,"oldest_age_seconds":1e300}]},"connectors":[{"name":"c","delivery":{"latency_p50_ms":-1e300}}]}`))
	f.Add([]byte(`{"health":null,"uptime_seconds":-9223372036854775808}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var doc statusDoc
		if json.Unmarshal(b, &doc) != nil {
			return
		}
		var out strings.Builder
		printStatus(&out, &doc, now)
		if out.Len() == 0 {
			t.Fatal("empty report")
		}
	})
}
