package bridge

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edged-dev/edged/internal/confkit"
)

func TestRuleMatchExpand(t *testing.T) {
	tests := []struct {
		from, to, topic, want string
		match                 bool
	}{
		{"sensors/#", "gw1/{topic}", "sensors/a/b", "gw1/sensors/a/b", true},
		{"sensors/#", "gw/{1}", "sensors/a/b", "gw/a/b", true},
		{"sensors/#", "gw/{1}", "sensors", "gw", true},
		{"sensors/+/temp", "t/{1}", "sensors/k1/temp", "t/k1", true},
		{"sensors/+/temp", "t/{1}", "sensors/k1/hum", "", false},
		{"sensors/+/temp", "t/{1}", "sensors/k1/temp/x", "", false},
		{"+/+/#", "{2}/{1}/{3}", "a/b/c/d", "b/a/c/d", true},
		{"#", "up/{topic}", "$SYS/x", "", false},
		{"a/+", "x/{gateway_id}/{client_id}/{1}", "a/b", "x/gw1/dev1/b", true},
		{"alerts/#", "alerts", "alerts/fire", "alerts", true},
		{"a/b", "c", "a/b", "c", true},
		{"a/b", "c", "a/bc", "", false},
	}
	for _, tt := range tests {
		r, err := compileRule(Rule{From: tt.from, To: tt.to}, true, "gw1")
		if err != nil {
			t.Fatalf("%s -> %s: %v", tt.from, tt.to, err)
		}
		caps, ok := r.match(tt.topic)
		if ok != tt.match {
			t.Fatalf("%s on %s: match %v", tt.from, tt.topic, ok)
		}
		if ok {
			if got := r.expand(tt.topic, caps, "dev1", "gw1"); got != tt.want {
				t.Fatalf("%s -> %s on %s: got %q want %q", tt.from, tt.to, tt.topic, got, tt.want)
			}
		}
	}
}

func keys(err error) []string {
	var out []string
	for _, e := range confkit.Flatten(err) {
		var ke *confkit.KeyError
		if errors.As(e, &ke) {
			out = append(out, ke.Key)
		} else {
			out = append(out, "?"+e.Error())
		}
	}
	return out
}

func decode(t *testing.T, typ, src string) ConnectorConfig {
	t.Helper()
	c, err := NewConfig(typ)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return c
}

// Validate is pure: defaults come from NewConfig before decoding, so validating changes nothing,
// and a config that did not start from NewConfig is reported, not quietly completed.
func TestConfigValidatePure(t *testing.T) {
	for _, typ := range []string{"mqtt", "http", "websocket", "nats"} {
		c := decode(t, typ, "name: c\ntype: "+typ+"\nforward: [{from: a, to: b}]\n")
		before := fmt.Sprintf("%+v", c)
		_ = c.Validate()
		if after := fmt.Sprintf("%+v", c); after != before {
			t.Errorf("%s: Validate changed the config:\n%s\n%s", typ, before, after)
		}
	}
	bare := &MQTTConfig{Base: Base{Name: "c", Type: "mqtt", Forward: []Rule{{From: "a", To: "b", QoS: 1}}}, URL: "tcp://h:1883"}
	got := keys(bare.Validate())
	for _, k := range []string{"format", "window", "connect_timeout", "protocol"} {
		if !slices.Contains(got, k) {
			t.Errorf("zero config: %s not reported (got %v)", k, got)
		}
	}
	if bare.Format != "" || bare.Window != 0 {
		t.Errorf("Validate filled defaults: %+v", bare)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		typ, src string
		want     []string
	}{
		{"mqtt", "name: c\ntype: mqtt\nurl: tcp://h:1883\nforward: [{from: 'a/#', to: 'b/{1}'}]\n", nil},
		{"mqtt", "name: 'bad name'\ntype: mqtt\nurl: ftp://h\nprotocol: 4\nforward: [{from: 'a/#/b', to: 'x'}, {from: 'a/+', to: 'x/{2}', qos: 2}]\n",
			[]string{"name", "url", "protocol", "forward[0].from", "forward[1].to", "forward[1].qos"}},
		{"mqtt", "name: c\ntype: mqtt\nurl: tcp://h\nformat: xml\nwindow: 70000\nbackoff: {min: 2s, max: 1s}\nforward: [{from: a, to: b}]\n",
			[]string{"format", "window", "backoff.max"}},
		{"http", "name: c\ntype: http\nurl: http://h/x\nformat: raw\nauth: {type: hmac}\nforward: [{from: a, to: b}]\nsubscribe: [{from: a, to: b}]\n",
			[]string{"format", "subscribe", "auth.key_id", "auth.secret_file"}},
		{"http", "name: c\ntype: http\nurl: h/x\nauth: {type: token, token_url: 'x'}\nforward: [{from: a, to: '{client_id}/{nope}'}]\n",
			[]string{"forward[0].to", "url", "auth.client_id", "auth.client_secret_file", "auth.token_url"}},
		{"websocket", "name: c\ntype: websocket\nurl: http://h\nforward: []\n", []string{"forward", "url"}},
		// A zero written by the user is checked, not replaced by the default; outbox limits are
		// checked by storage's rules (zero inherits).
		{"mqtt", "name: c\ntype: mqtt\nurl: tcp://h\nwindow: 0\nstall_timeout: 0s\nbackoff: {min: 0s}\nbreaker: {failures: 0, open_for: 0s}\nkeepalive: 0s\nsession_expiry: 0s\noutbox: {max_bytes: 1KiB, max_messages: 0, when_full: never}\nforward: [{from: a, to: b}]\n",
			[]string{"window", "stall_timeout", "backoff.min", "breaker.failures", "breaker.open_for", "keepalive", "session_expiry", "outbox.max_bytes", "outbox.when_full"}},
		{"http", "name: c\ntype: http\nurl: http://h/x\ntimeout: 0s\nbatch: {max_messages: 0, max_bytes: 0}\nforward: [{from: a, to: b}]\n",
			[]string{"timeout", "batch.max_messages", "batch.max_bytes"}},
		{"websocket", "name: c\ntype: websocket\nurl: ws://h\nping_interval: 0s\nconnect_timeout: 0s\nforward: [{from: a, to: b}]\n",
			[]string{"ping_interval", "connect_timeout"}},
		{"nats", "name: c\ntype: nats\nurls: [nats://h:4222]\nack_timeout: 0s\nforward: [{from: a, to: b}]\n",
			[]string{"ack_timeout"}},
	}
	for i, tt := range tests {
		c := decode(t, tt.typ, tt.src)
		got := keys(c.Validate())
		if strings.Join(sorted(got), ",") != strings.Join(sorted(tt.want), ",") {
			t.Errorf("case %d: keys %v, want %v (%v)", i, got, tt.want, c.Validate())
		}
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

func TestRuleUnknownKeyAndDefaultQoS(t *testing.T) {
	c := decode(t, "mqtt", "name: c\ntype: mqtt\nurl: tcp://h\nforward: [{from: a, to: b}, {from: c, to: d, qos: 0}]\n")
	f := c.Common().Forward
	if f[0].QoS != 1 || f[1].QoS != 0 {
		t.Fatalf("qos %d %d", f[0].QoS, f[1].QoS)
	}
	cfg, _ := NewConfig("mqtt")
	err := yaml.Unmarshal([]byte("forward: [{from: a, to: b, qso: 1}]"), cfg)
	if err == nil || !strings.Contains(err.Error(), "qso") {
		t.Fatalf("unknown rule key accepted: %v", err)
	}
}

func TestValidateAllUniqueNames(t *testing.T) {
	a := decode(t, "mqtt", "name: c\ntype: mqtt\nurl: tcp://h\nforward: [{from: a, to: b}]\n")
	b := decode(t, "http", "name: c\ntype: http\nurl: http://h\nforward: [{from: a, to: b}]\n")
	if got := keys(ValidateAll([]ConnectorConfig{a, b})); len(got) != 1 || got[0] != "[1].name" {
		t.Fatalf("keys %v", got)
	}
}

func TestRegistry(t *testing.T) {
	names := []string{}
	for _, ty := range Types() {
		names = append(names, ty.Name)
	}
	if strings.Join(names, ",") != "http,mqtt,nats,websocket" {
		t.Fatalf("types %v", names)
	}
	mustPanic := func(name string, ty Type) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Fatalf("%s: no panic", name)
			}
		}()
		Register(ty)
	}
	ok := Type{Name: "x", NewConfig: func() ConnectorConfig { return nil }, New: func(ConnectorConfig, Env) (Connector, error) { return nil, nil }}
	mustPanic("empty name", Type{NewConfig: ok.NewConfig, New: ok.New})
	mustPanic("nil constructor", Type{Name: "y", NewConfig: ok.NewConfig})
	mustPanic("duplicate", Type{Name: "mqtt", NewConfig: ok.NewConfig, New: ok.New})
}

func TestBreaker(t *testing.T) {
	br := &breaker{failures: 3, openFor: time.Hour}
	if f1, f2, f3 := br.fail(), br.fail(), br.fail(); f1 || f2 || !f3 || br.wait() <= 0 {
		t.Fatal("breaker did not open on the 3rd failure")
	}
	br.success()
	if br.wait() != 0 {
		t.Fatal("breaker still open after success")
	}
	if d := parseRetryAfter("3"); d != 3*time.Second {
		t.Fatalf("retry-after %v", d)
	}
	if d := parseRetryAfter(time.Now().Add(2 * time.Second).UTC().Format("Mon, 02 Jan 2006 15:04:05 GMT")); d < time.Second || d > 2*time.Second {
		t.Fatalf("retry-after date %v", d)
	}
}

func TestHMACStringToSign(t *testing.T) {
	s := HMACStringToSign("POST", "/v1/m?x=1", "1700000000", "00ff", []byte(""))
	want := "POST\n/v1/m?x=1\n1700000000\n00ff\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	if s != want {
		t.Fatalf("got %q", s)
	}
	// HMAC-SHA256("key", want)
	if got := SignHMAC([]byte("key"), "POST", "/v1/m?x=1", "1700000000", "00ff", nil); len(got) != 64 {
		t.Fatalf("signature %q", got)
	}
}

// {gateway_id} in a rule's from is resolved when the rule is compiled (forward: the local
// filter; subscribe: the remote subscription, see ResolveFilter).
func TestRuleFromGatewayID(t *testing.T) {
	r, err := compileRule(Rule{From: "{gateway_id}/cmd/#", To: "cmd/{1}"}, false, "gw9")
	if err != nil {
		t.Fatal(err)
	}
	if caps, ok := r.match("gw9/cmd/dev1/reboot"); !ok || r.expand("gw9/cmd/dev1/reboot", caps, "", "gw9") != "cmd/dev1/reboot" {
		t.Fatalf("match %v %v", caps, ok)
	}
	if _, ok := r.match("{gateway_id}/cmd/x"); ok {
		t.Fatal("the literal placeholder text matched")
	}
	if _, err := compileRule(Rule{From: "{gw}/cmd/#", To: "x"}, false, "gw9"); err == nil {
		t.Fatal("unknown placeholder accepted")
	}
}

// A backoff key written alone carries the other key's default along, so raising only min
// raises the cap with it (and lowering only max lowers the first delay); what the user wrote,
// an explicit 0 or a min above max, is still checked.
func TestConfigBackoffDefaultsFollowWrittenKey(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		backoff  string // the connector's backoff line, "" for none
		min, max time.Duration
		want     []string // keys Validate reports
	}{
		{"", 200 * ms, 5 * time.Second, nil},
		{"backoff: {min: 10s}", 10 * time.Second, 10 * time.Second, nil},
		{"backoff: {min: 1s}", time.Second, 5 * time.Second, nil},
		{"backoff: {max: 100ms}", 100 * ms, 100 * ms, nil},
		{"backoff: {max: 30s}", 200 * ms, 30 * time.Second, nil},
		{"backoff: {min: 1s, max: 2s}", time.Second, 2 * time.Second, nil},
		{"backoff: {min: 1d}", 24 * time.Hour, 24 * time.Hour, nil},
		{"backoff: {min: ~}", 200 * ms, 5 * time.Second, nil},
		{"backoff: {}", 200 * ms, 5 * time.Second, nil},
		{"backoff:", 200 * ms, 5 * time.Second, nil},
		{"backoff: {min: 0s}", 0, 5 * time.Second, []string{"backoff.min"}},
		{"backoff: {max: 0s}", 200 * ms, 0, []string{"backoff.max"}},
		{"backoff: {max: -1s}", 200 * ms, -time.Second, []string{"backoff.max"}},
		{"backoff: {min: 0s, max: 0s}", 0, 0, []string{"backoff.min"}},
		{"backoff: {min: 10s, max: 5s}", 10 * time.Second, 5 * time.Second, []string{"backoff.max"}},
		{"backoff: {min: 200ms, max: 100ms}", 200 * ms, 100 * ms, []string{"backoff.max"}},
	}
	for _, typ := range []string{"mqtt", "http", "websocket", "nats"} {
		url := map[string]string{"mqtt": "url: tcp://h", "http": "url: http://h/x", "websocket": "url: ws://h", "nats": "urls: [nats://h:4222]"}[typ]
		for _, tt := range tests {
			c := decode(t, typ, "name: c\ntype: "+typ+"\n"+url+"\nforward: [{from: a, to: b}]\n"+tt.backoff+"\n")
			if got := c.Common().Backoff; got != (confkit.Backoff{Min: tt.min, Max: tt.max}) {
				t.Errorf("%s %q: backoff %+v, want min %v max %v", typ, tt.backoff, got, tt.min, tt.max)
			}
			if got := keys(c.Validate()); strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("%s %q: problems %v, want keys %v", typ, tt.backoff, c.Validate(), tt.want)
			}
		}
	}
}
