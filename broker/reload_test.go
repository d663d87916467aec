package broker

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
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
	select {
	case <-devLost:
	case <-time.After(10 * time.Second):
		t.Fatal("d1 not disconnected after its subscription was revoked")
	}
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
