package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/hardware"
	"github.com/edged-dev/edged/internal/admin"
	"github.com/edged-dev/edged/internal/config"
	"github.com/edged-dev/edged/internal/sdnotify"
	"github.com/edged-dev/edged/storage"
	"github.com/edged-dev/edged/wire"
)

// shutdownDeadline bounds a graceful stop; past it edged exits 3 so a supervisor can restart
// it rather than wait on a wedged peer.
const shutdownDeadline = 8 * time.Second

func loadConfig(path string, stderr io.Writer) (*config.Config, int) {
	if path == "" {
		return config.Default(), exitOK
	}
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, exitUsage
	}
	return cfg, exitOK
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func cmdRun(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("c", "", "config file (default: embedded defaults)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	cfg, code := loadConfig(*cfgPath, stderr)
	if cfg == nil {
		return code
	}
	log := newLogger(cfg, stderr)
	if os.Getenv("GOMEMLIMIT") == "" && cfg.MemoryLimit > 0 {
		debug.SetMemoryLimit(int64(cfg.MemoryLimit))
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	forced := make(chan struct{})
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		// First signal: graceful stop. Second: the operator means it. A copy of the first
		// signal arriving within a second is not a second request: `timeout`, shells and
		// process-group kills deliver the same SIGTERM twice.
		var first time.Time
		select {
		case s := <-sigs:
			log.Info("stopping", "signal", s.String())
			first = time.Now()
			cancel()
		case <-forced:
			return
		}
		for {
			select {
			case s := <-sigs:
				if time.Since(first) < time.Second {
					continue
				}
				log.Error("second signal, forcing exit", "signal", s.String())
				os.Exit(exitForced)
			case <-forced:
				return
			}
		}
	}()
	defer close(forced)

	err := runDaemon(ctx, cfg, log)
	if err != nil {
		log.Error("edged failed", "err", err)
		return exitFailure
	}
	log.Info("stopped cleanly")
	return exitOK
}

// daemon holds the running parts for the status document.
type daemon struct {
	cfg     *config.Config
	started time.Time
	db      *storage.DB
	broker  *broker.Broker
	bridge  *bridge.Bridge
	hw      *hardware.Manager
}

func runDaemon(ctx context.Context, cfg *config.Config, log *slog.Logger) (err error) {
	d := &daemon{cfg: cfg, started: time.Now()}
	// Whatever the broker accepts must fit an envelope, or a device would resend a message
	// that can never be stored. Set before anything encodes or decodes.
	if n := int(cfg.Broker.MaxPacketSize); n > wire.MaxPayload {
		wire.MaxPayload = n
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Start order: storage -> broker (state restored) -> bridge -> listeners -> hardware ->
	// admin. Stop order is the reverse for inputs: hardware and listeners first so nothing new
	// arrives, then forwarders, storage last.
	d.db, err = storage.Open(storage.Options{Dir: cfg.DataDir, Logger: log.With("component", "storage"), Registerer: reg})
	if err != nil {
		return fmt.Errorf("open storage: %w", err)
	}
	defer func() {
		if cerr := d.db.Close(); cerr != nil {
			log.Error("close storage", "err", cerr)
		}
	}()

	d.broker, err = broker.New(broker.Options{Config: cfg.Broker, State: d.db.State(), Logger: log.With("component", "broker"), Registerer: reg})
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	d.bridge, err = bridge.New(bridge.Options{
		Connectors: cfg.Bridge.Connectors, GatewayID: cfg.GatewayID, DB: d.db, Defaults: cfg.Storage,
		Local: d.broker, Logger: log.With("component", "bridge"), Registerer: reg,
	})
	if err != nil {
		_ = d.broker.Close()
		return fmt.Errorf("bridge: %w", err)
	}
	d.broker.SetCapturer(d.bridge)

	bridgeCtx, stopBridge := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); d.bridge.Run(bridgeCtx) }()
	stopAll := func() {
		stopBridge()
		wg.Wait()
	}

	if err := d.broker.Start(ctx); err != nil {
		_ = d.broker.Close()
		stopAll()
		return err // broker errors name the broker and the listener
	}

	d.hw, err = hardware.New(cfg.Hardware, d.broker, log.With("component", "hardware"), reg)
	if err != nil {
		_ = d.broker.Close()
		stopAll()
		return fmt.Errorf("hardware: %w", err)
	}
	hwCtx, stopHW := context.WithCancel(context.Background())
	hwDone := make(chan struct{})
	go func() { defer close(hwDone); d.hw.Run(hwCtx) }()

	var adm *admin.Server
	if cfg.Admin.Address != "" {
		adm, err = admin.Start(admin.Options{
			Address: cfg.Admin.Address, Gatherer: reg, Status: d.status, Healthy: d.healthy, Logger: log.With("component", "admin"),
		})
		if err != nil {
			stopHW()
			<-hwDone
			_ = d.broker.Close()
			stopAll()
			return err
		}
	}
	log.Info("edged started", "version", version, "gateway_id", cfg.GatewayID, "data_dir", cfg.DataDir,
		"listeners", listenerAddrs(d.broker), "admin", cfg.Admin.Address, "connectors", len(cfg.Bridge.Connectors))
	_ = sdnotify.Ready("serving")
	wdCtx, stopWD := context.WithCancel(ctx)
	wdDone := make(chan struct{})
	go func() {
		defer close(wdDone)
		_ = sdnotify.Watchdog(wdCtx, func() bool { return d.healthy() == nil })
	}()

	<-ctx.Done()
	_ = sdnotify.Stopping()
	stopWD()
	<-wdDone

	done := make(chan struct{})
	go func() {
		defer close(done)
		stopHW()
		<-hwDone
		if err := d.broker.Close(); err != nil {
			log.Error("close broker", "err", err)
		}
		stopAll()
		if adm != nil {
			_ = adm.Close()
		}
	}()
	select {
	case <-done:
	case <-time.After(shutdownDeadline):
		log.Error("shutdown overran its deadline, forcing exit", "deadline", shutdownDeadline)
		os.Exit(exitForced)
	}
	return nil
}

func listenerAddrs(b *broker.Broker) []string {
	var out []string
	for _, l := range b.Status().Listeners {
		out = append(out, l.Type+"://"+l.Bound)
	}
	return out
}

// healthy is what /healthz and the systemd watchdog ask: the store's commit loop answers
// (a wedged fsync stops the pings and systemd restarts edged).
func (d *daemon) healthy() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.db.Ping(ctx); err != nil {
		return fmt.Errorf("storage not answering: %w", err)
	}
	return nil
}

// status is the /api/v1/status document.
func (d *daemon) status() any {
	return map[string]any{
		"version":        version,
		"gateway_id":     d.cfg.GatewayID,
		"started_at":     d.started.UTC().Format(time.RFC3339),
		"uptime_seconds": int64(time.Since(d.started).Seconds()),
		"broker":         d.broker.Status(),
		"storage":        d.db.Stats(),
		"connectors":     d.bridge.Status(),
		"serial":         d.hw.Status(),
		"modbus":         d.hw.ModbusStatus(),
	}
}

var errNoAdmin = errors.New("the admin API is disabled (admin.address is empty)")
