package broker

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
)

// The hostile-client test (issue #12): many raw connections send mutated MQTT packets,
// generated from a corpus of valid ones, and the attacks of issue #12, while a well-behaved
// probe keeps round-tripping QoS 1 messages through the broker. The broker must keep serving
// the probe with bounded latency, keep its memory bounded, never panic, and leave no
// goroutine behind.
//
// Bounds (generous on purpose: the test must hold on a loaded 2-core machine under -race):
//   - probe p99 round trip below hostileP99 (2 s; 10 s under -race). Measured on 2 cores
//     shared with other jobs: at load average 28, p50 100-160 ms, p99 0.5-0.8 s (under -race
//     p50 0.5 s, p99 2.6 s); at load 5, p50 0.3 ms, p99 19 ms. See the t.Logf line.
//   - VmRSS growth below hostileRSS (64 MiB; 256 MiB under -race, whose shadow memory
//     multiplies the heap). Measured +8 to +31 MiB (2,500-4,200 connections, 28,000-45,000
//     packets; more when the machine is less loaded), +133 MiB under -race. Before the
//     broker limits the same test grew by 141 MiB, left 1,042 goroutines stuck behind the
//     topic tree, and one 100,000-filter session alone cost +236 MiB.
const (
	hostileConns    = 50
	hostileDuration = 10 * time.Second
	hostileP99      = 2 * time.Second
	hostileRSS      = 64 << 20
)

type corpus struct {
	connects [][]byte // per version, index by version-3
	rest     [][]byte // post-CONNECT packets of any version
}

// noRetainInHostileTest: the corpus sets no retain flag (and mutation never leaves one on a
// PUBLISH): mochi v2.7.9 writes a topic's retained-message path without the lock its
// retained-message scan (on SUBSCRIBE) reads it under, a data race the race detector reports
// as soon as retained PUBLISHes and SUBSCRIBEs run concurrently (upstream
// mochi-mqtt/server issue #200, closed but still present; see mochi.go). It is not fixable
// from hooks; keeping retain out lets -race find races of ours.
func hostileCorpus(t testing.TB) corpus {
	var c corpus
	props := packets.Properties{User: []packets.UserProperty{{Key: "k", Val: "v"}}, ContentType: "text/plain",
		MessageExpiryInterval: 60, TopicAlias: 1, TopicAliasFlag: true, CorrelationData: []byte("c"), ResponseTopic: "r/t"}
	for _, v := range []byte{3, 4, 5} {
		name := []byte("MQTT")
		if v == 3 {
			name = []byte("MQIsdp")
		}
		cp := packets.ConnectParams{ProtocolName: name, ClientIdentifier: "h", Keepalive: 10, Clean: true,
			WillFlag: true, WillTopic: "sensors/h/will", WillPayload: []byte("gone"), WillQos: 1,
			UsernameFlag: true, Username: []byte("d2"), PasswordFlag: true, Password: []byte("pw")}
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, Connect: cp}
		if v == 5 {
			pk.Properties = packets.Properties{SessionExpiryInterval: 30, SessionExpiryIntervalFlag: true, ReceiveMaximum: 10, TopicAliasMaximum: 5}
			pk.Connect.WillProperties = packets.Properties{WillDelayInterval: 0, User: props.User}
		}
		c.connects = append(c.connects, encode(t, pk, v))
	}
	for _, v := range []byte{4, 5} {
		var pp packets.Properties
		if v == 5 {
			pp = props
		}
		for qos := byte(0); qos <= 2; qos++ {
			c.rest = append(c.rest, encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos},
				TopicName: "sensors/h/temp", PacketID: uint16(qos) + 1, Payload: []byte("21.5"), Properties: pp}, v))
		}
		c.rest = append(c.rest,
			encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 7,
				Filters: packets.Subscriptions{{Filter: "sensors/#", Qos: 1}, {Filter: "$share/g/cmd/+", Qos: 2, NoLocal: v == 5}, {Filter: "+/+/+", Qos: 0}}}, v),
			encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, PacketID: 8,
				Filters: packets.Subscriptions{{Filter: "sensors/#"}}}, v),
			encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 3}, v),
			encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 1}, v),
			encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}}, v),
			encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ReasonCode: 0x04}, v),
		)
		if v == 5 {
			c.rest = append(c.rest, encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Auth}, ReasonCode: 0x18,
				Properties: packets.Properties{AuthenticationMethod: "x", AuthenticationData: []byte("y")}}, v))
		}
	}
	return c
}

// mutate returns a damaged copy of p: bit flips, random bytes, truncation, a forged
// remaining length, changed flags, repetition or splicing.
func mutate(r *rand.Rand, p []byte, other []byte) []byte {
	q := slices.Clone(p)
	switch r.IntN(9) {
	case 0: // flip bits
		for n := 1 + r.IntN(4); n > 0; n-- {
			i := r.IntN(len(q))
			q[i] ^= 1 << r.IntN(8)
		}
	case 1: // random bytes
		for n := 1 + r.IntN(4); n > 0; n-- {
			q[r.IntN(len(q))] = byte(r.IntN(256))
		}
	case 2: // truncate
		q = q[:r.IntN(len(q))]
	case 3: // forged remaining length: large, maximal varint, or malformed 5-byte varint
		forged := [][]byte{{0xff, 0xff, 0xff, 0x7f}, {0x80, 0x80, 0x80, 0x80, 0x01}, {0x00}, {0xff, 0x7f}}[r.IntN(4)]
		_, n := remainingLength(q)
		q = append(append([]byte{q[0]}, forged...), q[1+n:]...)
	case 4: // fixed-header flags
		q[0] = q[0]&0xf0 | byte(r.IntN(16))
	case 5: // repeat
		q = bytes.Repeat(q, 2+r.IntN(20))
	case 6: // splice with another packet
		q = append(q[:r.IntN(len(q))], other[r.IntN(len(other)):]...)
	case 7: // insert random bytes
		i := r.IntN(len(q))
		junk := make([]byte, 1+r.IntN(16))
		for j := range junk {
			junk[j] = byte(r.IntN(256))
		}
		q = append(q[:i], append(junk, q[i:]...)...)
	default: // wrong type nibble
		q[0] = byte(r.IntN(16))<<4 | q[0]&0x0f
	}
	return q
}

// remainingLength decodes the varint after the fixed header byte: value and byte count.
func remainingLength(p []byte) (int, int) {
	v, mul := 0, 1
	for i := 1; i < len(p) && i <= 4; i++ {
		v += int(p[i]&0x7f) * mul
		mul *= 128
		if p[i]&0x80 == 0 {
			return v, i
		}
	}
	return v, min(4, len(p)-1)
}

// connectPacket is a valid CONNECT of version v: as device d2 (publish only sensors/d2/#,
// subscribe cmd/d2/#) or anonymous with a unique id (anything, on this loopback listener).
//
// Sessions are clean: offline persistent sessions are bounded only by session_expiry today,
// not by a count, so thousands of them with 1000 subscriptions each would measure that, not
// the per-packet limits this test is about.
func connectPacket(t testing.TB, r *rand.Rand, v byte, id string) []byte {
	name := []byte("MQTT")
	if v == 3 {
		name = []byte("MQIsdp")
	}
	cp := packets.ConnectParams{ProtocolName: name, ClientIdentifier: id, Keepalive: 10, Clean: true}
	if r.IntN(2) == 0 {
		cp.ClientIdentifier = "d2"
		cp.UsernameFlag, cp.Username, cp.PasswordFlag, cp.Password = true, []byte("d2"), true, []byte("pw")
	}
	switch r.IntN(4) {
	case 0: // allowed will (for d2), or anyone's will for anonymous
		cp.WillFlag, cp.WillTopic, cp.WillPayload, cp.WillQos = true, "sensors/d2/status", []byte("gone"), 1
	case 1: // the will attack of issue #12.1: a command to another device (refused at CONNECT)
		cp.WillFlag, cp.WillTopic, cp.WillPayload, cp.WillQos = true, "cmd/d1/reboot", []byte("now"), 1
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, Connect: cp}
	if v == 5 {
		pk.Properties = packets.Properties{ReceiveMaximum: 10, TopicAliasMaximum: 5}
	}
	return encode(t, pk, v)
}

// attackPackets are the concrete attacks of issue #12 (after a valid CONNECT of version v).
func attackPackets(t testing.TB, r *rand.Rand, v byte) [][]byte {
	sub := func(id uint16, filters ...string) []byte {
		fs := make(packets.Subscriptions, len(filters))
		for i, f := range filters {
			fs[i] = packets.Subscription{Filter: f, Qos: 1}
		}
		return encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: id, Filters: fs}, v)
	}
	pub := func(id uint16, topic string) []byte {
		return encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: byte(id % 3)}, PacketID: id, TopicName: topic, Payload: []byte("x")}, v)
	}
	switch r.IntN(5) {
	case 0: // the 32 KB SUBSCRIBE and PUBLISH of 16,000 levels (refused as too long)
		return [][]byte{sub(1, deepTopic(16000)), pub(2, deepTopic(16000))}
	case 1: // short but deep: 200 levels in 399 bytes
		return [][]byte{sub(1, deepTopic(200)), pub(2, deepTopic(200)), pub(4, deepTopic(200))}
	case 2: // subscription flood: 2,000 filters in SUBSCRIBEs of 50
		var out [][]byte
		for p := 0; p < 40; p++ {
			fs := make([]string, 50)
			for i := range fs {
				fs[i] = "flood/" + strconv.Itoa(p*50+i)
			}
			out = append(out, sub(uint16(p+1), fs...))
		}
		return out
	case 3: // one SUBSCRIBE with 5,000 filters
		fs := make([]string, 5000)
		for i := range fs {
			fs[i] = "many/" + strconv.Itoa(i)
		}
		return [][]byte{sub(1, fs...)}
	default: // a publish to another device's topic (denied for d2), and a long one
		return [][]byte{pub(4, "cmd/d1/reboot"), pub(5, strings.Repeat("z", 60000))}
	}
}

func vmRSS(t testing.TB) int64 {
	b, err := os.ReadFile("/proc/self/status")
	must(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			kb, err := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			must(t, err)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

func TestHostileClients(t *testing.T) {
	if testing.Short() {
		t.Skip("hostile-client test takes ~15 s")
	}
	capt := &countCapturer{}
	b := startBroker(t, Options{Config: deviceConfig(t)}, capt)
	a := addr(b, 0)
	c := hostileCorpus(t)

	// The probe: a well-behaved MQTT 5 client round-tripping QoS 1 through the broker.
	probe := mustV5(t, a, "probe")
	_, err := probe.Subscribe(ctx10(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "probe/rt", QoS: 1}}})
	must(t, err)
	runtime.GC()
	goroutines0 := runtime.NumGoroutine()
	rss0 := vmRSS(t)

	ctx, cancel := context.WithTimeout(context.Background(), hostileDuration)
	defer cancel()
	var lat []time.Duration
	probeErr := make(chan error, 1)
	go func() {
		defer close(probeErr)
		for i := 0; ctx.Err() == nil; i++ {
			t0 := time.Now()
			pctx, pcancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := probe.Publish(pctx, &paho.Publish{Topic: "probe/rt", QoS: 1, Payload: []byte(strconv.Itoa(i))})
			if err == nil {
				select {
				case m := <-probe.msgs:
					if string(m.Payload) != strconv.Itoa(i) {
						err = fmt.Errorf("probe got %q, want %d", m.Payload, i)
					}
				case <-pctx.Done():
					err = fmt.Errorf("probe message %d not delivered", i)
				}
			}
			pcancel()
			if err != nil {
				probeErr <- err
				return
			}
			lat = append(lat, time.Since(t0))
			time.Sleep(20 * time.Millisecond)
		}
	}()

	var wg sync.WaitGroup
	var conns, sent atomic.Int64
	for w := 0; w < hostileConns; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 12))
			for ctx.Err() == nil {
				conn, err := net.DialTimeout("tcp", a, 5*time.Second)
				if err != nil {
					continue
				}
				conns.Add(1)
				done := make(chan struct{})
				go func() { // drain whatever the broker answers
					defer close(done)
					_, _ = io.Copy(io.Discard, bufio.NewReader(conn))
				}()
				v := byte(3 + r.IntN(3))
				var out [][]byte
				switch {
				case r.IntN(10) < 8: // a valid CONNECT, so the mutations reach the packet handlers
					out = append(out, connectPacket(t, r, v, fmt.Sprintf("h%d-%d", w, conns.Load())))
				default:
					out = append(out, mutate(r, c.connects[r.IntN(3)], c.rest[r.IntN(len(c.rest))]))
				}
				linger := time.Duration(r.IntN(200)) * time.Millisecond
				if r.IntN(4) == 0 {
					out = append(out, attackPackets(t, r, max(v, 4))...)
					linger = 2 * time.Second // let the broker answer every packet of the attack
				} else {
					for n := 1 + r.IntN(20); n > 0; n-- {
						p := c.rest[r.IntN(len(c.rest))]
						if r.IntN(3) > 0 {
							p = mutate(r, p, c.rest[r.IntN(len(c.rest))])
						}
						if len(p) > 0 && p[0]>>4 == packets.Publish {
							p = append([]byte{p[0] &^ 1}, p[1:]...) // no retain: see noRetainInHostileTest
						}
						out = append(out, p)
					}
				}
				_ = conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
				for _, p := range out {
					if _, err := conn.Write(p); err != nil {
						break
					}
					sent.Add(1)
				}
				// give the broker a moment to answer, then hang up (or it already did)
				select {
				case <-done:
				case <-time.After(linger):
				}
				_ = conn.Close()
				<-done
			}
		}(w)
	}
	wg.Wait()
	if err := <-probeErr; err != nil {
		t.Fatalf("probe failed under attack: %v", err)
	}
	rss1 := vmRSS(t)

	if len(lat) < 5 { // the broker kept serving the probe throughout (8 under -race, load 33)
		t.Fatalf("probe made only %d round trips in %s", len(lat), hostileDuration)
	}
	slices.Sort(lat)
	p50, p99, worst := lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	st := b.Status()
	t.Logf("%d connections, %d packets; probe %d round trips: p50 %s p99 %s max %s; VmRSS %d -> %d MiB (+%d MiB); refusals %v; captured %d",
		conns.Load(), sent.Load(), len(lat), p50, p99, worst, rss0>>20, rss1>>20, (rss1-rss0)>>20, st.Refusals, capt.n.Load())
	bound := hostileP99
	if raceDetector {
		bound *= 5
	}
	if p99 > bound {
		t.Errorf("probe p99 %s above %s", p99, bound)
	}
	rssBound := int64(hostileRSS)
	if raceDetector {
		rssBound *= 4
	}
	if rss1-rss0 > rssBound {
		t.Errorf("VmRSS grew by %d MiB, more than %d MiB", (rss1-rss0)>>20, rssBound>>20)
	}
	for _, r := range []string{refuseTopicTooDeep, refuseTopicTooLong, refuseFilterTooDeep, refuseFilterTooLong,
		refuseSubsPerClient, refuseFiltersPerSub, refuseWillNotAllowed} {
		if st.Refusals[r] == 0 {
			t.Errorf("attack %s never reached the broker (refusals %v)", r, st.Refusals)
		}
	}
	// the broker still serves a new client, and every attacker's goroutines are gone
	late := mustV5(t, a, "late")
	_ = late
	deadline := time.Now().Add(30 * time.Second)
	for runtime.NumGoroutine() > goroutines0+10 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines0+10 {
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines: %d before, %d after the attack\n%s", goroutines0, n, buf[:runtime.Stack(buf, true)])
	}
}
