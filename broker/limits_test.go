package broker

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged-dev/edged/internal/testutil"
)

// deviceConfig: users d1, d2 with role device (publish sensors/%c/#, subscribe cmd/%c/#) on
// a loopback listener, where anonymous clients (the observers of these tests) may do anything.
func deviceConfig(t testing.TB) Config {
	c := localConfig()
	h := hash(t, "pw")
	c.Users = []User{{Username: "d1", PasswordHash: h, Role: "device"}, {Username: "d2", PasswordHash: h, Role: "device"}}
	c.Roles = map[string]Role{"device": {Publish: []string{"sensors/%c/#"}, Subscribe: []string{"cmd/%c/#"}}}
	return c
}

// connectRaw sends a CONNECT and returns the CONNACK (or the read error).
func connectRaw(t testing.TB, address string, version byte, cp packets.ConnectParams) (*rawClient, packets.Packet, error) {
	t.Helper()
	conn, err := net.Dial("tcp", address)
	must(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	rc := &rawClient{t: t, conn: conn, r: bufio.NewReader(conn), v: version}
	cp.ProtocolName = []byte("MQTT")
	if cp.Keepalive == 0 {
		cp.Keepalive = 30
	}
	cp.UsernameFlag = len(cp.Username) > 0
	cp.PasswordFlag = len(cp.Password) > 0
	rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, Connect: cp})
	pk, err := rc.read(10 * time.Second)
	return rc, pk, err
}

// TestWillPublishACL: issue #12.1. A device may not get a will past the publish ACL: the
// CONNECT is refused (3.1.1 0x05, MQTT 5 0x87), nothing is delivered, retained or captured;
// an allowed will still works.
func TestWillPublishACL(t *testing.T) {
	capt := &recCapturer{}
	reg := prometheus.NewRegistry()
	b := startBroker(t, Options{Config: deviceConfig(t), Registerer: reg}, capt)
	a := addr(b, 0)
	obs := mustV5(t, a, "observer")
	_, err := obs.Subscribe(ctx10(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "#", QoS: 1}}})
	must(t, err)

	// 3.1.1, retained QoS 1 will on another device's command topic.
	_, ack, err := connectRaw(t, a, 4, packets.ConnectParams{ClientIdentifier: "d2", Clean: true, Username: []byte("d2"), Password: []byte("pw"),
		WillFlag: true, WillTopic: "cmd/d1/reboot", WillPayload: []byte("now"), WillQos: 1, WillRetain: true})
	must(t, err)
	if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0x05 {
		t.Fatalf("3.1.1 CONNECT with a denied will: got type %d code %#x, want CONNACK 0x05", ack.FixedHeader.Type, ack.ReasonCode)
	}
	// MQTT 5 (paho.golang), will spoofing d1's telemetry.
	_, ca, err := connectV5(t, a, &paho.Connect{ClientID: "d2", CleanStart: true, UsernameFlag: true, Username: "d2", PasswordFlag: true, Password: []byte("pw"),
		WillMessage: &paho.WillMessage{Topic: "sensors/d1/temp", Payload: []byte("99"), QoS: 1}})
	if err == nil || ca == nil || ca.ReasonCode != 0x87 {
		t.Fatalf("MQTT 5 CONNECT with a denied will: err %v connack %+v, want 0x87", err, ca)
	}
	// 3.1.1 with a will topic beyond the limits (and with wildcards).
	for _, topic := range []string{"sensors/d2/" + strings.Repeat("x/", 40), "sensors/d2/+"} {
		_, ack, err = connectRaw(t, a, 4, packets.ConnectParams{ClientIdentifier: "d2", Clean: true, Username: []byte("d2"), Password: []byte("pw"),
			WillFlag: true, WillTopic: topic, WillPayload: []byte("x"), WillQos: 1})
		must(t, err)
		if ack.ReasonCode != 0x05 {
			t.Fatalf("will topic %q: CONNACK %#x, want 0x05", topic, ack.ReasonCode)
		}
	}

	// An allowed will is delivered and captured.
	rc, ack, err := connectRaw(t, a, 4, packets.ConnectParams{ClientIdentifier: "d2", Clean: true, Username: []byte("d2"), Password: []byte("pw"),
		WillFlag: true, WillTopic: "sensors/d2/status", WillPayload: []byte("offline"), WillQos: 1})
	must(t, err)
	if ack.ReasonCode != 0 {
		t.Fatalf("allowed will: CONNACK %#x", ack.ReasonCode)
	}
	_ = rc.conn.Close()
	p := recv(t, obs.msgs, 10*time.Second, "allowed will not delivered")
	if p.Topic != "sensors/d2/status" {
		t.Fatalf("observer got %q: a denied will was delivered", p.Topic)
	}
	eventually(t, 10*time.Second, "allowed will captured", func() bool { return capt.find("sensors/d2/status") != nil })
	if capt.find("cmd/d1/reboot") != nil || capt.find("sensors/d1/temp") != nil {
		t.Fatal("a denied will was captured")
	}
	if b.Status().Retained != 0 {
		t.Fatalf("retained %d, want 0", b.Status().Retained)
	}
	late := mustV5(t, a, "late")
	_, err = late.Subscribe(ctx10(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "cmd/#", QoS: 1}}})
	must(t, err)
	select {
	case p := <-late.msgs:
		t.Fatalf("late subscriber got %q", p.Topic)
	case <-time.After(300 * time.Millisecond):
	}
	st := b.Status().Refusals
	if st[refuseWillNotAllowed] != 2 || st[refuseWillTopicInvalid] != 2 {
		t.Fatalf("refusals %v, want will_not_authorized 2, will_topic_invalid 2", st)
	}
	if v, _ := testutil.MetricValue(t, reg, "edged_broker_refusals_total", map[string]string{"reason": refuseWillNotAllowed}); v != 2 {
		t.Fatalf("metric will_not_authorized %v", v)
	}
}

// TestWillCheckedWhenSent: the second check. A will that is no longer allowed when mochi
// sends it is replaced by one with an empty topic (counted), which mochi's topic tree matches
// to nobody, and which the capture hook ignores.
func TestWillCheckedWhenSent(t *testing.T) {
	capt := &recCapturer{}
	b := startBroker(t, Options{Config: deviceConfig(t)}, capt)
	cl := b.srv.NewClient(nil, b.specs[0].id, "d2", false)
	cl.Properties.Username = []byte("d2")
	h := &aclHook{a: b.access}
	w, err := h.OnWill(cl, mqtt.Will{TopicName: "cmd/d1/reboot", Payload: []byte("now"), Qos: 1, Retain: true, Flag: 1})
	must(t, err)
	if w.TopicName != "" || w.Retain {
		t.Fatalf("denied will kept: %+v", w)
	}
	if n := b.Status().Refusals[refuseWillDropped]; n != 1 {
		t.Fatalf("will_dropped %d", n)
	}
	w, _ = h.OnWill(cl, mqtt.Will{TopicName: "sensors/d2/status", Payload: []byte("x"), Flag: 1})
	if w.TopicName != "sensors/d2/status" {
		t.Fatalf("allowed will changed: %+v", w)
	}
	b.capture.OnWillSent(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "cmd/d1/reboot"})
	b.capture.OnWillSent(cl, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: ""})
	if capt.count() != 0 {
		t.Fatal("capture hook captured a denied will")
	}
	// mochi: an empty topic has no subscribers, even with '#' and '+' subscriptions.
	unsub, err := b.Subscribe("#", func(*Message) { t.Error("inline '#' got the empty-topic will") })
	must(t, err)
	defer unsub()
	obs := mustV5(t, addr(b, 0), "observer")
	_, err = obs.Subscribe(ctx10(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "#"}, {Topic: "+"}}})
	must(t, err)
	if s := b.srv.Topics.Subscribers(""); len(s.Subscriptions)+len(s.InlineSubscriptions)+len(s.Shared) != 0 {
		t.Fatalf("mochi matches the empty topic: %+v", s)
	}
}

// TestTopicLimitsPublish: issue #12.2. A PUBLISH beyond max_topic_levels / max_topic_length
// is refused before mochi's topic tree sees it: MQTT 5 QoS 1 PUBACK 0x90, QoS 2 PUBREC
// 0x90, QoS 0 dropped; 3.1.1 QoS 1 disconnected (no DISCONNECT packet). Nothing captured or
// delivered; counted.
func TestTopicLimitsPublish(t *testing.T) {
	capt := &recCapturer{}
	b := startBroker(t, Options{Config: localConfig()}, capt)
	a := addr(b, 0)
	obs := mustV5(t, a, "observer")
	_, err := obs.Subscribe(ctx10(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "#", QoS: 1}}})
	must(t, err)

	deep := deepTopic(DefaultMaxTopicLevels + 1)
	long := strings.Repeat("x", DefaultMaxTopicLength+1)
	rc := dialRaw(t, a, 5, "p5", noProps)
	rc.publish(deep, 1, 1, []byte("x"), noProps)
	if ack := rc.expect(packets.Puback); ack.ReasonCode != packets.ErrTopicNameInvalid.Code {
		t.Fatalf("deep QoS 1: PUBACK %#x, want 0x90", ack.ReasonCode)
	}
	rc.publish(long, 2, 2, []byte("x"), noProps)
	if ack := rc.expect(packets.Pubrec); ack.ReasonCode != packets.ErrTopicNameInvalid.Code {
		t.Fatalf("long QoS 2: PUBREC %#x, want 0x90", ack.ReasonCode)
	}
	rc.publish(deep, 0, 0, []byte("x"), noProps)
	// the maximal allowed topic still works, on the same connection
	ok := deepTopic(DefaultMaxTopicLevels)
	rc.publish(ok, 1, 3, []byte("x"), noProps)
	if ack := rc.expect(packets.Puback); ack.ReasonCode != 0 {
		t.Fatalf("allowed topic: PUBACK %#x", ack.ReasonCode)
	}

	r3 := dialRaw(t, a, 4, "p3", noProps)
	r3.publish(deep, 1, 1, []byte("x"), noProps)
	if pk, err := r3.read(10 * time.Second); err == nil {
		t.Fatalf("3.1.1 deep QoS 1: got packet type %d, want the connection closed", pk.FixedHeader.Type)
	} else if !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("3.1.1 deep QoS 1: %v, want EOF", err)
	}

	p := recv(t, obs.msgs, 10*time.Second, "allowed message not delivered")
	if p.Topic != ok {
		t.Fatalf("observer got a refused topic (%d bytes)", len(p.Topic))
	}
	if capt.count() != 1 {
		t.Fatalf("captured %d, want only the allowed message", capt.count())
	}
	st := b.Status().Refusals
	if st[refuseTopicTooDeep] != 3 || st[refuseTopicTooLong] != 1 {
		t.Fatalf("refusals %v", st)
	}
	// inline publish (serial, downlink) is bounded too
	if err := b.Publish(&Message{Topic: deep, Payload: []byte("x")}); err == nil {
		t.Fatal("Broker.Publish accepted a topic beyond max_topic_levels")
	}
	if _, err := b.Subscribe(deep, func(*Message) {}); err == nil {
		t.Fatal("Broker.Subscribe accepted a filter beyond max_topic_levels")
	}
}

// TestTopicLimitsSubscribe: issues #12.2 and #12.3. Filters beyond the limits get 0x8F,
// filters beyond max_filters_per_subscribe and max_subscriptions_per_client get 0x97 (MQTT
// 3.1.1: 0x80); the others in the same packet are granted.
func TestTopicLimitsSubscribe(t *testing.T) {
	c := localConfig()
	c.MaxFiltersPerSubscribe = 4
	c.MaxSubscriptionsPerClient = 6
	st := newMemState()
	b := startBroker(t, Options{Config: c, State: st}, nil)
	a := addr(b, 0)
	rc := dialRaw(t, a, 5, "s5", noProps)
	sub := func(rc *rawClient, id uint16, filters ...string) []byte {
		t.Helper()
		var fs packets.Subscriptions
		for _, f := range filters {
			fs = append(fs, packets.Subscription{Filter: f, Qos: 1})
		}
		return rc.subscribe(id, fs...).ReasonCodes
	}
	want := func(got []byte, want ...byte) {
		t.Helper()
		if string(got) != string(want) {
			t.Fatalf("SUBACK codes % x, want % x", got, want)
		}
	}
	deep := deepTopic(DefaultMaxTopicLevels + 1)
	want(sub(rc, 1, "a/1", deep, strings.Repeat("y", DefaultMaxTopicLength+1), "a/2", "a/3"), 1, 0x8F, 0x8F, 1, 0x97)
	want(sub(rc, 2, "a/1", "a/3", "a/4", "a/5"), 1, 1, 1, 1) // a/1 exists: 5 subscriptions now
	want(sub(rc, 3, "a/6", "a/7", "a/6"), 1, 0x97, 1)
	rb := dialRaw(t, a, 5, "s5b", noProps)
	want(sub(rb, 1, "$share/g/"+deepTopic(DefaultMaxTopicLevels)), 1) // the share prefix does not count
	r3 := dialRaw(t, a, 4, "s3", noProps)
	want(sub(r3, 1, deep, "b/1", "b/2", "b/3", "b/4"), 0x80, 1, 1, 1, 0x80)

	if n := len(b.srv.Topics.Subscribers("a/7").Subscriptions); n != 0 {
		t.Fatal("refused filter subscribed")
	}
	for _, k := range st.keys("") {
		if strings.Contains(k, "#/") || strings.Contains(k, "a/7") {
			t.Fatalf("refused filter persisted: %s", k)
		}
	}
	r := b.Status().Refusals
	if r[refuseFilterTooDeep] != 2 || r[refuseFilterTooLong] != 1 || r[refuseFiltersPerSub] != 2 || r[refuseSubsPerClient] != 1 {
		t.Fatalf("refusals %v", r)
	}
}

// TestV311EmptyClientIDPersistent: issue #12.7. 3.1.1 CONNECT with an empty client id and
// clean session 0 must get CONNACK 0x02 Identifier rejected ([MQTT-3.1.3-8]), not 0x80.
func TestV311EmptyClientIDPersistent(t *testing.T) {
	b := startBroker(t, Options{Config: localConfig()}, nil)
	_, ack, err := connectRaw(t, addr(b, 0), 4, packets.ConnectParams{ClientIdentifier: "", Clean: false})
	must(t, err)
	if ack.FixedHeader.Type != packets.Connack || ack.ReasonCode != 0x02 {
		t.Fatalf("got type %d code %#x, want CONNACK 0x02", ack.FixedHeader.Type, ack.ReasonCode)
	}
	// clean session 1 with an empty id is still accepted
	_, ack, err = connectRaw(t, addr(b, 0), 4, packets.ConnectParams{ClientIdentifier: "", Clean: true})
	must(t, err)
	if ack.ReasonCode != 0 {
		t.Fatalf("empty id, clean: CONNACK %#x", ack.ReasonCode)
	}
}

// readAll reads what the peer sends until it closes (or d passes).
func readAll(conn net.Conn, d time.Duration) ([]byte, error) {
	_ = conn.SetReadDeadline(time.Now().Add(d))
	return io.ReadAll(conn)
}

// TestShutdownV311NoDisconnect: issue #14.5. On Close, 3.1.1 clients see the connection close
// with no DISCONNECT packet (3.1.1 has none from the server); MQTT 5 clients get DISCONNECT
// 0x8B. A 3.1.1 session take-over closes the old connection the same way.
func TestShutdownV311NoDisconnect(t *testing.T) {
	b, err := New(Options{Config: localConfig()})
	must(t, err)
	must(t, b.Start(context.Background()))
	defer b.Close()
	a := addr(b, 0)
	old := dialRaw(t, a, 4, "same", noProps)
	_ = dialRaw(t, a, 4, "same", noProps)
	if got, _ := readAll(old.conn, 10*time.Second); len(got) != 0 {
		t.Fatalf("3.1.1 take-over sent % x to the old connection, want a plain close", got)
	}
	r3 := dialRaw(t, a, 4, "v3", noProps)
	r5 := dialRaw(t, a, 5, "v5", noProps)
	must(t, b.Close())
	if got, _ := readAll(r3.conn, 10*time.Second); len(got) != 0 {
		t.Fatalf("3.1.1 client got % x at shutdown, want a plain close", got)
	}
	pk, err := r5.read(10 * time.Second)
	must(t, err)
	if pk.FixedHeader.Type != packets.Disconnect || pk.ReasonCode != packets.ErrServerShuttingDown.Code {
		t.Fatalf("MQTT 5 client got type %d code %#x, want DISCONNECT 0x8B", pk.FixedHeader.Type, pk.ReasonCode)
	}
}

func deepTopic(levels int) string { return strings.Repeat("a/", levels-1) + "a" }

// TestMosquittoSubV311SurvivesRestart: issue #14.5 with the real client. `mosquitto_sub -V
// mqttv311 -c` must keep running across a broker restart and receive messages from the new
// broker; a DISCONNECT sent to it at shutdown made it print "A network protocol error
// occurred" and exit.
func TestMosquittoSubV311SurvivesRestart(t *testing.T) {
	bin := testutil.RequireCommand(t, "mosquitto_sub")
	port := testutil.FreePort(t)
	cfg := Config{Listeners: []Listener{{Type: ListenerTCP, Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}}}
	state := newMemState()
	b1, err := New(Options{Config: cfg, State: state})
	must(t, err)
	must(t, b1.Start(context.Background()))
	defer b1.Close()

	var out testutil.LockedBuffer
	cmd := exec.Command(bin, "-V", "mqttv311", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-i", "msub", "-c", "-q", "1", "-t", "restart/#")
	cmd.Stdout, cmd.Stderr = &out, &out
	must(t, cmd.Start())
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	// until the subscription exists, a probe is lost: publish until one arrives
	probe := func(b *Broker, what string) {
		t.Helper()
		testutil.WaitFor(t, 30*time.Second, 200*time.Millisecond, func() error {
			select {
			case <-exited:
				t.Fatalf("mosquitto_sub exited (%v): %s", waitErr, out.String())
			default:
			}
			if strings.Contains(out.String(), what) {
				return nil
			}
			if err := b.Publish(&Message{Topic: "restart/x", Payload: []byte(what), QoS: 1}); err != nil {
				return err
			}
			return errors.New("not received yet: " + what)
		})
	}
	probe(b1, "before-restart")
	must(t, b1.Close())

	// The same store: the session survives, and the probes published before mosquitto_sub is
	// back are queued for it and take packet ids its re-SUBSCRIBE reuses (mochi.go,
	// assumption 9: without packetIDHook, "All subscription requests were denied" and exit).
	b2, err := New(Options{Config: cfg, State: state})
	must(t, err)
	must(t, b2.Start(context.Background()))
	defer b2.Close()
	probe(b2, "after-restart")
	if strings.Contains(out.String(), "protocol error") {
		t.Fatalf("mosquitto_sub reported a protocol error: %s", out.String())
	}
}

// TestSubscriptionFloodRSS: issue #12.3. One persistent session asks for 100,000
// subscriptions (in SUBSCRIBEs of 50 filters): only max_subscriptions_per_client (1000) are
// granted and persisted, and RSS stays small. Before the limit all 100,000 were granted:
// +110 MB RSS, all persisted.
func TestSubscriptionFloodRSS(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 100,000 filters")
	}
	st := newMemState()
	b := startBroker(t, Options{Config: localConfig(), State: st}, nil)
	rc, ack, err := connectRaw(t, addr(b, 0), 4, packets.ConnectParams{ClientIdentifier: "flood", Clean: false})
	must(t, err)
	if ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %#x", ack.ReasonCode)
	}
	runtime.GC()
	rss0 := vmRSS(t)
	granted := 0
	for p := 0; p < 2000; p++ {
		fs := make(packets.Subscriptions, 50)
		for i := range fs {
			fs[i] = packets.Subscription{Filter: "flood/" + strconv.Itoa(p*50+i) + "/#", Qos: 1}
		}
		for _, c := range rc.subscribe(uint16(p+1), fs...).ReasonCodes {
			if c < 0x80 {
				granted++
			}
		}
	}
	rss1 := vmRSS(t)
	persisted := len(st.keys(""))
	t.Logf("100,000 filters: %d granted, %d state keys, VmRSS %d -> %d MiB (+%d MiB)", granted, persisted, rss0>>20, rss1>>20, (rss1-rss0)>>20)
	if granted != DefaultMaxSubscriptionsPerClient {
		t.Fatalf("granted %d subscriptions, want %d", granted, DefaultMaxSubscriptionsPerClient)
	}
	if persisted > DefaultMaxSubscriptionsPerClient+10 {
		t.Fatalf("%d state keys persisted", persisted)
	}
	if rss1-rss0 > 32<<20 {
		t.Fatalf("VmRSS grew by %d MiB", (rss1-rss0)>>20)
	}
}

// TestSubscribeIDOfQueuedMessage (mochi.go, assumption 9): a client's SUBSCRIBE and
// UNSUBSCRIBE may reuse a packet id the broker uses for a message it is sending that client
// (ids are per direction); mochi refused them (SUBACK 0x80 for 3.1.1, UNSUBSCRIBE silently
// not done), which made `mosquitto_sub -c` exit after a restart with queued messages.
func TestSubscribeIDOfQueuedMessage(t *testing.T) {
	b := startBroker(t, Options{Config: localConfig()}, nil)
	a := addr(b, 0)
	for _, v := range []byte{4, 5} {
		id := "queued" + strconv.Itoa(int(v))
		cp := packets.ConnectParams{ClientIdentifier: id, Clean: false}
		rc, ack, err := connectRaw(t, a, v, cp)
		must(t, err)
		if v == 5 {
			// connectRaw sends no properties: a v5 session without expiry would end at once
			_ = rc.conn.Close()
			rc = dialRawPersistent(t, a, id)
		} else if ack.ReasonCode != 0 {
			t.Fatalf("CONNACK %#x", ack.ReasonCode)
		}
		rc.subscribe(1, packets.Subscription{Filter: "q/#", Qos: 1})
		_ = rc.conn.Close()
		eventually(t, 30*time.Second, "client offline", func() bool { // polled; 10s ran out under heavy load
			cl, ok := b.srv.Clients.Get(id)
			return ok && cl.Closed()
		})
		for i := 0; i < 3; i++ { // queued for the offline session with packet ids 1, 2, 3
			must(t, b.Publish(&Message{Topic: "q/x", Payload: []byte("x"), QoS: 1}))
		}
		if v == 5 {
			rc = dialRawPersistent(t, a, id)
		} else {
			rc, _, err = connectRaw(t, a, v, cp)
			must(t, err)
		}
		ids := map[uint16]bool{}
		for i := 0; i < 3; i++ { // resent; left unacknowledged, so the ids stay in use
			ids[rc.expect(packets.Publish).PacketID] = true
		}
		if !ids[1] || !ids[2] {
			t.Fatalf("queued messages have ids %v; the test needs 1 and 2", ids)
		}
		sa := rc.subscribe(1, packets.Subscription{Filter: "z/#", Qos: 1})
		if sa.PacketID != 1 || len(sa.ReasonCodes) != 1 || sa.ReasonCodes[0] != 1 {
			t.Fatalf("v%d SUBSCRIBE id 1: SUBACK id %d codes % x, want id 1 granted", v, sa.PacketID, sa.ReasonCodes)
		}
		rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, PacketID: 2,
			Filters: packets.Subscriptions{{Filter: "q/#"}}})
		if ua := rc.expect(packets.Unsuback); ua.PacketID != 2 {
			t.Fatalf("UNSUBACK id %d, want 2", ua.PacketID)
		}
		if _, ok := b.srv.Topics.Subscribers("q/x").Subscriptions[id]; ok {
			t.Fatalf("v%d UNSUBSCRIBE with id 2 was not done", v)
		}
		if _, ok := b.srv.Topics.Subscribers("z/x").Subscriptions[id]; !ok {
			t.Fatalf("v%d SUBSCRIBE with id 1 was not done", v)
		}
		// the queued messages still complete with their own ids
		for id := range ids {
			rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: id})
		}
		eventually(t, 10*time.Second, "inflight drained", func() bool {
			cl, ok := b.srv.Clients.Get(id)
			return ok && cl.State.Inflight.Len() == 0
		})
		_ = rc.conn.Close()
	}
}

// dialRawPersistent connects an MQTT 5 client with a one-hour session.
func dialRawPersistent(t testing.TB, address, id string) *rawClient {
	t.Helper()
	conn, err := net.Dial("tcp", address)
	must(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	rc := &rawClient{t: t, conn: conn, r: bufio.NewReader(conn), v: 5}
	rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect:    packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: id, Keepalive: 30},
		Properties: packets.Properties{SessionExpiryInterval: 3600, SessionExpiryIntervalFlag: true}})
	if ack := rc.expect(packets.Connack); ack.ReasonCode != 0 {
		t.Fatalf("CONNACK %#x", ack.ReasonCode)
	}
	return rc
}
