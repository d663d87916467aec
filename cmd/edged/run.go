package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/internal/admin"
	"github.com/edged-dev/edged/internal/config"
	"github.com/edged-dev/edged/internal/sdnotify"
	"github.com/edged-dev/edged/storage"
	"github.com/edged-dev/edged/wire"
)

// shutdownDeadline bounds a graceful stop; past it edged exits 3 so a supervisor can restart
// it rather than wait on a wedged peer.
const shutdownDeadline = 8 * time.Second

// loadConfig returns the embedded defaults for an empty path; a bad file is a usage error
// (exit 2: restarting will not help).
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return config.Default(), nil
	}
	cfg, err := config.Load(path)
	if err != nil {
		return nil, withCode(exitUsage, err)
	}
	return cfg, nil
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	setLogLevel(cfg.Log.Level) // a reload changes it live (reload.go)
	opts := &slog.HandlerOptions{Level: logLevel}
	var h slog.Handler
	if cfg.Log.Format == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	// Packages narrow the logger they are given (broker adds component=mochi to our
	// component=broker): the innermost value wins instead of a line with the key twice.
	return slog.New(newUniqueAttrs(h))
}

func setupRun(fs *flag.FlagSet, e *env) func([]string) error {
	cfgPath := fs.String("c", "", "config file (default: embedded defaults)")
	return func(args []string) error {
		if err := noArgs("run", args); err != nil {
			return err
		}
		cfg, err := loadConfig(*cfgPath)
		if err != nil {
			return err
		}
		log := newLogger(cfg, e.stderr)
		if os.Getenv("GOMEMLIMIT") == "" && cfg.MemoryLimit > 0 {
			debug.SetMemoryLimit(int64(cfg.MemoryLimit))
		}
		err = runUntilSignal(cfg, *cfgPath, log)
		if err != nil {
			log.Error("edged failed", "err", err)
			var ee *exitError
			if !errors.As(err, &ee) {
				ee = &exitError{code: exitFailure, err: err}
			}
			ee.reported = true
			return ee
		}
		log.Info("stopped cleanly")
		return nil
	}
}

// runUntilSignal runs the daemon until SIGINT/SIGTERM. A second, different signal more than a
// second after the first abandons the graceful stop: runUntilSignal returns exit 3 at once and
// main exits, whatever part was still stopping.
func runUntilSignal(cfg *config.Config, path string, log *slog.Logger) error {
	hup := make(chan struct{}, 1) // SIGHUPs during a reload make one more reload
	ctx, forced, stop := trapSignals(context.Background(), log, func() {
		select {
		case hup <- struct{}{}:
		default:
		}
	})
	defer stop()
	done := make(chan error, 1)
	go func() { done <- runDaemon(ctx, cfg, path, hup, log) }()
	select {
	case err := <-done:
		return err
	case <-forced:
		return &exitError{code: exitForced, err: errors.New("second signal: forced exit")}
	}
}

// daemon holds the running parts for the status document.
type daemon struct {
	cfg     *config.Config
	started time.Time
	wire    wire.Limits // of every envelope stored and forwarded
	db      *storage.DB
	broker  *broker.Broker
	bridge  *bridge.Bridge
	clients *broker.ClientTable // dashboard: connected clients
	hist    *admin.History      // dashboard: depth sparklines, bytes written per hour
	rl      reloadState         // reload.go: current config, hardware restarts, last result
}

// runDaemon starts the parts in order, waits for ctx, stops them in reverse. A failed start
// stops what started, the same way, and returns the start error.
func runDaemon(ctx context.Context, cfg *config.Config, path string, hup <-chan struct{}, log *slog.Logger) error {
	// Whatever the broker accepts must fit an envelope, or a device would resend a message
	// that can never be stored: storage and bridge get the same limits.
	d := &daemon{cfg: cfg, started: time.Now(),
		wire: wire.Limits{MaxPayload: max(wire.DefaultMaxPayload, int(cfg.Broker.MaxPacketSize))}}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := d.initReload(path, reg, log); err != nil {
		return err
	}

	lc := &lifecycle{log: log}
	err := lc.start(ctx, d.parts(reg, log))
	if err == nil {
		log.Info("edged ready", "version", version, "gateway_id", cfg.GatewayID, "data_dir", cfg.DataDir,
			"listeners", listenerAddrs(d.broker), "admin", cfg.Admin.Address, "connectors", len(cfg.Bridge.Connectors),
			"took", took(d.started))
		d.serveReloads(ctx, hup)
		log.Info("stopping", "reason", context.Cause(ctx))
	} else if sig := (*signalError)(nil); errors.As(context.Cause(ctx), &sig) {
		// Stopped by the operator during start-up: a clean stop, not a failure.
		log.Info("stopping during start-up", "reason", sig, "start_err", err)
		err = nil
	}
	if serr := lc.stop(shutdownDeadline); serr != nil {
		return errors.Join(err, serr)
	}
	return err
}

// parts is edged's start order. Stop runs in reverse: admin and serial first, then the MQTT
// listeners (no new input; the broker drains pending captures into the outboxes), then the
// forwarders, storage last.
func (d *daemon) parts(reg *prometheus.Registry, log *slog.Logger) []part {
	cfg := d.cfg
	var (
		stopBridge func()
		adm        *admin.Server
		stopWD     func()
	)
	return []part{{
		name: "storage",
		start: func(context.Context) (err error) {
			size := dirSize(cfg.DataDir)
			log.Info("opening store", "dir", cfg.DataDir, "size_on_disk", humanize.IBytes(uint64(size)), "bytes", size)
			d.db, err = storage.Open(storage.Options{Dir: cfg.DataDir, Logger: log.With("component", "storage"), Registerer: reg, Wire: d.wire})
			if err != nil {
				return fmt.Errorf("open storage: %w", err)
			}
			return nil
		},
		stop: func() error { return d.db.Close() },
	}, {
		// The broker exists before the bridge (the bridge publishes downlink through it) but
		// serves only once the bridge captures what it accepts ("mqtt" below).
		name: "broker",
		start: func(context.Context) (err error) {
			d.broker, err = broker.New(broker.Options{Config: cfg.Broker, State: d.db.State(), Logger: log.With("component", "broker"), Registerer: reg})
			if err != nil {
				return fmt.Errorf("broker: %w", err)
			}
			return nil
		},
		stop: func() error { return d.broker.Close() }, // idempotent: a no-op after "mqtt" stopped
	}, {
		name: "bridge",
		start: func(context.Context) (err error) {
			d.bridge, err = bridge.New(bridge.Options{
				Connectors: cfg.Bridge.Connectors, GatewayID: cfg.GatewayID, DB: d.db, Defaults: cfg.Storage,
				Local: d.broker, Logger: log.With("component", "bridge"), Registerer: reg, Wire: d.wire,
				Version: version, // health reports (presence.health_topic)
			})
			if err != nil {
				return fmt.Errorf("bridge: %w", err)
			}
			d.broker.SetCapturer(d.bridge)
			if d.clients, err = d.broker.NewClientTable(); err != nil {
				return err
			}
			d.hist = admin.NewHistory(d.db.Stats, 30*time.Second, 120) // one hour of depth samples
			for _, c := range d.bridge.Status() {
				log.Info("connector", "name", c.Name, "type", c.Type, "backlog", c.Depth, "dead_letters", c.DeadLetterDepth)
			}
			stopBridge = goOwned(d.bridge.Run)
			return nil
		},
		stop: func() error { stopBridge(); return nil },
	}, {
		// Start restores sessions, subscriptions, inflight and retained messages, then binds.
		name: "mqtt",
		start: func(ctx context.Context) error {
			if err := d.broker.Start(ctx); err != nil {
				return err // broker errors name the broker and the listener
			}
			st := d.broker.Status()
			log.Info("broker restored", "sessions", st.Sessions, "subscriptions", st.Subscriptions, "retained", st.Retained)
			return nil
		},
		stop: func() error { return d.broker.Close() },
	}, {
		name:  "serial",
		start: func(context.Context) error { return d.startHardware(cfg.Hardware) }, // reload.go: restartable
		stop:  func() error { d.shutdownHardware(); return nil },
	}, {
		name: "admin",
		start: func(context.Context) (err error) {
			if cfg.Admin.Address == "" {
				return nil
			}
			adm, err = admin.Start(admin.Options{
				Address: cfg.Admin.Address, Gatherer: reg, Status: d.status, Healthy: d.serving, Logger: log.With("component", "admin"),
				TokenFile: cfg.Admin.TokenFile, Registerer: reg, Outboxes: d.db, Clients: d.clients, Tap: d.broker, History: d.hist,
				Reload: d.reloadFromAPI,
			})
			d.rl.adm = adm
			if err == nil {
				log.Info("admin API", "address", cfg.Admin.Address)
			}
			return err
		},
		stop: func() error {
			if adm == nil {
				return nil
			}
			return adm.Close()
		},
	}, {
		name: "systemd",
		start: func(context.Context) error {
			_ = sdnotify.Ready("serving")
			stopWD = goOwned(func(ctx context.Context) {
				_ = sdnotify.Watchdog(ctx, func() bool { return d.healthy() == nil })
			})
			return nil
		},
		stop: func() error {
			_ = sdnotify.Stopping()
			stopWD()
			return nil
		},
	}}
}

// goOwned runs fn on its own goroutine, owned by the part that calls it: the returned stop
// cancels fn's context and waits for fn to return. A part's stop is not the start-up context's
// cancel: parts stop in reverse order, after the signal.
func goOwned(fn func(context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); fn(ctx) }()
	return func() { cancel(); <-done }
}

// took is the time since t0 as text ("1.2ms", "3.4s"): log shippers and journald readers get
// the same figure.
func took(t0 time.Time) string { return time.Since(t0).Round(100 * time.Microsecond).String() }

// dirSize is the disk space of the regular files under dir (0 if it does not exist yet): how
// much a slow SD card holds for the store. Allocated blocks, not file sizes: badger's value
// log and memtable files are preallocated sparse files far larger than their data.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, de fs.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() {
			if fi, err := de.Info(); err == nil {
				if st, ok := fi.Sys().(*syscall.Stat_t); ok {
					n += st.Blocks * 512 // st_blocks is in 512-byte units whatever the block size
				} else {
					n += fi.Size()
				}
			}
		}
		return nil
	})
	return n
}

func listenerAddrs(b *broker.Broker) []string {
	var out []string
	for _, l := range b.Status().Listeners {
		out = append(out, l.Type+"://"+l.Bound)
	}
	return out
}

// healthy is what the systemd watchdog asks: the store's commit loop answers (a wedged fsync
// stops the pings and systemd restarts edged). A full disk is not a reason to restart.
func (d *daemon) healthy() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.db.Ping(ctx); err != nil {
		return fmt.Errorf("storage not answering: %w", err)
	}
	return nil
}

// serving is what /healthz answers: alive, and taking messages. On a full disk edged keeps
// running, draining and acknowledging, but refuses new messages, and a monitor must see that.
func (d *daemon) serving() error {
	if err := d.healthy(); err != nil {
		return err
	}
	switch sp := d.db.Stats().Space; {
	case sp.WritesBlocked:
		return errors.New("disk full: every write is refused until space is freed")
	case sp.DiskFull:
		return errors.New("disk full: new messages are refused; acknowledgements and draining go on")
	}
	return nil
}

// status is the /api/v1/status document.
func (d *daemon) status() any {
	hw := d.hardware()
	st, conns, ports := d.db.Stats(), d.bridge.Status(), hw.Status()
	return map[string]any{
		"version":        version,
		"gateway_id":     d.cfg.GatewayID,
		"started_at":     d.started.UTC().Format(time.RFC3339),
		"uptime_seconds": int64(time.Since(d.started).Seconds()),
		"broker":         d.broker.Status(),
		"storage":        st,
		// What the data dir holds on disk now; badger's own estimate (storage.lsm_bytes,
		// vlog_bytes) is refreshed only every minute and reads 0 after a fresh start.
		"data_dir_bytes": dirSize(d.cfg.DataDir),
		"connectors":     conns,
		"serial":         ports,
		"modbus":         hw.ModbusStatus(),
		// For the dashboard and `edged status`; computed from the figures above, so the
		// views never disagree.
		"health":    admin.Verdict(conns, ports, st),
		"endpoints": admin.Endpoints(d.current().Bridge.Connectors),
		"clients":   d.clients.List(),
		"process":   admin.Process(),
		"history":   d.hist.Snapshot(st.BytesWritten),
		"reload":    d.reloadStatus(),
		// Outboxes of connectors no longer configured: kept until purged on purpose.
		"orphaned_outboxes": orphaned(st),
	}
}

var errNoAdmin = errors.New("the admin API is disabled (admin.address is empty)")

// part is one piece of the running daemon. start brings it up (ctx is cancelled by a stop
// signal during start-up); stop takes it down and is called only if start succeeded.
type part struct {
	name  string
	start func(ctx context.Context) error
	stop  func() error
}

// lifecycle starts parts in order and stops the started ones in reverse, on a normal stop
// and after a failed start alike.
type lifecycle struct {
	log     *slog.Logger
	mu      sync.Mutex
	started []part
}

func (l *lifecycle) start(ctx context.Context, parts []part) error {
	for _, p := range parts {
		if ctx.Err() != nil {
			return fmt.Errorf("start %s: %w", p.name, context.Cause(ctx))
		}
		t0 := time.Now()
		if err := p.start(ctx); err != nil {
			return fmt.Errorf("start %s: %w", p.name, err)
		}
		l.log.Info("started", "part", p.name, "took", took(t0))
		l.mu.Lock()
		l.started = append(l.started, p)
		l.mu.Unlock()
	}
	return nil
}

// stop stops the started parts in reverse. Past deadline it returns an exit-3 error naming the
// part that hangs; that part's goroutine is abandoned to the process exit that follows.
func (l *lifecycle) stop(deadline time.Duration) error {
	l.mu.Lock()
	parts := l.started
	l.started = nil
	l.mu.Unlock()
	var (
		mu      sync.Mutex
		current string
	)
	done := make(chan error, 1)
	go func() {
		var errs []error
		for i := len(parts) - 1; i >= 0; i-- {
			p := parts[i]
			mu.Lock()
			current = p.name
			mu.Unlock()
			t0 := time.Now()
			if err := p.stop(); err != nil {
				l.log.Error("stop failed", "part", p.name, "err", err)
				errs = append(errs, fmt.Errorf("stop %s: %w", p.name, err))
				continue
			}
			l.log.Info("stopped", "part", p.name, "took", took(t0))
		}
		done <- errors.Join(errs...)
	}()
	t := time.NewTimer(deadline)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		mu.Lock()
		defer mu.Unlock()
		return &exitError{code: exitForced, err: fmt.Errorf("shutdown overran its %v deadline while stopping %s", deadline, current)}
	}
}
