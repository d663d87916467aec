package hardware

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged-dev/edged/hardware/modbus"
	"github.com/edged-dev/edged/internal/runset"
)

// reloadState is the running set of ports and the bus manager, and what Run and Reload share
// to start and stop them one by one.
type reloadState struct {
	ports  atomic.Pointer[[]*port] // read by Status: swapped whole
	modbus atomic.Pointer[modbus.Manager]
	reg    *trackingRegisterer // the modbus manager's metrics, replaced with it

	mu  sync.Mutex      // serialises Reload and the start of Run
	cfg Config          // in force (defaults applied)
	run runset.Set[any] // *port or *modbus.Manager
}

func (r *reloadState) init(m *Manager, cfg Config) {
	ps := slices.Clone(m.ports)
	r.ports.Store(&ps)
	if m.modbus != nil {
		r.modbus.Store(m.modbus)
	}
	r.cfg = cfg
}

func (m *Manager) currentPorts() []*port {
	if p := m.rl.ports.Load(); p != nil {
		return *p
	}
	return nil
}

// currentModbus is the running bus manager; nil (no buses) answers Status with nil.
func (m *Manager) currentModbus() *modbus.Manager { return m.rl.modbus.Load() }

// runAll runs the ports and the buses, and those Reload starts, until ctx is done.
func (m *Manager) runAll(ctx context.Context) {
	m.rl.run.Run(ctx, &m.rl.mu, func() {
		for _, p := range m.currentPorts() {
			m.rl.run.Start(p, p.run)
		}
		if mb := m.currentModbus(); mb != nil {
			m.rl.run.Start(mb, mb.Run)
		}
	})
}

// ReloadResult says what Reload did, by port name.
type ReloadResult struct {
	Added   []string `json:"added,omitempty"`
	Removed []string `json:"removed,omitempty"`
	Changed []string `json:"changed,omitempty"` // closed and opened again with the new settings
	// Modbus is "restarted" when the modbus section changed (every bus is re-opened).
	Modbus string `json:"modbus,omitempty"`
}

// Reload applies a new hardware section: an unchanged serial port stays open; a removed one
// is closed; a changed one is closed and opened again with its new settings; an added one is
// opened. When the modbus section changed, every bus is stopped and started again with it.
// Frames a stopped port had queued for writing are dropped and counted (reason shutdown), as
// on a stop. A Manager that does not run yet only takes the new config.
func (m *Manager) Reload(cfg Config) (ReloadResult, error) {
	var res ReloadResult
	cfg.Serial = slices.Clone(cfg.Serial)
	cfg.Modbus = modbus.Clone(cfg.Modbus)
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return res, fmt.Errorf("hardware config: %w", err)
	}
	if m.local == nil && (len(cfg.Serial) > 0 || len(cfg.Modbus) > 0) {
		return res, fmt.Errorf("hardware: nil Local")
	}
	m.rl.mu.Lock()
	defer m.rl.mu.Unlock()

	old := m.currentPorts()
	byName := map[string]*port{}
	for _, p := range old {
		byName[p.cfg.Name] = p
	}
	keep := map[*port]bool{}
	var next []*port
	var added []SerialConfig
	for _, sc := range cfg.Serial {
		if p := byName[sc.Name]; p != nil && reflect.DeepEqual(p.cfg, sc) {
			keep[p] = true
			next = append(next, p)
			continue
		}
		next = append(next, nil) // built below, once the old port released its device
		added = append(added, sc)
		if byName[sc.Name] != nil {
			res.Changed = append(res.Changed, sc.Name)
		} else {
			res.Added = append(res.Added, sc.Name)
		}
	}
	seen := map[string]bool{}
	for _, sc := range cfg.Serial {
		seen[sc.Name] = true
	}
	for _, p := range old {
		if keep[p] {
			continue
		}
		if m.rl.run.Running(p) {
			m.rl.run.Stop(p) // waits until run closed the port and released its reserved fds
		} else {
			openMu.Lock()
			releaseFDs(p.reserved)
			p.reserved = nil
			openMu.Unlock()
		}
		if !seen[p.cfg.Name] {
			res.Removed = append(res.Removed, p.cfg.Name)
			m.metrics.Up.DeleteLabelValues(p.cfg.Name)
		}
	}
	k := 0
	var start []*port
	for i := range next {
		if next[i] != nil {
			continue
		}
		sc := added[k]
		k++
		p := newPort(sc, m.local, m.log.With("port", sc.Name), m.metrics, defaultOpener())
		next[i] = p
		start = append(start, p)
	}
	m.rl.ports.Store(&next)
	for _, p := range start {
		m.rl.run.Start(p, p.run)
	}

	var err error
	if !reflect.DeepEqual(m.rl.cfg.Modbus, cfg.Modbus) {
		if mb := m.currentModbus(); mb != nil {
			m.rl.run.Stop(mb) // waits until its Run returned: every bus closed
		}
		m.rl.modbus.Store(nil)
		m.rl.reg.unregisterAll()
		if len(cfg.Modbus) > 0 {
			var mb *modbus.Manager
			mb, err = modbus.New(cfg.Modbus, m.local, m.log.With("component", "modbus"), m.rl.reg, newModbusSerial)
			if err != nil {
				err = fmt.Errorf("hardware: %w", err)
			} else {
				m.rl.modbus.Store(mb)
				m.rl.run.Start(mb, mb.Run)
			}
		}
		res.Modbus = "restarted"
	}
	m.rl.cfg = cfg
	return res, err
}

// trackingRegisterer remembers what it registered, so a restarted bus manager can take its
// metric names over (its counters restart from zero).
type trackingRegisterer struct {
	reg prometheus.Registerer // nil: nothing registered
	mu  sync.Mutex
	cs  []prometheus.Collector
}

func (t *trackingRegisterer) Register(c prometheus.Collector) error {
	if t.reg == nil {
		return nil
	}
	if err := t.reg.Register(c); err != nil {
		return err
	}
	t.mu.Lock()
	t.cs = append(t.cs, c)
	t.mu.Unlock()
	return nil
}

func (t *trackingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := t.Register(c); err != nil {
			panic(err)
		}
	}
}

func (t *trackingRegisterer) Unregister(c prometheus.Collector) bool {
	return t.reg != nil && t.reg.Unregister(c)
}

func (t *trackingRegisterer) unregisterAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.cs {
		t.reg.Unregister(c)
	}
	t.cs = nil
}
