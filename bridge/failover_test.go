package bridge_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	paho3 "github.com/eclipse/paho.mqtt.golang"
	"gopkg.in/yaml.v3"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/internal/testutil"
	"github.com/edged-dev/edged/wire"
)

// Two clouds; the primary dies mid-drain, comes back half-open (TCP accepted, MQTT never
// answered), then healthy. Everything arrives (union of both clouds, deduplicated by id) in
// order; the connector moves to the secondary within backoff.max + connect_timeout, does not
// take the half-open primary, and is back on the primary within 2 x backoff.max of it being
// healthy.
//
// "process": the primary mosquitto is killed (SIGKILL) and restarted on its port; "link": the
// path to it dies (connections cut, new ones closed at once) while the process lives on.
func TestFailoverPrimaryDiesMidDrainAndReturns(t *testing.T) {
	for _, kill := range []string{"process", "link"} {
		t.Run(kill, func(t *testing.T) { testFailover(t, kill) })
	}
}

func testFailover(t *testing.T, kill string) {
	primary := testutil.StartMosquitto(t, 0, "")
	secondary := testutil.StartMosquitto(t, 0, "")
	var rec arrivals
	rec.subscribe(t, "primary", primary.Addr, "gw1/#")
	rec.subscribe(t, "secondary", secondary.Addr, "gw1/#")
	px := startHoleProxy(t, primary.Addr)
	const (
		backoffMax     = 2 * time.Second
		connectTimeout = 2 * time.Second
	)
	cfg := decodeConnector(t, fmt.Sprintf(`
name: cloud
type: mqtt
urls: [tcp://%s, tcp://%s]
connect_timeout: %v
keepalive: 5s
backoff: {min: 100ms, max: %v}
forward:
  - {from: "sensors/#", to: "gw1/{topic}", qos: 1}
`, px.Addr(), secondary.Addr, connectTimeout, backoffMax))
	s := startStack(t, "", cfg)
	s.waitConnected("cloud")
	if st := s.status("cloud"); st.EndpointIndex != 0 || st.Endpoints != 2 || st.Endpoint != "tcp://"+px.Addr() {
		t.Fatalf("status at start: endpoint %q index %d of %d", st.Endpoint, st.EndpointIndex, st.Endpoints)
	}

	// A paced local publisher keeps traffic flowing through every phase.
	pub := localClient(t, s.addr, "pub")
	var published atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			from := int(published.Load())
			if err := publishBurst(pub, "sensors/x", from, 100); err != nil {
				t.Error(err)
				return
			}
			published.Add(100)
		}
	}()
	fromCloud := func(cloud string) int {
		n := 0
		for _, a := range rec.snapshot() {
			if a.Cloud == cloud {
				n++
			}
		}
		return n
	}

	waitFor(t, 30*time.Second, func() error {
		if n := fromCloud("primary"); n < 3000 {
			return fmt.Errorf("primary has %d messages", n)
		}
		return nil
	})
	killed := time.Now()
	if kill == "process" {
		primary.Stop()
	} else {
		px.SetMode(modeDead)
	}
	waitFor(t, 30*time.Second, func() error {
		if st := s.status("cloud"); st.EndpointIndex != 1 || st.State != bridge.StateConnected {
			return fmt.Errorf("endpoint %d, state %s", st.EndpointIndex, st.State)
		}
		return nil
	})
	tookOver := time.Since(killed)
	t.Logf("on the secondary %v after the primary died (limit backoff.max + connect_timeout = %v)", tookOver.Round(time.Millisecond), backoffMax+connectTimeout)
	if tookOver > backoffMax+connectTimeout {
		t.Fatalf("failover took %v, want <= %v", tookOver, backoffMax+connectTimeout)
	}
	if st := s.status("cloud"); st.Endpoint != "tcp://"+secondary.Addr || st.Failovers != 1 {
		t.Fatalf("status on the secondary: endpoint %q, failovers %d", st.Endpoint, st.Failovers)
	}
	n := fromCloud("secondary")
	waitFor(t, 30*time.Second, func() error {
		if m := fromCloud("secondary"); m < n+2000 {
			return fmt.Errorf("secondary has %d messages", m)
		}
		return nil
	})

	// Half-open primary: probes connect over TCP and get no CONNACK. Held for longer than the
	// probes need to switch (3 successes, one every backoff.max/2) to prove none passed.
	px.SetMode(modeBlackhole)
	before := px.Accepted()
	deadline := time.Now().Add(3 * backoffMax)
	for time.Now().Before(deadline) {
		if st := s.status("cloud"); st.EndpointIndex != 1 {
			t.Fatalf("switched to the half-open primary (endpoint %d)", st.EndpointIndex)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if px.Accepted() == before {
		t.Fatalf("no probe reached the half-open primary")
	}
	t.Logf("%d probes of the half-open primary, none taken", px.Accepted()-before)

	if kill == "process" {
		primary.Restart()
		// Attach the new subscriber before the path opens, or the first messages could
		// arrive before it subscribed.
		rec.subscribe(t, "primary", primary.Addr, "gw1/#")
	}
	healthy := time.Now()
	px.SetMode(modeForward)
	waitFor(t, 30*time.Second, func() error {
		if st := s.status("cloud"); st.EndpointIndex != 0 || st.State != bridge.StateConnected {
			return fmt.Errorf("endpoint %d, state %s", st.EndpointIndex, st.State)
		}
		return nil
	})
	tookBack := time.Since(healthy)
	t.Logf("back on the primary %v after it was healthy (limit 2 x backoff.max = %v)", tookBack.Round(time.Millisecond), 2*backoffMax)
	if tookBack > 2*backoffMax {
		t.Fatalf("return to the primary took %v, want <= %v", tookBack, 2*backoffMax)
	}
	n = fromCloud("primary")
	waitFor(t, 30*time.Second, func() error {
		if m := fromCloud("primary"); m < n+1000 {
			return fmt.Errorf("primary has %d new messages", m-n)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	total := int(published.Load())
	if total < 10000 {
		// The phases above take long enough at 5k msgs/s; keep the volume the promise is about.
		publishN(t, pub, "sensors/x", total, 10000-total)
		total = 10000
	}
	waitFor(t, 60*time.Second, func() error {
		if st := s.status("cloud"); st.Depth != 0 {
			return fmt.Errorf("outbox depth %d", st.Depth)
		}
		distinct := map[string]bool{}
		for _, a := range rec.snapshot() {
			distinct[a.ID] = true
		}
		if len(distinct) < total {
			return fmt.Errorf("%d of %d distinct messages arrived", len(distinct), total)
		}
		return nil
	})
	all := rec.snapshot()
	msgs := make([]cloudMsg, 0, len(all))
	for _, a := range all {
		msgs = append(msgs, cloudMsg{Topic: a.Topic, Payload: a.Payload, ID: a.ID})
	}
	checkSeqs(t, msgs, total, rawSeq)
	if last := all[len(all)-1]; last.Cloud != "primary" {
		t.Fatalf("the last message arrived at %s, want primary", last.Cloud)
	}
	st := s.status("cloud")
	if st.Failovers != 2 {
		t.Fatalf("failovers %d, want 2 (to the secondary and back)", st.Failovers)
	}
	t.Logf("%d messages: %d at the primary, %d at the secondary", total, fromCloud("primary"), fromCloud("secondary"))
}

// url and urls together are a config error; each urls entry is checked under its own key;
// presence is checked too.
func TestFailoverConfig(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"name: c\ntype: mqtt\nurl: tcp://a\nurls: [tcp://b]\nforward: [{from: a, to: b}]\n", "urls: give url or urls, not both"},
		{"name: c\ntype: mqtt\nurls: [tcp://a, http://b]\nforward: [{from: a, to: b}]\n", "urls[1]:"},
		{"name: c\ntype: mqtt\nurls: [tcp://a, tcp://a]\nforward: [{from: a, to: b}]\n", "is already urls[0]"},
		{"name: c\ntype: http\nurls: [http://a, ws://b]\nforward: [{from: a, to: b}]\n", "urls[1]:"},
		{"name: c\ntype: websocket\nurl: ws://a\nurls: [ws://b]\nforward: [{from: a, to: b}]\n", "give url or urls"},
		{"name: c\ntype: mqtt\nurl: tcp://a\npresence: {health_topic: x}\nforward: [{from: a, to: b}]\n", "presence.topic: required"},
		{"name: c\ntype: mqtt\nurl: tcp://a\npresence: {topic: \"{gateway_id}/+\"}\nforward: [{from: a, to: b}]\n", "presence.topic:"},
		{"name: c\ntype: mqtt\nurl: tcp://a\npresence: {topic: s, health_interval: 10ms}\nforward: [{from: a, to: b}]\n", "presence.health_interval:"},
	} {
		var probe struct {
			Type string `yaml:"type"`
		}
		if err := yaml.Unmarshal([]byte(tc.src), &probe); err != nil {
			t.Fatal(err)
		}
		cfg, err := bridge.NewConfig(probe.Type)
		if err != nil {
			t.Fatal(err)
		}
		if err := decodeInto(tc.src, cfg); err != nil {
			t.Fatalf("%q: decode: %v", tc.src, err)
		}
		err = cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.src, err, tc.want)
		}
	}
}

// publishBurst publishes n QoS 1 messages "seq=<i>" and waits for their PUBACKs.
func publishBurst(c paho3.Client, topic string, from, n int) error {
	toks := make([]paho3.Token, 0, n)
	for i := from; i < from+n; i++ {
		toks = append(toks, c.Publish(topic, 1, false, []byte(fmt.Sprintf("seq=%d", i))))
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			return fmt.Errorf("publish seq=%d: no puback: %w", from+i, tok.Error())
		}
	}
	return nil
}

// The http connector fails over the same way: its probe is a HEAD request, which a half-open
// primary (TCP accepted, no HTTP answer) fails.
func TestFailoverHTTP(t *testing.T) {
	var rec arrivals
	server := func(name string) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodHead {
				w.WriteHeader(http.StatusMethodNotAllowed) // answered: alive
				return
			}
			body, _ := io.ReadAll(r.Body)
			b, err := wire.UnmarshalBatchJSON(body)
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			rec.mu.Lock()
			for _, e := range b.Envelopes {
				rec.log = append(rec.log, arrival{Cloud: name, Topic: e.Topic, Payload: e.Payload, ID: e.ID.String(), At: time.Now()})
			}
			rec.mu.Unlock()
			w.WriteHeader(http.StatusOK)
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	primary, secondary := server("primary"), server("secondary")
	px := startHoleProxy(t, primary.Listener.Addr().String())
	const backoffMax = 2 * time.Second
	cfg := decodeConnector(t, fmt.Sprintf(`
name: im
type: http
urls: [http://%s/v1/messages, %s/v1/messages]
connect_timeout: 1s
timeout: 1s
backoff: {min: 50ms, max: %v}
batch: {max_messages: 50}
forward:
  - {from: "alerts/#", to: "alerts", qos: 1}
`, px.Addr(), secondary.URL, backoffMax))
	s := startStack(t, "", cfg)
	pub := localClient(t, s.addr, "pub")
	next := 0
	burst := func(n int) {
		t.Helper()
		if err := publishBurst(pub, "alerts/x", next, n); err != nil {
			t.Fatal(err)
		}
		next += n
	}
	count := func(cloud string) int {
		n := 0
		for _, a := range rec.snapshot() {
			if a.Cloud == cloud {
				n++
			}
		}
		return n
	}
	burst(500)
	waitFor(t, 20*time.Second, func() error {
		if n := count("primary"); n < 500 {
			return fmt.Errorf("primary has %d", n)
		}
		return nil
	})
	px.SetMode(modeDead)
	burst(500)
	waitFor(t, 20*time.Second, func() error {
		if st := s.status("im"); st.EndpointIndex != 1 || count("secondary") < 500 {
			return fmt.Errorf("endpoint %d, secondary has %d", st.EndpointIndex, count("secondary"))
		}
		return nil
	})
	px.SetMode(modeBlackhole)
	before := px.Accepted()
	for end := time.Now().Add(3 * backoffMax); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if st := s.status("im"); st.EndpointIndex != 1 {
			t.Fatalf("switched to the half-open primary")
		}
	}
	if px.Accepted() == before {
		t.Fatalf("no probe reached the half-open primary")
	}
	healthy := time.Now()
	px.SetMode(modeForward)
	waitFor(t, 20*time.Second, func() error {
		if st := s.status("im"); st.EndpointIndex != 0 {
			return fmt.Errorf("endpoint %d", st.EndpointIndex)
		}
		return nil
	})
	t.Logf("back on the primary %v after it was healthy (limit 2 x backoff.max = %v)", time.Since(healthy).Round(time.Millisecond), 2*backoffMax)
	if took := time.Since(healthy); took > 2*backoffMax {
		t.Fatalf("return to the primary took %v, want <= %v", took, 2*backoffMax)
	}
	burst(500)
	waitFor(t, 20*time.Second, func() error {
		if st := s.status("im"); st.Depth != 0 {
			return fmt.Errorf("depth %d", st.Depth)
		}
		return nil
	})
	all := rec.snapshot()
	msgs := make([]cloudMsg, 0, len(all))
	for _, a := range all {
		msgs = append(msgs, cloudMsg{Topic: a.Topic, Payload: a.Payload, ID: a.ID})
	}
	checkSeqs(t, msgs, next, rawSeq)
	if last := all[len(all)-1]; last.Cloud != "primary" {
		t.Fatalf("last message at %s", last.Cloud)
	}
}

// The websocket connector fails over the same way: its probe is the opening handshake.
func TestFailoverWebSocket(t *testing.T) {
	var rec arrivals
	server := func(name string) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			for {
				_, data, err := c.Read(r.Context())
				if err != nil {
					return
				}
				b, err := wire.UnmarshalBatchJSON(data)
				if err != nil || len(b.Envelopes) == 0 {
					continue // not a batch (a control frame): nothing to record
				}
				rec.mu.Lock()
				for _, e := range b.Envelopes {
					rec.log = append(rec.log, arrival{Cloud: name, Topic: e.Topic, Payload: e.Payload, ID: e.ID.String(), At: time.Now()})
				}
				rec.mu.Unlock()
				ack, _ := json.Marshal(map[string]string{"ack": b.Envelopes[len(b.Envelopes)-1].ID.String()})
				if err := c.Write(r.Context(), websocket.MessageText, ack); err != nil {
					return
				}
			}
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	primary, secondary := server("primary"), server("secondary")
	px := startHoleProxy(t, primary.Listener.Addr().String())
	const backoffMax = 2 * time.Second
	cfg := decodeConnector(t, fmt.Sprintf(`
name: ws
type: websocket
urls: [ws://%s/v1/stream, ws://%s/v1/stream]
connect_timeout: 1s
backoff: {min: 50ms, max: %v}
batch: {max_messages: 50}
forward:
  - {from: "events/#", to: "{topic}", qos: 1}
`, px.Addr(), secondary.Listener.Addr().String(), backoffMax))
	s := startStack(t, "", cfg)
	s.waitConnected("ws")
	pub := localClient(t, s.addr, "pub")
	next := 0
	burst := func(n int) {
		t.Helper()
		if err := publishBurst(pub, "events/x", next, n); err != nil {
			t.Fatal(err)
		}
		next += n
	}
	burst(300)
	waitFor(t, 20*time.Second, func() error {
		if st := s.status("ws"); st.Depth != 0 {
			return fmt.Errorf("depth %d", st.Depth)
		}
		return nil
	})
	px.SetMode(modeDead)
	burst(300)
	waitFor(t, 20*time.Second, func() error {
		if st := s.status("ws"); st.EndpointIndex != 1 || st.Depth != 0 {
			return fmt.Errorf("endpoint %d, depth %d", st.EndpointIndex, st.Depth)
		}
		return nil
	})
	px.SetMode(modeBlackhole)
	before := px.Accepted()
	for end := time.Now().Add(3 * backoffMax); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if st := s.status("ws"); st.EndpointIndex != 1 {
			t.Fatalf("switched to the half-open primary")
		}
	}
	if px.Accepted() == before {
		t.Fatalf("no probe reached the half-open primary")
	}
	healthy := time.Now()
	px.SetMode(modeForward)
	waitFor(t, 20*time.Second, func() error {
		if st := s.status("ws"); st.EndpointIndex != 0 || st.State != bridge.StateConnected {
			return fmt.Errorf("endpoint %d, state %s", st.EndpointIndex, st.State)
		}
		return nil
	})
	took := time.Since(healthy)
	t.Logf("back on the primary %v after it was healthy (limit 2 x backoff.max = %v)", took.Round(time.Millisecond), 2*backoffMax)
	if took > 2*backoffMax {
		t.Fatalf("return to the primary took %v, want <= %v", took, 2*backoffMax)
	}
	burst(300)
	waitFor(t, 20*time.Second, func() error {
		if st := s.status("ws"); st.Depth != 0 {
			return fmt.Errorf("depth %d", st.Depth)
		}
		return nil
	})
	all := rec.snapshot()
	msgs := make([]cloudMsg, 0, len(all))
	for _, a := range all {
		msgs = append(msgs, cloudMsg{Topic: a.Topic, Payload: a.Payload, ID: a.ID})
	}
	checkSeqs(t, msgs, next, rawSeq)
	if last := all[len(all)-1]; last.Cloud != "primary" {
		t.Fatalf("last message at %s", last.Cloud)
	}
}
