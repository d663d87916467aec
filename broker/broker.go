package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edged-dev/edged/wire"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
)

// Message is one MQTT application message as edged sees it: captured from a client PUBLISH,
// published inline, or delivered to an inline subscription. Payload and UserProps must be
// treated as read-only; they may be shared with other subscribers.
type Message struct {
	Topic       string
	Payload     []byte
	QoS         byte
	Retain      bool
	ClientID    string // publishing client ("inline" for Publish)
	Username    string // publishing client's username, "" for anonymous and inline
	UserProps   []wire.UserProp
	ContentType string
	Inline      bool      // published in-process through Broker.Publish
	Time        time.Time // capture time
}

// TimeProp is the MQTT 5 user property that carries the capture time (Unix milliseconds,
// decimal) of an inline publish, e.g. the time a serial frame was read. Broker.Publish turns
// it into Message.Time and strips it; it never reaches subscribers or the Capturer's
// UserProps.
const TimeProp = "edged-time"

// Capturer receives every PUBLISH the broker accepts (not $SYS, not packets refused by ACL or
// validation), before local subscribers see it. For QoS 1/2 the client's PUBACK/PUBREC is sent
// only after Capture returned nil, so nil must mean "durable" (or "nothing to keep"). An error
// wrapping ErrQuotaExceeded is reported to MQTT 5 clients as reason 0x97; any other error as
// 0x80, and MQTT 3.1.1 clients are disconnected without an ack so they resend.
//
// Capture is called from one goroutine per publishing client, in the order that client's
// messages arrived; calls for different clients are concurrent.
type Capturer interface {
	Capture(ctx context.Context, m *Message) error
}

// BatchCapturer is an optional extension of Capturer. When the capturer implements it, the
// broker hands over all messages a client has pipelined (in arrival order) in one call, so
// they can share one durable commit; this is what makes a single publisher faster than one
// commit per message. The result is nil (all durable) or one error per message (nil entries
// are durable). Messages of one client must be made durable in slice order.
type BatchCapturer interface {
	Capturer
	CaptureBatch(ctx context.Context, ms []*Message) []error
}

// ErrQuotaExceeded is wrapped by Capturer errors meaning "refused because an outbox is full"
// (when_full: reject); MQTT 5 publishers get reason 0x97 Quota exceeded.
var ErrQuotaExceeded = errors.New("quota exceeded")

// ErrClosed is returned by operations on a closed broker.
var ErrClosed = errors.New("broker: closed")

// StateStore persists broker state (sessions, subscriptions, inflight and retained messages).
// The storage package implements it on the one badger DB. Scan calls fn for every key with
// the prefix, in key order; fn's val is only valid during the call.
type StateStore interface {
	Put(key string, val []byte) error
	Delete(key string) error
	Scan(prefix string, fn func(key string, val []byte) error) error
}

// Options configure New.
type Options struct {
	Config     Config
	State      StateStore // nil: nothing survives a restart
	Logger     *slog.Logger
	Registerer prometheus.Registerer // nil: no metrics
}

// Broker is the embedded MQTT broker (mochi-mqtt) with edged's listeners, auth, ACL,
// persistence and capture pipeline.
type Broker struct {
	cfg     Config
	log     *slog.Logger
	srv     *mqtt.Server
	access  *access
	guard   *packetGuard
	specs   []listenerSpec
	capture *captureHook
	state   *stateHook
	bp      *backpressureHook // nil: off
	limits  *limitsHook

	mu        sync.Mutex // serialises Start and Close
	started   bool
	closed    atomic.Bool
	listeners atomic.Pointer[[]*netListener]

	ctx    context.Context // lifetime of capture pipelines
	cancel context.CancelFunc
	subID  atomic.Int64

	nextListener int // index for the id of a listener added by Reload (under mu)
}

type listenerSpec struct {
	id  string
	cfg Listener
	tls *tlsSetup
}

// New validates the configuration and builds the broker; nothing is bound or loaded until
// Start.
func New(o Options) (*Broker, error) {
	cfg := o.Config
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("broker config: %w", err)
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClients = math.MaxInt64
	if cfg.MaxClients > 0 {
		caps.MaximumClients = int64(cfg.MaxClients)
	}
	caps.MaximumPacketSize = uint32(cfg.MaxPacketSize)
	caps.ReceiveMaximum = uint16(cfg.ReceiveMaximum)
	caps.MaximumInflight = uint16(cfg.MaxInflight)
	caps.MaximumClientWritesPending = int32(cfg.MaxQueued)
	caps.MaximumSessionExpiryInterval = uint32(cfg.SessionExpiry / time.Second)
	// mochi's default (1 day) silently deletes retained messages and queued messages after
	// a day; messages only expire when their publisher asks for it.
	caps.MaximumMessageExpiryInterval = 0
	caps.Compatibilities.NoInheritedPropertiesOnAck = true

	srv := mqtt.New(&mqtt.Options{
		Capabilities:           caps,
		InlineClient:           true,
		Logger:                 slog.New(newMochiLogHandler(log.With("component", "mochi").Handler())),
		SysTopicResendInterval: 10,
	})

	b := &Broker{cfg: cfg, log: log, srv: srv}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.access = &access{
		lim: newTopicLimits(cfg),
		ref: newRefusals(),
		log: log.Warn,
	}
	tabs := newAccessTables(cfg)
	for i, l := range cfg.Listeners {
		spec := listenerSpec{id: l.Type + strconv.Itoa(i), cfg: l}
		ts, err := newTLSSetup(l)
		if err != nil {
			return nil, fmt.Errorf("broker: listeners[%d]: %w", i, err)
		}
		spec.tls = ts
		b.specs = append(b.specs, spec)
		tabs.listeners[spec.id] = newListenerInfo(l)
	}
	b.access.tables.Store(tabs)
	b.nextListener = len(cfg.Listeners)

	b.capture = newCaptureHook(b)
	var hooks []mqtt.Hook
	if b.bp = newBackpressureHook(cfg.BackpressureWait, cfg.MaxQueued, cfg.MaxInflight, log); b.bp != nil {
		hooks = append(hooks, b.bp) // before aclHook: it taps OnACLCheck and never grants
	}
	// limitsHook before the capture hook: a PUBLISH beyond the limits is never captured.
	b.limits = &limitsHook{maxPacket: uint32(cfg.MaxPacketSize), lim: b.access.lim, a: b.access, ref: b.access.ref, log: log.Warn}
	b.guard = &packetGuard{maxPacket: uint32(cfg.MaxPacketSize), ref: b.access.ref, log: log}
	// packetIDHook after limitsHook: see mochi.go, assumption 9.
	hooks = append(hooks, newAuthHook(b.access), &aclHook{a: b.access}, b.limits, b.capture, &packetIDHook{})
	if o.State != nil {
		b.state = newStateHook(o.State, log)
		hooks = append(hooks, b.state)
	}
	for _, h := range hooks {
		if err := srv.AddHook(h, nil); err != nil {
			return nil, fmt.Errorf("broker: add hook %s: %w", h.ID(), err)
		}
	}
	if o.Registerer != nil {
		if err := registerMetrics(o.Registerer, b); err != nil {
			return nil, fmt.Errorf("broker: metrics: %w", err)
		}
	}
	return b, nil
}

// SetCapturer installs the Capturer. Call it before Start; a nil capturer (the default)
// means publishes are acknowledged and distributed without capture.
func (b *Broker) SetCapturer(c Capturer) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started {
		panic("broker: SetCapturer after Start")
	}
	b.capture.set(c)
}

// Start restores persisted state (sessions, subscriptions, inflight and retained messages),
// binds every listener and starts serving. A bind error names the listener; nothing stays
// bound when Start fails. ctx only bounds start-up; Close stops the broker.
func (b *Broker) Start(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed.Load():
		return ErrClosed
	case b.started:
		return errors.New("broker: already started")
	}
	var lns []*netListener
	fail := func(err error) error {
		for _, l := range lns {
			l.closeListener()
		}
		return err
	}
	for i, s := range b.specs {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		l, err := bindListener(s, b.log, b.guard)
		if err != nil {
			return fail(fmt.Errorf("broker: listeners[%d] (%s %s): %w", i, s.cfg.Type, s.cfg.Address, err))
		}
		l.closeClients = b.closeListenerClients
		lns = append(lns, l)
	}
	for _, l := range lns {
		if err := b.srv.AddListener(l); err != nil {
			return fail(fmt.Errorf("broker: add listener %s: %w", l.id, err))
		}
	}
	// Serve loads the stored state synchronously before it starts accepting, and returns
	// once the listeners run; Close is only allowed after it returned (field notes).
	if err := b.srv.Serve(); err != nil {
		return fail(fmt.Errorf("broker: start: %w", err))
	}
	b.listeners.Store(&lns)
	b.started = true
	for _, l := range lns {
		b.log.Info("mqtt listener started", "type", l.spec.cfg.Type, "address", l.spec.cfg.Address, "bound", l.Address())
		if !b.access.loopback(l.id) && b.cfg.AllowAnonymous {
			b.log.Warn("listener accepts anonymous clients from the network (allow_anonymous: true)", "address", l.Address())
		}
	}
	return nil
}

// Close stops the listeners, disconnects every client, lets pending captures finish (bounded)
// and waits for mochi. It is idempotent and safe to call without Start.
func (b *Broker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Swap(true) {
		return nil
	}
	if b.bp != nil {
		b.bp.shutdown() // no publisher waits for a subscriber that is about to go
	}
	if b.started {
		_ = b.srv.Close() // closes listeners and clients, waits for client goroutines
		for _, l := range *b.listeners.Load() {
			l.wait()
		}
	}
	b.capture.drain(5 * time.Second)
	b.cancel()
	b.capture.wait()
	return nil
}

// Publish publishes m in-process through mochi's inline client: no ACL, no network. The
// message is captured first (Capturer, synchronously); if capture fails it is not distributed
// and the error is returned. m.Time (or the edged-time user property) is the capture time;
// zero means now.
func (b *Broker) Publish(m *Message) error {
	if m == nil {
		return errors.New("broker: publish nil message")
	}
	if !mqtt.IsValidFilter(m.Topic, true) || m.Topic == "" {
		return fmt.Errorf("broker: publish: invalid topic %q", m.Topic)
	}
	if err := b.access.lim.checkTopic(m.Topic); err != nil {
		return fmt.Errorf("broker: publish: %w", err)
	}
	if m.QoS > 2 {
		return fmt.Errorf("broker: publish: invalid qos %d", m.QoS)
	}
	if b.closed.Load() {
		return ErrClosed
	}
	cm := *m
	cm.Inline = true
	cm.ClientID = mqtt.InlineClientId
	cm.Username = ""
	cm.UserProps, cm.Time = stripTimeProp(m.UserProps, m.Time)
	if cm.Time.IsZero() {
		cm.Time = time.Now()
	}
	if err := b.capture.captureInline(&cm); err != nil {
		return fmt.Errorf("broker: publish %s: %w", m.Topic, err)
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: cm.QoS, Retain: cm.Retain},
		TopicName:   cm.Topic,
		Payload:     cm.Payload,
		Properties:  packets.Properties{ContentType: cm.ContentType, User: toPacketProps(cm.UserProps)},
	}
	if pk.FixedHeader.Qos > 0 {
		pk.PacketID = 1 // never acked (inline), but validation wants an id
	}
	return b.srv.InjectPacket(b.inlineClient(), pk)
}

// Subscribe registers fn for messages matching filter (wildcards and $share allowed), from
// network clients and inline publishes alike; retained messages matching filter are delivered
// at once. fn runs on the publisher's goroutine: it must be quick and must not call Publish
// for a topic it is subscribed to. The returned function unsubscribes (idempotent).
func (b *Broker) Subscribe(filter string, fn func(*Message)) (func(), error) {
	if fn == nil {
		return nil, errors.New("broker: subscribe: nil handler")
	}
	if !mqtt.IsValidFilter(filter, false) {
		return nil, fmt.Errorf("broker: subscribe: invalid topic filter %q", filter)
	}
	if r := b.access.lim.filterProblem(filter); r != "" {
		return nil, fmt.Errorf("broker: subscribe: filter refused (%s: max_topic_length %d, max_topic_levels %d)", r, b.cfg.MaxTopicLength, b.cfg.MaxTopicLevels)
	}
	id := int(b.subID.Add(1))
	err := b.srv.Subscribe(filter, id, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		fn(messageFromPacket(pk, pk.Origin, "", time.Now()))
	})
	if err != nil {
		return nil, fmt.Errorf("broker: subscribe %q: %w", filter, err)
	}
	var once sync.Once
	return func() { once.Do(func() { _ = b.srv.Unsubscribe(filter, id) }) }, nil
}

func (b *Broker) inlineClient() *mqtt.Client {
	cl, _ := b.srv.Clients.Get(mqtt.InlineClientId)
	return cl
}

// Status is a snapshot of the broker for the admin API; it does not expose mochi types.
type Status struct {
	Listeners        []ListenerStatus `json:"listeners"`
	ClientsConnected int64            `json:"clients_connected"`
	Sessions         int64            `json:"sessions"` // connected and persisted offline clients
	Subscriptions    int64            `json:"subscriptions"`
	Retained         int64            `json:"retained"` // excluding $SYS
	Inflight         int64            `json:"inflight"`
	MessagesReceived int64            `json:"messages_received"`
	MessagesSent     int64            `json:"messages_sent"`
	MessagesDropped  int64            `json:"messages_dropped"`
	BytesReceived    int64            `json:"bytes_received"`
	BytesSent        int64            `json:"bytes_sent"`
	CaptureFailures  int64            `json:"capture_failures"`
	// BackpressureWaits counts deliveries for which the publisher was held back because the
	// subscriber's write queue was 3/4 full; BackpressureTimeouts the waits that ran out
	// (backpressure_wait) and marked the subscriber slow.
	BackpressureWaits    int64 `json:"backpressure_waits"`
	BackpressureTimeouts int64 `json:"backpressure_timeouts"`
	// Refusals counts packets refused by the broker limits and will checks, by reason
	// (topic_too_long, topic_too_deep, filter_too_long, filter_too_deep,
	// filters_per_subscribe, subscriptions_per_client, will_not_authorized,
	// will_topic_invalid, will_dropped); every reason is present.
	Refusals map[string]int64 `json:"refusals"`
}

// ListenerStatus describes one listener.
type ListenerStatus struct {
	Type    string `json:"type"`
	Address string `json:"address"` // as configured
	Bound   string `json:"bound"`   // actual address after bind ("" before Start)
}

// Status reports listeners with their bound addresses, clients and counters.
func (b *Broker) Status() Status {
	var lns []*netListener
	if p := b.listeners.Load(); p != nil {
		lns = *p
	}
	var st Status
	specs := b.specs
	if lns != nil {
		specs = specsOf(lns) // Reload may have changed them
	}
	for i, s := range specs {
		ls := ListenerStatus{Type: s.cfg.Type, Address: s.cfg.Address}
		if i < len(lns) {
			ls.Bound = lns[i].Address()
		}
		st.Listeners = append(st.Listeners, ls)
	}
	in := b.srv.Info
	st.ClientsConnected = atomic.LoadInt64(&in.ClientsConnected)
	st.Sessions = int64(b.srv.Clients.Len() - 1) // minus the inline client
	st.Subscriptions = atomic.LoadInt64(&in.Subscriptions)
	for topic := range b.srv.Topics.Retained.GetAll() {
		if !strings.HasPrefix(topic, "$") { // mochi retains its $SYS values too
			st.Retained++
		}
	}
	st.Inflight = atomic.LoadInt64(&in.Inflight)
	st.MessagesReceived = atomic.LoadInt64(&in.MessagesReceived)
	st.MessagesSent = atomic.LoadInt64(&in.MessagesSent)
	st.MessagesDropped = atomic.LoadInt64(&in.MessagesDropped) + atomic.LoadInt64(&in.InflightDropped)
	st.BytesReceived = atomic.LoadInt64(&in.BytesReceived)
	st.BytesSent = atomic.LoadInt64(&in.BytesSent)
	st.CaptureFailures = b.capture.failures.Load()
	st.Refusals = b.access.ref.snapshot()
	if b.bp != nil {
		st.BackpressureWaits = b.bp.waits.Load()
		st.BackpressureTimeouts = b.bp.timeouts.Load()
	}
	return st
}

// messageFromPacket converts a mochi PUBLISH.
func messageFromPacket(pk packets.Packet, clientID, username string, t time.Time) *Message {
	m := &Message{
		Topic:       pk.TopicName,
		Payload:     pk.Payload,
		QoS:         pk.FixedHeader.Qos,
		Retain:      pk.FixedHeader.Retain,
		ClientID:    clientID,
		Username:    username,
		ContentType: pk.Properties.ContentType,
		Inline:      clientID == mqtt.InlineClientId,
		Time:        t,
	}
	if len(pk.Properties.User) > 0 {
		m.UserProps = make([]wire.UserProp, len(pk.Properties.User))
		for i, u := range pk.Properties.User {
			m.UserProps[i] = wire.UserProp{Key: u.Key, Value: u.Val}
		}
	}
	return m
}

func toPacketProps(ps []wire.UserProp) []packets.UserProperty {
	if len(ps) == 0 {
		return nil
	}
	out := make([]packets.UserProperty, len(ps))
	for i, p := range ps {
		out[i] = packets.UserProperty{Key: p.Key, Val: p.Value}
	}
	return out
}

// stripTimeProp removes every edged-time property; the first valid one becomes the time
// unless t is already set.
func stripTimeProp(ps []wire.UserProp, t time.Time) ([]wire.UserProp, time.Time) {
	var out []wire.UserProp
	for i, p := range ps {
		if p.Key != TimeProp {
			if out != nil {
				out = append(out, p)
			}
			continue
		}
		if out == nil {
			out = append(make([]wire.UserProp, 0, len(ps)-1), ps[:i]...)
		}
		if ms, err := strconv.ParseInt(p.Value, 10, 64); err == nil && t.IsZero() {
			t = time.UnixMilli(ms)
		}
	}
	if out == nil {
		return ps, t
	}
	if len(out) == 0 {
		out = nil
	}
	return out, t
}
