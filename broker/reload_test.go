package broker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/edged-dev/edged/internal/testutil"
)

// A role narrowed so that a connected client's subscription is no longer allowed: the client
// is disconnected and the subscription leaves its persistent session, so resuming the session
// does not bring it back. A client whose rights did not change stays; settings that only take
// effect at start are reported.
func TestReloadRevokesNarrowedSubscription(t *testing.T) {
	cfg := aclConfig(t)
	b := startBroker(t, Options{Config: cfg, State: newMemState()}, nil)
	devLost, opsLost := make(chan error, 1), make(chan error, 1)
	dev := mustV3(t, addr(b, 0), "d1", v3opts{user: "dev", pass: "devpw", onLost: func(err error) { devLost <- err }})
	must(t, waitTok(t, dev.Subscribe("cmd/d1/#", 1, func(pahov3.Client, pahov3.Message) {})))
	ops := mustV3(t, addr(b, 0), "o1", v3opts{user: "ops", pass: "opspw", clean: true, onLost: func(err error) { opsLost <- err }})
	must(t, waitTok(t, ops.Subscribe("sensors/#", 1, func(pahov3.Client, pahov3.Message) {})))

	next := aclConfig(t)
	next.Users = cfg.Users // same hashes: same passwords
	next.Roles["device"] = Role{Publish: []string{"sensors/%c/#"}, Subscribe: []string{"cmd/%c/only/#"}}
	next.MaxClients = 7
	res, err := b.Reload(next)
	must(t, err)
	if !slices.Equal(res.Disconnected, []string{"d1"}) || !slices.Contains(res.NeedsRestart, "broker.max_clients") {
		t.Fatalf("reload result %+v", res)
	}
	recv(t, devLost, 10*time.Second, "d1 not disconnected after its subscription was revoked")
	select {
	case err := <-opsLost:
		t.Fatalf("o1, whose rights did not change, lost its connection: %v", err)
	default:
	}
	must(t, waitTok(t, ops.Publish("cmd/d1/x", 1, false, "still allowed")))

	// The session resumes without the revoked subscription.
	mustV3(t, addr(b, 0), "d1", v3opts{user: "dev", pass: "devpw"})
	cl, ok := b.srv.Clients.Get("d1")
	if !ok {
		t.Fatal("no session d1")
	}
	if n := cl.State.Subscriptions.Len(); n != 0 {
		t.Fatalf("resumed session has %d subscriptions, want the revoked one gone", n)
	}
}

// Reload before Start is refused; an invalid config is refused without touching anything.
func TestReloadRefusals(t *testing.T) {
	b, err := New(Options{Config: localConfig()})
	must(t, err)
	t.Cleanup(func() { _ = b.Close() })
	if _, err := b.Reload(localConfig()); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("reload before start: %v", err)
	}
	must(t, b.Start(context.Background()))
	bad := localConfig()
	bad.Listeners[0].Type = "quic"
	if _, err := b.Reload(bad); err == nil {
		t.Fatal("invalid config accepted")
	}
	if got := b.Status().Listeners[0].Bound; got == "" {
		t.Fatal("listener lost after a refused reload")
	}
}

// A TLS listener whose certificate files were replaced behind the same paths serves the new
// certificate to new clients after a reload, and keeps its connected clients.
func TestReloadRotatesListenerCertificate(t *testing.T) {
	pki := newPKI(t)
	cfg := aclConfig(t)
	cfg.Listeners = []Listener{{Type: ListenerTLS, Address: "127.0.0.1:0", Cert: pki.serverCert, Key: pki.serverKey}}
	b := startBroker(t, Options{Config: cfg}, nil)
	lost := make(chan error, 1)
	old := mustV3(t, addr(b, 0), "c-old", v3opts{scheme: "ssl", tls: pki.clientTLS(t, ""), user: "ops", pass: "opspw", clean: true,
		onLost: func(err error) { lost <- err }})

	ca2 := testutil.NewTestCA(t)
	ca2.WriteServerCert(t, pki.dir, "server", "127.0.0.1") // same paths, new certificate
	res, err := b.Reload(cfg)
	must(t, err)
	if len(res.ListenersAdded)+len(res.ListenersRemoved)+len(res.Disconnected) != 0 {
		t.Fatalf("certificate rotation changed listeners or clients: %+v", res)
	}
	pool2 := x509.NewCertPool()
	pool2.AddCert(ca2.Cert)
	if _, err := connectV3(t, addr(b, 0), "c-new", v3opts{scheme: "ssl", tls: &tls.Config{RootCAs: pool2, ServerName: "127.0.0.1"},
		user: "ops", pass: "opspw", clean: true}); err != nil {
		t.Fatalf("client trusting the new CA: %v", err)
	}
	if _, err := connectV3(t, addr(b, 0), "c-stale", v3opts{scheme: "ssl", tls: pki.clientTLS(t, ""), user: "ops", pass: "opspw", clean: true}); err == nil {
		t.Fatal("the old certificate is still served after the reload")
	}
	must(t, waitTok(t, old.Publish("cmd/a", 1, false, "still connected")))
	select {
	case err := <-lost:
		t.Fatalf("connected client dropped by a certificate rotation: %v", err)
	default:
	}
}

// A listener that cannot be bound fails the reload with its name, and everything else of the
// new config is applied: the users, and the listener that could be bound.
func TestReloadPartialWhenAPortIsTaken(t *testing.T) {
	cfg := aclConfig(t)
	b := startBroker(t, Options{Config: cfg}, nil)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer taken.Close()
	next := aclConfig(t)
	next.Users = cfg.Users[:1] // ops removed
	next.Listeners = append(next.Listeners,
		Listener{Type: ListenerTCP, Address: taken.Addr().String()},
		Listener{Type: ListenerTCP, Address: "127.0.0.1:0"})
	res, err := b.Reload(next)
	if err == nil || !strings.Contains(err.Error(), taken.Addr().String()) {
		t.Fatalf("reload with a taken port: %v", err)
	}
	if len(res.ListenersAdded) != 1 {
		t.Fatalf("listeners added %v, want the one that could be bound", res.ListenersAdded)
	}
	lns := b.Status().Listeners
	if len(lns) != 2 || lns[1].Bound == "" {
		t.Fatalf("listeners after a partial reload: %+v", lns)
	}
	mustV3(t, lns[1].Bound, "d1", v3opts{user: "dev", pass: "devpw", clean: true})
	if _, err := connectV3(t, lns[0].Bound, "o1", v3opts{user: "ops", pass: "opspw", clean: true}); err == nil {
		t.Fatal("removed user ops still accepted after a partial reload")
	}
}
