package bridge_test

// Real-process tests: the edged binary (built by testutil, with -race when the tests have it)
// between real MQTT clients and a real mosquitto "cloud", with a TCP proxy in between that the
// test disables, enables and cuts.

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	paho3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/internal/testutil"
)

type e2e struct {
	t      *testing.T
	broker string // local MQTT address
	cfg    string
	e      *testutil.Edged
	data   string
}

func edgedConfig(broker, cloudURL, extra string) string {
	return fmt.Sprintf(`data_dir: {data_dir}
gateway_id: gw1
log: {level: info}
admin: {address: "{admin}"}
broker:
  listeners:
    - {type: tcp, address: %q}
bridge:
  connectors:
    - name: cloud
      type: mqtt
      url: %s
      backoff: {min: 20ms, max: 200ms}
      breaker: {failures: -1}
      forward:
        - {from: "sensors/#", to: "{gateway_id}/{topic}"}
      subscribe:
        - {from: "gw1/cmd/#", to: "cmd/{1}"}
%s`, broker, cloudURL, extra)
}

func startE2E(t *testing.T, cloudURL, extra string) *e2e {
	t.Helper()
	x := &e2e{t: t, broker: testutil.FreeAddr(t), data: t.TempDir()}
	x.cfg = edgedConfig(x.broker, cloudURL, extra)
	x.start()
	return x
}

func (x *e2e) start() {
	x.t.Helper()
	x.e = testutil.StartEdged(x.t, testutil.EdgedOptions{ConfigYAML: x.cfg, DataDir: x.data})
	testutil.WaitTCP(x.t, x.broker, 20*time.Second)
}

func (x *e2e) status() bridge.ConnectorStatus {
	x.t.Helper()
	b, err := testutil.HTTPGet("http://" + x.e.Admin + "/api/v1/status")
	if err != nil {
		x.t.Fatalf("status: %v", err)
	}
	var doc struct {
		Connectors []bridge.ConnectorStatus `json:"connectors"`
	}
	if err := json.Unmarshal(b, &doc); err != nil || len(doc.Connectors) != 1 {
		x.t.Fatalf("status document: %v: %s", err, b)
	}
	return doc.Connectors[0]
}

func (x *e2e) waitDepth(total time.Duration, want int64) {
	x.t.Helper()
	waitFor(x.t, total, func() error {
		if st := x.status(); st.Depth != want {
			return fmt.Errorf("depth %d, want %d (state %s, last error %q)", st.Depth, want, st.State, st.LastError)
		}
		return nil
	})
}

func (x *e2e) waitCloud(sub *cloudSub, n int, total time.Duration) {
	x.t.Helper()
	waitFor(x.t, total, func() error {
		if c := sub.count(); c < n {
			return fmt.Errorf("cloud has %d of %d (depth %d)", c, n, x.status().Depth)
		}
		return nil
	})
}

// 1. online: mapped topics up, a command down.
func TestE2EOnline(t *testing.T) {
	cloud := testutil.StartMosquitto(t, 0, "")
	sub := subscribeCloud(t, cloud.Addr, "gw1/#")
	x := startE2E(t, "tcp://"+cloud.Addr, "")
	waitFor(t, 20*time.Second, func() error {
		if st := x.status(); st.State != bridge.StateConnected {
			return fmt.Errorf("state %s (%s)", st.State, st.LastError)
		}
		return nil
	})
	local := localClient(t, x.broker, "dev1")
	got := make(chan paho3.Message, 4)
	if tok := local.Subscribe("cmd/#", 1, func(_ paho3.Client, m paho3.Message) { got <- m }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	publishN(t, local, "sensors/room1/temp", 0, 100)
	x.waitCloud(sub, 100, 20*time.Second)
	for _, m := range sub.snapshot() {
		if m.Topic != "gw1/sensors/room1/temp" || m.ID == "" {
			t.Fatalf("cloud got %q id %q", m.Topic, m.ID)
		}
	}
	checkSeqs(t, sub.snapshot(), 100, rawSeq)

	cmd := paho3.NewClient(paho3.NewClientOptions().AddBroker("tcp://" + cloud.Addr).SetClientID("cloud-app"))
	if tok := cmd.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer cmd.Disconnect(10)
	cmd.Publish("gw1/cmd/dev1/valve", 1, false, []byte("open")).Wait()
	select {
	case m := <-got:
		if m.Topic() != "cmd/dev1/valve" || string(m.Payload()) != "open" {
			t.Fatalf("local got %s %q", m.Topic(), m.Payload())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("command from the cloud did not reach the local subscriber")
	}
}

// 2. offline: 10k QoS 1 acked with the cloud down, all delivered in order once it is up.
// 3. the same with edged kill -9'd twice (once with the whole backlog queued, once mid-drain).
func TestE2EOfflineBacklog(t *testing.T) {
	for _, kills := range []int{0, 2} {
		t.Run(fmt.Sprintf("kill9x%d", kills), func(t *testing.T) {
			const n = 10000
			port := testutil.FreePort(t)
			p := startProxy(t, fmt.Sprintf("127.0.0.1:%d", port), false) // the cloud is down
			x := startE2E(t, "tcp://"+p.Addr(), "      format: cbor\n")
			local := localClient(t, x.broker, "dev1")
			start := time.Now()
			publishN(t, local, "sensors/a", 0, n) // every PUBACK received: all durable
			t.Logf("%d QoS 1 messages acked with the cloud down in %v", n, time.Since(start))
			local.Disconnect(50)
			if st := x.status(); st.Depth != n || st.State == bridge.StateConnected {
				t.Fatalf("status with the cloud down: %+v", st)
			}
			if kills > 0 {
				x.e.Kill9()
				x.start()
				x.waitDepth(10*time.Second, n)
			}
			cloud := testutil.StartMosquitto(t, port, "")
			sub := subscribeCloud(t, cloud.Addr, "gw1/#")
			p.Set(true) // the cloud is reachable
			if kills > 1 {
				x.waitCloud(sub, 2000, 60*time.Second)
				x.e.Kill9()
				t.Logf("killed with %d messages at the cloud", sub.count())
				x.start()
			}
			x.waitDepth(120*time.Second, 0)
			x.waitCloud(sub, n, 20*time.Second)
			checkSeqs(t, sub.snapshot(), n, envSeq)
		})
	}
}

// 4. the uplink cut and restored every few hundred ms during the drain: none lost, duplicates
// only with the same id.
func TestE2ELinkFlaps(t *testing.T) {
	const n = 10000
	cloud := testutil.StartMosquitto(t, 0, "")
	sub := subscribeCloud(t, cloud.Addr, "gw1/#")
	p := startProxy(t, cloud.Addr, false)
	x := startE2E(t, "tcp://"+p.Addr(), "      format: json\n      window: 100\n      batch: {max_messages: 100}\n")
	local := localClient(t, x.broker, "dev1")
	publishN(t, local, "sensors/a", 0, n)
	p.Set(true)
	stop := make(chan struct{})
	flapped := make(chan int)
	go func() { flapped <- flapOnProgress(p, sub, n, stop) }()
	x.waitDepth(120*time.Second, 0)
	close(stop)
	flaps := <-flapped
	p.Set(true)
	x.waitCloud(sub, n, 20*time.Second)
	time.Sleep(200 * time.Millisecond)
	checkSeqs(t, sub.snapshot(), n, envSeq)
	st := x.status()
	t.Logf("flaps %d, proxy connections %d, reconnects %d", flaps, p.Accepted(), st.Reconnects)
	if st.Reconnects < 2 {
		t.Fatalf("the link never flapped during the drain: %+v", st)
	}
}
