package modbus

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/internal/testutil"
)

// Through the real broker: values are inline publishes whose capture time (user property
// edged-time) becomes the captured message's time and is stripped for subscribers, QoS and
// retain are per point, and a command published into the broker is written and answered.
func TestThroughTheBroker(t *testing.T) {
	addr := testutil.FreeAddr(t)
	mem := startMemSlave(t, addr, 5)
	mem.set(5, func(u *memUnit) { u.holding[0] = 77 })
	b, err := broker.New(broker.Options{State: testutil.NewMemState()})
	if err != nil {
		t.Fatal(err)
	}
	rec := &testutil.Recorder[*broker.Message]{}
	b.SetCapturer(rec)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	var mu sync.Mutex
	var seen []*broker.Message
	unsub, err := b.Subscribe("#", func(m *broker.Message) {
		mu.Lock()
		seen = append(seen, m)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unsub)

	buses := parseBuses(t, fmt.Sprintf(`
- name: b
  tcp: %s
  poll: 100ms
  qos: 1
  units:
    - name: u
      id: 5
      points:
        - {name: level, type: holding, address: 0, unit: cm, retain: true, command_topic: "set/level"}
        - {name: other, type: holding, address: 1, qos: 0}
`, addr))
	startManager(t, buses, b)
	before := time.Now().Add(-time.Millisecond)
	testutil.WaitFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if len(rec.Where(onTopic("modbus/b/u/level"))) == 0 || len(rec.Where(onTopic("modbus/b/u/other"))) == 0 {
			return fmt.Errorf("nothing captured yet")
		}
		return nil
	})
	m := rec.Where(onTopic("modbus/b/u/level"))[0]
	var s sample
	if err := json.Unmarshal(m.Payload, &s); err != nil {
		t.Fatal(err)
	}
	if m.Time.UnixMilli() != s.T || m.Time.Before(before) || !m.Inline || m.QoS != 1 || !m.Retain {
		t.Errorf("captured %+v (payload t %d)", m, s.T)
	}
	if o := rec.Where(onTopic("modbus/b/u/other"))[0]; o.QoS != 0 || o.Retain {
		t.Errorf("other: qos %d retain %v", o.QoS, o.Retain)
	}
	mu.Lock()
	for _, m := range seen {
		for _, p := range m.UserProps {
			if p.Key == PropTime {
				t.Errorf("subscriber saw %s on %s", PropTime, m.Topic)
			}
		}
	}
	mu.Unlock()

	if err := b.Publish(&broker.Message{Topic: "set/level", Payload: []byte(`{"v": 120}`), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		rs := rec.Where(onTopic("set/level/reply"))
		if len(rs) == 0 {
			return fmt.Errorf("no reply")
		}
		var r testReply
		json.Unmarshal(rs[0].Payload, &r)
		if !r.OK {
			return fmt.Errorf("reply %s", rs[0].Payload)
		}
		return nil
	})
	mem.mu.Lock()
	got := mem.units[5].holding[0]
	mem.mu.Unlock()
	if got != 120 {
		t.Errorf("register %d after write", got)
	}
}
