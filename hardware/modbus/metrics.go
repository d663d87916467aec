package modbus

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests   *prometheus.CounterVec
	exceptions *prometheus.CounterVec
	published  *prometheus.CounterVec
	online     *prometheus.GaugeVec
	up         *prometheus.GaugeVec
	writes     *prometheus.CounterVec
	dropped    *prometheus.CounterVec
	reopens    *prometheus.CounterVec
	skipped    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_modbus_requests_total", Help: "Modbus requests sent, by result (ok, timeout, exception, crc, protocol, error).",
		}, []string{"bus", "unit", "result"}),
		exceptions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_modbus_exceptions_total", Help: "Modbus exception responses, by exception code.",
		}, []string{"bus", "unit", "code"}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_modbus_published_total", Help: "Point values published into the broker.",
		}, []string{"bus", "unit"}),
		online: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edged_modbus_unit_online", Help: "1 while the unit answers, 0 once it is marked offline.",
		}, []string{"bus", "unit"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edged_modbus_bus_up", Help: "1 while the bus's serial line or TCP connection is open.",
		}, []string{"bus"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_modbus_writes_total", Help: "Write commands, by result (ok, exception, timeout, crc, protocol, error, invalid, dropped, expired).",
		}, []string{"bus", "unit", "result"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_modbus_dropped_total", Help: "Messages lost on a Modbus bus, by reason (publish_error, bus_away, queue_full, expired, reply_overflow, shutdown).",
		}, []string{"bus", "reason"}),
		reopens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_modbus_reopens_total", Help: "Times a bus's link was opened again after it closed or failed.",
		}, []string{"bus"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_modbus_polls_skipped_total", Help: "Polls of an online unit skipped because the bus was behind schedule.",
		}, []string{"bus", "unit"}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.requests, m.exceptions, m.published, m.online, m.up, m.writes, m.dropped, m.reopens, m.skipped} {
		errs = append(errs, reg.Register(c))
	}
	return m, errors.Join(errs...)
}
