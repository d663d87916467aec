package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/hardware"
	"github.com/edged-dev/edged/internal/admin"
	"github.com/edged-dev/edged/internal/config"
	"github.com/edged-dev/edged/storage"
)

// logLevel is the level of the daemon's log; a reload sets it.
var logLevel = new(slog.LevelVar)

func setLogLevel(s string) {
	var lvl slog.Level
	if lvl.UnmarshalText([]byte(s)) == nil {
		logLevel.Set(lvl)
	}
}

// reloadState is what a reload needs beyond the running parts.
type reloadState struct {
	path string
	log  *slog.Logger
	reg  prometheus.Registerer

	mu  sync.Mutex // one reload at a time
	cur atomic.Pointer[config.Config]
	adm *admin.Server // nil: admin API disabled; set by the admin part before anybody reloads
	// stopping is set when the daemon stops its parts: a reload that comes later is refused.
	stopping bool

	hw     atomic.Pointer[hardware.Manager]
	hwStop func() // stops the running ports and waits until they are closed; nil: none

	total *prometheus.CounterVec
	last  atomic.Pointer[reloadReport]
}

// reloadReport is the outcome of one reload, in status and in the API's answer.
type reloadReport struct {
	At     time.Time `json:"at"`
	By     string    `json:"by"`     // signal, or "api" and the caller's address
	Result string    `json:"result"` // applied, partial (some part failed, see errors), refused
	// Problems are the new file's FILE:LINE problems when it was refused; the old config
	// keeps running.
	Problems []string `json:"problems,omitempty"`
	// NeedsRestart names the changed settings that take effect only at the next start.
	NeedsRestart []string               `json:"needs_restart,omitempty"`
	Errors       []string               `json:"errors,omitempty"`
	Broker       *broker.ReloadResult   `json:"broker,omitempty"`
	Connectors   *bridge.ReloadResult   `json:"connectors,omitempty"`
	Hardware     *hardware.ReloadResult `json:"hardware,omitempty"`
	TookSeconds  float64                `json:"took_seconds"`
}

const (
	reloadApplied = "applied"
	reloadPartial = "partial"
	reloadRefused = "refused"
)

func (d *daemon) initReload(path string, reg prometheus.Registerer, log *slog.Logger) error {
	d.rl.path, d.rl.log, d.rl.reg = path, log, reg
	d.rl.cur.Store(d.cfg)
	d.rl.total = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edged_reloads_total",
		Help: "Config reloads (SIGHUP, edged reload, POST /api/v1/reload), by result (applied, partial, refused)."}, []string{"result"})
	for _, r := range []string{reloadApplied, reloadPartial, reloadRefused} {
		d.rl.total.WithLabelValues(r)
	}
	if err := reg.Register(d.rl.total); err != nil {
		return fmt.Errorf("reload metrics: %w", err)
	}
	return nil
}

// current is the configuration in force (the start-up one until a reload applies another).
func (d *daemon) current() *config.Config {
	if c := d.rl.cur.Load(); c != nil {
		return c
	}
	return d.cfg
}

// serveReloads reloads on every SIGHUP until ctx is done.
func (d *daemon) serveReloads(ctx context.Context, hup <-chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			_, _ = d.reload("signal")
		}
	}
}

func (d *daemon) reloadFromAPI(_ context.Context, by string) (any, error) {
	return d.reload(by)
}

func (d *daemon) reloadStatus() any {
	if r := d.rl.last.Load(); r != nil {
		return r
	}
	return nil
}

// reload reads the config file again and applies what can change while running. A file with
// problems is refused as a whole: nothing changes. The error is non-nil when the file was
// refused or a part could not apply its share (the report says which).
func (d *daemon) reload(by string) (*reloadReport, error) {
	d.rl.mu.Lock()
	defer d.rl.mu.Unlock()
	t0 := time.Now()
	log := d.rl.log
	rep := &reloadReport{At: t0.UTC(), By: by}
	if d.rl.stopping {
		rep.Result, rep.Errors = reloadRefused, []string{"edged is stopping"}
		return rep, errors.New("reload refused: edged is stopping")
	}
	finish := func(result string, err error) (*reloadReport, error) {
		rep.Result, rep.TookSeconds = result, time.Since(t0).Seconds()
		d.rl.total.WithLabelValues(result).Inc()
		d.rl.last.Store(rep)
		return rep, err
	}
	next, err := loadConfig(d.rl.path)
	if err != nil {
		var ps config.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				rep.Problems = append(rep.Problems, p.Error())
			}
		} else {
			rep.Problems = []string{err.Error()}
		}
		log.Error("reload refused: the new config has problems; the running config stays", "by", by, "problems", len(rep.Problems), "err", err)
		return finish(reloadRefused, fmt.Errorf("reload refused: %w", err))
	}
	rep.NeedsRestart = restartOnly(d.cfg, next)

	var errs []error
	setLogLevel(next.Log.Level)
	if os.Getenv("GOMEMLIMIT") == "" {
		lim := int64(next.MemoryLimit)
		if lim == 0 {
			lim = math.MaxInt64 // no limit
		}
		debug.SetMemoryLimit(lim)
	}

	br, err := d.broker.Reload(next.Broker)
	rep.Broker = &br
	rep.NeedsRestart = append(rep.NeedsRestart, br.NeedsRestart...)
	if err != nil {
		errs = append(errs, err)
	}

	cr, err := d.bridge.Reload(next.Bridge.Connectors, next.Storage)
	rep.Connectors = &cr
	if err != nil {
		errs = append(errs, err)
	}

	if hw := d.hardware(); hw != nil {
		hr, err := hw.Reload(next.Hardware)
		rep.Hardware = &hr
		if err != nil {
			errs = append(errs, err)
		}
	}

	// The kind of protection (token or loopback only) is the start-up one; a token behind the
	// same or another file is re-read.
	switch a := d.rl.adm; {
	case a == nil:
	case (d.cfg.Admin.TokenFile == "") != (next.Admin.TokenFile == ""):
		rep.NeedsRestart = append(rep.NeedsRestart, "admin.token_file")
	case next.Admin.TokenFile != "":
		if err := a.SetToken(next.Admin.TokenFile); err != nil {
			errs = append(errs, fmt.Errorf("admin token: %w", err))
		}
	}

	d.rl.cur.Store(next)
	for _, e := range errs {
		rep.Errors = append(rep.Errors, e.Error())
	}
	attrs := []any{"by", by, "needs_restart", rep.NeedsRestart, "listeners_added", br.ListenersAdded, "listeners_removed", br.ListenersRemoved,
		"clients_disconnected", len(br.Disconnected), "connectors_added", cr.Added, "connectors_removed", cr.Removed,
		"connectors_changed", cr.Changed, "took", took(t0)}
	if h := rep.Hardware; h != nil {
		attrs = append(attrs, "ports_added", h.Added, "ports_removed", h.Removed, "ports_changed", h.Changed, "modbus", h.Modbus)
	}
	if len(errs) > 0 {
		log.Error("reload partly failed", append(attrs, "err", errors.Join(errs...))...)
		return finish(reloadPartial, errors.Join(errs...))
	}
	log.Info("reloaded", attrs...)
	return finish(reloadApplied, nil)
}

// restartOnly names the top-level settings of next that differ from the start-up config and
// are only read at start.
func restartOnly(start, next *config.Config) []string {
	var out []string
	if start.DataDir != next.DataDir {
		out = append(out, "data_dir")
	}
	if start.GatewayID != next.GatewayID {
		out = append(out, "gateway_id")
	}
	if start.Log.Format != next.Log.Format {
		out = append(out, "log.format")
	}
	if start.Admin.Address != next.Admin.Address {
		out = append(out, "admin.address")
	}
	return out
}

// hardware is the running hardware manager.
func (d *daemon) hardware() *hardware.Manager { return d.rl.hw.Load() }

// startHardware builds and runs the serial and modbus ports of cfg (reloads go to
// hardware.Manager.Reload).
func (d *daemon) startHardware(cfg hardware.Config) error {
	log := d.rl.log
	hw, err := hardware.New(cfg, d.broker, log.With("component", "hardware"), d.rl.reg)
	if err != nil {
		return fmt.Errorf("hardware: %w", err)
	}
	for _, p := range hw.Status() {
		log.Info("serial port", "name", p.Name, "path", p.Path)
	}
	d.rl.hw.Store(hw)
	d.rl.hwStop = goOwned(hw.Run)
	return nil
}

// shutdownHardware is the serial part's stop: it waits for a reload in progress and refuses
// later ones, which would start parts again.
func (d *daemon) shutdownHardware() {
	d.rl.mu.Lock()
	defer d.rl.mu.Unlock()
	d.rl.stopping = true
	d.stopHardware()
}

// stopHardware stops the running ports and waits until they are closed.
func (d *daemon) stopHardware() {
	if d.rl.hwStop == nil {
		return
	}
	d.rl.hwStop()
	d.rl.hwStop = nil
}

// orphaned lists the outboxes whose connector is no longer configured and that still hold
// messages or dead letters (POST /api/v1/outboxes/NAME/purge empties them).
func orphaned(st storage.Stats) []string {
	out := []string{}
	for _, o := range st.Outboxes {
		if !o.Configured && (o.Depth > 0 || o.DLQDepth > 0) {
			out = append(out, o.Name)
		}
	}
	return out
}

// printReload adds the outboxes kept from removed connectors and the last reload to the
// human status.
func printReload(w io.Writer, d *statusDoc, now time.Time) {
	for _, name := range d.Orphaned {
		fmt.Fprintf(w, "  outbox %s: its connector was removed; kept until purged (POST /api/v1/outboxes/%s/purge)\n", name, name)
	}
	r := d.Reload
	if r == nil {
		return
	}
	fmt.Fprintf(w, "\nlast reload %s ago (%s): %s\n", since(r.At, now), r.By, r.Result)
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  %s\n", p)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "  error: %s\n", e)
	}
	if len(r.NeedsRestart) > 0 {
		fmt.Fprintf(w, "  needs a restart: %s\n", strings.Join(r.NeedsRestart, ", "))
	}
}

// setupReload is `edged reload`: ask the running daemon to reload its config file.
func setupReload(fs *flag.FlagSet, e *env) func([]string) error {
	cfgPath := fs.String("c", "", "config file (to find the admin address and token)")
	addr := fs.String("admin", "", "admin address (default from config, else 127.0.0.1:9100)")
	return func(args []string) error {
		if err := noArgs("reload", args); err != nil {
			return err
		}
		a, token, err := adminTarget(*cfgPath, *addr)
		if err != nil {
			return err
		}
		code, body, err := admin.Post("http://"+a+"/api/v1/reload", token)
		if err != nil {
			return fmt.Errorf("is edged running? %w", err)
		}
		_, _ = e.stdout.Write(body)
		switch code {
		case 200:
			return nil
		case 422:
			return reported(exitFailure)
		default:
			return fmt.Errorf("POST /api/v1/reload: HTTP %d", code)
		}
	}
}

// adminTarget is the admin address and token `edged status` and `edged reload` use.
func adminTarget(cfgPath, addr string) (string, string, error) {
	a, token := addr, ""
	if a == "" || cfgPath != "" {
		cfg, err := loadConfig(cfgPath)
		if err != nil {
			return "", "", err
		}
		if a == "" {
			a = cfg.Admin.Address
		}
		if a == "" {
			return "", "", errNoAdmin
		}
		if cfg.Admin.TokenFile != "" {
			if token, err = admin.LoadToken(cfg.Admin.TokenFile); err != nil {
				return "", "", err
			}
		}
	}
	return a, token, nil
}
