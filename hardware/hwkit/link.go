package hwkit

import (
	"context"
	"errors"
	"fmt"
	"github.com/edged-dev/edged/internal/confkit"
	"log/slog"
	"sync"
	"time"

	"github.com/edged-dev/edged/internal/backoff"
	"github.com/edged-dev/edged/internal/ratelog"
	"github.com/prometheus/client_golang/prometheus"
)

// Device states (status "state"), the same for serial ports and Modbus buses.
const (
	StateOpen    = "open"    // the device is open and served
	StateWaiting = "waiting" // the device is absent; retrying with backoff
	StateError   = "error"   // the last open failed or the open device failed; retrying with backoff
	StateStopped = "stopped" // Run has not started or has returned
)

// LogInterval is the rate limit of a device's error and drop warnings.
const LogInterval = 30 * time.Second

// LinkMetrics are the series a Link keeps, each labelled with the device's name first.
type LinkMetrics struct {
	Up      *prometheus.GaugeVec   // 1 while open
	Reopens *prometheus.CounterVec // opens after the first
	Dropped *prometheus.CounterVec // lost messages, by reason (second label)
}

// Link is what a serial port and a Modbus bus keep alike about their device: its state for
// status (state, since when, the path last opened, the last error, reopens, messages lost),
// whether it is open, the commands waiting for it, rate-limited warnings, and the loop that
// opens, serves and reopens it with backoff (Run). Its mutex guards its fields; the owner
// guards the rest of its status with it too.
type Link[C any] struct {
	sync.Mutex

	State     string
	Since     time.Time // when State was entered
	Path      string    // device path last opened (or configured), or host:port
	LastError string
	Reopens   uint64
	Dropped   uint64
	Queue     Queue[C] // commands waiting for the device

	wake    chan struct{} // cap 1: a command was pushed
	name    string
	kind    string // "serial port", "modbus bus": begins the log messages
	msgs    string // "serial", "modbus": begins the drop warning
	log     *slog.Logger
	met     LinkMetrics
	errLog  ratelog.Limit
	dropLog ratelog.Limit
}

// Init names the link: what the device is ("serial", "modbus") and its noun ("port", "bus")
// begin its log messages ("serial port open", "serial messages dropped"). It sets the link
// stopped at path and materialises its series, so dashboards see 0 rather than nothing.
func (l *Link[C]) Init(name, what, noun, path string, log *slog.Logger, met LinkMetrics) {
	l.name, l.kind, l.msgs, l.log, l.met = name, what+" "+noun, what, log, met
	l.State, l.Path, l.Since = StateStopped, path, time.Now()
	l.wake = make(chan struct{}, 1)
	met.Up.WithLabelValues(name).Set(0)
	met.Reopens.WithLabelValues(name)
}

// SetState enters state (Since moves only when it changes); a path or error given replaces
// the last one.
func (l *Link[C]) SetState(state, path string, err error) {
	l.Lock()
	defer l.Unlock()
	if state != l.State {
		l.State, l.Since = state, time.Now()
	}
	if path != "" {
		l.Path = path
	}
	if err != nil {
		l.LastError = err.Error()
	}
}

// Drop counts n lost messages (metric, status, last error) and warns at a rate limit.
func (l *Link[C]) Drop(reason string, n int, err error) {
	if n <= 0 {
		return
	}
	l.met.Dropped.WithLabelValues(l.name, reason).Add(float64(n))
	if err == nil {
		err = errors.New(reason)
	}
	l.Lock()
	l.Dropped += uint64(n)
	l.LastError = fmt.Sprintf("%s: %v", reason, err)
	l.Unlock()
	if ok, suppressed := l.dropLog.Allow(LogInterval, 1); ok {
		l.log.Warn(l.msgs+" messages dropped", "reason", reason, "count", n, "err", err, "suppressed", suppressed)
	}
}

// Warn logs an error at a rate limit (one line per LogInterval, counting what it held back).
func (l *Link[C]) Warn(msg string, err error, args ...any) {
	if ok, suppressed := l.errLog.Allow(LogInterval, 1); ok {
		l.log.Warn(msg, append(args, "err", err, "suppressed", suppressed)...)
	}
}

// Push queues a command for the device (see Queue.Push; limit is command_queue) and wakes its
// session. It returns what it dropped, why, and how many commands wait now; the caller counts
// the drop (its reasons and texts are its own).
func (l *Link[C]) Push(v C, limit int) (dropped C, why Drop, waiting int) {
	l.Lock()
	dropped, why = l.Queue.Push(v, limit, l.State == StateOpen)
	waiting = l.Queue.Len()
	l.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	return dropped, why, waiting
}

// Woken is signalled when a command was pushed, for a session waiting on other things too.
func (l *Link[C]) Woken() <-chan struct{} { return l.wake }

// Pop takes the oldest waiting command.
func (l *Link[C]) Pop() (C, bool) {
	l.Lock()
	defer l.Unlock()
	return l.Queue.Pop()
}

// Expire removes and returns the waiting commands fresh rejects.
func (l *Link[C]) Expire(fresh func(C) bool) []C {
	l.Lock()
	defer l.Unlock()
	return l.Queue.Expire(fresh)
}

// Stop marks the link stopped and drops (as reason) the commands still waiting.
func (l *Link[C]) Stop(reason string) {
	l.SetState(StateStopped, "", nil)
	l.Lock()
	n := l.Queue.Clear()
	l.Unlock()
	l.Drop(reason, n, nil)
}

// Device is how Run drives one device.
type Device struct {
	// Subscribe (re)tries the command subscriptions; called before every open.
	Subscribe func()
	// Open resolves and opens the device, returning the path it opened (or tried).
	Open func() (path string, err error)
	// Absent tells a missing device (state waiting) from a failure (state error).
	Absent func(error) bool
	// Serve serves the opened device until it fails or ctx is done, and closes it. worked
	// reports that it did real work, so the backoff starts over.
	Serve func(ctx context.Context, path string) (worked bool, err error)
	// Down, if set, is called when the device could not be opened or was lost.
	Down func()
	// OpenAttrs are logged with the "open" line after the path.
	OpenAttrs []any
}

// Run opens, serves and reopens the device until ctx is done, waiting between attempts with
// exponential backoff between bo.Min and bo.Max; the backoff starts over after a session that
// worked or lasted at least bo.Max.
func (l *Link[C]) Run(ctx context.Context, bo confkit.Backoff, d Device) {
	down := func() {
		if d.Down != nil {
			d.Down()
		}
	}
	opens := 0
	bk := backoff.Backoff{Min: bo.Min, Max: bo.Max}
	for ctx.Err() == nil {
		d.Subscribe()
		path, err := d.Open()
		if err != nil {
			state := StateError
			if d.Absent(err) {
				state = StateWaiting
			}
			l.SetState(state, path, err)
			l.Warn(l.kind+" unavailable; retrying", err, "path", path)
			down()
			if !backoff.Sleep(ctx, bk.Next()) {
				return
			}
			continue
		}
		if opens > 0 {
			l.met.Reopens.WithLabelValues(l.name).Inc()
			l.Lock()
			l.Reopens++
			l.Unlock()
		}
		opens++
		l.SetState(StateOpen, path, nil)
		l.met.Up.WithLabelValues(l.name).Set(1)
		l.log.Info(l.kind+" open", append([]any{"path", path}, d.OpenAttrs...)...)
		l.errLog.Reset()

		start := time.Now()
		worked, err := d.Serve(ctx, path)
		l.met.Up.WithLabelValues(l.name).Set(0)
		if ctx.Err() != nil {
			return
		}
		l.SetState(StateError, "", err)
		l.Warn(l.kind+" lost; reopening", err, "path", path)
		down()
		if worked || time.Since(start) >= bo.Max {
			bk.Reset() // it worked for a while: start the backoff over
		}
		if !backoff.Sleep(ctx, bk.Next()) {
			return
		}
	}
}
