package hwkit

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Registrar makes the metric vectors of a package and registers each on the injected
// registerer as it makes it (none when that is nil), keeping every registration error for Err.
type Registrar struct {
	reg  prometheus.Registerer
	errs []error
}

// NewRegistrar registers on reg; nil makes unregistered metrics (tests, or a caller that does
// not export them).
func NewRegistrar(reg prometheus.Registerer) *Registrar { return &Registrar{reg: reg} }

// Counter makes and registers a counter vector.
func (r *Registrar) Counter(name, help string, labels ...string) *prometheus.CounterVec {
	return register(r, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels))
}

// Gauge makes and registers a gauge vector.
func (r *Registrar) Gauge(name, help string, labels ...string) *prometheus.GaugeVec {
	return register(r, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels))
}

// Err is every registration error, joined; nil if all registered.
func (r *Registrar) Err() error { return errors.Join(r.errs...) }

func register[C prometheus.Collector](r *Registrar, c C) C {
	if r.reg != nil {
		r.errs = append(r.errs, r.reg.Register(c))
	}
	return c
}
