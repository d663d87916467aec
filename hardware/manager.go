package hardware

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"

	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/hardware/hwkit"
	"github.com/edged-dev/edged/hardware/modbus"
	"github.com/prometheus/client_golang/prometheus"
	"go.bug.st/serial"
)

// Local is the in-process broker client the ports publish frames into and take commands from
// (broker.Broker implements it: inline publish, no TCP).
type Local = hwkit.Local

// Manager runs the configured serial ports.
type Manager struct {
	log     *slog.Logger
	local   Local
	metrics *metrics
	ports   []*port
	modbus  *modbus.Manager
	started atomic.Bool
	rl      reloadState // reload.go: the running ports and bus manager, swapped by Reload
}

// New validates cfg (after applying defaults to a copy) and prepares one port per entry. It
// opens nothing yet except a small reserve of low fds per port (see the package doc); Run opens
// the ports. log may be nil (discarded); reg may be nil (metrics not registered).
func New(cfg Config, local Local, log *slog.Logger, reg prometheus.Registerer) (*Manager, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.Serial = slices.Clone(cfg.Serial)
	cfg.Modbus = modbus.Clone(cfg.Modbus)
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("hardware config: %w", err)
	}
	if local == nil && (len(cfg.Serial) > 0 || len(cfg.Modbus) > 0) {
		return nil, errors.New("hardware: nil Local")
	}
	met, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("hardware metrics: %w", err)
	}
	m := &Manager{log: log, local: local, metrics: met}
	for i := range cfg.Serial {
		m.ports = append(m.ports, newPort(cfg.Serial[i], local, log.With("port", cfg.Serial[i].Name), met, defaultOpener()))
	}
	m.rl.reg = &trackingRegisterer{reg: reg}
	if len(cfg.Modbus) > 0 {
		// Defaults are already applied; modbus.New applies them again to its own copy (idempotent).
		if m.modbus, err = modbus.New(cfg.Modbus, local, log.With("component", "modbus"), m.rl.reg, newModbusSerial); err != nil {
			return nil, fmt.Errorf("hardware: %w", err)
		}
	}
	m.rl.init(m, cfg)
	return m, nil
}

// Run opens every port and keeps it open (reopening after failures) until ctx is done, then
// closes them and returns after every port goroutine has stopped. A Manager runs once; a second
// Run returns at once.
func (m *Manager) Run(ctx context.Context) {
	if !m.started.CompareAndSwap(false, true) {
		return
	}
	m.runAll(ctx)
}

// Status is a snapshot of every port, in config order.
func (m *Manager) Status() []PortStatus {
	ports := m.currentPorts()
	out := make([]PortStatus, 0, len(ports))
	for _, p := range ports {
		out = append(out, p.status())
	}
	return out
}

// ModbusStatus is a snapshot of every Modbus bus, in config order (nil without any).
func (m *Manager) ModbusStatus() []modbus.BusStatus { return m.currentModbus().Status() }

// opener opens a port and closes it again; tests swap in fakes.
type opener struct {
	open  func(path string, mode *serial.Mode, reserved *[]int) (serial.Port, error)
	close func(serial.Port, *[]int) error
}

func defaultOpener() opener { return opener{open: openSerial, close: closeSerial} }

var _ Local = (*broker.Broker)(nil)
