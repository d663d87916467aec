package hardware

import (
	"errors"

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
	m := &metrics{
		framesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_serial_frames_in_total", Help: "Frames read from a serial port and published.",
		}, []string{"port"}),
		framesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_serial_frames_out_total", Help: "Command frames written to a serial port.",
		}, []string{"port"}),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_serial_bytes_in_total", Help: "Bytes read from a serial port.",
		}, []string{"port"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_serial_bytes_out_total", Help: "Bytes written to a serial port.",
		}, []string{"port"}),
		invalid: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_serial_invalid_total", Help: "Frames not published as data, by reason (oversize, malformed, invalid_json, invalid_cbor, transcode).",
		}, []string{"port", "reason"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_serial_dropped_total", Help: "Messages lost on a serial port, by reason (publish_error, port_away, queue_full, expired, write_error, unframeable, shutdown).",
		}, []string{"port", "reason"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "edged_serial_port_up", Help: "1 while the serial port is open.",
		}, []string{"port"}),
		reopens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edged_serial_reopens_total", Help: "Times a serial port was opened again after it closed or failed.",
		}, []string{"port"}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.framesIn, m.framesOut, m.bytesIn, m.bytesOut, m.invalid, m.dropped, m.up, m.reopens} {
		errs = append(errs, reg.Register(c))
	}
	return m, errors.Join(errs...)
}
