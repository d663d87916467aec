package main

import (
	"bytes"
	"fmt"
	"strings"
	"time"
)

// target is one broker configuration of the comparison.
type target struct {
	name   string
	start  func() (*proc, error)
	uplink string // backlog targets: the dead address of their uplink
}

const edgedBrokerOnly = `data_dir: {data_dir}
gateway_id: bench
log: {level: warn}
admin: {address: {admin}}
broker:
  listeners:
    - {type: tcp, address: {listen}}
`

// Mosquitto as a local broker: Nagle off, like edged (Go sets TCP_NODELAY), and unlimited
// queues, so it drops nothing it could deliver; "defaults" shows the stock configuration.
const (
	mosqNoDelay  = "set_tcp_nodelay true\nmax_queued_messages 0\nmax_inflight_messages 0\npersistence false"
	mosqDefaults = ""
)

func (b *bench) fanInTargets() []target {
	var ts []target
	if b.edged != "" {
		ts = append(ts, target{name: "edged", start: func() (*proc, error) { return startEdged(b.edged, "edged", edgedBrokerOnly) }})
	}
	ts = append(ts,
		target{name: "mosquitto nodelay", start: func() (*proc, error) { return startMosquitto(b.mosq, "mosquitto", mosqNoDelay) }},
		target{name: "mosquitto defaults", start: func() (*proc, error) { return startMosquitto(b.mosq, "mosquitto", mosqDefaults) }},
	)
	return ts
}

func (b *bench) fanInSection() string {
	s := b.s
	var w bytes.Buffer
	ts := b.fanInTargets()
	fmt.Fprintf(&w, "### Local fan-in: %d publishers -> 1 subscriber, %d B payloads (median of %d)\n\n", s.pubs, s.size, s.runs)
	var cols []string
	for _, t := range ts {
		cols = append(cols, t.name)
	}
	figureHeader(&w, append(cols, "edged / mosquitto nodelay"))
	for _, qos := range []byte{0, 1} {
		per := s.perPub0
		if qos == 1 {
			per = s.perPub1
		}
		rate := make([][]float64, len(ts))
		loss := make([][]float64, len(ts))
		p50 := make([][]float64, len(ts))
		p99 := make([][]float64, len(ts))
		// paced latency per rate and target
		pp50, pp99 := pacedCells(len(s.pacedRates), len(ts))
		for run := 0; run < s.runs; run++ {
			for i, t := range ts {
				progress("fan-in QoS %d run %d/%d: %s", qos, run+1, s.runs, t.name)
				p, err := t.start()
				if err != nil {
					b.fail("start %s: %v", t.name, err)
					continue
				}
				r, err := fanIn(p.addr, s.pubs, per, qos, s.size, 0)
				if err != nil {
					p.cleanup()
					b.fail("fan-in QoS %d on %s: %v", qos, t.name, err)
					continue
				}
				rate[i] = append(rate[i], r.rate)
				loss[i] = append(loss[i], 100*float64(r.sent-r.recv)/float64(r.sent))
				p50[i] = append(p50[i], r.p50)
				p99[i] = append(p99[i], r.p99)
				// The same broker at fixed loads below saturation: latency without queueing.
				for k, rate := range s.pacedRates {
					interval := time.Duration(float64(time.Second) * float64(s.pubs) / float64(rate))
					n := s.pacedN * rate / s.pacedRates[0] // every rate runs as long
					pr, err := fanIn(p.addr, s.pubs, n/s.pubs, qos, s.size, interval)
					if err != nil {
						b.fail("paced fan-in QoS %d at %d msgs/s on %s: %v", qos, rate, t.name, err)
						continue
					}
					pp50[k][i] = append(pp50[k][i], pr.p50)
					pp99[k][i] = append(pp99[k][i], pr.p99)
				}
				p.cleanup()
			}
		}
		row := func(label, unit string, vals [][]float64, format string, ratio bool) {
			fmt.Fprintf(&w, "| QoS %d %s (%s) |", qos, label, unit)
			for _, v := range vals {
				if len(v) == 0 {
					fmt.Fprintf(&w, " n/a |")
				} else {
					fmt.Fprintf(&w, " "+format+" |", median(v))
				}
			}
			e, m := -1, -1
			for i, t := range ts {
				switch t.name {
				case "edged":
					e = i
				case "mosquitto nodelay":
					m = i
				}
			}
			if ratio && e >= 0 && m >= 0 && len(vals[e]) > 0 && len(vals[m]) > 0 && median(vals[m]) > 0 {
				fmt.Fprintf(&w, " %.2f |\n", median(vals[e])/median(vals[m]))
			} else {
				fmt.Fprintf(&w, " |\n")
			}
		}
		row("delivered", "msgs/s", rate, "%.0f", true)
		row("lost", "%", loss, "%.1f", false)
		row("latency p50, saturated", "ms", p50, "%.2f", true)
		row("latency p99, saturated", "ms", p99, "%.2f", true)
		for k, rate := range s.pacedRates {
			row(fmt.Sprintf("latency p50 at %d msgs/s", rate), "ms", pp50[k], "%.3f", true)
			row(fmt.Sprintf("latency p99 at %d msgs/s", rate), "ms", pp99[k], "%.3f", true)
		}
	}
	fmt.Fprintf(&w, "\nUnpaced: every publisher sends %d (QoS 0) / %d (QoS 1, 64 in flight each) messages as fast as the broker takes them; "+
		"msgs/s counts distinct deliveries from the first publish to the last delivery; latency is publish to delivery (send time in the payload), so under saturation it includes queueing; the paced rows send %d messages at %d msgs/s in all (and as many seconds' worth at the higher rates), each flushed at once. "+
		"mosquitto nodelay: `set_tcp_nodelay true`, `max_queued_messages 0`, `max_inflight_messages 0`; mosquitto defaults: stock config (Nagle on, 1000 queued, 20 in flight).\n",
		s.perPub0, s.perPub1, s.pacedN, s.pacedRates[0])
	return w.String()
}

// The edge broker with its uplink down: edged's forward rule into an mqtt connector, or a
// mosquitto bridge, both pointing at {uplink} where nothing listens until the gate opens.
const edgedWithUplink = edgedBrokerOnly + `storage:
  max_messages: 5000000
  max_bytes: 4GiB
bridge:
  connectors:
    - name: cloud
      type: mqtt
      url: tcp://{uplink}
      client_id: edged-bench
      format: raw
      forward:
        - {from: "bench/#", to: "{topic}", qos: 1}
`

const mosqBridge = `set_tcp_nodelay true
persistence true
persistence_location {dir}/
max_queued_messages 0
max_inflight_messages 0
connection cloud
address {uplink}
topic bench/# out 1
cleansession false
restart_timeout 1
try_private false
notifications false
bridge_protocol_version mqttv311
`

type backlogResult struct {
	ingest          float64
	drainTime       float64 // s, uplink up -> last message at the cloud
	drainRate       float64 // msgs/s, first -> last message at the cloud
	dups            int
	idle, atBacklog mem
}

func (b *bench) backlogTargets(uplink string) []target {
	var ts []target
	r := func(s string) string { return strings.ReplaceAll(s, "{uplink}", uplink) }
	if b.edged != "" {
		ts = append(ts, target{"edged", func() (*proc, error) { return startEdged(b.edged, "edged", r(edgedWithUplink)) }, uplink})
	}
	ts = append(ts, target{"mosquitto bridge", func() (*proc, error) { return startMosquitto(b.mosq, "mosquitto", r(mosqBridge)) }, uplink})
	return ts
}

// backlogRun: idle memory, ingest with the uplink down, memory at the backlog, then the
// drain once a loopback mosquitto "cloud" appears behind the uplink address.
func (b *bench) backlogRun(t target, n int, drain bool) (backlogResult, error) {
	var r backlogResult
	p, err := t.start()
	if err != nil {
		return r, fmt.Errorf("start: %w", err)
	}
	defer p.cleanup()
	time.Sleep(time.Second)
	r.idle = p.memory()
	if r.ingest, err = ingest(p.addr, b.s.ingestPubs, n, 0, b.s.bsize); err != nil {
		return r, fmt.Errorf("ingest: %w", err)
	}
	time.Sleep(500 * time.Millisecond)
	r.atBacklog = p.memory()
	if !drain {
		return r, nil
	}
	cloud, err := startMosquitto(b.mosq, "cloud", mosqNoDelay)
	if err != nil {
		return r, fmt.Errorf("start cloud: %w", err)
	}
	defer cloud.cleanup()
	sub, err := newSubscriber(cloud.addr, "cloud-sub", "bench/#", 1, n, false)
	if err != nil {
		return r, fmt.Errorf("cloud subscriber: %w", err)
	}
	defer sub.close()
	t0 := time.Now()
	g, err := openGate(t.uplink, cloud.addr)
	if err != nil {
		return r, fmt.Errorf("open uplink: %w", err)
	}
	defer g.close()
	sub.wait(60*time.Second, 10*time.Minute)
	sub.mu.Lock()
	got, first, last, dups := sub.distinct, sub.first, sub.last, sub.dups
	sub.mu.Unlock()
	if got < n {
		return r, fmt.Errorf("drain: only %d of %d messages reached the cloud", got, n)
	}
	r.drainTime = last.Sub(t0).Seconds()
	r.drainRate = float64(got) / last.Sub(first).Seconds()
	r.dups = dups
	return r, nil
}

func mb(kb int) float64 { return float64(kb) / 1024 }

// singleWindow is the in-flight window of the single-publisher row (paho's default
// max_inflight is 20; 32 is a common setting).
const singleWindow = 32

// singleRun: one publisher, QoS 1, singleWindow in flight, into a fresh broker with the
// uplink down.
func (b *bench) singleRun(t target, n int) (float64, error) {
	p, err := t.start()
	if err != nil {
		return 0, fmt.Errorf("start: %w", err)
	}
	defer p.cleanup()
	return ingestWindow(p.addr, 1, n, 0, b.s.bsize, singleWindow)
}

func (b *bench) backlogSection() string {
	s := b.s
	names := []string{}
	for _, t := range b.backlogTargets("") {
		names = append(names, t.name)
	}
	type agg struct {
		ingest, drainTime, drainRate, dups                           []float64
		idleAnon, idleHWM, blAnon, blHWM, bigAnon, bigHWM, bigIngest []float64
		single                                                       []float64
	}
	res := make([]agg, len(names))
	for run := 0; run < s.bruns; run++ {
		for i, t := range b.backlogTargets(fmt.Sprintf("127.0.0.1:%d", freePort())) {
			progress("backlog run %d/%d: %s, %d messages", run+1, s.bruns, t.name, s.backlog)
			r, err := b.backlogRun(t, s.backlog, true)
			if err != nil {
				b.fail("backlog on %s: %v", t.name, err)
				continue
			}
			a := &res[i]
			a.ingest = append(a.ingest, r.ingest)
			a.drainTime = append(a.drainTime, r.drainTime)
			a.drainRate = append(a.drainRate, r.drainRate)
			a.dups = append(a.dups, float64(r.dups))
			a.idleAnon, a.idleHWM = append(a.idleAnon, mb(r.idle.Anon)), append(a.idleHWM, mb(r.idle.HWM))
			a.blAnon, a.blHWM = append(a.blAnon, mb(r.atBacklog.Anon)), append(a.blHWM, mb(r.atBacklog.HWM))
			// One device alone: its window of in-flight messages is all there is to batch.
			progress("backlog run %d/%d: %s, 1 publisher, %d in flight", run+1, s.bruns, t.name, singleWindow)
			if rate, err := b.singleRun(t, s.backlog/5); err != nil {
				b.fail("single publisher on %s: %v", t.name, err)
			} else {
				a.single = append(a.single, rate)
			}
		}
	}
	// The large backlog too is a median of bruns runs: RssAnon right after a 1M ingest depends
	// on where the collector and the compactions stand at that moment, and one run of it spread
	// 36-53 MB.
	for run := 0; s.bigBacklog > 0 && run < s.bruns; run++ {
		for i, t := range b.backlogTargets(fmt.Sprintf("127.0.0.1:%d", freePort())) {
			progress("backlog run %d/%d: %s, memory at %d", run+1, s.bruns, t.name, s.bigBacklog)
			r, err := b.backlogRun(t, s.bigBacklog, false)
			if err != nil {
				b.fail("backlog of %d on %s: %v", s.bigBacklog, t.name, err)
				continue
			}
			a := &res[i]
			a.bigAnon, a.bigHWM = append(a.bigAnon, mb(r.atBacklog.Anon)), append(a.bigHWM, mb(r.atBacklog.HWM))
			a.bigIngest = append(a.bigIngest, r.ingest)
		}
	}
	var w bytes.Buffer
	fmt.Fprintf(&w, "### Uplink down, then back: %d publishers, QoS 1, %d B payloads (median of %d)\n\n", s.ingestPubs, s.bsize, s.bruns)
	figureHeader(&w, append(names[:len(names):len(names)], "edged / mosquitto"))
	row := func(label, format string, get func(a agg) []float64) {
		fmt.Fprintf(&w, "| %s |", label)
		var vals []float64
		for _, a := range res {
			v := get(a)
			if len(v) == 0 {
				fmt.Fprintf(&w, " n/a |")
				vals = append(vals, -1)
				continue
			}
			fmt.Fprintf(&w, " "+format+" |", median(v))
			vals = append(vals, median(v))
		}
		if len(vals) == 2 && vals[0] > 0 && vals[1] > 0 && names[0] == "edged" {
			fmt.Fprintf(&w, " %.2f |\n", vals[0]/vals[1])
		} else {
			fmt.Fprintf(&w, " |\n")
		}
	}
	row(fmt.Sprintf("durable ingest, uplink down, %d messages (msgs/s)", s.backlog), "%.0f", func(a agg) []float64 { return a.ingest })
	row(fmt.Sprintf("durable ingest, 1 publisher, %d in flight, %d messages (msgs/s)", singleWindow, s.backlog/5), "%.0f", func(a agg) []float64 { return a.single })
	row(fmt.Sprintf("drain %d: uplink up -> last message at the cloud (s)", s.backlog), "%.2f", func(a agg) []float64 { return a.drainTime })
	row("drain rate, first -> last message at the cloud (msgs/s)", "%.0f", func(a agg) []float64 { return a.drainRate })
	row("duplicates delivered during the drain", "%.0f", func(a agg) []float64 { return a.dups })
	row("memory idle, backlog 0: RssAnon (MB)", "%.1f", func(a agg) []float64 { return a.idleAnon })
	row("memory idle, backlog 0: VmHWM (MB)", "%.1f", func(a agg) []float64 { return a.idleHWM })
	row(fmt.Sprintf("memory at backlog %d: RssAnon (MB)", s.backlog), "%.1f", func(a agg) []float64 { return a.blAnon })
	row(fmt.Sprintf("memory at backlog %d: VmHWM (MB)", s.backlog), "%.1f", func(a agg) []float64 { return a.blHWM })
	if s.bigBacklog > 0 {
		row(fmt.Sprintf("durable ingest, %d messages (msgs/s)", s.bigBacklog), "%.0f", func(a agg) []float64 { return a.bigIngest })
		row(fmt.Sprintf("memory at backlog %d: RssAnon (MB)", s.bigBacklog), "%.1f", func(a agg) []float64 { return a.bigAnon })
		row(fmt.Sprintf("memory at backlog %d: VmHWM (MB)", s.bigBacklog), "%.1f", func(a agg) []float64 { return a.bigHWM })
	} else {
		fmt.Fprintf(&w, "| memory at backlog 1000000 | full run only | | |\n")
	}
	fmt.Fprintf(&w, "\nedged: a forward rule `bench/#` into an mqtt connector (QoS 1, format raw) whose URL refuses connections; PUBACK only after the message is fsynced in the outbox. "+
		"mosquitto: a bridge (`topic bench/# out 1`, `cleansession false`, `restart_timeout 1`) to the same dead address, `persistence true`, `max_queued_messages 0`, `max_inflight_messages 0`: "+
		"it holds the queue in memory and writes it to disk only at autosave or exit (no fsync per message), so the two do not promise the same durability. "+
		"The drain starts when a loopback mosquitto \"cloud\" (nodelay) appears behind the uplink address (the harness's uplink gate starts accepting); time includes each side's reconnect delay. "+
		"Memory from /proc/PID/status of the broker process after the ingest.\n")
	return w.String()
}

// pacedCells makes the [rate][target] sample tables of the p50 and p99 paced latencies.
func pacedCells(rates, targets int) (p50, p99 [][][]float64) {
	p50, p99 = make([][][]float64, rates), make([][][]float64, rates)
	for k := range rates {
		p50[k], p99[k] = make([][]float64, targets), make([][]float64, targets)
	}
	return p50, p99
}
