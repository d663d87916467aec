package modbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/edged-dev/edged/hardware/hwkit"
	"github.com/prometheus/client_golang/prometheus"
)

// Local is the in-process broker client values are published into and writes come from
// (broker.Broker implements it: inline publish, no TCP).
type Local = hwkit.Local

// Manager runs the configured buses.
type Manager struct {
	buses   []*Bus
	started atomic.Bool
}

// New validates buses (after applying defaults to a copy) and prepares them; Run opens them.
// newSerial gives each RTU bus its serial layer (nil: plain device paths, no USB match, no fd
// reserve). log may be nil; reg may be nil (metrics not registered).
func New(buses []BusConfig, local Local, log *slog.Logger, reg prometheus.Registerer, newSerial func() SerialLayer) (*Manager, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	buses = Clone(buses)
	ApplyDefaults(buses)
	if err := Validate(buses); err != nil {
		return nil, fmt.Errorf("modbus config: %w", err)
	}
	if len(buses) == 0 {
		return &Manager{}, nil
	}
	if local == nil {
		return nil, errors.New("modbus: nil Local")
	}
	met, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("modbus metrics: %w", err)
	}
	m := &Manager{}
	for _, bc := range buses {
		var sl SerialLayer
		if bc.RTU != nil {
			if newSerial != nil {
				sl = newSerial()
			} else {
				sl = plainSerial{}
			}
		}
		m.buses = append(m.buses, newBus(bc, local, log.With("bus", bc.Name), met, sl))
	}
	return m, nil
}

// Clone deep-copies the parts of a config that ApplyDefaults writes into, so a caller's config
// is left as given.
func Clone(in []BusConfig) []BusConfig {
	out := slices.Clone(in)
	for i := range out {
		if out[i].RTU != nil {
			r := *out[i].RTU
			out[i].RTU = &r
		}
		out[i].Units = slices.Clone(out[i].Units)
		for j := range out[i].Units {
			out[i].Units[j].Points = slices.Clone(out[i].Units[j].Points)
		}
	}
	return out
}

// Run polls every bus until ctx is done and returns after every bus goroutine stopped. A
// Manager runs once; a second Run returns at once.
func (m *Manager) Run(ctx context.Context) {
	if m == nil || !m.started.CompareAndSwap(false, true) {
		return
	}
	var wg sync.WaitGroup
	for _, b := range m.buses {
		wg.Go(func() { b.run(ctx) })
	}
	wg.Wait()
}

// Status is a snapshot of every bus, in config order.
func (m *Manager) Status() []BusStatus {
	if m == nil {
		return nil
	}
	out := make([]BusStatus, 0, len(m.buses))
	for _, b := range m.buses {
		out = append(out, b.status())
	}
	return out
}
