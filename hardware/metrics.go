package hardware

import (
	"github.com/edged-dev/edged/hardware/hwkit"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	framesIn  *prometheus.CounterVec
	framesOut *prometheus.CounterVec
	bytesIn   *prometheus.CounterVec
	bytesOut  *prometheus.CounterVec
	invalid   *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	up        *prometheus.GaugeVec
	reopens   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	r := hwkit.NewRegistrar(reg)
	m := &metrics{
		framesIn: r.Counter("edged_serial_frames_in_total",
			"Frames read from a serial port and published.",
			"port"),
		framesOut: r.Counter("edged_serial_frames_out_total",
			"Command frames written to a serial port.",
			"port"),
		bytesIn: r.Counter("edged_serial_bytes_in_total",
			"Bytes read from a serial port.",
			"port"),
		bytesOut: r.Counter("edged_serial_bytes_out_total",
			"Bytes written to a serial port.",
			"port"),
		invalid: r.Counter("edged_serial_invalid_total",
			"Frames not published as data, by reason (oversize, malformed, invalid_json, invalid_cbor, transcode).",
			"port", "reason"),
		dropped: r.Counter("edged_serial_dropped_total",
			"Messages lost on a serial port, by reason (publish_error, port_away, queue_full, expired, write_error, unframeable, shutdown).",
			"port", "reason"),
		up: r.Gauge("edged_serial_port_up",
			"1 while the serial port is open.",
			"port"),
		reopens: r.Counter("edged_serial_reopens_total",
			"Times a serial port was opened again after it closed or failed.",
			"port"),
	}
	return m, r.Err()
}
