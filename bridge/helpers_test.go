package bridge_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/eclipse/paho.golang/packets"
	paho3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/bridge/internal/mqtt5"
	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/internal/testutil"
	"github.com/edged-dev/edged/storage"
	"github.com/edged-dev/edged/wire"
)

// decodeConnector runs the loader's path: NewConfig, strict decode, Validate.
func decodeConnector(t testing.TB, src string) bridge.ConnectorConfig {
	t.Helper()
	cfg := decodeUnvalidated(t, src)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("validate connector: %v", err)
	}
	return cfg
}

// decodeUnvalidated is decodeConnector without Validate: NewConfig of src's type, strict
// decode.
func decodeUnvalidated(t testing.TB, src string) bridge.ConnectorConfig {
	t.Helper()
	var probe struct {
		Type string `yaml:"type"`
	}
	if err := yaml.Unmarshal([]byte(src), &probe); err != nil {
		t.Fatal(err)
	}
	cfg, err := bridge.NewConfig(probe.Type)
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeInto(src, cfg); err != nil {
		t.Fatalf("decode connector %q: %v", src, err)
	}
	return cfg
}

type stack struct {
	t      testing.TB
	dir    string
	db     *storage.DB
	br     *broker.Broker
	b      *bridge.Bridge
	reg    *prometheus.Registry // the bridge's metrics
	addr   string
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("BRIDGE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startStack runs storage -> broker -> bridge in-process, like cmd/edged does.
func startStack(t testing.TB, dir string, conns ...bridge.ConnectorConfig) *stack {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	log := testLogger(t)
	db, err := storage.Open(storage.Options{Dir: dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	br, err := broker.New(broker.Options{Config: broker.Config{Listeners: []broker.Listener{{Type: "tcp", Address: "127.0.0.1:0"}}},
		State: db.State(), Logger: log})
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	b, err := bridge.New(bridge.Options{Connectors: conns, GatewayID: "gw1", DB: db, Defaults: storage.Defaults(), Local: br, Logger: log, Registerer: reg})
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	br.SetCapturer(b)
	ctx, cancel := context.WithCancel(context.Background())
	if err := br.Start(ctx); err != nil {
		cancel()
		db.Close()
		t.Fatal(err)
	}
	s := &stack{t: t, dir: dir, db: db, br: br, b: b, reg: reg, cancel: cancel, done: make(chan struct{})}
	s.addr = br.Status().Listeners[0].Bound
	go func() { b.Run(ctx); close(s.done) }()
	t.Cleanup(s.stop)
	return s
}

func (s *stack) stop() {
	s.once.Do(func() {
		_ = s.br.Close()
		s.cancel()
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			s.t.Errorf("bridge.Run did not return within 10s after cancel")
		}
		_ = s.db.Close()
	})
}

func (s *stack) status(name string) bridge.ConnectorStatus {
	for _, st := range s.b.Status() {
		if st.Name == name {
			return st
		}
	}
	s.t.Fatalf("no connector %q", name)
	return bridge.ConnectorStatus{}
}

// waitConnected waits until the connector reports connected.
func (s *stack) waitConnected(name string) {
	s.t.Helper()
	waitFor(s.t, 10*time.Second, func() error {
		if st := s.status(name); st.State != bridge.StateConnected {
			return fmt.Errorf("state %s (%s)", st.State, st.LastError)
		}
		return nil
	})
}

// waitOneDeadLetter waits until connector name (the stack's only one) has nothing queued and
// one message dead-lettered, and checks that the dead letter's reason contains reason.
func (s *stack) waitOneDeadLetter(name, reason string, total time.Duration) {
	s.t.Helper()
	waitFor(s.t, total, func() error {
		if st := s.status(name); st.Depth != 0 || st.DeadLetters != 1 || st.DeadLetterDepth != 1 {
			return fmt.Errorf("depth %d, dead letters %d (%d queued), state %s (%s)", st.Depth, st.DeadLetters, st.DeadLetterDepth, st.State, st.LastError)
		}
		return nil
	})
	dl, err := s.db.Outboxes()[0].DeadLetters(0, 10)
	if err != nil || len(dl) != 1 || !strings.Contains(dl[0].Reason, reason) {
		s.t.Fatalf("dead letters %+v %v, want one whose reason contains %q", dl, err, reason)
	}
}

// localClient is a real MQTT 3.1.1 client to the edged broker.
func localClient(t testing.TB, addr, id string) paho3.Client {
	t.Helper()
	o := paho3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(true).
		SetAutoReconnect(false).SetMaxResumePubInFlight(1000).SetOrderMatters(true).SetWriteTimeout(10 * time.Second)
	c := paho3.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect local %s: %v", addr, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

// checkRoundTrip checks both directions through the connector between the local broker at
// local and the cloud broker at cloud (recorded by sub): n messages published locally on up
// arrive at the cloud on upCloud, each with an id property, in order; a command published on
// the cloud on down arrives locally on downLocal.
func checkRoundTrip(t testing.TB, local, cloud string, sub *cloudSub, up, upCloud string, n int, down, downLocal string) {
	t.Helper()
	c := localClient(t, local, "dev1")
	got := testutil.Subscribe(t, c, "cmd/#")
	publishN(t, c, up, 0, n)
	sub.waitCount(t, n, 20*time.Second)
	for _, m := range sub.snapshot() {
		if m.Topic != upCloud || m.ID == "" {
			t.Fatalf("cloud got topic %q id %q, want topic %q with an id", m.Topic, m.ID, upCloud)
		}
	}
	checkSeqs(t, sub.snapshot(), n, rawSeq)
	cloudPublish(t, cloud, down, "cmd")
	testutil.Expect(t, got, downLocal, "cmd", 10*time.Second)
}

// cloudPublish publishes payload on topic at QoS 1 to the cloud broker at addr, as an
// application of the cloud would, and waits for the PUBACK.
func cloudPublish(t testing.TB, addr, topic, payload string) {
	t.Helper()
	c := paho3.NewClient(paho3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(fmt.Sprintf("cloud-app-%d", time.Now().UnixNano())))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect to the cloud: %v", tok.Error())
	}
	defer c.Disconnect(10)
	if tok := c.Publish(topic, 1, false, []byte(payload)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s to the cloud: %v", topic, tok.Error())
	}
}

// publishN publishes n QoS 1 messages "seq=<from+i>" on topic pipelined (publishPayloads).
func publishN(t testing.TB, c paho3.Client, topic string, from, n int) {
	t.Helper()
	publishPayloads(t, c, n, func(i int) (string, []byte) { return topic, []byte(fmt.Sprintf("seq=%d", from+i)) })
}

// publishPayloads publishes n QoS 1 messages msg(0..n-1) pipelined (up to 500 outstanding)
// and waits for every PUBACK.
func publishPayloads(t testing.TB, c paho3.Client, n int, msg func(i int) (string, []byte)) {
	t.Helper()
	publishWindow(t, c, 500, n, msg)
}

// publishWindow is publishPayloads with window PUBACKs outstanding besides the one awaited.
func publishWindow(t testing.TB, c paho3.Client, window, n int, msg func(i int) (string, []byte)) {
	t.Helper()
	toks := make(chan paho3.Token, window)
	errc := make(chan error, 1)
	go func() {
		defer close(errc)
		for tok := range toks {
			var err error
			if !tok.WaitTimeout(60 * time.Second) {
				err = errors.New("no PUBACK within 60s")
			} else {
				err = tok.Error()
			}
			if err != nil {
				errc <- fmt.Errorf("puback: %w", err)
				for range toks {
				}
				return
			}
		}
	}()
	for i := 0; i < n; i++ {
		topic, p := msg(i)
		toks <- c.Publish(topic, 1, false, p)
	}
	close(toks)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// cloudMsg is what the cloud subscriber saw.
type cloudMsg struct {
	Topic   string
	Payload []byte
	ID      string // user property id (MQTT 5)
}

// cloudSub subscribes to the cloud with the MQTT 5 test client and records every message.
type cloudSub struct {
	mu   sync.Mutex
	msgs []cloudMsg
	seen map[string]struct{} // distinct payloads (a redelivery has the same bytes)
}

func subscribeCloud(t testing.TB, addr, filter string) *cloudSub {
	t.Helper()
	return subscribeCloudAuth(t, addr, "", "", filter)
}

// subscribeCloudAuth is subscribeCloud with a username and password ("" = none).
func subscribeCloudAuth(t testing.TB, addr, user, pass, filter string) *cloudSub {
	t.Helper()
	cs := &cloudSub{seen: map[string]struct{}{}}
	subscribeV5(t, addr, user, pass, filter, func(m cloudMsg) {
		cs.mu.Lock()
		cs.msgs = append(cs.msgs, m)
		cs.seen[string(m.Payload)] = struct{}{}
		cs.mu.Unlock()
	})
	return cs
}

var subscribers atomic.Int64 // numbers the client ids of subscribeV5

// subscribeV5 attaches an MQTT 5 subscriber (the test client, receive maximum 65535) to the
// broker at addr, with a username and password unless "", and hands every message of filter
// to rec with its id property; it is closed in t.Cleanup.
func subscribeV5(t testing.TB, addr, user, pass, filter string, rec func(cloudMsg)) {
	t.Helper()
	var pw []byte
	if pass != "" {
		pw = []byte(pass)
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := mqtt5.Connect(context.Background(), conn, mqtt5.Options{ClientID: fmt.Sprintf("cloudsub-%d", subscribers.Add(1)),
		Username: user, Password: pw, CleanStart: true, ReceiveMaximum: 65535, OnPublish: func(p *packets.Publish) error {
			m := cloudMsg{Topic: p.Topic, Payload: append([]byte(nil), p.Payload...)}
			if p.Properties != nil {
				for _, u := range p.Properties.User {
					if u.Key == bridge.IDProp {
						m.ID = u.Value
					}
				}
			}
			rec(m)
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Subscribe(context.Background(), []packets.SubOptions{{Topic: filter, QoS: 1}}); err != nil {
		t.Fatal(err)
	}
}

func (c *cloudSub) snapshot() []cloudMsg {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]cloudMsg(nil), c.msgs...)
}

// waitCount waits until at least n distinct messages were received.
func (c *cloudSub) waitCount(t testing.TB, n int, total time.Duration) {
	t.Helper()
	waitFor(t, total, func() error {
		if got := c.count(); got < n {
			return fmt.Errorf("cloud has %d of %d messages", got, n)
		}
		return nil
	})
}

// count is the number of distinct messages received.
func (c *cloudSub) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen)
}

// checkSeqs verifies that every seq in [0,n) arrived, first arrivals in order, and that any
// duplicate carries the same id as the first copy. payloadSeq extracts "seq=<i>".
func checkSeqs(t testing.TB, msgs []cloudMsg, n int, payloadSeq func(cloudMsg) (int, string)) {
	t.Helper()
	ids := map[int]string{}
	next := 0
	dups := 0
	for _, m := range msgs {
		seq, id := payloadSeq(m)
		if prev, ok := ids[seq]; ok {
			dups++
			if id != prev {
				t.Fatalf("duplicate of seq %d with a different id: %q vs %q", seq, id, prev)
			}
			continue
		}
		if seq != next {
			t.Fatalf("out of order or lost: got seq %d, want %d", seq, next)
		}
		ids[seq] = id
		next++
	}
	if next != n {
		t.Fatalf("got %d distinct messages, want %d", next, n)
	}
	t.Logf("%d messages, %d duplicates (same id)", n, dups)
}

// rawSeq reads a raw payload "seq=<i>" and the MQTT 5 id property.
func rawSeq(m cloudMsg) (int, string) {
	var i int
	fmt.Sscanf(string(m.Payload), "seq=%d", &i)
	return i, m.ID
}

// envSeq decodes a CBOR or JSON envelope.
func envSeq(m cloudMsg) (int, string) {
	var e *wire.Envelope
	var err error
	if bytes.HasPrefix(m.Payload, []byte("{")) {
		e, err = wire.UnmarshalEnvelopeJSON(m.Payload)
	} else {
		e, err = wire.UnmarshalEnvelope(m.Payload)
	}
	if err != nil {
		return -1, ""
	}
	var i int
	fmt.Sscanf(string(e.Payload), "seq=%d", &i)
	return i, e.ID.String()
}

func waitFor(t testing.TB, total time.Duration, fn func() error) {
	t.Helper()
	testutil.WaitFor(t, total, 20*time.Millisecond, fn)
}

// decodeInto strictly decodes a connector's YAML into cfg (no Validate).
func decodeInto(src string, cfg bridge.ConnectorConfig) error {
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	return dec.Decode(cfg)
}

// runCmd runs a command and returns its combined output.
func runCmd(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// startWSCloud is a websocket cloud: every frame a connection receives goes to onFrame, which
// returns the id to acknowledge ("" for none); an error fails the test and drops the link.
func startWSCloud(t testing.TB, onFrame func(typ websocket.MessageType, data []byte) (ack string, err error)) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, data, err := c.Read(r.Context())
			if err != nil {
				return
			}
			id, err := onFrame(typ, data)
			if err != nil {
				t.Error(err)
				return
			}
			if id == "" {
				continue
			}
			ack, _ := json.Marshal(map[string]string{"ack": id})
			if err := c.Write(r.Context(), websocket.MessageText, ack); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}
