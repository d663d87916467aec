package main_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/internal/testutil"
)

// A frozen edged (SIGSTOP: its socket stays open, nothing moves) is reported `offline` by the
// cloud broker once the keepalive runs out; after SIGCONT the cloud sees `online` and a health
// report carrying the daemon's version.
func TestPresenceSIGSTOP(t *testing.T) {
	cloud := testutil.StartMosquitto(t, 0, "")
	var mu sync.Mutex
	type got struct {
		topic, payload string
		at             time.Time
	}
	var seen []got
	sub := v3Client(t, "tcp://"+cloud.Addr, "cloud-sub", true, "", "")
	wait(t, sub.Subscribe("gw-test/#", 1, func(_ mqtt.Client, m mqtt.Message) {
		mu.Lock()
		seen = append(seen, got{m.Topic(), string(m.Payload()), time.Now()})
		mu.Unlock()
	}), "subscribe")
	snapshot := func() []got {
		mu.Lock()
		defer mu.Unlock()
		return append([]got(nil), seen...)
	}
	statuses := func() string {
		var out []string
		for _, g := range snapshot() {
			if g.topic == "gw-test/status" {
				out = append(out, g.payload)
			}
		}
		return strings.Join(out, ",")
	}
	healthSince := func(from time.Time) *bridge.HealthReport {
		for _, g := range snapshot() {
			if g.topic == "gw-test/health" && !g.at.Before(from) {
				var r bridge.HealthReport
				if err := json.Unmarshal([]byte(g.payload), &r); err != nil {
					t.Fatalf("health report: %v: %q", err, g.payload)
				}
				return &r
			}
		}
		return nil
	}

	const keepalive = 2 * time.Second
	addr := testutil.FreeAddr(t)
	e := testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: baseConfig(tcpListener(addr), fmt.Sprintf(`bridge:
  connectors:
    - name: cloud
      type: mqtt
      url: tcp://%s
      keepalive: %v
      presence: {topic: "{gateway_id}/status", health_topic: "{gateway_id}/health", health_interval: 1h}
      forward: [{from: "sensors/#", to: "gw-test/data/{topic}", qos: 1}]
`, cloud.Addr, keepalive))})
	testutil.WaitFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if statuses() != "online" || healthSince(time.Time{}) == nil {
			return fmt.Errorf("status %q, health %v", statuses(), healthSince(time.Time{}))
		}
		return nil
	})
	if r := healthSince(time.Time{}); r.Gateway != "gw-test" || r.Version == "" || len(r.Connectors) != 1 || r.DiskFree <= 0 {
		t.Fatalf("health report %+v", r)
	}

	if err := e.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	testutil.WaitFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if statuses() != "online,offline" {
			return fmt.Errorf("status %q", statuses())
		}
		return nil
	})
	// The broker decides when: mosquitto 2.0 scans keepalives every 5 s and compares whole
	// seconds strictly (now - last > 1.5 x keepalive), which adds up to 5 s + 2 s to the
	// 1.5 x keepalive of silence.
	took := time.Since(stopped)
	t.Logf("offline %v after SIGSTOP (keepalive %v, 1.5 x = %v)", took.Round(time.Millisecond), keepalive, keepalive*3/2)
	if limit := keepalive*3/2 + 7*time.Second; took > limit {
		t.Fatalf("offline after %v, want <= %v", took, limit)
	}

	resumed := time.Now()
	if err := e.Cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, 20*time.Millisecond, func() error {
		if statuses() != "online,offline,online" || healthSince(resumed) == nil {
			return fmt.Errorf("status %q, health since resume %v", statuses(), healthSince(resumed) != nil)
		}
		return nil
	})
	if err := e.Stop(20 * time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	// A clean stop says offline itself; the retained status is the last word.
	late := v3Client(t, "tcp://"+cloud.Addr, "late-sub", true, "", "")
	last := make(chan string, 4)
	wait(t, late.Subscribe("gw-test/status", 1, func(_ mqtt.Client, m mqtt.Message) { last <- string(m.Payload()) }), "subscribe")
	select {
	case p := <-last:
		if p != bridge.PresenceOffline {
			t.Fatalf("retained status after a clean stop %q", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no retained status")
	}
}
