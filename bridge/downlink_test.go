package bridge_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/internal/testutil"
	"github.com/edged-dev/edged/storage"
)

// recordingLocal stands in for the local broker: it records downlink publishes and refuses the
// first `fail` of them, as a local broker that cannot take a message (outbox full under reject,
// shutting down) does.
type recordingLocal struct {
	mu    sync.Mutex
	fail  int
	tries int
	got   []string // payloads published successfully
}

func (l *recordingLocal) Publish(m *broker.Message) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tries++
	if l.tries <= l.fail {
		return errors.New("local broker refused the message")
	}
	l.got = append(l.got, string(m.Payload))
	return nil
}

func (l *recordingLocal) snapshot() (tries int, got []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tries, append([]string(nil), l.got...)
}

func startDownlinkBridge(t *testing.T, local bridge.Local, cfg bridge.ConnectorConfig) (*bridge.Bridge, *prometheus.Registry) {
	t.Helper()
	db, err := storage.Open(storage.Options{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	b, err := bridge.New(bridge.Options{Connectors: []bridge.ConnectorConfig{cfg}, GatewayID: "gw1", DB: db,
		Defaults: storage.Defaults(), Local: local, Logger: testLogger(t), Registerer: reg})
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; db.Close() })
	return b, reg
}

// TestMQTT311DownlinkAckAfterLocalPublish: with MQTT 3.1.1 a downlink command whose local
// publish fails is not acknowledged to the cloud (paho manual ack), so the cloud (a real
// mosquitto, persistent session) redelivers it and it arrives. paho's auto-ack used to
// acknowledge it anyway: the command was lost. The failure is counted.
func TestMQTT311DownlinkAckAfterLocalPublish(t *testing.T) {
	cloud := testutil.StartMosquitto(t, 0, "")
	local := &recordingLocal{fail: 1}
	b, reg := startDownlinkBridge(t, local, mqttConnector(t, "cloud", "tcp://"+cloud.Addr, `
protocol: "3.1.1"
subscribe:
  - {from: "{gateway_id}/cmd/#", to: "cmd/{1}", qos: 1}
`))
	// The connector subscribes inside Connect, so "connected" means the subscription exists.
	waitFor(t, 10*time.Second, func() error {
		if st := b.Status()[0]; st.State != bridge.StateConnected {
			return fmt.Errorf("state %s: %s", st.State, st.LastError)
		}
		return nil
	})
	// Published once: a second local delivery can only be the cloud's redelivery.
	cloudPublish(t, cloud.Addr, "gw1/cmd/dev1/reboot", "reboot")
	waitFor(t, 20*time.Second, func() error {
		if _, got := local.snapshot(); len(got) == 0 {
			return errors.New("the refused command was not redelivered")
		}
		return nil
	})
	if _, got := local.snapshot(); got[0] != "reboot" {
		t.Fatalf("local got %q", got)
	}
	if v, _ := testutil.MetricValue(t, reg, "edged_bridge_downlink_failed_total", map[string]string{"connector": "cloud"}); v < 1 {
		t.Fatalf("downlink failure not counted: %v", v)
	}
}

// fakeCloud5 is a scripted MQTT 5 server for one test. A raw TCP fake is used only here:
// the QoS 2 redelivery case needs a server that re-sends a PUBLISH with DUP and the same
// packet id before PUBREL, on demand, which mosquitto cannot be made to do.
type fakeCloud5 struct {
	t  *testing.T
	ln net.Listener
}

func newFakeCloud5(t *testing.T) *fakeCloud5 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &fakeCloud5{t: t, ln: ln}
}

type fakeSession struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

// accept takes the next connection, answers CONNACK (sessionPresent) and the SUBSCRIBE.
func (f *fakeCloud5) accept(sessionPresent bool) *fakeSession {
	f.t.Helper()
	_ = f.ln.(*net.TCPListener).SetDeadline(time.Now().Add(30 * time.Second))
	c, err := f.ln.Accept()
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	s := &fakeSession{t: f.t, conn: c, br: bufio.NewReader(c)}
	s.expect(packets.CONNECT)
	s.send(&packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.CONNACK},
		Content: &packets.Connack{SessionPresent: sessionPresent, Properties: &packets.Properties{}}})
	sub := s.expect(packets.SUBSCRIBE).Content.(*packets.Subscribe)
	if sub.Subscriptions[0].Topic != "gw1/cmd/#" {
		f.t.Errorf("subscribed to %q, want the resolved gw1/cmd/#", sub.Subscriptions[0].Topic)
	}
	s.send(&packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.SUBACK},
		Content: &packets.Suback{PacketID: sub.PacketID, Reasons: []byte{2}, Properties: &packets.Properties{}}})
	return s
}

func (s *fakeSession) send(cp *packets.ControlPacket) {
	s.t.Helper()
	_ = s.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := cp.WriteTo(s.conn); err != nil {
		s.t.Fatal(err)
	}
}

// expect reads packets until one of type typ (PINGREQs are answered on the way).
func (s *fakeSession) expect(typ byte) *packets.ControlPacket {
	s.t.Helper()
	for {
		_ = s.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		cp, err := packets.ReadPacket(s.br)
		if err != nil {
			s.t.Fatalf("waiting for packet type %d: %v", typ, err)
		}
		if cp.Type == typ {
			return cp
		}
		if cp.Type == packets.PINGREQ {
			s.send(packets.NewControlPacket(packets.PINGRESP))
			continue
		}
		s.t.Fatalf("got packet type %d, want %d", cp.Type, typ)
	}
}

func (s *fakeSession) publish2(id uint16, dup bool, payload string) {
	s.t.Helper()
	cp := (&packets.Publish{PacketID: id, QoS: 2, Duplicate: dup, Topic: "gw1/cmd/dev1", Payload: []byte(payload), Properties: &packets.Properties{}}).ToControlPacket()
	s.send(cp)
	if rec := s.expect(packets.PUBREC).Content.(*packets.Pubrec); rec.PacketID != id || rec.ReasonCode >= 0x80 {
		s.t.Fatalf("PUBREC id %d reason 0x%02x for %q", rec.PacketID, rec.ReasonCode, payload)
	}
}

func (s *fakeSession) release(id uint16) {
	s.t.Helper()
	s.send(&packets.ControlPacket{FixedHeader: packets.FixedHeader{Type: packets.PUBREL, Flags: 2}, Content: &packets.Pubrel{PacketID: id, Properties: &packets.Properties{}}})
	if comp := s.expect(packets.PUBCOMP).Content.(*packets.Pubcomp); comp.PacketID != id {
		s.t.Fatalf("PUBCOMP id %d, want %d", comp.PacketID, id)
	}
}

// TestMQTT5QoS2ExactlyOnce: an incoming QoS 2 command is delivered locally once, however often
// the server re-sends it (DUP, same packet id) before PUBREL, on the same connection and after
// a reconnect that resumes the session; after PUBREL the id is free for a new message; a new
// session (session present 0) starts with no held ids.
func TestMQTT5QoS2ExactlyOnce(t *testing.T) {
	cloud := newFakeCloud5(t)
	local := &recordingLocal{}
	startDownlinkBridge(t, local, mqttConnector(t, "cloud", "tcp://"+cloud.ln.Addr().String(), `
subscribe:
  - {from: "{gateway_id}/cmd/#", to: "cmd/{1}", qos: 2}
`))
	s := cloud.accept(false)
	s.publish2(7, false, "cmd1")
	s.publish2(7, true, "cmd1") // PUBREC lost: the server re-sends
	s.publish2(7, true, "cmd1")

	// The link drops before PUBREL; the session resumes and the server re-sends again.
	s.conn.Close()
	s = cloud.accept(true)
	s.publish2(7, true, "cmd1")
	s.release(7)

	// After PUBREL the id is free: the same id carries a new message.
	s.publish2(7, false, "cmd2")
	s.release(7)

	// A held id does not survive a new session: the server forgot it too.
	s.publish2(9, false, "cmd3")
	s.conn.Close()
	s = cloud.accept(false)
	s.publish2(9, false, "cmd4")
	s.release(9)

	_, got := local.snapshot()
	if fmt.Sprint(got) != "[cmd1 cmd2 cmd3 cmd4]" {
		t.Fatalf("delivered locally: %q, want each command once", got)
	}
}
