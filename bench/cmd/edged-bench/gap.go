package main

import (
	"bytes"
	"fmt"
	"time"
)

// gapSection measures the paced QoS 0 latency of mosquitto, edged, the two relays and bare
// mochi-mqtt side by side: the relays are the floor a Go server reaches on this machine with
// and without a goroutine handoff per delivery, and bare mochi-mqtt is edged's broker library
// without edged, which together say how much of edged's gap to mosquitto is the embedded
// broker (its design and its work per message) rather than edged's own work. Each
// server's CPU time and run-queue wait per message (schedstat) go beside the latencies: on two
// cores shared with the load generator, a server's wake-ups are part of the delivery's cost.
func (b *bench) gapSection() string {
	s := b.s
	type gapTarget struct {
		name  string
		start func() (*proc, error)
	}
	// The ratio columns name their targets by these positions in ts.
	const mosq, direct, queue, bare, edged = 0, 1, 2, 3, 4
	ts := []gapTarget{
		{"mosquitto nodelay", func() (*proc, error) { return startMosquitto(b.mosq, "mosquitto", mosqNoDelay) }},
		{"Go relay, direct write", func() (*proc, error) { return startRelay(relayDirect) }},
		{"Go relay, writer goroutine", func() (*proc, error) { return startRelay(relayQueue) }},
		{"bare mochi-mqtt", startBareMochi},
	}
	if b.edged != "" {
		ts = append(ts, gapTarget{"edged", func() (*proc, error) { return startEdged(b.edged, "edged", edgedBrokerOnly) }})
	}
	p50, p99 := pacedCells(len(s.pacedRates), len(ts))
	cpu, wait := pacedCells(len(s.pacedRates), len(ts))
	for run := 0; run < s.runs; run++ {
		for i, t := range ts {
			progress("latency floor run %d/%d: %s", run+1, s.runs, t.name)
			p, err := t.start()
			if err != nil {
				b.fail("start %s: %v", t.name, err)
				continue
			}
			for k, rate := range s.pacedRates {
				interval := time.Duration(float64(time.Second) * float64(s.pubs) / float64(rate))
				n := s.pacedN * rate / s.pacedRates[0]
				// A tenth as warm-up (connections, buffers, the runtime's first GC), then the run.
				if _, err := fanIn(p.addr, s.pubs, n/s.pubs/10, 0, s.size, interval); err != nil {
					b.fail("latency floor warm-up at %d msgs/s on %s: %v", rate, t.name, err)
					continue
				}
				before := p.schedstat()
				r, err := fanIn(p.addr, s.pubs, n/s.pubs, 0, s.size, interval)
				if err != nil {
					b.fail("latency floor at %d msgs/s on %s: %v", rate, t.name, err)
					continue
				}
				after := p.schedstat()
				p50[k][i] = append(p50[k][i], r.p50)
				p99[k][i] = append(p99[k][i], r.p99)
				if before.ok && after.ok {
					cpu[k][i] = append(cpu[k][i], float64(after.cpu-before.cpu)/1e3/float64(n))
					wait[k][i] = append(wait[k][i], float64(after.wait-before.wait)/1e3/float64(n))
				}
			}
			p.cleanup()
		}
	}
	var w bytes.Buffer
	fmt.Fprintf(&w, "### Where the paced latency goes: QoS 0, %d publishers -> 1 subscriber, %d B (median of %d)\n\n", s.pubs, s.size, s.runs)
	var cols []string
	for _, t := range ts {
		cols = append(cols, t.name)
	}
	figureHeader(&w, append(cols, "writer goroutine / direct", "edged / bare mochi-mqtt", "edged / mosquitto nodelay"))
	ratio := func(vals [][]float64, num, den int) string {
		if num >= len(vals) || len(vals[num]) == 0 || len(vals[den]) == 0 || median(vals[den]) == 0 {
			return ""
		}
		return fmt.Sprintf("%.2f", median(vals[num])/median(vals[den]))
	}
	for k, rate := range s.pacedRates {
		for _, q := range []struct {
			label, format string
			vals          [][]float64
		}{
			{"latency p50 at %d msgs/s (ms)", " %.3f |", p50[k]},
			{"latency p99 at %d msgs/s (ms)", " %.3f |", p99[k]},
			{"server CPU per message at %d msgs/s (µs)", " %.1f |", cpu[k]},
			{"server threads' run-queue wait per message at %d msgs/s (µs)", " %.1f |", wait[k]},
		} {
			fmt.Fprintf(&w, "| "+q.label+" |", rate)
			for _, v := range q.vals {
				if len(v) == 0 {
					fmt.Fprintf(&w, " n/a |")
				} else {
					fmt.Fprintf(&w, q.format, median(v))
				}
			}
			fmt.Fprintf(&w, " %s | %s | %s |\n", ratio(q.vals, queue, direct), ratio(q.vals, edged, bare), ratio(q.vals, edged, mosq))
		}
	}
	fmt.Fprintf(&w, "\nThe relays (`edged-bench -relay`) are the smallest MQTT server the load generator can use: CONNACK, SUBACK, and every QoS 0 PUBLISH forwarded to the subscriber, with no topic matching, sessions, hooks or store. "+
		"Direct write: the publisher's connection goroutine writes to the subscriber's socket, as a single-threaded broker does. "+
		"Writer goroutine: the packet goes through a channel to a goroutine per subscriber that writes it, the shape of mochi-mqtt, edged's embedded broker. "+
		"Bare mochi-mqtt (`edged-bench -mochi`): the library edged embeds, with an allow-all hook and a TCP listener, none of edged's hooks, store or background work; edged / bare mochi-mqtt is what edged adds to its broker library. "+
		"Each process is fresh; a tenth of each run goes first as warm-up. "+
		"The mosquitto and edged columns measure again what the fan-in table's paced QoS 0 rows measure, here next to the relays in the same sequence of processes; the two tables differ by the run-to-run spread. "+
		"CPU and run-queue wait: the server process's threads summed (/proc/PID/task/*/schedstat: time on a CPU, time runnable but waiting for one) over the measured run, divided by the messages; "+
		"a Go server's include its runtime's threads (sysmon, idle processors spinning for work), each a wake-up that competes with the load generator for the two cores.\n")
	return w.String()
}
