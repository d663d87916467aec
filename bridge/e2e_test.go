package bridge_test

// Real-process tests: the edged binary (built by testutil, with -race when the tests have it)
// between real MQTT clients and a real mosquitto "cloud", with a TCP proxy in between that the
// test disables, enables and cuts.

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

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

func startE2E(t *testing.T, cloudURL, extra string) *e2e {
	t.Helper()
	x := &e2e{t: t, broker: testutil.FreeAddr(t), data: t.TempDir()}
	x.cfg = testutil.UplinkConfig("gw1", x.broker, cloudURL, "      subscribe:\n        - {from: \"gw1/cmd/#\", to: \"cmd/{1}\"}\n"+extra)
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
	checkRoundTrip(t, x.broker, cloud.Addr, sub, "sensors/room1/temp", "gw1/sensors/room1/temp", 100, "gw1/cmd/dev1/valve", "cmd/dev1/valve")
}

// 2. offline: 10k QoS 1 acked with the cloud down, all delivered in order once it is up.
// 3. the same with edged kill -9'd twice (once with the whole backlog queued, once mid-drain).
func TestE2EOfflineBacklog(t *testing.T) {
	for _, kills := range []int{0, 2} {
		t.Run(fmt.Sprintf("kill9x%d", kills), func(t *testing.T) {
			const n = 10000
			port := testutil.FreePort(t)
			p := testutil.StartRelay(t, fmt.Sprintf("127.0.0.1:%d", port), testutil.RelayDead) // the cloud is down
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
				sub.waitCount(t, 2000, 60*time.Second)
				x.e.Kill9()
				t.Logf("killed with %d messages at the cloud", sub.count())
				x.start()
			}
			x.waitDepth(120*time.Second, 0)
			sub.waitCount(t, n, 20*time.Second)
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
	p := testutil.StartRelay(t, cloud.Addr, testutil.RelayDead)
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
	sub.waitCount(t, n, 20*time.Second)
	time.Sleep(200 * time.Millisecond)
	checkSeqs(t, sub.snapshot(), n, envSeq)
	st := x.status()
	t.Logf("flaps %d, proxy connections %d, reconnects %d", flaps, p.Accepted(), st.Reconnects)
	if st.Reconnects < 2 {
		t.Fatalf("the link never flapped during the drain: %+v", st)
	}
}
