package bridge

import (
	"errors"
	"math"
	"net/http"
	"sync"
	"time"

	paho3packets "github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged-dev/edged/bridge/internal/mqtt5"
)

// Failure classes: why an attempt failed, in edged_bridge_failures_total{class} and
// ConnectorStatus.FailuresByClass. failed_total{reason} says where in the cycle it failed
// (connect, send, stall...); the class says what the operator has to look at.
const (
	ClassNetwork   = "network"   // dial, timeout, link lost, stall: the path to the remote
	ClassAuth      = "auth"      // credentials refused (CONNACK 0x86/0x87, HTTP 401/403)
	ClassThrottled = "throttled" // the remote asked us to slow down (429, 503, quota, busy)
	ClassRejected  = "rejected"  // the remote refused a message for good (dead-lettered)
	ClassRedirect  = "redirect"  // a 3xx: the configured url is wrong
)

var allClasses = []string{ClassNetwork, ClassAuth, ClassThrottled, ClassRejected, ClassRedirect}

// StatusError carries the HTTP status code of a failed request so failures can be classed.
type StatusError struct {
	Code int
	Err  error
}

func (e *StatusError) Error() string { return e.Err.Error() }
func (e *StatusError) Unwrap() error { return e.Err }

// failureClass sorts an error into one of the classes above.
func failureClass(err error) string {
	var (
		re *RedirectError
		se *StatusError
		ra *RetryAfterError
		rc *mqtt5.ReasonError
	)
	switch {
	case errors.As(err, &re):
		return ClassRedirect
	case errors.As(err, &se):
		switch {
		case se.Code == http.StatusUnauthorized || se.Code == http.StatusForbidden:
			return ClassAuth
		case se.Code == http.StatusTooManyRequests || se.Code == http.StatusServiceUnavailable:
			return ClassThrottled
		case se.Code >= 300 && se.Code < 400:
			return ClassRedirect
		}
	case errors.As(err, &ra):
		return ClassThrottled
	case errors.As(err, &rc):
		switch rc.Code {
		case 0x86, 0x87, 0x8C: // bad user name or password, not authorized, bad auth method
			return ClassAuth
		case 0x89, 0x97, 0x9F: // server busy, quota exceeded, connection rate exceeded
			return ClassThrottled
		}
		if rc.Packet == "puback" {
			return ClassRejected
		}
	case errors.Is(err, paho3packets.ErrorRefusedBadUsernameOrPassword), errors.Is(err, paho3packets.ErrorRefusedNotAuthorised):
		return ClassAuth
	}
	if IsPermanent(err) {
		return ClassRejected
	}
	return ClassNetwork
}

// deliveryMetrics are the per-connector delivery figures operators of a messaging platform
// watch: latency end to end and per round trip, bytes on the wire, failures by class, and which
// endpoint is in use.
type deliveryMetrics struct {
	latency, rtt   *prometheus.HistogramVec
	bytes          *prometheus.CounterVec
	failures       *prometheus.CounterVec
	failovers      *prometheus.CounterVec
	endpointActive *prometheus.GaugeVec
}

// latencyBuckets span 1 ms (a loopback broker) to ~9 h (a backlog drained after an outage).
var latencyBuckets = prometheus.ExponentialBuckets(0.001, 2.5, 20)

func newDeliveryMetrics(reg prometheus.Registerer) (*deliveryMetrics, error) {
	m := &deliveryMetrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "edged", Subsystem: "bridge", Name: "delivery_latency_seconds",
			Help: "Capture time (envelope time) to remote confirmation, per delivered message.", Buckets: latencyBuckets}, []string{"connector"}),
		rtt: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "edged", Subsystem: "bridge", Name: "ack_round_trip_seconds",
			Help: "Hand-over of a batch to the connector to the remote's confirmation, per delivered message.", Buckets: latencyBuckets}, []string{"connector"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "edged", Subsystem: "bridge", Name: "bytes_sent_total",
			Help: "Bytes of message bodies written toward the remote (retries included)."}, []string{"connector"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "edged", Subsystem: "bridge", Name: "failures_total",
			Help: "Failed attempts and rejected messages by class (network, auth, throttled, rejected, redirect)."}, []string{"connector", "class"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "edged", Subsystem: "bridge", Name: "failovers_total",
			Help: "Switches from one configured endpoint (urls) to another."}, []string{"connector"}),
		endpointActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "edged", Subsystem: "bridge", Name: "endpoint_active",
			Help: "1 for the endpoint (index into urls, 0 = primary) the connector uses now."}, []string{"connector", "endpoint_index"}),
	}
	for _, c := range []prometheus.Collector{m.latency, m.rtt, m.bytes, m.failures, m.failovers, m.endpointActive} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// quantileWindow keeps recent observations as log-scale histograms in time slots, so p50/p99
// over the last few minutes cost fixed memory whatever the message rate: slots x bins counters.
type quantileWindow struct {
	mu    sync.Mutex
	slot  time.Duration
	slots [windowSlots]windowSlot
}

const (
	windowSlots = 10               // x slotLength = the window status reports over
	slotLength  = 30 * time.Second // 10 x 30 s = 5 minutes
	windowBins  = 96               // 1.25x per bin from 100 µs: up to ~200 days
	windowMin   = 100 * time.Microsecond
	windowGrow  = 1.25
)

type windowSlot struct {
	start int64 // slot number (unix time / slot length)
	n     uint64
	bins  [windowBins]uint32
}

func binOf(d time.Duration) int {
	if d <= windowMin {
		return 0
	}
	b := int(math.Log(float64(d)/float64(windowMin))/math.Log(windowGrow)) + 1
	return min(b, windowBins-1)
}

// binUpper is the upper bound of bin b (the value a quantile in that bin reports).
func binUpper(b int) time.Duration {
	return time.Duration(float64(windowMin) * math.Pow(windowGrow, float64(b)))
}

func (w *quantileWindow) observe(now time.Time, d time.Duration) {
	slot := w.slot
	if slot == 0 {
		slot = slotLength
	}
	k := now.UnixNano() / int64(slot)
	w.mu.Lock()
	s := &w.slots[k%windowSlots]
	if s.start != k {
		*s = windowSlot{start: k}
	}
	s.n++
	s.bins[binOf(d)]++
	w.mu.Unlock()
}

// quantiles returns the q-quantiles of the observations of the last windowSlots slots (each
// the upper bound of its bin, within 25 %), and how many there were.
func (w *quantileWindow) quantiles(now time.Time, qs ...float64) ([]time.Duration, uint64) {
	slot := w.slot
	if slot == 0 {
		slot = slotLength
	}
	k := now.UnixNano() / int64(slot)
	var bins [windowBins]uint64
	var n uint64
	w.mu.Lock()
	for i := range w.slots {
		s := &w.slots[i]
		if s.n == 0 || s.start <= k-windowSlots {
			continue
		}
		n += s.n
		for b, c := range s.bins {
			bins[b] += uint64(c)
		}
	}
	w.mu.Unlock()
	out := make([]time.Duration, len(qs))
	if n == 0 {
		return out, 0
	}
	for i, q := range qs {
		want := uint64(math.Ceil(q * float64(n)))
		want = max(want, 1)
		var acc uint64
		for b, c := range bins {
			acc += c
			if acc >= want {
				out[i] = binUpper(b)
				break
			}
		}
	}
	return out, n
}

// delivery is one forwarder's delivery figures for status.
type delivery struct {
	latency, rtt quantileWindow
	// The series of this connector, looked up once: they are hit per message.
	latObs, rttObs prometheus.Observer
	bytesC         prometheus.Counter
	mu             sync.Mutex
	byClass        map[string]uint64
	bytes          uint64
}

// DeliveryStatus is the delivery part of ConnectorStatus: quantiles over the last five minutes
// (0 when nothing was delivered in that time), totals since start.
type DeliveryStatus struct {
	// WindowMessages is how many confirmed messages the quantiles are computed over.
	WindowMessages uint64 `json:"window_messages"`
	// LatencyP50/P99Ms: capture time to remote confirmation, milliseconds.
	LatencyP50Ms float64 `json:"latency_p50_ms"`
	LatencyP99Ms float64 `json:"latency_p99_ms"`
	// RoundTripP50/P99Ms: batch hand-over to confirmation, milliseconds.
	RoundTripP50Ms float64 `json:"round_trip_p50_ms"`
	RoundTripP99Ms float64 `json:"round_trip_p99_ms"`
	// BytesSent on the wire (message bodies, retries included).
	BytesSent uint64 `json:"bytes_sent"`
	// FailuresByClass counts failures by class (network, auth, throttled, rejected, redirect).
	FailuresByClass map[string]uint64 `json:"failures_by_class,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (d *delivery) status(now time.Time) DeliveryStatus {
	var s DeliveryStatus
	lq, n := d.latency.quantiles(now, 0.5, 0.99)
	rq, _ := d.rtt.quantiles(now, 0.5, 0.99)
	s.WindowMessages = n
	s.LatencyP50Ms, s.LatencyP99Ms = ms(lq[0]), ms(lq[1])
	s.RoundTripP50Ms, s.RoundTripP99Ms = ms(rq[0]), ms(rq[1])
	d.mu.Lock()
	s.BytesSent = d.bytes
	if len(d.byClass) > 0 {
		s.FailuresByClass = make(map[string]uint64, len(d.byClass))
		for k, v := range d.byClass {
			s.FailuresByClass[k] = v
		}
	}
	d.mu.Unlock()
	return s
}

// initDelivery creates the series of f so dashboards see zeros rather than gaps.
func (f *forwarder) initDelivery() {
	dm := f.b.dm
	f.dlv.byClass = map[string]uint64{}
	f.dlv.latObs = dm.latency.WithLabelValues(f.cfg.Name)
	f.dlv.rttObs = dm.rtt.WithLabelValues(f.cfg.Name)
	f.dlv.bytesC = dm.bytes.WithLabelValues(f.cfg.Name)
	dm.failovers.WithLabelValues(f.cfg.Name)
	for _, c := range allClasses {
		dm.failures.WithLabelValues(f.cfg.Name, c)
	}
}

// countFailure records one failure under the class of err.
func (f *forwarder) countFailure(err error) {
	c := failureClass(err)
	f.b.dm.failures.WithLabelValues(f.cfg.Name, c).Inc()
	f.dlv.mu.Lock()
	f.dlv.byClass[c]++
	f.dlv.mu.Unlock()
}

// observeDelivered records one confirmed message: capture time to ack, and hand-over to ack.
func (f *forwarder) observeDelivered(m *Message, sentAt, ackAt time.Time) {
	lat := ackAt.Sub(time.UnixMilli(m.Env.Time))
	lat = max(lat, 0) // the capture clock is milliseconds; a sub-ms delivery must not go negative
	rtt := ackAt.Sub(sentAt)
	f.dlv.latObs.Observe(lat.Seconds())
	f.dlv.rttObs.Observe(rtt.Seconds())
	f.dlv.latency.observe(ackAt, lat)
	f.dlv.rtt.observe(ackAt, rtt)
}

// countBytes is Env.BytesOut: bytes of a body the connector wrote toward the remote.
func (f *forwarder) countBytes(n int) {
	if n <= 0 {
		return
	}
	f.dlv.bytesC.Add(float64(n))
	f.dlv.mu.Lock()
	f.dlv.bytes += uint64(n)
	f.dlv.mu.Unlock()
}
