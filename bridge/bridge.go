package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/internal/redact"
	"github.com/edged-dev/edged/storage"
	"github.com/edged-dev/edged/wire"
)

// OriginProp is the MQTT 5 user property the bridge puts on every downlink message it publishes
// locally; its value is the connector name. Capture never forwards a message back to the
// connector it came from (loop prevention); the property is not copied into envelopes.
const OriginProp = "edged-bridge"

// Local is the in-process broker the downlink publishes into.
type Local interface {
	Publish(*broker.Message) error
}

// Options configure a Bridge.
type Options struct {
	// Connectors are validated configs (NewConfig + decode + Validate), in config order.
	Connectors []ConnectorConfig
	// GatewayID is stamped into every envelope and available as {gateway_id}.
	GatewayID string
	// DB holds one outbox per connector, named after the connector.
	DB *storage.DB
	// Defaults are the `storage:` limits; a connector's `outbox:` overrides them field by field.
	Defaults storage.Config
	// Local receives downlink messages; nil drops them (logged).
	Local Local
	// Logger; nil discards.
	Logger *slog.Logger
	// Registerer for the edged_bridge_* metrics; nil keeps them private.
	Registerer prometheus.Registerer
	// Version of edged, reported in health messages (presence.health_topic).
	Version string
	// Wire bounds the envelopes the connectors encode and decode; it must allow what the
	// outboxes store (storage.Options.Wire). The zero value: wire's defaults.
	Wire wire.Limits
}

// Bridge owns the connectors, their rules and forwarders.
type Bridge struct {
	opts  Options
	log   *slog.Logger
	m     *metrics
	dm    *deliveryMetrics
	fwds  []*forwarder // as built by New; the running set is forwarders() (Reload swaps it)
	local Local
	rl    reloadState

	runOnce sync.Once
	started time.Time // for the uptime in health messages
}

// New builds the connectors and opens their outboxes. It never dials: a dead remote cannot
// block start-up; connecting happens in Run.
func New(o Options) (*Bridge, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	if len(o.Connectors) > 0 && o.DB == nil {
		return nil, errors.New("bridge: new: no storage DB")
	}
	if err := ValidateAll(o.Connectors); err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, fmt.Errorf("bridge: metrics: %w", err)
	}
	dm, err := newDeliveryMetrics(o.Registerer)
	if err != nil {
		return nil, fmt.Errorf("bridge: metrics: %w", err)
	}
	b := &Bridge{opts: o, log: o.Logger, m: m, dm: dm, local: o.Local, started: time.Now()}
	if err := o.Registerer.Register(&laneCollector{b: b}); err != nil { // lanes.go
		return nil, fmt.Errorf("bridge: metrics: %w", err)
	}
	for i, cfg := range o.Connectors {
		f, err := b.buildForwarder(i, cfg) // reload.go: the same path adds a connector
		if err != nil {
			return nil, err
		}
		b.fwds = append(b.fwds, f)
	}
	b.setForwarders(b.fwds, o.Connectors)
	return b, nil
}

func (b *Bridge) newForwarder(i int, cfg ConnectorConfig, t Type) (*forwarder, error) {
	c := cfg.Common()
	// Every text of this connector (log lines, status, dead-letter reasons) passes the scrubber
	// of its secrets; the connector adds the ones it reads from files.
	scrub := redact.NewScrubber()
	if sh, ok := cfg.(SecretHolder); ok {
		scrub.Add(sh.Secrets()...)
	}
	log := slog.New(redact.Handler(b.log.Handler(), scrub)).With("connector", c.Name)
	f := &forwarder{b: b, cfg: c, typ: t.Name, log: log, m: b.m, scrub: scrub}
	if ep, ok := cfg.(Endpointer); ok {
		f.endpoint = ep.Endpoint()
	}
	for j, r := range c.Forward {
		cr, err := compileRule(r, true, b.opts.GatewayID)
		if err != nil {
			return nil, fmt.Errorf("bridge: connector %q: forward[%d]: %w", c.Name, j, err)
		}
		f.forward = append(f.forward, cr)
	}
	for j, r := range c.Subscribe {
		cr, err := compileRule(r, false, b.opts.GatewayID)
		if err != nil {
			return nil, fmt.Errorf("bridge: connector %q: subscribe[%d]: %w", c.Name, j, err)
		}
		f.subscribe = append(f.subscribe, cr)
	}
	if err := f.openLanes(b.opts.DB, c.Outbox.Inherit(b.opts.Defaults)); err != nil { // lanes.go
		return nil, fmt.Errorf("bridge: connector %q: outbox: %w", c.Name, err)
	}
	f.throttle = NewThrottle(float64(c.Rate), c.burst())
	env := Env{Name: c.Name, GatewayID: b.opts.GatewayID, Logger: f.log, Deliver: f.deliver, Scrub: scrub,
		BytesOut: f.countBytes, Health: b.healthReporter(), Wire: b.opts.Wire, Throttle: f.throttle}
	conn, err := t.New(cfg, env)
	if err != nil {
		return nil, fmt.Errorf("bridge: connector %q: %w", c.Name, scrub.Error(err))
	}
	f.conn = conn
	f.initStatus()
	f.initDelivery()
	f.initFailover()
	return f, nil
}

// Run drains every outbox through its connector until ctx is done, then closes the connectors
// and returns once every forwarder goroutine has stopped. Call it once.
func (b *Bridge) Run(ctx context.Context) {
	ran := false
	b.runOnce.Do(func() { ran = true })
	if !ran {
		return
	}
	b.runAll(ctx)
}

// Capture implements broker.Capturer: it stores m in the outbox of every connector with a
// matching forward rule and returns once all those appends are durable.
func (b *Bridge) Capture(ctx context.Context, m *broker.Message) error {
	errs := b.CaptureBatch(ctx, []*broker.Message{m})
	if errs == nil {
		return nil
	}
	return errs[0]
}

// CaptureBatch implements broker.BatchCapturer: one durable commit per outbox for a client's
// pipelined messages, in order.
//
// Each matching forward rule yields an envelope whose Topic is the *remote* topic (computed
// now, so a config change does not rewrite the backlog) and whose QoS is the rule's QoS. The id
// is shared by every connector's copy of the message, so different remotes can correlate; if
// one connector gets several copies (rules with different remote topics) each extra copy gets
// its own id. QoS 0 messages are stored the same way, sharing the group commit (keeping each
// client's order across QoS levels and memory flat), but a failure to store one is only counted:
// QoS 0 is best effort and never refused.
func (b *Bridge) CaptureBatch(ctx context.Context, ms []*broker.Message) []error {
	type job struct {
		f    *forwarder
		ln   *lane // the forward rule's lane (lanes.go)
		envs []*wire.Envelope
		idx  []int // message index per envelope
	}
	var jobs []*job
	fwds := b.forwarders() // one set of rules for the whole batch, even across a reload
	for i, m := range ms {
		origin := originOf(m)
		var id wire.ID
		idSet := false
		for _, f := range fwds {
			if origin == f.cfg.Name {
				continue
			}
			var seen []string
			for ri, r := range f.forward {
				caps, ok := r.match(m.Topic)
				if !ok {
					continue
				}
				to := r.expand(m.Topic, caps, m.ClientID, b.opts.GatewayID)
				dup := false
				for _, s := range seen {
					dup = dup || s == to
				}
				if dup {
					continue
				}
				eid := id
				if !idSet || len(seen) > 0 {
					eid = wire.NewID()
					if !idSet {
						id, idSet = eid, true
					}
				}
				seen = append(seen, to)
				ln := f.captureLane(ri)
				var j *job
				for _, x := range jobs {
					if x.ln == ln {
						j = x
					}
				}
				if j == nil {
					j = &job{f: f, ln: ln}
					jobs = append(jobs, j)
				}
				j.envs = append(j.envs, b.envelope(eid, m, to, r.qos))
				j.idx = append(j.idx, i)
			}
		}
	}
	if len(jobs) == 0 {
		return nil
	}
	results := make([]error, len(jobs))
	if len(jobs) == 1 {
		results[0] = jobs[0].ln.append(ctx, jobs[0].envs)
	} else {
		// Several lanes or connectors: one committer operation, so one group commit and one
		// fsync for the whole capture (lanes.go).
		parts := make([]*storage.LaneAppend, len(jobs))
		for k, j := range jobs {
			parts[k] = j.ln.part(j.envs)
		}
		b.opts.DB.AppendLanes(ctx, parts)
		for k, p := range parts {
			results[k] = p.Err
		}
	}
	var out []error
	for k, j := range jobs {
		err := results[k]
		if err == nil {
			j.f.m.captured.WithLabelValues(j.f.cfg.Name).Add(float64(len(j.envs)))
			continue
		}
		j.f.m.captureFailed.WithLabelValues(j.f.cfg.Name).Add(float64(len(j.envs)))
		if errors.Is(err, storage.ErrFull) {
			err = fmt.Errorf("bridge: outbox %q full: %w (%w)", j.f.cfg.Name, broker.ErrQuotaExceeded, err)
		} else {
			err = fmt.Errorf("bridge: outbox %q: append: %w", j.f.cfg.Name, err)
		}
		j.f.log.Warn("capture failed", "err", err, "messages", len(j.envs))
		if out == nil {
			out = make([]error, len(ms))
		}
		for _, i := range j.idx {
			if ms[i].QoS == 0 {
				continue // best effort: counted above
			}
			if out[i] == nil {
				out[i] = err
			}
		}
	}
	for _, e := range out {
		if e != nil {
			return out
		}
	}
	return nil
}

func originOf(m *broker.Message) string {
	if !m.Inline {
		return ""
	}
	for _, p := range m.UserProps {
		if p.Key == OriginProp {
			return p.Value
		}
	}
	return ""
}

func (b *Bridge) envelope(id wire.ID, m *broker.Message, to string, qos byte) *wire.Envelope {
	t := m.Time
	if t.IsZero() {
		t = time.Now()
	}
	props := m.UserProps
	for k, p := range props {
		if p.Key == OriginProp {
			props = append(append([]wire.UserProp(nil), props[:k]...), props[k+1:]...)
			break
		}
	}
	return &wire.Envelope{
		Version: wire.Version, ID: id, Topic: to, Payload: m.Payload, QoS: qos, Retain: m.Retain,
		Time: t.UnixMilli(), Gateway: b.opts.GatewayID, ClientID: m.ClientID, UserProps: props,
		ContentType: m.ContentType,
	}
}

// Status reports every connector, in config order.
func (b *Bridge) Status() []ConnectorStatus {
	fwds := b.forwarders()
	out := make([]ConnectorStatus, 0, len(fwds))
	for _, f := range fwds {
		out = append(out, f.status())
	}
	return out
}

// deliver maps a downlink message through the subscribe rules and publishes it locally.
func (f *forwarder) deliver(_ context.Context, in *Inbound) error {
	local := f.b.local
	delivered := false
	for _, r := range f.subscribe {
		caps, ok := r.match(in.Topic)
		if !ok {
			continue
		}
		to := r.expand(in.Topic, caps, "", f.b.opts.GatewayID)
		if !validTopicName(to) {
			// An empty wildcard capture can leave no topic ("cmd/#" -> "{1}" on the remote
			// topic "cmd"). The local broker would refuse it; failing the delivery would keep
			// it unacknowledged, and an MQTT 3.1.1 remote would redeliver it on every
			// reconnect, forever. It can never succeed: drop it, counted and logged.
			f.m.downlinkFailed.WithLabelValues(f.cfg.Name).Inc()
			if ok, n := f.unmappable.Allow(10*time.Second, 1); ok {
				f.log.Warn("downlink dropped: the subscribe rule maps it to no valid local topic", "topic", in.Topic,
					"rule", r.filter, "local_topic", to, "suppressed", n)
			}
			continue
		}
		qos := in.QoS
		if r.qos < qos {
			qos = r.qos
		}
		props := append(append(make([]wire.UserProp, 0, len(in.UserProps)+1), in.UserProps...), wire.UserProp{Key: OriginProp, Value: f.cfg.Name})
		if local == nil {
			f.log.Warn("downlink dropped: no local broker", "topic", in.Topic)
			return nil
		}
		if err := local.Publish(&broker.Message{Topic: to, Payload: in.Payload, QoS: qos, Retain: in.Retain,
			UserProps: props, ContentType: in.ContentType, Time: time.Now()}); err != nil {
			f.m.downlinkFailed.WithLabelValues(f.cfg.Name).Inc()
			return fmt.Errorf("bridge: downlink %s -> %s: %w", in.Topic, to, err)
		}
		delivered = true
		f.downlinkN.Add(1)
		f.m.downlink.WithLabelValues(f.cfg.Name).Inc()
	}
	if !delivered {
		f.log.Debug("downlink matched no subscribe rule", "topic", in.Topic)
	}
	return nil
}
