package broker

import (
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edged-dev/edged/internal/ratelog"
)

// Publisher backpressure
//
// mochi reads every client on its own goroutine and hands a message to each subscriber by a
// non-blocking send on that subscriber's write queue (max_queued packets); when the queue is
// full the message is dropped. With several fast publishers and one subscriber that is slower
// than all of them together, most messages were dropped (bench: 64% of QoS 0) where mosquitto,
// single-threaded, simply reads the publishers more slowly.
//
// backpressureHook makes the distributing goroutine wait, before it queues a message for a
// subscriber whose queue is at least 3/4 full, until that queue drained to 1/4 (or less), for
// at most backpressure_wait. The distributing goroutine is the publisher's: its read
// goroutine, its capture pipe worker (which then stops acking, its pipe fills and its reader
// blocks), or the caller of Broker.Publish; so a waiting publisher stops being read and TCP
// pushes back on it.
//
// Where (mochi.go, assumption 2): mochi calls OnACLCheck(subscriber, topic, false) in
// publishToClient on the distributing goroutine, once per selected subscriber (after NoLocal and shared-subscription
// selection; never for inline subscribers), just before the non-blocking send. That is the
// only per-delivery callback before the send, so this hook uses it as a tap: it is registered
// before the ACL hook and always answers false ("no opinion"), which with mochi's first-true-
// wins rule leaves the decision to aclHook. (OnSelectSubscribers only runs when a topic has
// shared subscribers, so it cannot be used.) mochi also calls OnACLCheck(cl, filter, false)
// for SUBSCRIBE and retained deliveries on the subscriber's own read goroutine: a wait there
// only delays that client's own SUBSCRIBE while its own queue drains. $-topics ($SYS, sent
// from mochi's event loop) never wait.
//
// Queue depth: the exact length of the subscriber's queue (mochi's unexported
// Client.State.outbound channel, read by reflection, see mochi.go; a counter kept from hooks
// would drift: resends, oversized packets and the inflight/receive-maximum paths bypass or
// skip the queue without a hook). If a mochi upgrade renames the field, New logs a warning
// and backpressure is off (TestMochiOutboundQueue and TestBackpressureQueueLen fail).
//
// Wake-up: the subscriber's writer goroutine calls OnPacketSent after every packet; when the
// queue is down to low water it closes the subscriber's wake channel. It never blocks, and
// the waiting goroutine holds no lock mochi's writer needs (mochi holds none around
// publishToClient), so the writer always makes progress; the wait is bounded in any case.
//
// In-flight: mochi also drops a QoS>0 delivery when the subscriber already has max_inflight
// unacknowledged messages. That window is treated like the queue: congested at 3/4 of
// max_inflight, drained at 1/4, and the subscriber's PUBACK/PUBCOMP (OnQosComplete, on its
// read goroutine) wakes the waiters.
//
// Hysteresis: a wait that times out marks the subscriber slow (counted): nobody waits for it
// again until its queue drained to low water, or, if it still made progress, until a
// cooldown (10 x backpressure_wait) passed. A subscriber that stopped reading altogether thus
// costs each publisher at most one backpressure_wait, then its messages are dropped as
// before (and counted in messages_dropped). Broker.Close releases every waiter at once.

const slowCooldownFactor = 10

type backpressureHook struct {
	mqtt.HookBase
	wait      time.Duration
	high, low int // write queue marks
	ihigh     int // in-flight marks
	ilow      int
	log       *slog.Logger
	warn      *ratelog.Keyed

	subs    sync.Map // *mqtt.Client -> *subState, for subscribers that reached high water
	tracked atomic.Int64
	done    chan struct{}
	stop    sync.Once

	waits    atomic.Int64 // deliveries that waited
	timeouts atomic.Int64 // waits that ran out of time
}

// subState exists from the first time a subscriber's queue reached high water until it
// disconnects.
type subState struct {
	sent atomic.Int64 // PUBLISH packets written since tracked

	mu        sync.Mutex
	wake      chan struct{} // non-nil while someone waits; closed at low water
	waiters   int
	slow      bool
	slowSince time.Time
	slowSent  int64
	dead      bool // disconnected; removed from subs
}

// newBackpressureHook returns nil when backpressure is off (wait <= 0) or mochi's queue
// cannot be observed.
func newBackpressureHook(wait time.Duration, maxQueued, maxInflight int, log *slog.Logger) *backpressureHook {
	if wait <= 0 {
		return nil
	}
	if outboundField == nil {
		log.Warn("publisher backpressure disabled: this mochi version's client write queue cannot be observed")
		return nil
	}
	high := maxQueued - maxQueued/4
	ihigh := max(maxInflight-maxInflight/4, 1)
	return &backpressureHook{
		wait: wait, high: high, low: min(maxQueued/4, high-1), log: log,
		ihigh: ihigh, ilow: min(maxInflight/4, ihigh-1),
		warn: ratelog.NewKeyed(10*time.Second, 1000), done: make(chan struct{}),
	}
}

func (h *backpressureHook) ID() string { return "edged-backpressure" }

func (h *backpressureHook) Provides(b byte) bool {
	return b == mqtt.OnACLCheck || b == mqtt.OnPacketSent || b == mqtt.OnQosComplete || b == mqtt.OnDisconnect
}

// drained: both the write queue and the in-flight window are at or below low water.
func (h *backpressureHook) drained(cl *mqtt.Client) bool {
	return queueLen(cl) <= h.low && cl.State.Inflight.Len() <= h.ilow
}

// congested: either is at or above high water.
func (h *backpressureHook) congested(cl *mqtt.Client) bool {
	return queueLen(cl) >= h.high || cl.State.Inflight.Len() >= h.ihigh
}

// OnACLCheck never grants anything (false: the ACL hook decides); for a delivery to a
// congested subscriber it first waits. See the comment at the top.
func (h *backpressureHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if write || cl.Net.Inline || cl.Net.Conn == nil {
		return false
	}
	if h.drained(cl) {
		return false
	}
	var s *subState
	if v, ok := h.subs.Load(cl); ok {
		s = v.(*subState)
	}
	if !h.congested(cl) && (s == nil || !s.hasWaiters()) {
		return false // between the marks, only queue behind publishers already waiting
	}
	if strings.HasPrefix(topic, "$") || cl.Closed() || h.closing() {
		return false
	}
	if s == nil {
		v, loaded := h.subs.LoadOrStore(cl, &subState{})
		s = v.(*subState)
		if !loaded {
			h.tracked.Add(1)
			if cl.Closed() { // OnDisconnect may have run before the store
				h.forget(cl)
				return false
			}
		}
	}
	h.throttle(cl, s)
	return false
}

// releaseLocked wakes everybody waiting for s (s.mu held).
func (s *subState) releaseLocked() {
	if s.wake != nil {
		close(s.wake)
		s.wake = nil
	}
}

func (s *subState) hasWaiters() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waiters > 0
}

// throttle waits until cl's queue drained to low water, cl is gone, the broker closes or
// the wait times out (cl is then marked slow).
func (h *backpressureHook) throttle(cl *mqtt.Client, s *subState) {
	s.mu.Lock()
	if s.dead {
		s.mu.Unlock()
		return
	}
	if s.slow {
		retry := time.Since(s.slowSince) >= slowCooldownFactor*h.wait && s.sent.Load() > s.slowSent
		if !retry {
			s.mu.Unlock()
			return // dropped by mochi if the queue is full, as without backpressure
		}
		s.slow = false // it is moving: give it another chance
	}
	if s.wake == nil {
		s.wake = make(chan struct{})
	}
	wake := s.wake
	s.waiters++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.waiters--
		s.mu.Unlock()
	}()

	if h.drained(cl) { // drained meanwhile (the writer saw no waiter)
		return
	}
	h.waits.Add(1)
	t := time.NewTimer(h.wait)
	defer t.Stop()
	select {
	case <-wake:
	case <-h.done:
	case <-t.C:
		h.timeouts.Add(1)
		s.mu.Lock()
		first := !s.slow && !s.dead
		if first {
			s.slow, s.slowSince, s.slowSent = true, time.Now(), s.sent.Load()
		}
		if s.wake == wake { // release everybody else waiting for cl
			s.releaseLocked()
		}
		s.mu.Unlock()
		if ok, n := h.warn.Allow(cl.ID); ok && first {
			h.log.Warn("subscriber is not draining its write queue; publishers no longer wait for it and messages to it may be dropped",
				"client", cl.ID, "queued", queueLen(cl), "waited", h.wait, "suppressed", n)
		}
	}
}

// OnPacketSent runs on the subscriber's writer goroutine after each packet: at low water it
// releases the publishers waiting for it and clears its slow mark. It never blocks.
func (h *backpressureHook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type != packets.Publish || h.tracked.Load() == 0 {
		return
	}
	v, ok := h.subs.Load(cl)
	if !ok {
		return
	}
	h.progress(v.(*subState), cl)
}

// OnQosComplete runs when the subscriber acknowledged a QoS>0 delivery: its in-flight window
// shrank.
func (h *backpressureHook) OnQosComplete(cl *mqtt.Client, _ packets.Packet) {
	if h.tracked.Load() == 0 {
		return
	}
	if v, ok := h.subs.Load(cl); ok {
		h.progress(v.(*subState), cl)
	}
}

// progress records that cl moved and, once it drained to low water, releases its waiters.
func (h *backpressureHook) progress(s *subState, cl *mqtt.Client) {
	s.sent.Add(1)
	if !h.drained(cl) {
		return
	}
	s.mu.Lock()
	s.slow = false
	s.releaseLocked()
	s.mu.Unlock()
}

// OnDisconnect forgets the client and releases whoever waits for it.
func (h *backpressureHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) { h.forget(cl) }

func (h *backpressureHook) forget(cl *mqtt.Client) {
	v, ok := h.subs.LoadAndDelete(cl)
	if !ok {
		return
	}
	h.tracked.Add(-1)
	s := v.(*subState)
	s.mu.Lock()
	s.dead = true
	s.releaseLocked()
	s.mu.Unlock()
}

// shutdown releases every waiter and stops further waits (Broker.Close).
func (h *backpressureHook) shutdown() { h.stop.Do(func() { close(h.done) }) }

// closing reports whether shutdown ran.
func (h *backpressureHook) closing() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}
