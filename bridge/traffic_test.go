package bridge_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/internal/testutil"
	"github.com/edged-dev/edged/storage"
)

// cloudDown starts a cloud mosquitto with a subscriber on gw/# and a relay to it that is
// off: the uplink through px.Addr() is down until the test turns it on (px.Set(true)).
func cloudDown(t testing.TB) (*cloudSub, *testutil.Relay) {
	t.Helper()
	cloud := testutil.StartMosquitto(t, 0, "")
	return subscribeCloud(t, cloud.Addr, "gw/#"), testutil.StartRelay(t, cloud.Addr, testutil.RelayDead)
}

// TestTrafficPriorityAfterOutage (issue 16): alerts/# at priority high and telemetry/# at low;
// the uplink is down while telemetry and 100 alerts are published (alerts last, so FIFO would
// send them last), then comes up behind a bandwidth cap. Every alert must reach the cloud
// before the 1,000th telemetry message, and all telemetry must arrive in order, none lost.
//
// The full 50,000 also under -race (measured: 20 s there, 8 s without). The cap is 1MiB/s
// so the drain (about 4 MB on the wire) stays a few seconds; the cap's accuracy is
// TestTrafficBandwidthCap's job.
func TestTrafficPriorityAfterOutage(t *testing.T) {
	const nTele, nAlerts = 50_000, 100
	sub, px := cloudDown(t)
	s := startStack(t, "", mqttConnector(t, "cloud", "tcp://"+px.Addr(), `
rate: 1MiB/s
forward:
  - {from: "telemetry/#", to: "gw/telemetry/{1}", qos: 1, priority: low}
  - {from: "alerts/#", to: "gw/alerts/{1}", qos: 1, priority: high}
`))
	local := localClient(t, s.addr, "dev1")
	t0 := time.Now()
	alert := func(from int) func(int) (string, []byte) {
		return func(i int) (string, []byte) { return "alerts/a1", []byte(fmt.Sprintf("alert=%d", from+i)) }
	}
	publishN(t, local, "telemetry/t1", 0, nTele/2)
	publishPayloads(t, local, nAlerts/2, alert(0))
	publishN(t, local, "telemetry/t1", nTele/2, nTele-nTele/2)
	publishPayloads(t, local, nAlerts-nAlerts/2, alert(nAlerts/2))
	t.Logf("captured %d telemetry + %d alerts during the outage in %v", nTele, nAlerts, time.Since(t0).Round(time.Millisecond))
	st := s.status("cloud")
	if st.Depth != int64(nTele+nAlerts) {
		t.Fatalf("depth %d before the uplink returns, want %d", st.Depth, nTele+nAlerts)
	}
	if len(st.Traffic.Lanes) != 3 || st.Traffic.Lanes[0].Name != "p8" || st.Traffic.Lanes[0].Depth != nAlerts {
		t.Fatalf("lanes %+v: want p8 first holding the %d alerts", st.Traffic.Lanes, nAlerts)
	}
	if st.Traffic.DrainSeconds <= 0 {
		t.Fatalf("drain_seconds %v with a backlog behind a 1MiB/s cap", st.Traffic.DrainSeconds)
	}
	t.Logf("status before the drain: depth %d, drain estimate %.1fs at %.0f B/s", st.Depth, st.Traffic.DrainSeconds, st.Traffic.RateLimit)

	t1 := time.Now()
	px.Set(true)
	total := nTele + nAlerts
	// Measured: the 50,000+100 drain takes ~5 s at 1MiB/s; the deadline polls on progress.
	testutil.WaitFor(t, 5*time.Minute, 50*time.Millisecond, func() error {
		if n := sub.count(); n < total {
			return fmt.Errorf("cloud got %d of %d", n, total)
		}
		return nil
	})
	t.Logf("drained %d messages in %v", total, time.Since(t1).Round(time.Millisecond))

	msgs := sub.snapshot()
	var tele []cloudMsg
	alerts, lastAlert, tele1000 := map[string]bool{}, -1, -1
	for i, m := range msgs {
		switch {
		case strings.HasPrefix(m.Topic, "gw/alerts/"):
			alerts[string(m.Payload)] = true
			lastAlert = i
		case strings.HasPrefix(m.Topic, "gw/telemetry/"):
			tele = append(tele, m)
			if len(tele) == 1000 {
				tele1000 = i
			}
		default:
			t.Fatalf("unexpected topic %q", m.Topic)
		}
	}
	if len(alerts) != nAlerts {
		t.Fatalf("%d distinct alerts arrived, want %d", len(alerts), nAlerts)
	}
	if lastAlert > tele1000 {
		t.Fatalf("last alert arrived at position %d, after the 1,000th telemetry message (position %d)", lastAlert, tele1000)
	}
	t.Logf("last alert at position %d; 1,000th telemetry at position %d", lastAlert, tele1000)
	checkSeqs(t, tele, nTele, rawSeq)
}

// TestTrafficKeepLatest (issue 16): 10,000 updates to 10 topics during an outage arrive as
// exactly 10 messages, the newest of each; the 9,990 others are counted as superseded.
func TestTrafficKeepLatest(t *testing.T) {
	const n, topics = 10_000, 10
	sub, px := cloudDown(t)
	s := startStack(t, "", mqttConnector(t, "cloud", "tcp://"+px.Addr(), `
forward:
  - {from: "state/#", to: "gw/state/{1}", qos: 1, keep_latest: true}
  - {from: "telemetry/#", to: "gw/telemetry/{1}", qos: 1}
`))
	local := localClient(t, s.addr, "dev1")
	publishPayloads(t, local, n, func(i int) (string, []byte) {
		return fmt.Sprintf("state/dev%d", i%topics), []byte(fmt.Sprintf("seq=%d", i))
	})
	st := s.status("cloud")
	var latest *bridge.LaneStatus
	for i := range st.Traffic.Lanes {
		if st.Traffic.Lanes[i].KeepLatest {
			latest = &st.Traffic.Lanes[i]
		}
	}
	if latest == nil || latest.Depth != topics || latest.Drops["superseded"] != n-topics {
		t.Fatalf("keep-latest lane %+v: want depth %d and %d superseded", latest, topics, n-topics)
	}
	px.Set(true)
	waitFor(t, 30*time.Second, func() error {
		if st := s.status("cloud"); st.Depth != 0 || sub.count() < topics {
			return fmt.Errorf("depth %d, cloud got %d", st.Depth, sub.count())
		}
		return nil
	})
	// Nothing else may follow: a live probe on another rule, sent after, marks the end.
	publishN(t, local, "telemetry/probe", 0, 1)
	waitFor(t, 10*time.Second, func() error {
		if sub.count() < topics+1 {
			return fmt.Errorf("cloud got %d", sub.count())
		}
		return nil
	})
	got := map[string]string{}
	for _, m := range sub.snapshot() {
		if strings.HasPrefix(m.Topic, "gw/telemetry/") {
			continue
		}
		if prev, dup := got[m.Topic]; dup {
			t.Fatalf("topic %s arrived twice (%s, then %s)", m.Topic, prev, m.Payload)
		}
		got[m.Topic] = string(m.Payload)
	}
	if len(got) != topics {
		t.Fatalf("got %d state messages, want %d: %v", len(got), topics, got)
	}
	for k := 0; k < topics; k++ {
		topic := fmt.Sprintf("gw/state/dev%d", k)
		if want := fmt.Sprintf("seq=%d", n-topics+k); got[topic] != want {
			t.Fatalf("%s: got %q, want the newest %q", topic, got[topic], want)
		}
	}
}

// meterProxy forwards edged -> cloud and counts the bytes that reach the cloud side, with the
// time each read returned, so a test can check the rate per window.
type meterProxy struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	on       bool
	conns    []net.Conn
	samples  []sample
	wg       sync.WaitGroup
}

type sample struct {
	at time.Time
	n  int
}

func startMeterProxy(t testing.TB, upstream string) *meterProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &meterProxy{ln: ln, upstream: upstream}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			on := p.on
			p.mu.Unlock()
			if !on {
				c.Close()
				continue
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { // edged -> cloud, metered
				defer p.wg.Done()
				buf := make([]byte, 64<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						p.mu.Lock()
						p.samples = append(p.samples, sample{time.Now(), n})
						p.mu.Unlock()
						if _, werr := u.Write(buf[:n]); werr != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				u.Close()
				c.Close()
			}()
			go func() {
				defer p.wg.Done()
				_, _ = io.Copy(c, u)
				c.Close()
				u.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *meterProxy) Addr() string { return p.ln.Addr().String() }

func (p *meterProxy) enable() {
	p.mu.Lock()
	p.on = true
	p.mu.Unlock()
}

func (p *meterProxy) snapshot() []sample {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]sample(nil), p.samples...)
}

// bandwidthDrain is the measured drain of TestTrafficBandwidthCap: 20s in `make test`;
// EDGED_TRAFFIC_DRAIN=60s (make soak) runs the 60 s the issue asks for.
func bandwidthDrain(t *testing.T) time.Duration {
	d := 20 * time.Second
	if s := os.Getenv("EDGED_TRAFFIC_DRAIN"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d < 10*time.Second {
			t.Fatalf("EDGED_TRAFFIC_DRAIN=%q: want a duration of at least 10s", s)
		}
	}
	return d
}

// TestTrafficBandwidthCap (issue 16): behind `rate: 32KiB/s`, every 5 s window of a drain
// carries at most the cap + 5 % at the cloud side (bytes arriving over the socket, protocol
// overhead included), and the drain uses the cap (on average >= 75 % of it), so the limiter
// neither leaks nor starves. The backlog is sized to outlast the measured drain.
func TestTrafficBandwidthCap(t *testing.T) {
	for _, protocol := range []string{"5", "3.1.1"} {
		t.Run("mqtt"+protocol, func(t *testing.T) { testBandwidthCap(t, protocol) })
	}
}

func testBandwidthCap(t *testing.T, protocol string) {
	const capRate = 32 << 10
	const win = 5 * time.Second
	drain := bandwidthDrain(t)
	cloud := testutil.StartMosquitto(t, 0, "")
	px := startMeterProxy(t, cloud.Addr)
	s := startStack(t, "", mqttConnector(t, "cloud", "tcp://"+px.Addr(), `
protocol: "`+protocol+`"
rate: 32KiB/s
forward:
  - {from: "telemetry/#", to: "gw/telemetry/{1}", qos: 1}
`))
	local := localClient(t, s.addr, "dev1")
	// A message is ~270 bytes on the wire (200 B payload, topic, id property, headers; measured):
	// queue half as much again as the drain can carry, so the link is busy until the end.
	n := int(float64(capRate)*drain.Seconds()*1.5) / 270
	payload := strings.Repeat("x", 190)
	publishPayloads(t, local, n, func(i int) (string, []byte) {
		return "telemetry/t1", []byte(fmt.Sprintf("%09d%s", i, payload))
	})
	px.enable()
	s.status("cloud") // starts the status rate meter
	t0 := time.Now()
	waitFor(t, drain+30*time.Second, func() error {
		if time.Since(t0) < drain+time.Second {
			return fmt.Errorf("draining")
		}
		return nil
	})
	ss := s.status("cloud")
	samples := px.snapshot()
	if len(samples) == 0 {
		t.Fatal("nothing reached the cloud")
	}
	if ss.Depth == 0 {
		t.Fatalf("the backlog of %d messages drained within %v: the cap did not hold", n, drain)
	}
	start := samples[0].at
	nWin := int(drain / win)
	wins := make([]int, nWin)
	for _, sm := range samples {
		i := int(sm.at.Sub(start) / win)
		if i < nWin {
			wins[i] += sm.n
		}
	}
	limit := float64(capRate) * win.Seconds() * 1.05
	total := 0
	for i, b := range wins {
		t.Logf("window %2d: %7d bytes = %6.0f B/s (cap %d B/s)", i, b, float64(b)/win.Seconds(), capRate)
		if float64(b) > limit {
			t.Errorf("window %d carried %d bytes: over the cap + 5 %% (%.0f)", i, b, limit)
		}
		total += b
	}
	// The lower bound is on the mean: a window can dip when the shared machine is busy, which
	// says nothing about the limiter.
	if mean := float64(total) / drain.Seconds(); mean < 0.75*capRate {
		t.Errorf("the drain averaged %.0f B/s: below 75 %% of the cap, the limiter starves the link", mean)
	}
	if ss.Traffic.RateLimit != capRate || ss.Traffic.UplinkRate <= 0 || ss.Traffic.UplinkRate > capRate*1.05 || ss.Traffic.DrainSeconds <= 0 {
		t.Errorf("status traffic %+v: want the cap, a current rate within it and a drain estimate", ss.Traffic)
	}
	t.Logf("status: uplink %.0f B/s, %d messages left, drain estimate %.1fs", ss.Traffic.UplinkRate, ss.Depth, ss.Traffic.DrainSeconds)
}

// TestTrafficLiveFirst (issue 16): with live_first, messages published after the uplink
// returned go out ahead of the backlog stored during the outage, which keeps draining; each
// queue keeps its own order and nothing is lost.
func TestTrafficLiveFirst(t *testing.T) {
	const nBacklog, nLive = 3000, 20
	sub, px := cloudDown(t)
	// 64KiB/s: the ~300 KB backlog takes ~5 s, long enough to publish into its drain.
	s := startStack(t, "", mqttConnector(t, "cloud", "tcp://"+px.Addr(), `
live_first: true
rate: 64KiB/s
forward:
  - {from: "telemetry/#", to: "gw/telemetry/{1}", qos: 1}
`))
	local := localClient(t, s.addr, "dev1")
	publishN(t, local, "telemetry/backlog", 0, nBacklog)
	px.Set(true)
	s.waitConnected("cloud")
	sub.waitCount(t, 100, 30*time.Second)
	publishPayloads(t, local, nLive, func(i int) (string, []byte) { return "telemetry/live", []byte(fmt.Sprintf("live=%d", i)) })
	sub.waitCount(t, nBacklog+nLive, 2*time.Minute)
	var backlog []cloudMsg
	lastLive, nextLive := -1, 0
	for _, m := range sub.snapshot() {
		if m.Topic == "gw/telemetry/live" {
			if want := fmt.Sprintf("live=%d", nextLive); string(m.Payload) != want {
				t.Fatalf("live message %q, want %q", m.Payload, want)
			}
			nextLive++
			lastLive = len(backlog)
			continue
		}
		backlog = append(backlog, m)
	}
	if nextLive != nLive {
		t.Fatalf("%d live messages arrived, want %d", nextLive, nLive)
	}
	if lastLive >= nBacklog-100 {
		t.Fatalf("the last live message arrived after %d of %d backlog messages: not ahead of the backlog", lastLive, nBacklog)
	}
	t.Logf("all %d live messages arrived after %d of %d backlog messages", nLive, lastLive, nBacklog)
	checkSeqs(t, backlog, nBacklog, rawSeq)
}

// TestTrafficRuleTTL (issue 16): a rule's ttl overrides the connector's: its messages older
// than that are dropped (counted as ttl) instead of sent; another rule's are kept.
func TestTrafficRuleTTL(t *testing.T) {
	sub, px := cloudDown(t)
	s := startStack(t, "", mqttConnector(t, "cloud", "tcp://"+px.Addr(), `
forward:
  - {from: "gps/#", to: "gw/gps/{1}", qos: 1, ttl: 1s}
  - {from: "telemetry/#", to: "gw/telemetry/{1}", qos: 1}
`))
	local := localClient(t, s.addr, "dev1")
	publishN(t, local, "gps/old", 0, 10)
	publishN(t, local, "telemetry/t", 0, 10)
	time.Sleep(1300 * time.Millisecond) // past the rule's ttl
	publishPayloads(t, local, 5, func(i int) (string, []byte) { return "gps/new", []byte(fmt.Sprintf("new=%d", i)) })
	px.Set(true)
	waitFor(t, 30*time.Second, func() error {
		if st := s.status("cloud"); st.Depth != 0 {
			return fmt.Errorf("depth %d", st.Depth)
		}
		return nil
	})
	publishN(t, local, "telemetry/probe", 100, 1) // marks the end of the drain
	sub.waitCount(t, 16, 10*time.Second)
	counts := map[string]int{}
	for _, m := range sub.snapshot() {
		counts[m.Topic]++
	}
	if counts["gw/gps/old"] != 0 || counts["gw/gps/new"] != 5 || counts["gw/telemetry/t"] != 10 {
		t.Fatalf("cloud got %v: want no expired gps, 5 new gps, 10 telemetry", counts)
	}
	var ttlDrops uint64
	for _, l := range s.status("cloud").Traffic.Lanes {
		ttlDrops += l.Drops["ttl"]
	}
	if ttlDrops != 10 {
		t.Fatalf("ttl drops %d, want 10", ttlDrops)
	}
}

// TestTrafficLaneOfEarlierConfigDrained: messages stored in a lane that a new configuration no
// longer has (priority and keep_latest removed) are still delivered after the restart.
func TestTrafficLaneOfEarlierConfigDrained(t *testing.T) {
	sub, px := cloudDown(t)
	dir := t.TempDir()
	s := startStack(t, dir, mqttConnector(t, "cloud", "tcp://"+px.Addr(), `
forward:
  - {from: "alerts/#", to: "gw/alerts/{1}", qos: 1, priority: high}
  - {from: "state/#", to: "gw/state/{1}", qos: 1, keep_latest: true}
`))
	local := localClient(t, s.addr, "dev1")
	publishN(t, local, "alerts/a", 0, 10)
	publishPayloads(t, local, 3, func(i int) (string, []byte) { return fmt.Sprintf("state/s%d", i), []byte(fmt.Sprintf("st=%d", i)) })
	local.Disconnect(50)
	s.stop()
	s = startStack(t, dir, mqttConnector(t, "cloud", "tcp://"+px.Addr(), `
forward:
  - {from: "alerts/#", to: "gw/alerts/{1}", qos: 1}
  - {from: "state/#", to: "gw/state/{1}", qos: 1}
`))
	if st := s.status("cloud"); st.Depth != 13 {
		t.Fatalf("depth %d after the restart, want the 13 stored (lanes %+v)", st.Depth, st.Traffic.Lanes)
	}
	px.Set(true)
	sub.waitCount(t, 13, 30*time.Second)
	checkSeqs(t, filterTopic(sub.snapshot(), "gw/alerts/a"), 10, rawSeq)
}

func filterTopic(ms []cloudMsg, topic string) []cloudMsg {
	var out []cloudMsg
	for _, m := range ms {
		if m.Topic == topic {
			out = append(out, m)
		}
	}
	return out
}

// TestTrafficLaneMetrics: capture routes each rule to its lane, all lanes in one group commit;
// per-lane depth, oldest age and drops are exported, computed at scrape time.
func TestTrafficLaneMetrics(t *testing.T) {
	db, err := storage.Open(storage.Options{Dir: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	reg := prometheus.NewRegistry()
	cfg := mqttConnector(t, "c", "tcp://127.0.0.1:9", `
rate: 16KiB/s
forward:
  - {from: "alerts/#", to: "a/{1}", priority: 9}
  - {from: "state/#", to: "s/{1}", keep_latest: true, priority: lowest}
  - {from: "t/#", to: "t/{1}"}
`)
	b, err := bridge.New(bridge.Options{Connectors: []bridge.ConnectorConfig{cfg}, GatewayID: "gw1", DB: db,
		Defaults: storage.Defaults(), Logger: testLogger(t), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ms := []*broker.Message{{Topic: "alerts/x", QoS: 1}, {Topic: "alerts/y", QoS: 1}, {Topic: "state/k", QoS: 1},
		{Topic: "state/k", QoS: 1}, {Topic: "t/1", QoS: 1}}
	for _, m := range ms {
		m.Time = time.Now().Add(-2 * time.Second)
	}
	// One client's pipelined messages spanning three lanes: one group commit, one fsync.
	c0 := db.Stats().Commits
	if errs := b.CaptureBatch(context.Background(), ms); errs != nil {
		t.Fatal(errs)
	}
	if c := db.Stats().Commits - c0; c != 1 {
		t.Errorf("a capture spanning three lanes took %d group commits, want 1", c)
	}
	val := func(name string, labels map[string]string) float64 {
		t.Helper()
		v, ok := testutil.MetricValue(t, reg, name, labels)
		if !ok {
			t.Fatalf("no %s %v", name, labels)
		}
		return v
	}
	for lane, want := range map[string]float64{"p9": 2, "p0-latest": 1, "p5": 1} {
		if got := val("edged_bridge_lane_depth", map[string]string{"connector": "c", "lane": lane}); got != want {
			t.Errorf("lane %s depth %v, want %v", lane, got, want)
		}
	}
	if got := val("edged_bridge_lane_dropped_total", map[string]string{"connector": "c", "lane": "p0-latest", "reason": "superseded"}); got != 1 {
		t.Errorf("superseded %v, want 1", got)
	}
	// The age counts from the append (millisecond clock): right after it, it can still read 0.
	testutil.WaitFor(t, 5*time.Second, 5*time.Millisecond, func() error {
		if got := val("edged_bridge_lane_oldest_age_seconds", map[string]string{"connector": "c", "lane": "p9"}); got <= 0 {
			return fmt.Errorf("p9 oldest age %v, want > 0", got)
		}
		return nil
	})
	if got := val("edged_bridge_rate_limit_bytes_per_second", map[string]string{"connector": "c"}); got != 16<<10 {
		t.Errorf("rate limit %v", got)
	}
	st := b.Status()[0].Traffic
	if len(st.Lanes) != 3 || st.Lanes[0].Name != "p9" || st.Lanes[2].Name != "p0-latest" || st.DrainSeconds <= 0 {
		t.Errorf("traffic status %+v", st)
	}
}

// TestTrafficReloadLanes: a removed connector leaves every lane orphaned (kept, purgeable),
// not only its default outbox; a reload that changes a rule's priority drains the old lane.
func TestTrafficReloadLanes(t *testing.T) {
	db, err := storage.Open(storage.Options{Dir: t.TempDir(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cfg := func(prio string) bridge.ConnectorConfig {
		return mqttConnector(t, "c", "tcp://127.0.0.1:9", `
forward:
  - {from: "alerts/#", to: "a/{1}", priority: `+prio+`}
  - {from: "t/#", to: "t/{1}"}
`)
	}
	b, err := bridge.New(bridge.Options{Connectors: []bridge.ConnectorConfig{cfg("9")}, GatewayID: "gw1", DB: db,
		Defaults: storage.Defaults(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if errs := b.CaptureBatch(context.Background(), []*broker.Message{{Topic: "alerts/x", QoS: 1}, {Topic: "t/1", QoS: 1}}); errs != nil {
		t.Fatal(errs)
	}
	// Priority 9 -> 7: the old lane is still drained by the rebuilt forwarder.
	if _, err := b.Reload([]bridge.ConnectorConfig{cfg("7")}, storage.Defaults()); err != nil {
		t.Fatal(err)
	}
	lanes := map[string]int64{}
	for _, l := range b.Status()[0].Traffic.Lanes {
		lanes[l.Name] = l.Depth
	}
	if lanes["p9"] != 1 || lanes["p5"] != 1 {
		t.Fatalf("lanes after the priority change %v: want the old p9 lane (1 queued) still drained", lanes)
	}
	if _, err := b.Reload(nil, storage.Defaults()); err != nil {
		t.Fatal(err)
	}
	configured := map[string]bool{}
	for _, o := range db.Stats().Outboxes {
		configured[o.Name] = o.Configured
	}
	for _, name := range []string{"c", "c#p9", "c#p7"} {
		if c, ok := configured[name]; !ok || c {
			t.Fatalf("outbox %s after removing the connector: present %v configured %v, want kept and not configured (%v)", name, ok, c, configured)
		}
	}
}
