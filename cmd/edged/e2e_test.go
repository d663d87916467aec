package main_test

// End-to-end tests of the foundation: the real edged binary, started on free loopback ports,
// driven by real MQTT clients (eclipse paho v3.1.1 and v5, mosquitto_pub/mosquitto_sub).

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/crypto/bcrypt"

	"github.com/edged-dev/edged/internal/testutil"
)

func baseConfig(listeners string, extra string) string {
	return fmt.Sprintf(`data_dir: {data_dir}
gateway_id: gw-test
log: {level: debug}
admin: {address: "{admin}"}
broker:
  listeners:
%s
%s
`, listeners, extra)
}

func tcpListener(addr string) string { return fmt.Sprintf("    - {type: tcp, address: %q}", addr) }

// cloudBridge is a bridge section with one mqtt connector "cloud" to url and one QoS 1 forward
// rule from one topic filter to another.
func cloudBridge(url, from, to string) string {
	return fmt.Sprintf(`bridge:
  connectors:
    - name: cloud
      type: mqtt
      url: %s
      forward: [{from: %q, to: %q, qos: 1}]
`, url, from, to)
}

func v3Client(t *testing.T, broker, id string, clean bool, user, pass string) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker(broker).SetClientID(id).SetCleanSession(clean).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetOrderMatters(true)
	if user != "" {
		o.SetUsername(user).SetPassword(pass)
	}
	c := mqtt.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

func wait(t *testing.T, tok mqtt.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: %v", what, tok.Error())
	}
}

type inbox struct {
	mu   sync.Mutex
	msgs []mqtt.Message
}

func (in *inbox) handler(_ mqtt.Client, m mqtt.Message) {
	in.mu.Lock()
	in.msgs = append(in.msgs, m)
	in.mu.Unlock()
}

func (in *inbox) waitN(t *testing.T, n int) []mqtt.Message {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		in.mu.Lock()
		defer in.mu.Unlock()
		if len(in.msgs) < n {
			return fmt.Errorf("got %d of %d messages", len(in.msgs), n)
		}
		return nil
	})
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]mqtt.Message(nil), in.msgs...)
}

func TestRoundTripQoS012(t *testing.T) {
	addr := testutil.FreeAddr(t)
	testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: baseConfig(tcpListener(addr), "")})
	sub := v3Client(t, "tcp://"+addr, "sub", true, "", "")
	pub := v3Client(t, "tcp://"+addr, "pub", true, "", "")
	for qos := byte(0); qos <= 2; qos++ {
		in := &inbox{}
		topic := fmt.Sprintf("rt/q%d", qos)
		wait(t, sub.Subscribe(topic, qos, in.handler), "subscribe")
		for i := 0; i < 20; i++ {
			wait(t, pub.Publish(topic, qos, false, fmt.Sprintf("m%d", i)), "publish")
		}
		msgs := in.waitN(t, 20)
		for i, m := range msgs {
			if string(m.Payload()) != fmt.Sprintf("m%d", i) || m.Qos() != qos {
				t.Fatalf("qos %d msg %d: got %q qos %d", qos, i, m.Payload(), m.Qos())
			}
		}
	}
}

func TestMosquittoClients(t *testing.T) {
	subBin := testutil.RequireCommand(t, "mosquitto_sub")
	pubBin := testutil.RequireCommand(t, "mosquitto_pub")
	addr := testutil.FreeAddr(t)
	testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: baseConfig(tcpListener(addr), "")})
	_, port, _ := net.SplitHostPort(addr)
	for _, v := range []string{"mqttv311", "mqttv5"} {
		t.Run(v, func(t *testing.T) {
			// Retained, so the subscriber started afterwards must receive it.
			out, err := exec.Command(pubBin, "-h", "127.0.0.1", "-p", port, "-V", v, "-q", "1", "-r", "-t", "cli/"+v, "-m", "hello "+v).CombinedOutput()
			if err != nil {
				t.Fatalf("mosquitto_pub: %v %s", err, out)
			}
			out, err = exec.Command(subBin, "-h", "127.0.0.1", "-p", port, "-V", v, "-q", "2", "-t", "cli/"+v, "-C", "1", "-W", "10").CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "hello "+v {
				t.Fatalf("mosquitto_sub: %v %q", err, out)
			}
		})
	}
}

func TestRetainedAndWill(t *testing.T) {
	addr := testutil.FreeAddr(t)
	testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: baseConfig(tcpListener(addr), "")})
	pub := v3Client(t, "tcp://"+addr, "pub", true, "", "")
	wait(t, pub.Publish("state/lamp", 1, true, "on"), "publish retained")

	in := &inbox{}
	sub := v3Client(t, "tcp://"+addr, "late", true, "", "")
	wait(t, sub.Subscribe("state/#", 1, in.handler), "subscribe")
	if m := in.waitN(t, 1)[0]; string(m.Payload()) != "on" || !m.Retained() {
		t.Fatalf("retained: %q retained=%v", m.Payload(), m.Retained())
	}

	// A will is published when its client vanishes without DISCONNECT: a raw TCP client
	// sending CONNECT with a will and then closing the socket.
	wills := &inbox{}
	wait(t, sub.Subscribe("wills/#", 1, wills.handler), "subscribe wills")
	o := mqtt.NewClientOptions().AddBroker("tcp://"+addr).SetClientID("dying").SetWill("wills/dying", "gone", 1, false).SetAutoReconnect(false)
	var conn net.Conn
	o.SetCustomOpenConnectionFn(func(u *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
		c, err := net.Dial("tcp", u.Host)
		conn = c
		return c, err
	})
	dying := mqtt.NewClient(o)
	wait(t, dying.Connect(), "connect dying")
	_ = conn.Close() // abrupt: no DISCONNECT
	if m := wills.waitN(t, 1)[0]; string(m.Payload()) != "gone" || m.Topic() != "wills/dying" {
		t.Fatalf("will: %s %q", m.Topic(), m.Payload())
	}
}

func TestPersistentSessionSurvivesRestart(t *testing.T) {
	addr := testutil.FreeAddr(t)
	data := t.TempDir()
	cfg := baseConfig(tcpListener(addr), "")
	e := testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: cfg, DataDir: data})

	in := &inbox{}
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("persistent").SetCleanSession(false).
		SetAutoReconnect(false).SetOrderMatters(true).SetDefaultPublishHandler(in.handler)
	c := mqtt.NewClient(o)
	wait(t, c.Connect(), "connect")
	wait(t, c.Subscribe("queued/#", 1, in.handler), "subscribe")
	c.Disconnect(100)

	pub := v3Client(t, "tcp://"+addr, "pub", true, "", "")
	for i := 0; i < 5; i++ {
		wait(t, pub.Publish("queued/x", 1, false, fmt.Sprintf("q%d", i)), "publish")
	}
	pub.Disconnect(100)
	if err := e.Stop(5 * time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: cfg, DataDir: data})

	c = mqtt.NewClient(o)
	wait(t, c.Connect(), "reconnect")
	defer c.Disconnect(100)
	// mochi re-sends a restored session's queue sorted by creation second only, so messages
	// queued within one second may come back in another order: compare as a set.
	got := map[string]bool{}
	for _, m := range in.waitN(t, 5) {
		got[string(m.Payload())] = true
	}
	for i := 0; i < 5; i++ {
		if !got[fmt.Sprintf("q%d", i)] {
			t.Fatalf("q%d not delivered after restart; got %v", i, got)
		}
	}
}

func TestACLReasonCodes(t *testing.T) {
	addr := testutil.FreeAddr(t)
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	users := fmt.Sprintf(`  users:
    - {username: sensor1, password_hash: %q, role: device}
  roles:
    device: {publish: ["sensors/%%c/#"], subscribe: ["cmd/%%u/#"]}
`, hash)
	testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: baseConfig(tcpListener(addr), users)})

	// A wrong password is refused, and the broker keeps serving others.
	bad := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("d1").SetUsername("sensor1").SetPassword("nope").SetAutoReconnect(false))
	if tok := bad.Connect(); tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
		t.Fatal("wrong password accepted")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: "d1", CleanStart: true, KeepAlive: 30,
		UsernameFlag: true, Username: "sensor1", PasswordFlag: true, Password: []byte("s3cret")})
	if err != nil || ca.ReasonCode != 0 {
		t.Fatalf("v5 connect: %v %+v", err, ca)
	}
	defer c.Disconnect(&paho.Disconnect{})
	if pr, err := c.Publish(ctx, &paho.Publish{Topic: "sensors/d1/temp", QoS: 1, Payload: []byte("21")}); err != nil || pr.ReasonCode != 0 {
		t.Fatalf("allowed publish: %v %+v", err, pr)
	}
	pr, err := c.Publish(ctx, &paho.Publish{Topic: "sensors/other/temp", QoS: 1, Payload: []byte("21")})
	if pr == nil || pr.ReasonCode != 0x87 {
		t.Fatalf("denied publish: want PUBACK 0x87, got %+v (%v)", pr, err)
	}
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "cmd/sensor1/#", QoS: 1}, {Topic: "secrets/#", QoS: 1}}})
	if sa == nil || len(sa.Reasons) != 2 || sa.Reasons[0] != 1 || sa.Reasons[1] != 0x87 {
		t.Fatalf("v5 suback: want [1 0x87], got %+v (%v)", sa, err)
	}

	v3 := v3Client(t, "tcp://"+addr, "d3", true, "sensor1", "s3cret")
	tok := v3.SubscribeMultiple(map[string]byte{"cmd/sensor1/#": 1, "secrets/#": 1}, nil)
	wait(t, tok, "v3 subscribe")
	res := tok.(*mqtt.SubscribeToken).Result()
	if res["cmd/sensor1/#"] != 1 || res["secrets/#"] != 0x80 {
		t.Fatalf("v3 suback: %v", res)
	}
}

func TestTLSListenerWithTestCA(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewTestCA(t)
	certFile, keyFile := ca.WriteServerCert(t, dir, "server", "127.0.0.1")
	addr := testutil.FreeAddr(t)
	l := fmt.Sprintf("    - {type: tls, address: %q, cert: %q, key: %q}", addr, certFile, keyFile)
	testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: baseConfig(l, "  allow_anonymous: true")})

	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	o := mqtt.NewClientOptions().AddBroker("ssl://" + addr).SetClientID("tls1").SetTLSConfig(&tls.Config{RootCAs: pool}).SetAutoReconnect(false)
	c := mqtt.NewClient(o)
	wait(t, c.Connect(), "tls connect")
	defer c.Disconnect(100)
	in := &inbox{}
	wait(t, c.Subscribe("tls/t", 1, in.handler), "subscribe")
	wait(t, c.Publish("tls/t", 1, false, "secure"), "publish")
	if m := in.waitN(t, 1)[0]; string(m.Payload()) != "secure" {
		t.Fatalf("got %q", m.Payload())
	}

	// A client that does not trust the CA is refused at the handshake.
	bad := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("ssl://" + addr).SetClientID("tls2").SetTLSConfig(&tls.Config{}).SetAutoReconnect(false))
	if tok := bad.Connect(); tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
		t.Fatal("untrusted TLS client connected")
	}
}

func TestWebSocketListener(t *testing.T) {
	addr := testutil.FreeAddr(t)
	l := fmt.Sprintf("    - {type: websocket, address: %q}", addr)
	testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: baseConfig(l, "")})
	c := v3Client(t, "ws://"+addr, "ws1", true, "", "")
	in := &inbox{}
	wait(t, c.Subscribe("ws/t", 1, in.handler), "subscribe")
	wait(t, c.Publish("ws/t", 1, false, "over websocket"), "publish")
	if m := in.waitN(t, 1)[0]; string(m.Payload()) != "over websocket" {
		t.Fatalf("got %q", m.Payload())
	}
}

func TestSIGTERMCleanExit(t *testing.T) {
	addr := testutil.FreeAddr(t)
	e := testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: baseConfig(tcpListener(addr), "")})
	c := v3Client(t, "tcp://"+addr, "c1", true, "", "")
	wait(t, c.Publish("x/y", 1, false, "z"), "publish")
	start := time.Now()
	if err := e.Stop(5 * time.Second); err != nil {
		t.Fatalf("SIGTERM: want exit 0 within 5s, got %v after %v", err, time.Since(start))
	}
}

func TestAdminEndpoints(t *testing.T) {
	addr := testutil.FreeAddr(t)
	e := testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: baseConfig(tcpListener(addr), "")})
	c := v3Client(t, "tcp://"+addr, "c1", true, "", "")
	wait(t, c.Publish("m/x", 1, false, "z"), "publish")
	metrics, err := testutil.HTTPGet("http://" + e.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"edged_clients_connected", "edged_messages_received_total"} {
		if !strings.Contains(string(metrics), name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	status, err := testutil.HTTPGet("http://" + e.Admin + "/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"version"`, `"uptime_seconds"`, `"broker"`, `"storage"`, `"connectors"`} {
		if !strings.Contains(string(status), key) {
			t.Errorf("status lacks %s:\n%s", key, status)
		}
	}
	out, err := exec.Command(testutil.EdgedBinary(t), "status", "-admin", e.Admin).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "gw-test") {
		t.Fatalf("edged status: %v\n%s", err, out)
	}
}

func TestCheckReportsEveryMistake(t *testing.T) {
	cfg := `data_dir: ./data
log: {level: loud}
broker:
  listeners:
    - {type: tcp, address: 127.0.0.1:1883}
    - {type: carrier-pigeon, address: 127.0.0.1:1884}
  allow_anonymus: true
`
	f := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(f, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testutil.EdgedBinary(t), "check", "-c", f)
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 2 {
		t.Fatalf("exit %d (%v), want 2:\n%s", code, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := []*regexp.Regexp{
		regexp.MustCompile(`^` + regexp.QuoteMeta(f) + `:2: log\.level: .*loud`),
		regexp.MustCompile(`^` + regexp.QuoteMeta(f) + `:6: broker\.listeners\[1\]\.type: .*carrier-pigeon`),
		regexp.MustCompile(`^` + regexp.QuoteMeta(f) + `:7: broker\.allow_anonymus: unknown key`),
	}
	if len(lines) != len(want) {
		t.Fatalf("want %d problems, got %d:\n%s", len(want), len(lines), out)
	}
	for i, re := range want {
		if !re.MatchString(lines[i]) {
			t.Errorf("line %d: %q does not match %s", i, lines[i], re)
		}
	}
}

func TestRefusesAnonymousOnNonLoopback(t *testing.T) {
	f := filepath.Join(t.TempDir(), "open.yaml")
	_ = os.WriteFile(f, []byte("broker:\n  listeners:\n    - {type: tcp, address: 0.0.0.0:1883}\n"), 0o600)
	cmd := exec.Command(testutil.EdgedBinary(t), "check", "-c", f)
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), "allow_anonymous") {
		t.Fatalf("want exit 2 explaining allow_anonymous, got %d:\n%s", cmd.ProcessState.ExitCode(), out)
	}
}

func TestPasswdAndVersion(t *testing.T) {
	cmd := exec.Command(testutil.EdgedBinary(t), "passwd")
	cmd.Stdin = strings.NewReader("hunter2\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if bcrypt.CompareHashAndPassword([]byte(strings.TrimSpace(string(out))), []byte("hunter2")) != nil {
		t.Fatalf("passwd printed %q, not a bcrypt hash of the input", out)
	}
	out, err = exec.Command(testutil.EdgedBinary(t), "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "edged ") {
		t.Fatalf("version: %v %q", err, out)
	}
}

// A message close to the default maximum packet (1 MiB) that matches a forward rule is stored
// and acknowledged, not refused forever (the device would resend it in a loop).
func TestLargeMessageIsStored(t *testing.T) {
	addr := testutil.FreeAddr(t)
	dead := testutil.FreeAddr(t) // nothing listens: the uplink is down
	cfg := baseConfig(tcpListener(addr), "") + cloudBridge("tcp://"+dead, "big/#", "{topic}")
	e := testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: cfg})
	c := v3Client(t, "tcp://"+addr, "big", true, "", "")
	payload := make([]byte, 1000*1000)
	wait(t, c.Publish("big/blob", 1, false, payload), "publish 1 MB")
	testutil.WaitFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		body, err := testutil.HTTPGet("http://" + e.Admin + "/api/v1/status")
		if err != nil {
			return err
		}
		if !strings.Contains(string(body), `"depth": 1`) {
			return fmt.Errorf("outbox depth not 1: %s", body)
		}
		return nil
	})
}
