package bridge_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	packets3 "github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/internal/testutil"
)

func mqttConnector(t testing.TB, name, url, extra string) bridge.ConnectorConfig {
	return decodeConnector(t, fmt.Sprintf(`
name: %s
type: mqtt
url: %s
backoff: {min: 20ms, max: 200ms}
breaker: {failures: -1}
%s`, name, url, extra))
}

// TestMQTTOnlineForwardAndDownlink: uplink with mapped topics and the id property; a command
// published on the cloud reaches a local subscriber.
func TestMQTTOnlineForwardAndDownlink(t *testing.T) {
	cloud := testutil.StartMosquitto(t, 0, "")
	sub := subscribeCloud(t, cloud.Addr, "gw/#")
	s := startStack(t, "", mqttConnector(t, "cloud", "tcp://"+cloud.Addr, `
forward:
  - {from: "sensors/+/#", to: "gw/{gateway_id}/{1}/{2}", qos: 1}
subscribe:
  - {from: "gw1/cmd/#", to: "cmd/{1}", qos: 1}
`))
	s.waitConnected("cloud")
	checkRoundTrip(t, s.addr, cloud.Addr, sub, "sensors/t1/room/a", "gw/gw1/t1/room/a", 3, "gw1/cmd/dev1/reboot", "cmd/dev1/reboot")
	// The downlink counter moves after the local publish returns: poll, don't race it.
	waitFor(t, 5*time.Second, func() error {
		if st := s.status("cloud"); st.Downlink != 1 || st.Sent != 3 {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
}

// TestMQTTLoopPrevention: a downlink message whose local topic matches a forward rule of the
// same connector is not sent back up.
func TestMQTTLoopPrevention(t *testing.T) {
	cloud := testutil.StartMosquitto(t, 0, "")
	s := startStack(t, "", mqttConnector(t, "cloud", "tcp://"+cloud.Addr, `
forward:
  - {from: "#", to: "up/{topic}"}
subscribe:
  - {from: "down/#", to: "local/{1}"}
`))
	s.waitConnected("cloud")
	sub := subscribeCloud(t, cloud.Addr, "up/#")
	cloudPublish(t, cloud.Addr, "down/x", "cmd")
	waitFor(t, 5*time.Second, func() error {
		if st := s.status("cloud"); st.Downlink != 1 {
			return fmt.Errorf("downlink %d", st.Downlink)
		}
		return nil
	})
	local := localClient(t, s.addr, "dev")
	publishN(t, local, "marker", 0, 1)
	sub.waitCount(t, 1, 5*time.Second) // the marker
	for _, m := range sub.snapshot() {
		if m.Topic != "up/marker" {
			t.Fatalf("looped message forwarded: %s", m.Topic)
		}
	}
}

// TestMQTTOfflineBacklog: the cloud is down while 10k QoS 1 messages are acked locally; when
// it comes back, all arrive in order.
func TestMQTTOfflineBacklog(t *testing.T) {
	port := testutil.FreePort(t)
	p := testutil.StartRelay(t, fmt.Sprintf("127.0.0.1:%d", port), testutil.RelayDead)
	s := startStack(t, "", mqttConnector(t, "cloud", "tcp://"+p.Addr(), `
format: cbor
forward:
  - {from: "sensors/#", to: "gw1/{topic}"}
`))
	local := localClient(t, s.addr, "dev1")
	const n = 10000
	start := time.Now()
	publishN(t, local, "sensors/a", 0, n)
	t.Logf("10k QoS 1 acked with the cloud down in %v", time.Since(start))
	if st := s.status("cloud"); st.Depth != n || st.State == bridge.StateConnected {
		t.Fatalf("status with the cloud down: %+v", st)
	}
	cloud := testutil.StartMosquitto(t, port, "")
	sub := subscribeCloud(t, cloud.Addr, "gw1/#")
	p.Set(true)
	start = time.Now()
	waitFor(t, 60*time.Second, func() error {
		if st := s.status("cloud"); st.Depth != 0 {
			return fmt.Errorf("depth %d (%s %s)", st.Depth, st.State, st.LastError)
		}
		return nil
	})
	t.Logf("drained in %v", time.Since(start))
	sub.waitCount(t, n, 10*time.Second)
	checkSeqs(t, sub.snapshot(), n, envSeq)
}

// TestMQTTLinkFlaps: the uplink is cut every few hundred ms during the drain; nothing is lost,
// duplicates only with the same id.
func TestMQTTLinkFlaps(t *testing.T) {
	cloud := testutil.StartMosquitto(t, 0, "")
	sub := subscribeCloud(t, cloud.Addr, "gw1/#")
	p := testutil.StartRelay(t, cloud.Addr, testutil.RelayDead)
	s := startStack(t, "", mqttConnector(t, "cloud", "tcp://"+p.Addr(), `
window: 200
batch: {max_messages: 200}
forward:
  - {from: "sensors/#", to: "gw1/{topic}"}
`))
	local := localClient(t, s.addr, "dev1")
	const n = 10000
	publishN(t, local, "sensors/a", 0, n)
	p.Set(true)
	stop := make(chan struct{})
	go flapOnProgress(p, sub, n, stop)
	waitFor(t, 90*time.Second, func() error {
		if st := s.status("cloud"); st.Depth != 0 {
			return fmt.Errorf("depth %d", st.Depth)
		}
		return nil
	})
	close(stop)
	p.Set(true)
	sub.waitCount(t, n, 10*time.Second)
	time.Sleep(200 * time.Millisecond)
	checkSeqs(t, sub.snapshot(), n, rawSeq)
	st := s.status("cloud")
	t.Logf("connections through the proxy %d, reconnects %d", p.Accepted(), st.Reconnects)
	if st.Reconnects < 2 {
		t.Fatalf("link never flapped during the drain: %+v", st)
	}
}

// TestMQTTReceiveMaximum: mosquitto's max_inflight_messages becomes Receive Maximum for v5
// clients; the window follows it and the drain never exceeds it (mosquitto would disconnect).
func TestMQTTReceiveMaximum(t *testing.T) {
	cloud := testutil.StartMosquitto(t, 0, "max_inflight_messages 7")
	sub := subscribeCloud(t, cloud.Addr, "gw1/#")
	s := startStack(t, "", mqttConnector(t, "cloud", "tcp://"+cloud.Addr, `
forward:
  - {from: "sensors/#", to: "gw1/{topic}"}
`))
	local := localClient(t, s.addr, "dev1")
	publishN(t, local, "sensors/a", 0, 2000)
	sub.waitCount(t, 2000, 30*time.Second)
	st := s.status("cloud")
	if st.Window != 7 || st.Reconnects != 0 || st.Failed != 0 {
		t.Fatalf("want window 7 and no failures, got %+v", st)
	}
	checkSeqs(t, sub.snapshot(), 2000, rawSeq)
}

// fakeServer listens on loopback and runs serve on each connection it accepts (counted in
// conns), closing it after.
func fakeServer(t testing.TB, conns *atomic.Int32, serve func(c net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// fakeMQTT accepts CONNECT, answers CONNACK and then reads forever without acking.
func fakeMQTT(t testing.TB, conns *atomic.Int32) string {
	return fakeServer(t, conns, func(c net.Conn) {
		r := bufio.NewReader(c)
		if _, err := packets.ReadPacket(r); err != nil {
			return
		}
		ca := &packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.CONNACK}, Content: &packets.Connack{Properties: &packets.Properties{}}}
		if _, err := ca.WriteTo(c); err != nil {
			return
		}
		for {
			pk, err := packets.ReadPacket(r)
			if err != nil {
				return
			}
			if pk.Type == packets.PINGREQ {
				_, _ = packets.NewControlPacket(packets.PINGRESP).WriteTo(c)
			}
		}
	})
}

// TestMQTTStall: a remote that accepts but never acks -> stalled, counted, reconnected.
func TestMQTTStall(t *testing.T) {
	var conns atomic.Int32
	addr := fakeMQTT(t, &conns)
	s := startStack(t, "", mqttConnector(t, "cloud", "tcp://"+addr, `
stall_timeout: 300ms
forward:
  - {from: "sensors/#", to: "gw1/{topic}"}
`))
	local := localClient(t, s.addr, "dev1")
	publishN(t, local, "sensors/a", 0, 10)
	sawStalled := false
	waitFor(t, 10*time.Second, func() error {
		st := s.status("cloud")
		sawStalled = sawStalled || st.State == bridge.StateStalled
		if st.Stalls < 2 || st.Reconnects < 1 {
			return fmt.Errorf("stalls %d reconnects %d", st.Stalls, st.Reconnects)
		}
		return nil
	})
	st := s.status("cloud")
	if st.Depth != 10 || !strings.Contains(st.LastError, "stalled") || conns.Load() < 2 {
		t.Fatalf("status %+v, conns %d", st, conns.Load())
	}
	_ = sawStalled
}

// TestMQTTBreaker: the breaker opens after consecutive connect failures and closes once the
// remote is back.
func TestMQTTBreaker(t *testing.T) {
	port := testutil.FreePort(t)
	s := startStack(t, "", decodeConnector(t, fmt.Sprintf(`
name: cloud
type: mqtt
url: tcp://127.0.0.1:%d
backoff: {min: 10ms, max: 20ms}
breaker: {failures: 3, open_for: 700ms}
forward:
  - {from: "sensors/#", to: "gw1/{topic}"}
`, port)))
	waitFor(t, 10*time.Second, func() error {
		if st := s.status("cloud"); st.State != bridge.StateBreakerOpen {
			return fmt.Errorf("state %s failed %d", st.State, st.Failed)
		}
		return nil
	})
	failed := s.status("cloud").Failed
	time.Sleep(300 * time.Millisecond)
	if st := s.status("cloud"); st.State != bridge.StateBreakerOpen || st.Failed != failed {
		t.Fatalf("attempts while open: %+v (failed before %d)", st, failed)
	}
	cloud := testutil.StartMosquitto(t, port, "")
	sub := subscribeCloud(t, cloud.Addr, "gw1/#")
	s.waitConnected("cloud")
	local := localClient(t, s.addr, "dev1")
	publishN(t, local, "sensors/a", 0, 5)
	waitFor(t, 10*time.Second, func() error {
		if sub.count() < 5 {
			return fmt.Errorf("cloud has %d", sub.count())
		}
		return nil
	})
}

// TestMQTT311: protocol 3.1.1 through paho.mqtt.golang, with a json envelope for the ids, and
// a downlink subscription.
func TestMQTT311(t *testing.T) {
	cloud := testutil.StartMosquitto(t, 0, "")
	sub := subscribeCloud(t, cloud.Addr, "gw1/#")
	s := startStack(t, "", mqttConnector(t, "cloud", "mqtt://"+cloud.Addr, `
protocol: "3.1.1"
format: json
forward:
  - {from: "sensors/#", to: "gw1/{topic}"}
subscribe:
  - {from: "gw1/cmd/#", to: "cmd/{1}"}
`))
	s.waitConnected("cloud")
	local := localClient(t, s.addr, "dev1")
	got := testutil.Subscribe(t, local, "cmd/#")
	publishN(t, local, "sensors/a", 0, 500)
	sub.waitCount(t, 500, 20*time.Second)
	checkSeqs(t, sub.snapshot(), 500, envSeq)
	cloudPublish(t, cloud.Addr, "gw1/cmd/dev1", "x")
	testutil.Expect(t, got, "cmd/dev1", "x", 10*time.Second)
}

// TestMQTTPubackRejectDeadLetters: mosquitto refuses a topic by ACL (PUBACK 0x87 for MQTT 5):
// that message goes to the dead letters, the others are delivered in order.
func TestMQTTPubackRejectDeadLetters(t *testing.T) {
	acl := writeSecret(t, "acl", "topic readwrite gw1/ok/#\ntopic read gw1/#")
	cloud := testutil.StartMosquitto(t, 0, "user root\nacl_file "+acl)
	sub := subscribeCloud(t, cloud.Addr, "gw1/#")
	s := startStack(t, "", mqttConnector(t, "cloud", "tcp://"+cloud.Addr, `
forward:
  - {from: "ok/#", to: "gw1/ok/{1}"}
  - {from: "no/#", to: "gw1/no/{1}"}
`))
	local := localClient(t, s.addr, "dev1")
	publishN(t, local, "ok/a", 0, 5)
	publishN(t, local, "no/a", 5, 1)
	publishN(t, local, "ok/a", 5, 5)
	s.waitOneDeadLetter("cloud", "0x87", 10*time.Second)
	sub.waitCount(t, 10, 10*time.Second)
	checkSeqs(t, sub.snapshot(), 10, rawSeq)
}

// TestRunStopsEverything: Run returns promptly on cancel with connectors in every state, and
// leaves no goroutine behind.
func TestRunStopsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		var conns atomic.Int32
		dead := testutil.FreeAddr(t)
		s := startStack(t, "", mqttConnector(t, "dead", "tcp://"+dead, "forward: [{from: a, to: b}]"),
			mqttConnector(t, "stuck", "tcp://"+fakeMQTT(t, &conns), "forward: [{from: a, to: b}]"),
			decodeConnector(t, "name: ws\ntype: websocket\nurl: ws://"+dead+"/x\nforward: [{from: a, to: b}]\n"),
			decodeConnector(t, "name: im\ntype: http\nurl: http://"+dead+"/x\nforward: [{from: a, to: b}]\n"))
		local := localClient(t, s.addr, "dev1")
		publishN(t, local, "a", 0, 10)
		time.Sleep(300 * time.Millisecond)
		local.Disconnect(10)
		start := time.Now()
		s.stop()
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("stop took %v", d)
		}
	}()
	waitFor(t, 5*time.Second, func() error {
		if n := runtime.NumGoroutine(); n > before+2 {
			buf := make([]byte, 1<<16)
			return fmt.Errorf("%d goroutines, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
		}
		return nil
	})
}

// TestMQTTTransports: mqtts:// with a private CA and ws:// to mosquitto's other listeners,
// with MQTT 5 and 3.1.1 (whose socket the connector dials too, for the bandwidth cap).
func TestMQTTTransports(t *testing.T) {
	ca := testutil.NewTestCA(t)
	dir := t.TempDir()
	caFile := ca.WriteCA(t, dir)
	cert, key := ca.WriteServerCert(t, dir, "server", "127.0.0.1")
	tlsPort, wsPort := testutil.FreePort(t), testutil.FreePort(t)
	cloud := testutil.StartMosquitto(t, 0, fmt.Sprintf("user root\nlistener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\nlistener %d 127.0.0.1\nprotocol websockets\n",
		tlsPort, caFile, cert, key, wsPort))
	sub := subscribeCloud(t, cloud.Addr, "up/#")
	s := startStack(t, "",
		mqttConnector(t, "tls", fmt.Sprintf("mqtts://127.0.0.1:%d", tlsPort), fmt.Sprintf("tls: {ca: %s}\nforward: [{from: 'a/#', to: 'up/tls/{1}'}]", caFile)),
		mqttConnector(t, "ws", fmt.Sprintf("ws://127.0.0.1:%d/mqtt", wsPort), "forward: [{from: 'a/#', to: 'up/ws/{1}'}]"),
		mqttConnector(t, "tls311", fmt.Sprintf("mqtts://127.0.0.1:%d", tlsPort), fmt.Sprintf("protocol: '3.1.1'\ntls: {ca: %s}\nforward: [{from: 'a/#', to: 'up/tls311/{1}'}]", caFile)),
		mqttConnector(t, "ws311", fmt.Sprintf("ws://127.0.0.1:%d/mqtt", wsPort), "protocol: '3.1.1'\nforward: [{from: 'a/#', to: 'up/ws311/{1}'}]"))
	local := localClient(t, s.addr, "dev1")
	publishN(t, local, "a/b", 0, 50)
	waitFor(t, 10*time.Second, func() error {
		n := map[string]int{}
		for _, m := range sub.snapshot() {
			n[m.Topic]++
		}
		for _, c := range []string{"tls", "ws", "tls311", "ws311"} {
			if n["up/"+c+"/b"] < 50 {
				return fmt.Errorf("cloud got %v (%s: %s)", n, c, s.status(c).LastError)
			}
		}
		return nil
	})
}

// A 3.1.1 cloud that announces a 256 MiB packet (five bytes: a PUBLISH fixed header) used to
// make paho.mqtt.golang allocate the announced length before any body arrived, on every
// reconnect. The connector now ends the link at that header: the status names the refusal and
// the process allocates nowhere near the announced size.
func TestMQTT311HugePacketRefusedFromHeader(t *testing.T) {
	var accepted atomic.Int32
	addr := fakeServer(t, &accepted, func(c net.Conn) {
		if _, err := packets3.ReadPacket(c); err != nil { // the CONNECT
			return
		}
		_, _ = c.Write([]byte{0x20, 2, 0, 0})                // CONNACK, accepted
		_, _ = c.Write([]byte{0x30, 0xff, 0xff, 0xff, 0x7f}) // PUBLISH of 268,435,455 bytes
		_, _ = io.Copy(io.Discard, c)
	})
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	s := startStack(t, "", mqttConnector(t, "cloud", "tcp://"+addr, `
protocol: "3.1.1"
forward: [{from: "a/#", to: "{topic}"}]
`))
	waitFor(t, 30*time.Second, func() error {
		if st := s.status("cloud"); accepted.Load() < 3 || !strings.Contains(st.LastError, "maximum packet size") {
			return fmt.Errorf("%d connections, last error %q", accepted.Load(), st.LastError)
		}
		return nil
	})
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if d := after.TotalAlloc - before.TotalAlloc; d > 128<<20 {
		t.Fatalf("%d MiB allocated over %d connections: the announced size was allocated", d>>20, accepted.Load())
	}
}
