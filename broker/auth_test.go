package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/edged-dev/edged/internal/testutil"
)

func aclConfig(t testing.TB) Config {
	cfg := localConfig()
	cfg.Users = []User{
		{Username: "dev", PasswordHash: hash(t, "devpw"), Role: "device"},
		{Username: "ops", PasswordHash: hash(t, "opspw"), Role: "ops"},
	}
	cfg.Roles = map[string]Role{
		"device": {Publish: []string{"sensors/%c/#"}, Subscribe: []string{"cmd/%c/#"}},
		"ops":    {Publish: []string{"cmd/#"}, Subscribe: []string{"sensors/#", "cmd/#"}},
	}
	return cfg
}

func v5login(user, pass, id string) *paho.Connect {
	return &paho.Connect{ClientID: id, CleanStart: true, Username: user, UsernameFlag: true, Password: []byte(pass), PasswordFlag: true}
}

func TestACLv5(t *testing.T) {
	b := startBroker(t, Options{Config: aclConfig(t)}, nil)
	dev, _, err := connectV5(t, addr(b, 0), v5login("dev", "devpw", "d1"))
	must(t, err)
	// allowed publish: own subtree
	pr, err := dev.Publish(ctx10(t), &paho.Publish{Topic: "sensors/d1/temp", QoS: 1, Payload: []byte("1")})
	must(t, err)
	if pr.ReasonCode != 0 {
		t.Fatalf("allowed publish reason %#x", pr.ReasonCode)
	}
	// denied publish: someone else's subtree -> PUBACK 0x87
	pr, _ = dev.Publish(ctx10(t), &paho.Publish{Topic: "sensors/d2/temp", QoS: 1, Payload: []byte("1")})
	if pr == nil || pr.ReasonCode != 0x87 {
		t.Fatalf("denied publish: %+v", pr)
	}
	// QoS 2 denied -> PUBREC 0x87
	pr, _ = dev.Publish(ctx10(t), &paho.Publish{Topic: "other", QoS: 2, Payload: []byte("1")})
	if pr == nil || pr.ReasonCode != 0x87 {
		t.Fatalf("denied qos2 publish: %+v", pr)
	}
	// subscribe: own cmd allowed, wider filter denied with 0x87
	sa, err := dev.Subscribe(ctx10(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "cmd/d1/#", QoS: 1}, {Topic: "cmd/#", QoS: 1}, {Topic: "$share/g/cmd/d1/x", QoS: 1}}})
	if sa == nil {
		t.Fatalf("subscribe: %v", err)
	}
	if sa.Reasons[0] != 1 || sa.Reasons[1] != 0x87 || sa.Reasons[2] != 1 {
		t.Fatalf("suback reasons %#v", sa.Reasons)
	}
	// ops can command the device, and the device receives it
	ops, _, err := connectV5(t, addr(b, 0), v5login("ops", "opspw", "o1"))
	must(t, err)
	_, err = ops.Publish(ctx10(t), &paho.Publish{Topic: "cmd/d1/reboot", QoS: 1, Payload: []byte("now")})
	must(t, err)
	m := recv(t, dev.msgs, 10*time.Second, "command not delivered")
	if m.Topic != "cmd/d1/reboot" {
		t.Fatalf("got %s", m.Topic)
	}
	// the connection survived the denials
	if _, err := dev.Publish(ctx10(t), &paho.Publish{Topic: "sensors/d1/x", QoS: 1}); err != nil {
		t.Fatal(err)
	}
}

func TestACLv3(t *testing.T) {
	b := startBroker(t, Options{Config: aclConfig(t)}, nil)
	lost := make(chan error, 1)
	dev := mustV3(t, addr(b, 0), "d1", v3opts{user: "dev", pass: "devpw", clean: true, onLost: func(err error) { lost <- err }})
	tok := dev.SubscribeMultiple(map[string]byte{"cmd/d1/#": 1, "cmd/#": 1}, func(pahov3.Client, pahov3.Message) {})
	must(t, waitTok(t, tok))
	res := tok.(*pahov3.SubscribeToken).Result()
	if res["cmd/d1/#"] != 1 || res["cmd/#"] != 0x80 {
		t.Fatalf("v3 suback %v", res)
	}
	must(t, waitTok(t, dev.Publish("sensors/d1/t", 1, false, "ok")))
	// a denied QoS 1 publish disconnects a 3.1.1 client (no negative PUBACK in 3.1.1)
	dev.Publish("sensors/d2/t", 1, false, "no")
	recv(t, lost, 10*time.Second, "v3 client not disconnected after denied publish")
}

func TestBadPassword(t *testing.T) {
	b := startBroker(t, Options{Config: aclConfig(t)}, nil)
	good := mustV3(t, addr(b, 0), "good", v3opts{user: "ops", pass: "opspw", clean: true})
	got := make(chan struct{}, 10)
	must(t, waitTok(t, good.Subscribe("cmd/#", 1, func(pahov3.Client, pahov3.Message) { got <- struct{}{} })))

	_, err := connectV3(t, addr(b, 0), "bad3", v3opts{user: "ops", pass: "wrong", clean: true})
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "bad user name or password") {
		t.Fatalf("v3 bad password: %v", err)
	}
	_, ca, err := connectV5(t, addr(b, 0), v5login("ops", "wrong", "bad5"))
	if err == nil || ca == nil || ca.ReasonCode != 0x86 {
		t.Fatalf("v5 bad password: %v %+v", err, ca)
	}
	_, ca, _ = connectV5(t, addr(b, 0), v5login("nobody", "x", "bad5b"))
	if ca == nil || ca.ReasonCode != 0x86 {
		t.Fatalf("v5 unknown user: %+v", ca)
	}
	// anonymous is still fine on loopback; the good client is unaffected
	anon := mustV3(t, addr(b, 0), "anon", v3opts{clean: true})
	must(t, waitTok(t, anon.Publish("cmd/x", 1, false, "y")))
	must(t, waitTok(t, good.Publish("cmd/x", 1, false, "y")))
	for range 2 {
		recv(t, got, 10*time.Second, "authenticated client stopped working")
	}
}

func TestAnonymousRefusedOffLoopback(t *testing.T) {
	// Tests bind loopback only, so the listener is bound on 127.0.0.1 and then classified as
	// a LAN listener, which is the only thing the auth hook looks at (listenerInfo.loopback,
	// derived from the configured address by netaddr.IsLoopback).
	cfg := aclConfig(t)
	b, err := New(Options{Config: cfg})
	must(t, err)
	for _, li := range b.access.t().listeners {
		li.loopback = false
	}
	must(t, b.Start(context.Background()))
	t.Cleanup(func() { _ = b.Close() })
	_, err = connectV3(t, addr(b, 0), "anon", v3opts{clean: true})
	if err == nil {
		t.Fatal("anonymous client accepted on a non-loopback listener")
	}
	mustV3(t, addr(b, 0), "dev", v3opts{user: "dev", pass: "devpw", clean: true})
}

// --- TLS ---

// testPKI is a throwaway CA (testutil.TestCA) with a server certificate for 127.0.0.1.
type testPKI struct {
	ca                    *testutil.TestCA
	dir                   string
	caPool                *x509.CertPool
	serverCert, serverKey string
	caFile                string
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{ca: testutil.NewTestCA(t), dir: t.TempDir(), caPool: x509.NewCertPool()}
	p.caPool.AddCert(p.ca.Cert)
	p.caFile = p.ca.WriteCA(t, p.dir)
	p.serverCert, p.serverKey = p.ca.WriteServerCert(t, p.dir, "server", "127.0.0.1")
	return p
}

// issue writes a client certificate with common name cn.
func (p *testPKI) issue(t *testing.T, cn string) (certFile, keyFile string) {
	return p.ca.WriteClientCert(t, p.dir, cn)
}

func (p *testPKI) clientTLS(t *testing.T, cn string) *tls.Config {
	cfg := &tls.Config{RootCAs: p.caPool, ServerName: "127.0.0.1"}
	if cn != "" {
		c, k := p.issue(t, cn)
		pair, err := tls.LoadX509KeyPair(c, k)
		must(t, err)
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg
}

func TestTLSListener(t *testing.T) {
	pki := newPKI(t)
	cfg := aclConfig(t)
	cfg.Listeners = []Listener{
		{Type: ListenerTLS, Address: "127.0.0.1:0", Cert: pki.serverCert, Key: pki.serverKey},
		{Type: ListenerTLS, Address: "127.0.0.1:0", Cert: pki.serverCert, Key: pki.serverKey, ClientCA: pki.caFile},
	}
	b := startBroker(t, Options{Config: cfg}, nil)

	// server-auth TLS with a password
	c := mustV3(t, addr(b, 0), "tlsuser", v3opts{scheme: "ssl", tls: pki.clientTLS(t, ""), user: "ops", pass: "opspw", clean: true})
	got := make(chan string, 1)
	must(t, waitTok(t, c.Subscribe("cmd/#", 1, func(_ pahov3.Client, m pahov3.Message) { got <- string(m.Payload()) })))
	must(t, waitTok(t, c.Publish("cmd/a", 1, false, "tls")))
	if p := <-got; p != "tls" {
		t.Fatalf("got %q", p)
	}

	// mutual TLS: the certificate CN is the user, no password
	dev := mustV3(t, addr(b, 1), "d1", v3opts{scheme: "ssl", tls: pki.clientTLS(t, "dev"), clean: true})
	must(t, waitTok(t, dev.Publish("sensors/d1/x", 1, false, "cert")))
	// CN naming an unknown user is refused
	if _, err := connectV3(t, addr(b, 1), "x1", v3opts{scheme: "ssl", tls: pki.clientTLS(t, "stranger"), clean: true}); err == nil {
		t.Fatal("certificate of unknown user accepted")
	}
	// no client certificate: handshake fails
	if _, err := connectV3(t, addr(b, 1), "x2", v3opts{scheme: "ssl", tls: pki.clientTLS(t, ""), user: "dev", pass: "devpw", clean: true}); err == nil {
		t.Fatal("client without certificate accepted on a client_ca listener")
	}
}

func TestWebsocketListener(t *testing.T) {
	cfg := localConfig()
	cfg.Listeners = []Listener{{Type: ListenerWebsocket, Address: "127.0.0.1:0"}}
	b := startBroker(t, Options{Config: cfg}, nil)
	c := mustV3(t, addr(b, 0), "ws1", v3opts{scheme: "ws", clean: true})
	got := make(chan string, 3)
	must(t, waitTok(t, c.Subscribe("ws/#", 2, func(_ pahov3.Client, m pahov3.Message) { got <- string(m.Payload()) })))
	for qos := byte(0); qos <= 2; qos++ {
		must(t, waitTok(t, c.Publish("ws/x", qos, false, "over websocket")))
		p := recv(t, got, 10*time.Second, "websocket round trip failed")
		if p != "over websocket" {
			t.Fatalf("got %q", p)
		}
	}
	// A packet larger than the websocket library's default 32KiB message limit: only the
	// broker's own packet limit applies to websocket clients, as to TCP ones.
	big := strings.Repeat("x", 100<<10)
	must(t, waitTok(t, c.Publish("ws/big", 1, false, big)))
	p := recv(t, got, 10*time.Second, "100KiB websocket message not delivered")
	if p != big {
		t.Fatalf("got %d bytes, want %d", len(p), len(big))
	}
}
