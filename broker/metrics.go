package broker

import (
	"errors"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// registerMetrics exposes mochi's counters (read at scrape time, no per-message cost).
func registerMetrics(reg prometheus.Registerer, b *Broker) error {
	in := b.srv.Info
	counter := func(name, help string, f func() int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f()) })
	}
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "edged_clients_connected", Help: "MQTT clients currently connected to the broker."},
			func() float64 { return float64(atomic.LoadInt64(&in.ClientsConnected)) }),
		counter("edged_messages_received_total", "PUBLISH packets received by the broker (network and inline).",
			func() int64 { return atomic.LoadInt64(&in.MessagesReceived) }),
		counter("edged_messages_sent_total", "PUBLISH packets sent by the broker to clients.",
			func() int64 { return atomic.LoadInt64(&in.MessagesSent) }),
		counter("edged_bytes_received_total", "Bytes received from MQTT clients.",
			func() int64 { return atomic.LoadInt64(&in.BytesReceived) }),
		counter("edged_bytes_sent_total", "Bytes sent to MQTT clients.",
			func() int64 { return atomic.LoadInt64(&in.BytesSent) }),
		counter("edged_messages_dropped_total", "Messages the broker dropped for slow or offline subscribers (write queue or inflight limit full).",
			func() int64 { return atomic.LoadInt64(&in.MessagesDropped) + atomic.LoadInt64(&in.InflightDropped) }),
		counter("edged_capture_failures_total", "Published messages the capturer refused or failed to make durable (not acked).",
			func() int64 { return b.capture.failures.Load() }),
	}
	for _, r := range refusalReasons {
		n := b.access.ref.n[r]
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "edged_broker_refusals_total",
			Help:        "Packets the broker refused: topics or filters beyond its limits, subscription quotas, will messages the publish ACL denies (reason).",
			ConstLabels: prometheus.Labels{"reason": r},
		}, func() float64 { return float64(n.Load()) }))
	}
	if bp := b.bp; bp != nil {
		cs = append(cs,
			counter("edged_backpressure_waits_total", "Deliveries for which the publisher was held back because the subscriber's write queue was 3/4 full.",
				bp.waits.Load),
			counter("edged_backpressure_timeouts_total", "Backpressure waits that ran out (backpressure_wait); the subscriber is then treated as slow and its messages may be dropped.",
				bp.timeouts.Load))
	}
	var errs []error
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
