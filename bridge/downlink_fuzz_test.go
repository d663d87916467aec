package bridge

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/edged-dev/edged/broker"
)

// strictLocal refuses what the broker refuses (an invalid topic name) and records the rest.
type strictLocal struct{ got []string }

func (l *strictLocal) Publish(m *broker.Message) error {
	if !validTopicName(m.Topic) {
		return fmt.Errorf("broker: publish: invalid topic %q", m.Topic)
	}
	l.got = append(l.got, m.Topic)
	return nil
}

// downlinkForwarder is a forwarder with one subscribe rule and a strictLocal, enough for
// deliver.
func downlinkForwarder(tb testing.TB, from, to string) (*forwarder, *strictLocal, error) {
	r, err := compileRule(Rule{From: from, To: to, QoS: 1}, false, "gw1")
	if err != nil {
		return nil, nil, err
	}
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		tb.Fatal(err)
	}
	local := &strictLocal{}
	b := &Bridge{opts: Options{GatewayID: "gw1"}, local: local}
	return &forwarder{b: b, cfg: &Common{Name: "cloud"}, log: slog.New(slog.DiscardHandler), m: m, subscribe: []*rule{r}}, local, nil
}

// FuzzDownlinkRoute: the topic of a downlink message is chosen by the remote. Through any
// subscribe rule the config accepts, delivering a message with a valid remote topic succeeds:
// it maps to a valid local topic, or matches nothing, or is dropped (counted) when the rule
// leaves no valid topic. A failed delivery is never acknowledged, so an MQTT 3.1.1 remote
// would redeliver such a message on every reconnect, forever.
func FuzzDownlinkRoute(f *testing.F) {
	for _, s := range [][3]string{
		{"gw1/cmd/#", "cmd/{1}", "gw1/cmd/meter1/reset"},
		{"{gateway_id}/cmd/#", "cmd/{1}", "gw1/cmd"},
		{"cmd/#", "{1}", "cmd"},
		{"cmd/#", "{1}", "cmd/"},
		{"+/+/x", "{2}/{1}", "a//x"},
		{"+", "{1}", "$SYS"},
		{"a/#", "{topic}", "a/b"},
		{"a/+", "local/{gateway_id}/{1}", "a/é"},
		{"#", "{1}/x", "/"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, from, to, topic string) {
		fw, local, err := downlinkForwarder(t, from, to)
		if err != nil || !validTopicName(topic) {
			return
		}
		if err := fw.deliver(context.Background(), &Inbound{Topic: topic, Payload: []byte("x"), QoS: 1}); err != nil {
			t.Fatalf("rule %q -> %q, remote topic %q: %v", from, to, topic, err)
		}
		for _, got := range local.got {
			if !validTopicName(got) {
				t.Fatalf("published to %q", got)
			}
		}
	})
}

// TestDownlinkEmptyCaptureDropped: "cmd/#" -> "{1}" on the remote topic "cmd" captures
// nothing and leaves no local topic. The delivery used to fail (the broker refuses an empty
// topic), which kept a 3.1.1 remote redelivering it; now it is dropped and counted.
func TestDownlinkEmptyCaptureDropped(t *testing.T) {
	fw, local, err := downlinkForwarder(t, "cmd/#", "{1}")
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"cmd", "cmd/"} {
		if err := fw.deliver(context.Background(), &Inbound{Topic: topic, QoS: 1}); err != nil {
			t.Fatalf("%q: %v", topic, err)
		}
	}
	if err := fw.deliver(context.Background(), &Inbound{Topic: "cmd/dev1/reboot", QoS: 1}); err != nil || len(local.got) != 1 || local.got[0] != "dev1/reboot" {
		t.Fatalf("valid command: %v, local got %q", err, local.got)
	}
	var m dto.Metric
	if err := fw.m.downlinkFailed.WithLabelValues("cloud").Write(&m); err != nil || m.GetCounter().GetValue() != 2 {
		t.Fatalf("dropped downlinks counted %v (%v), want 2", m.GetCounter().GetValue(), err)
	}
}
