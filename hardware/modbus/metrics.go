package modbus

import (
	"github.com/edged-dev/edged/hardware/hwkit"
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
	r := hwkit.NewRegistrar(reg)
	m := &metrics{
		requests: r.Counter("edged_modbus_requests_total",
			"Modbus requests sent, by result (ok, timeout, exception, crc, protocol, error).",
			"bus", "unit", "result"),
		exceptions: r.Counter("edged_modbus_exceptions_total",
			"Modbus exception responses, by exception code.",
			"bus", "unit", "code"),
		published: r.Counter("edged_modbus_published_total",
			"Point values published into the broker.",
			"bus", "unit"),
		online: r.Gauge("edged_modbus_unit_online",
			"1 while the unit answers, 0 once it is marked offline.",
			"bus", "unit"),
		up: r.Gauge("edged_modbus_bus_up",
			"1 while the bus's serial line or TCP connection is open.",
			"bus"),
		writes: r.Counter("edged_modbus_writes_total",
			"Write commands, by result (ok, exception, timeout, crc, protocol, error, invalid, dropped, expired).",
			"bus", "unit", "result"),
		dropped: r.Counter("edged_modbus_dropped_total",
			"Messages lost on a Modbus bus, by reason (publish_error, bus_away, queue_full, expired, reply_overflow, shutdown).",
			"bus", "reason"),
		reopens: r.Counter("edged_modbus_reopens_total",
			"Times a bus's link was opened again after it closed or failed.",
			"bus"),
		skipped: r.Counter("edged_modbus_polls_skipped_total",
			"Polls of an online unit skipped because the bus was behind schedule.",
			"bus", "unit"),
	}
	return m, r.Err()
}
