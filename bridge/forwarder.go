package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged-dev/edged/internal/backoff"
	"github.com/edged-dev/edged/internal/ratelog"
	"github.com/edged-dev/edged/internal/redact"
	"github.com/edged-dev/edged/storage"
)

// Connector states in ConnectorStatus.State and the edged_bridge_state metric.
const (
	StateConnecting  = "connecting" // dialling
	StateConnected   = "connected"  // link up, draining or idle
	StateBackingOff  = "backing_off"
	StateBreakerOpen = "breaker_open" // circuit breaker open: no attempts until open_for passed
	StateStalled     = "stalled"      // the remote stopped confirming; reconnecting
	StateStopped     = "stopped"
)

// errStalled ends a session whose remote stopped confirming.
var errStalled = errors.New("stalled: no confirmation within stall_timeout")

// ConnectorStatus is one connector in /api/v1/status and `edged status`.
type ConnectorStatus struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	State string `json:"state"`
	// Endpoint is the remote address, credentials masked.
	Endpoint string `json:"endpoint,omitempty"`
	// Since is when the connector entered State.
	Since       time.Time `json:"since"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// Depth, Bytes, OldestAgeSeconds describe the outbox backlog.
	Depth            int64   `json:"depth"`
	Bytes            int64   `json:"bytes"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	// DeadLetterDepth is the number of messages in this connector's dead-letter queue.
	DeadLetterDepth int64 `json:"dead_letter_depth"`
	// SentRate is messages confirmed per second, over the last few seconds.
	SentRate float64 `json:"sent_rate"`
	// Traffic is the per-lane backlog, the uplink byte rate and the time to drain the backlog.
	Traffic TrafficStatus `json:"traffic"`
	// Window is the effective in-flight limit (config window lowered by the remote).
	Window      int    `json:"window"`
	Inflight    int64  `json:"inflight"`
	Sent        uint64 `json:"sent"`
	Failed      uint64 `json:"failed"`
	DeadLetters uint64 `json:"dead_letters"`
	Reconnects  uint64 `json:"reconnects"`
	Stalls      uint64 `json:"stalls"`
	Downlink    uint64 `json:"downlink"`
	// EndpointIndex is the index into urls of the endpoint in use (0 = primary); Endpoints how
	// many are configured; Failovers how often the connector switched between them.
	EndpointIndex int    `json:"endpoint_index"`
	Endpoints     int    `json:"endpoints,omitempty"`
	Failovers     uint64 `json:"failovers"`
	// Delivery holds latency quantiles over the last minutes, bytes and failures by class.
	Delivery DeliveryStatus `json:"delivery"`
}

type metrics struct {
	sent, stalls, reconnects, captured, captureFailed, downlink, downlinkFailed *prometheus.CounterVec
	failed                                                                      *prometheus.CounterVec
	inflight                                                                    *prometheus.GaugeVec
	state                                                                       *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	cv := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "edged", Subsystem: "bridge", Name: name, Help: help}, labels)
	}
	m := &metrics{
		sent:   cv("sent_total", "Messages confirmed by the remote.", "connector"),
		failed: cv("failed_total", "Failed attempts by reason (connect, send, rejected, stall, redirect).", "connector", "reason"),
		// Dead letters are counted by storage (edged_outbox_dead_letters_total{outbox,reason}), which
		// sees every entry, the corrupt records it finds as well as the remote's rejections.
		stalls:         cv("stalls_total", "Times the remote stopped confirming for stall_timeout.", "connector"),
		reconnects:     cv("reconnects_total", "Successful connects after the first.", "connector"),
		captured:       cv("captured_total", "Envelopes appended to the connector's outbox.", "connector"),
		captureFailed:  cv("capture_failed_total", "Envelopes that could not be appended (full under reject, storage errors).", "connector"),
		downlink:       cv("downlink_total", "Downlink messages published locally.", "connector"),
		downlinkFailed: cv("downlink_failed_total", "Downlink messages the local broker refused or that a subscribe rule mapped to no valid local topic.", "connector"),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "edged", Subsystem: "bridge", Name: "inflight",
			Help: "Messages sent and not yet confirmed."}, []string{"connector"}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "edged", Subsystem: "bridge", Name: "state",
			Help: "1 for the connector's current state."}, []string{"connector", "state"}),
	}
	for _, c := range []prometheus.Collector{m.sent, m.failed, m.stalls, m.reconnects, m.captured,
		m.captureFailed, m.downlink, m.downlinkFailed, m.inflight, m.state} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// forwarder owns one connector and drains its outbox.
type forwarder struct {
	b         *Bridge
	cfg       *Common
	typ       string
	log       *slog.Logger
	m         *metrics
	ob        *storage.Outbox
	conn      Connector
	scrub     *redact.Scrubber // masks this connector's secrets in status, logs, dead-letter reasons
	endpoint  string
	forward   []*rule
	subscribe []*rule
	// unmappable limits the log of downlink messages a subscribe rule maps to no valid topic.
	unmappable ratelog.Limit

	// Traffic control (lanes.go, ratelimit.go): the lanes in drain order, the lane of each
	// forward rule (and its backlog lane under live_first), whether the link is up (capture
	// then feeds the live lanes), and the connector's bandwidth throttle.
	lanes        []*lane
	ruleLanes    []*lane
	backlogLanes []*lane
	live         atomic.Bool
	throttle     *Throttle
	uplinkMeter  rateMeter
	retryLane    *lane

	mu          sync.Mutex
	state       string
	since       time.Time
	lastErr     string
	lastErrAt   time.Time
	window      int
	rateT       time.Time
	rateN       uint64
	rate        float64
	errReported int
	retryFirst  uint64 // first seq and size of the last failed batch (forwarder goroutine only)
	retryN      int
	dlv         delivery
	fo          failover

	sent, failed, dead, reconnects, stalls, downlinkN atomic.Uint64
	inflight                                          atomic.Int64
}

func (f *forwarder) initStatus() {
	f.state, f.since, f.window = StateStopped, time.Now(), f.cfg.Window
	f.rateT = time.Now()
	f.m.state.WithLabelValues(f.cfg.Name, StateStopped).Set(1)
	for _, lbl := range []string{"connect", "send", "rejected", "stall", "redirect"} {
		f.m.failed.WithLabelValues(f.cfg.Name, lbl)
	}
	f.m.sent.WithLabelValues(f.cfg.Name)
	f.m.stalls.WithLabelValues(f.cfg.Name)
	f.m.reconnects.WithLabelValues(f.cfg.Name)
	f.m.inflight.WithLabelValues(f.cfg.Name)
}

func (f *forwarder) setState(s string) {
	f.mu.Lock()
	old := f.state
	if old != s {
		f.state, f.since = s, time.Now()
	}
	f.mu.Unlock()
	if old != s {
		f.m.state.WithLabelValues(f.cfg.Name, old).Set(0)
		f.m.state.WithLabelValues(f.cfg.Name, s).Set(1)
		f.log.Debug("state", "from", old, "to", s)
	}
}

// fail records a failed attempt; logs the first failure of a streak and every 10th after
// (nats shouldReportConnectErr), so a flapping link does not flood the log.
func (f *forwarder) fail(reason string, err error) {
	var re *RedirectError
	if errors.As(err, &re) {
		reason = "redirect"
	}
	err = f.scrub.Error(err)
	f.failed.Add(1)
	f.m.failed.WithLabelValues(f.cfg.Name, reason).Inc()
	f.countFailure(err)
	f.mu.Lock()
	f.lastErr, f.lastErrAt = err.Error(), time.Now()
	f.errReported++
	n := f.errReported
	f.mu.Unlock()
	if n == 1 || n%10 == 0 {
		f.log.Warn("connector failure", "reason", reason, "err", err, "consecutive", n)
	}
}

func (f *forwarder) progressed() {
	f.mu.Lock()
	n := f.errReported
	f.errReported = 0
	f.mu.Unlock()
	if n > 0 {
		f.log.Info("connector recovered", "after_failures", n)
	}
}

func (f *forwarder) status() ConnectorStatus {
	ts := f.trafficStatus()
	f.mu.Lock()
	now := time.Now()
	sent := f.sent.Load()
	if dt := now.Sub(f.rateT); dt >= time.Second {
		f.rate = float64(sent-f.rateN) / dt.Seconds()
		f.rateT, f.rateN = now, sent
	}
	s := ConnectorStatus{
		Name: f.cfg.Name, Type: f.typ, State: f.state, Endpoint: f.endpoint, Since: f.since, LastError: f.lastErr, LastErrorAt: f.lastErrAt,
		Window: f.window, SentRate: f.rate,
	}
	f.mu.Unlock()
	s.Delivery = f.dlv.status(now)
	s.Endpoint, s.EndpointIndex, s.Endpoints, s.Failovers = f.fo.status(f.endpoint)
	for _, l := range f.lanes {
		d, b, age, dlq := outboxStats(l.stats())
		s.Depth, s.Bytes, s.DeadLetterDepth = s.Depth+d, s.Bytes+b, s.DeadLetterDepth+dlq
		s.OldestAgeSeconds = max(s.OldestAgeSeconds, age)
	}
	s.Traffic = ts
	s.Inflight = f.inflight.Load()
	s.Sent, s.Failed, s.DeadLetters = sent, f.failed.Load(), f.dead.Load()
	s.Reconnects, s.Stalls, s.Downlink = f.reconnects.Load(), f.stalls.Load(), f.downlinkN.Load()
	return s
}

// breaker opens after `failures` consecutive failures; while open nothing is attempted; after
// openFor one probe is allowed (half-open): success closes it, failure re-opens it.
type breaker struct {
	failures int
	openFor  time.Duration
	n        int
	openedAt time.Time
	open     bool
}

func (b *breaker) fail() bool {
	if b.failures < 0 {
		return false
	}
	b.n++
	if b.open || b.n >= b.failures {
		b.open, b.openedAt = true, time.Now()
		return true
	}
	return false
}

func (b *breaker) success() { b.n, b.open = 0, false }

// wait is how long the breaker stays open; 0 = closed or half-open (probe allowed).
func (b *breaker) wait() time.Duration {
	if !b.open {
		return 0
	}
	return time.Until(b.openedAt.Add(b.openFor))
}

// run is the forwarder goroutine: connect, drain, and on failure back off (or wait out the
// breaker) and reconnect, until ctx is done.
func (f *forwarder) run(ctx context.Context) {
	defer f.setState(StateStopped)
	defer f.conn.Close()
	bo := &backoff.Backoff{Min: f.cfg.Backoff.Min, Max: f.cfg.Backoff.Max}
	br := &breaker{failures: f.cfg.Breaker.Failures, openFor: f.cfg.Breaker.OpenFor}
	connected := 0
	pctx, stopProbe := context.WithCancel(ctx)
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() { defer pwg.Done(); f.probePrimary(pctx) }()
	defer pwg.Wait()
	defer stopProbe()
	for ctx.Err() == nil {
		if w := br.wait(); w > 0 {
			f.setState(StateBreakerOpen)
			if !backoff.Sleep(ctx, w) {
				return
			}
			continue // half-open: one probe
		}
		f.setState(StateConnecting)
		cctx, cancel := context.WithTimeout(ctx, f.cfg.ConnectTimeout)
		err := f.conn.Connect(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		var delay time.Duration
		if err != nil {
			f.conn.Close()
			f.fail("connect", fmt.Errorf("connect: %w", err))
			f.failoverNext()
			f.setState(StateBackingOff)
		} else {
			connected++
			if connected > 1 {
				f.reconnects.Add(1)
				f.m.reconnects.WithLabelValues(f.cfg.Name).Inc()
			}
			w := f.cfg.Window
			if wd, ok := f.conn.(Windowed); ok && wd.Window() > 0 && wd.Window() < w {
				w = wd.Window()
			}
			f.mu.Lock()
			f.window = w
			f.mu.Unlock()
			f.setState(StateConnected)
			err = f.session(ctx, bo, br)
			f.conn.Close()
			f.inflight.Store(0)
			f.m.inflight.WithLabelValues(f.cfg.Name).Set(0)
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, errSwitchBack) {
				f.switchTo(0, "primary healthy again")
				continue
			}
			f.failoverNext()
			switch {
			case errors.Is(err, errStalled):
				f.stalls.Add(1)
				f.m.stalls.WithLabelValues(f.cfg.Name).Inc()
				f.fail("stall", err)
				f.setState(StateStalled)
			default:
				f.fail("send", err)
				f.setState(StateBackingOff)
			}
		}
		delay = bo.Next()
		var ra *RetryAfterError
		if errors.As(err, &ra) && ra.After > delay {
			delay = ra.After
		}
		if br.fail() {
			f.setState(StateBreakerOpen)
			if w := br.wait(); w > delay {
				delay = w
			}
		}
		if !backoff.Sleep(ctx, delay) {
			return
		}
	}
}

// linkClosed is the error of a session whose idle link closed, with the cause when the
// connector knows it (a Linked connector may implement LinkErr), so status says why.
func linkClosed(c Connector) error {
	if le, ok := c.(interface{ LinkErr() error }); ok {
		if err := le.LinkErr(); err != nil {
			return fmt.Errorf("link closed: %w", err)
		}
	}
	return errors.New("link closed")
}

// session drains the outbox over one established link. It returns on ctx done, link loss,
// a retriable send failure or a stall.
func (f *forwarder) session(ctx context.Context, bo *backoff.Backoff, br *breaker) error {
	var linkDone <-chan struct{}
	if l, ok := f.conn.(Linked); ok {
		linkDone = l.Done()
	}
	maxMsgs, maxBytes := f.cfg.Batch.MaxMessages, f.batchBytes()
	// Messages captured from now on are live (live_first); those stored before wait in the
	// backlog lanes, which drain in the capacity the live ones leave.
	f.live.Store(true)
	defer f.live.Store(false)
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		ln := f.pick()
		var recs []storage.Record
		if ln != nil {
			var err error
			if recs, err = ln.read(maxMsgs, maxBytes); err != nil {
				return fmt.Errorf("read outbox: %w", laneErr(ln, "read", err))
			}
		}
		if len(recs) == 0 {
			// Idle with empty lanes and a working link: that is success.
			br.success()
			bo.Reset()
			switch f.waitAny(ctx, linkDone, f.fo.back) {
			case waitDone:
				return ctx.Err()
			case waitLinkClosed:
				return linkClosed(f.conn)
			case waitExtra: // the prober found the primary healthy
				if f.fo.current() != 0 { // not a signal that raced a failover onto the primary
					return errSwitchBack
				}
			}
			continue
		}
		if len(recs) < maxMsgs && f.cfg.Batch.MaxDelay > 0 {
			t := time.NewTimer(f.cfg.Batch.MaxDelay)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
			if more, err := ln.read(maxMsgs, maxBytes); err == nil && len(more) >= len(recs) {
				recs = more
			}
		}
		// A retry carries exactly the messages of the failed attempt (stable idempotency keys).
		if f.retryN > 0 && f.retryLane == ln && recs[0].Seq == f.retryFirst && len(recs) > f.retryN {
			recs = recs[:f.retryN]
		}
		msgs := make([]*Message, len(recs))
		for i, r := range recs {
			msgs[i] = &Message{Seq: r.Seq, Env: r.Env}
		}
		n, err := f.send(ctx, ln, recs, msgs)
		if n == 0 && err != nil {
			f.retryLane, f.retryFirst, f.retryN = ln, msgs[0].Seq, len(msgs)
		} else {
			f.retryLane, f.retryFirst, f.retryN = nil, 0, 0
		}
		if n > 0 {
			br.success()
			bo.Reset()
			f.progressed()
		}
		if err != nil {
			return err
		}
		select {
		case <-f.fo.back: // at a batch boundary: nothing in flight
			if f.fo.current() != 0 {
				return errSwitchBack
			}
		default:
		}
	}
}

// send hands one batch to the connector with a stall watchdog, then removes from the outbox
// the longest prefix that has final results (confirmed, or permanently rejected -> dead
// letters). It returns how many messages left the outbox.
func (f *forwarder) send(ctx context.Context, ln *lane, recs []storage.Record, msgs []*Message) (int, error) {
	var (
		mu       sync.Mutex
		results  = make([]error, len(msgs))
		got      = make([]bool, len(msgs))
		ackAt    = make([]time.Time, len(msgs))
		sentAt   = time.Now()
		finished bool
	)
	progress := make(chan struct{}, 1)
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	f.inflight.Store(int64(len(msgs)))
	f.m.inflight.WithLabelValues(f.cfg.Name).Set(float64(len(msgs)))
	result := func(i int, err error) {
		mu.Lock()
		if finished || i < 0 || i >= len(msgs) || got[i] {
			mu.Unlock()
			return
		}
		got[i], results[i] = true, err
		if err == nil {
			ackAt[i] = time.Now()
		}
		mu.Unlock()
		f.inflight.Add(-1)
		select {
		case progress <- struct{}{}:
		default:
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	if f.cfg.StallTimeout > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTimer(f.cfg.StallTimeout)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-progress:
					if !t.Stop() {
						select {
						case <-t.C:
						default:
						}
					}
					t.Reset(f.cfg.StallTimeout)
				case <-t.C:
					cancel(errStalled)
					return
				}
			}
		}()
	}
	sendErr := f.conn.Send(sctx, msgs, result)
	close(stop)
	wg.Wait()
	mu.Lock()
	finished = true
	mu.Unlock()
	f.inflight.Store(0)
	f.m.inflight.WithLabelValues(f.cfg.Name).Set(0)

	var (
		upto     uint64
		done     int
		okN      int
		firstErr error
	)
	for i, m := range msgs {
		if !got[i] {
			break
		}
		if r := results[i]; r != nil {
			if !IsPermanent(r) {
				firstErr = r
				break
			}
			r = f.scrub.Error(r)
			if err := ln.deadLetter(recs[i], r.Error()); err != nil {
				return done, fmt.Errorf("dead-letter %d: %w", m.Seq, err)
			}
			f.dead.Add(1)
			f.m.failed.WithLabelValues(f.cfg.Name, "rejected").Inc()
			f.countFailure(r)
			f.log.Warn("message rejected permanently; moved to dead letters", "id", m.Env.ID.String(), "topic", m.Env.Topic, "err", r)
		} else {
			okN++
			f.observeDelivered(m, sentAt, ackAt[i])
		}
		upto = m.Seq
		done++
	}
	f.sent.Add(uint64(okN))
	ln.sent.Add(uint64(okN))
	f.m.sent.WithLabelValues(f.cfg.Name).Add(float64(okN))
	if upto > 0 {
		if err := ln.ack(recs[:done]); err != nil {
			return done, fmt.Errorf("ack outbox up to %d: %w", upto, laneErr(ln, "ack", err))
		}
	}
	if c := context.Cause(sctx); errors.Is(c, errStalled) && ctx.Err() == nil {
		return done, errStalled
	}
	if sendErr != nil {
		return done, sendErr
	}
	if firstErr != nil {
		return done, firstErr
	}
	if done < len(msgs) {
		return done, fmt.Errorf("connector returned without a result for %d message(s)", len(msgs)-done)
	}
	return done, nil
}

func outboxStats(st storage.OutboxStats) (depth, bytes int64, oldest float64, dlq int64) {
	return st.Depth, st.Bytes, st.OldestAge.Seconds(), st.DLQDepth
}
