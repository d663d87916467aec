package modbus

import (
	"github.com/edged-dev/edged/hardware/hwkit"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	hwkit.LinkMetrics // up, reopens, dropped: kept by the device's hwkit.Link
	requests          *prometheus.CounterVec
	exceptions        *prometheus.CounterVec
	published         *prometheus.CounterVec
	online            *prometheus.GaugeVec
	writes            *prometheus.CounterVec
	skipped           *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	r := hwkit.NewRegistrar(reg)
	m := &metrics{
		LinkMetrics: hwkit.LinkMetrics{
			Up: r.Gauge("edged_modbus_bus_up",
				"1 while the bus's serial line or TCP connection is open.",
				"bus"),
			Reopens: r.Counter("edged_modbus_reopens_total",
				"Times a bus's link was opened again after it closed or failed.",
				"bus"),
			Dropped: r.Counter("edged_modbus_dropped_total",
				"Messages lost on a Modbus bus, by reason (publish_error, bus_away, queue_full, expired, reply_overflow, shutdown).",
				"bus", "reason"),
		},
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
		writes: r.Counter("edged_modbus_writes_total",
			"Write commands, by result (ok, exception, timeout, crc, protocol, error, invalid, dropped, expired).",
			"bus", "unit", "result"),
		skipped: r.Counter("edged_modbus_polls_skipped_total",
			"Polls of an online unit skipped because the bus was behind schedule.",
			"bus", "unit"),
	}
	return m, r.Err()
}
