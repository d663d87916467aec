package hardware

import (
	"github.com/edged-dev/edged/hardware/hwkit"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	hwkit.LinkMetrics // up, reopens, dropped: kept by the device's hwkit.Link
	framesIn          *prometheus.CounterVec
	framesOut         *prometheus.CounterVec
	bytesIn           *prometheus.CounterVec
	bytesOut          *prometheus.CounterVec
	invalid           *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	r := hwkit.NewRegistrar(reg)
	m := &metrics{
		LinkMetrics: hwkit.LinkMetrics{
			Up: r.Gauge("edged_serial_port_up",
				"1 while the serial port is open.",
				"port"),
			Reopens: r.Counter("edged_serial_reopens_total",
				"Times a serial port was opened again after it closed or failed.",
				"port"),
			Dropped: r.Counter("edged_serial_dropped_total",
				"Messages lost on a serial port, by reason (publish_error, port_away, queue_full, expired, write_error, unframeable, shutdown).",
				"port", "reason"),
		},
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
	}
	return m, r.Err()
}
