package procs

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Thresholds of the adaptive mode, in cores of CPU time per second of wall time over one
// period. Measured on the bench's 2-core machine, edged at 10k msgs/s spends 0.2-0.3 cores on
// one processor; a period at UpAt or above on one processor means it is close to saturating
// (queueing grows fast past ~80 % busy). At all processors the same load costs more CPU (the
// very wake-ups one processor avoids), so DownAt sits well below UpAt: a load that sent the
// controller up does not bring it straight back down.
const (
	UpAt       = 0.75
	UpAfter    = 2 // busy periods in a row before taking all processors: a connect storm or a GC cycle alone is not load
	DownAt     = 0.35
	DownAfter  = 4 // quiet periods in a row before going back to one processor
	PeriodSize = 250 * time.Millisecond
)

// Mode says who decides the number of processors.
const (
	ModeAdaptive = "adaptive" // the controller: 1 at light load, the runtime's default under load
	ModeFixed    = "fixed"    // the procs setting
	ModeEnv      = "env"      // GOMAXPROCS in the environment wins
	ModeSingle   = "single"   // the runtime's default is 1 (one CPU, or a 1-CPU cgroup): nothing to adapt
)

// Options configure a Controller.
type Options struct {
	// Fixed > 0 sets that many processors and turns adaptation off; 0 adapts.
	Fixed      int
	Logger     *slog.Logger
	Registerer prometheus.Registerer

	// Tests replace the process and the clock.
	cpuTime    func() time.Duration
	setProcs   func(n int) // n == 0: the runtime's default
	getProcs   func() int
	defaultMax int
	period     time.Duration
}

// Controller sets GOMAXPROCS: once for a fixed setting, every period in adaptive mode.
type Controller struct {
	o     Options
	max   int // the runtime's default number of processors at start-up
	env   bool
	mu    sync.Mutex
	fixed int
	mode  string

	changes *prometheus.CounterVec
}

// Status is the controller's part of the status document.
type Status struct {
	Mode  string `json:"mode"`
	Procs int    `json:"procs"`
	Max   int    `json:"max"`
}

// New reads the runtime's default number of processors (which already honours a cgroup CPU
// limit and the CPU affinity mask) and applies a fixed setting at once.
func New(o Options) (*Controller, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.cpuTime == nil {
		o.cpuTime = processCPU
	}
	if o.setProcs == nil {
		o.setProcs = func(n int) {
			if n == 0 {
				runtime.SetDefaultGOMAXPROCS()
				return
			}
			runtime.GOMAXPROCS(n)
		}
	}
	if o.getProcs == nil {
		o.getProcs = func() int { return runtime.GOMAXPROCS(0) }
	}
	if o.period == 0 {
		o.period = PeriodSize
	}
	c := &Controller{o: o, max: o.defaultMax, env: os.Getenv("GOMAXPROCS") != ""}
	if c.max == 0 {
		c.max = o.getProcs()
	}
	c.changes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edged_runtime_procs_changes_total",
		Help: "Times the adaptive mode changed the number of Go processors, by direction (up: all processors, down: one).",
	}, []string{"direction"})
	procsGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "edged_runtime_procs",
		Help: "Go processors (GOMAXPROCS) in use now.",
	}, func() float64 { return float64(o.getProcs()) })
	if o.Registerer != nil {
		for _, m := range []prometheus.Collector{c.changes, procsGauge} {
			if err := o.Registerer.Register(m); err != nil {
				return nil, err
			}
		}
	}
	c.SetFixed(o.Fixed)
	return c, nil
}

// SetFixed switches between a fixed number of processors (n > 0) and adaptation (n == 0); a
// reload calls it. Adaptation starts from all processors.
func (c *Controller) SetFixed(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fixed = n
	switch {
	case c.env:
		c.mode = ModeEnv
	case n > 0:
		c.mode = ModeFixed
		if c.o.getProcs() != n {
			c.o.setProcs(n)
		}
	case c.max <= 1:
		c.mode = ModeSingle
		if c.o.getProcs() != c.max {
			c.o.setProcs(0)
		}
	default:
		c.mode = ModeAdaptive
		if c.o.getProcs() != c.max {
			c.o.setProcs(0)
		}
	}
}

// Status reports the mode and the processors in use.
func (c *Controller) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Status{Mode: c.mode, Procs: c.o.getProcs(), Max: c.max}
}

// Run adapts the number of processors every period until ctx ends, then gives the runtime its
// default back (a fixed or environment setting is left as it is).
func (c *Controller) Run(ctx context.Context) {
	t := time.NewTicker(c.o.period)
	defer t.Stop()
	lastCPU, lastAt := c.o.cpuTime(), time.Now()
	streak := 0
	for {
		select {
		case <-ctx.Done():
			c.mu.Lock()
			if c.mode == ModeAdaptive && c.o.getProcs() != c.max {
				c.o.setProcs(0)
			}
			c.mu.Unlock()
			return
		case now := <-t.C:
			cpu := c.o.cpuTime()
			wall := now.Sub(lastAt)
			util := 0.0
			if wall > 0 {
				util = float64(cpu-lastCPU) / float64(wall)
			}
			lastCPU, lastAt = cpu, now
			c.mu.Lock()
			if c.mode == ModeAdaptive {
				cur := c.o.getProcs()
				var next int
				next, streak = decide(cur, c.max, util, streak)
				if next != cur {
					dir := "down"
					if next > cur {
						dir = "up"
						c.o.setProcs(0) // the runtime's default, so it follows a cgroup limit change again
					} else {
						c.o.setProcs(next)
					}
					c.changes.WithLabelValues(dir).Inc()
					c.o.Logger.Debug("go processors changed", "from", cur, "to", next, "cpu_cores", util)
				}
			} else {
				streak = 0
			}
			c.mu.Unlock()
		}
	}
}

// decide is the adaptive rule: one processor until the process has used UpAt cores or more
// for UpAfter periods in a row, then all of them (max), back to one after DownAfter periods in
// a row at or below DownAt. streak counts the periods in a row that point the other way.
func decide(cur, max int, util float64, streak int) (next, streakAfter int) {
	if cur < max {
		if util < UpAt {
			return cur, 0
		}
		if streak+1 >= UpAfter {
			return max, 0
		}
		return cur, streak + 1
	}
	if util > DownAt {
		return cur, 0
	}
	if streak+1 >= DownAfter {
		return 1, 0
	}
	return cur, streak + 1
}

// processCPU is the user and system CPU time the kernel has charged to this process.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
