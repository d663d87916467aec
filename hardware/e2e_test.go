package hardware

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/internal/testutil"
	"github.com/edged-dev/edged/wire"
	"github.com/fxamacker/cbor/v2"
)

type got struct {
	mu    sync.Mutex
	byTop map[string][]string
	props map[string][]paho.UserProperty
	ctype map[string]string
}

func (g *got) add(topic string, payload []byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.byTop[topic] = append(g.byTop[topic], string(payload))
}

func (g *got) expect(t *testing.T, topic string, want ...string) {
	t.Helper()
	waitFor(t, "mqtt "+topic, func() error {
		g.mu.Lock()
		defer g.mu.Unlock()
		if have := g.byTop[topic]; strings.Join(have, "\x00") != strings.Join(want, "\x00") {
			return fmt.Errorf("got %q, want %q", have, want)
		}
		return nil
	})
}

// End to end: frames written on pty devices reach real MQTT clients through the real broker
// (inline publish, no TCP hop for the frames), and a command a client publishes reaches the
// device framed.
func TestEndToEndSerialToMQTTClients(t *testing.T) {
	rec := &testutil.Recorder[*broker.Message]{}
	b, err := broker.New(broker.Options{
		Config: broker.Config{Listeners: []broker.Listener{{Type: broker.ListenerTCP, Address: "127.0.0.1:0"}}},
		State:  testutil.NewMemState(),
	})
	if err != nil {
		t.Fatal(err)
	}
	b.SetCapturer(rec)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	addr := b.Status().Listeners[0].Bound

	// MQTT 3.1.1 client (paho.mqtt.golang): topics and payloads, and it sends a command.
	v3 := &got{byTop: map[string][]string{}}
	c3 := pahov3.NewClient(pahov3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("e2e-v3").
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
	if tok := c3.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { c3.Disconnect(100) })
	if tok := c3.Subscribe("sensors/#", 1, func(_ pahov3.Client, m pahov3.Message) { v3.add(m.Topic(), m.Payload()) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	// MQTT 5 client (paho.golang): the user property "port" and the content type.
	v5 := &got{byTop: map[string][]string{}, props: map[string][]paho.UserProperty{}, ctype: map[string]string{}}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c5 := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) {
			p := pr.Packet
			v5.add(p.Topic, p.Payload)
			v5.mu.Lock()
			v5.props[p.Topic] = p.Properties.User
			v5.ctype[p.Topic] = p.Properties.ContentType
			v5.mu.Unlock()
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c5.Connect(ctx, &paho.Connect{ClientID: "e2e-v5", CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c5.Disconnect(&paho.Disconnect{}) })
	if _, err := c5.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "sensors/#", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}

	r, devs := startOpen(t, b,
		SerialConfig{Name: "meter1", Topic: "sensors/meter1", QoS: 1, CommandTopic: "cmd/meter1"},
		SerialConfig{Name: "cobs1", Framing: "cobs", Topic: "sensors/cobs1"},
		SerialConfig{Name: "cbor1", Framing: "cobs", Format: "cbor", PublishAs: "json", Topic: "sensors/cbor1", QoS: 1},
	)
	lineDev, cobsDev, cborDev := devs[0], devs[1], devs[2]

	before := time.Now().Add(-time.Millisecond)
	lineDev.write(t, []byte("temp=21.5\r\nnot json is fine here\n"))
	cobsDev.write(t, wire.EncodeCOBS([]byte("a\x00b")))
	item, _ := cbor.Marshal(map[string]any{"v": 3})
	cborDev.write(t, append(wire.EncodeCOBS(item), wire.EncodeCOBS([]byte{0xff})...)) // 2nd is invalid

	for _, g := range []*got{v3, v5} {
		g.expect(t, "sensors/meter1", "temp=21.5", "not json is fine here")
		g.expect(t, "sensors/cobs1", "a\x00b")
		g.expect(t, "sensors/cbor1", `{"v":3}`)
	}
	v5.mu.Lock()
	props, ctype := v5.props["sensors/meter1"], v5.ctype["sensors/cbor1"]
	v5.mu.Unlock()
	if len(props) != 1 || props[0].Key != PropPort || props[0].Value != "meter1" {
		t.Errorf("v5 user properties = %+v (want only port=meter1; edged-time is stripped by the broker)", props)
	}
	if ctype != "application/json" {
		t.Errorf("content type = %q", ctype)
	}
	// The capturer (the bridge in edged) got the frame's capture time.
	caps := rec.Where(onTopic("sensors/meter1"))
	if len(caps) != 2 || caps[0].Time.Before(before) || caps[0].Time.After(time.Now()) || !caps[0].Inline {
		t.Errorf("captured = %+v", caps)
	}
	r.wantMetric(t, 1, "edged_serial_invalid_total", "port", "cbor1", "reason", ReasonInvalidCBOR)

	// Command: an MQTT client publishes, the device gets a framed line.
	if tok := c3.Publish("cmd/meter1", 1, false, "relay=on"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	waitFor(t, "command on the device", func() error {
		if got := string(lineDev.received()); got != "relay=on\n" {
			return fmt.Errorf("device got %q", got)
		}
		return nil
	})
	r.stop()
}
