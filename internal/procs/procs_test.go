package procs

import (
	"context"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged-dev/edged/internal/testutil"
)

func TestDecide(t *testing.T) {
	type step struct {
		util       float64
		wantProcs  int
		wantStreak int
	}
	cases := []struct {
		name  string
		start int
		steps []step
	}{
		{"light load stays on one", 1, []step{{0.2, 1, 0}, {0.74, 1, 0}, {0.1, 1, 0}}},
		{"one busy period is not load", 1, []step{{0.9, 1, 1}, {0.3, 1, 0}, {0.9, 1, 1}}},
		{"busy periods in a row take all", 1, []step{{0.8, 1, 1}, {0.75, 4, 0}}},
		{"at all, busy stays", 4, []step{{0.9, 4, 0}, {0.36, 4, 0}}},
		{"quiet periods in a row give back", 4, []step{{0.3, 4, 1}, {0.2, 4, 2}, {0.35, 4, 3}, {0.0, 1, 0}}},
		{"a busy period resets the quiet count", 4, []step{{0.3, 4, 1}, {0.2, 4, 2}, {0.5, 4, 0}, {0.1, 4, 1}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cur, streak := c.start, 0
			for i, s := range c.steps {
				cur, streak = decide(cur, 4, s.util, streak)
				if cur != s.wantProcs || streak != s.wantStreak {
					t.Fatalf("step %d (util %.2f): procs %d streak %d, want %d %d", i, s.util, cur, streak, s.wantProcs, s.wantStreak)
				}
			}
		})
	}
}

// fakeRuntime is the process as the controller sees it: CPU time advanced by the test, and
// the processors the controller sets.
type fakeRuntime struct {
	mu    sync.Mutex
	cpu   time.Duration
	procs int
	def   int
	sets  []int
}

func (f *fakeRuntime) opts(fixed int) Options {
	return Options{Fixed: fixed, Registerer: prometheus.NewRegistry(),
		cpuTime: func() time.Duration { f.mu.Lock(); defer f.mu.Unlock(); return f.cpu },
		setProcs: func(n int) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.sets = append(f.sets, n)
			if n == 0 {
				n = f.def
			}
			f.procs = n
		},
		getProcs: func() int { f.mu.Lock(); defer f.mu.Unlock(); return f.procs },
		period:   20 * time.Millisecond,
	}
}

// burn charges the fake process util cores for as long as run is set, in the background.
func (f *fakeRuntime) burn(ctx context.Context, util *atomic.Value) {
	last := time.Now()
	for ctx.Err() == nil {
		time.Sleep(2 * time.Millisecond)
		now := time.Now()
		f.mu.Lock()
		f.cpu += time.Duration(float64(now.Sub(last)) * util.Load().(float64))
		f.mu.Unlock()
		last = now
	}
}

func waitProcs(t *testing.T, c *Controller, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.Status().Procs != want {
		if time.Now().After(deadline) {
			t.Fatalf("procs = %d after 10s, want %d", c.Status().Procs, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestControllerAdapts(t *testing.T) {
	f := &fakeRuntime{procs: 2, def: 2}
	o := f.opts(0)
	reg := o.Registerer.(*prometheus.Registry)
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if st := c.Status(); st.Mode != ModeAdaptive || st.Max != 2 || st.Procs != 2 {
		t.Fatalf("status at start %+v", st)
	}
	var util atomic.Value
	util.Store(0.1)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); f.burn(ctx, &util) }()
	go func() { defer wg.Done(); c.Run(ctx) }()

	waitProcs(t, c, 1) // idle: one processor
	util.Store(1.5)
	waitProcs(t, c, 2) // busy: all
	util.Store(0.05)
	waitProcs(t, c, 1)
	for dir, want := range map[string]float64{"down": 2, "up": 1} {
		if got, _ := testutil.MetricValue(t, reg, "edged_runtime_procs_changes_total", map[string]string{"direction": dir}); got != want {
			t.Errorf("%s changes %v, want %v", dir, got, want)
		}
	}
	if got, ok := testutil.MetricValue(t, reg, "edged_runtime_procs", nil); !ok || got != 1 {
		t.Errorf("edged_runtime_procs = %v (found %v), want 1", got, ok)
	}

	// A fixed setting (a reload) stops the adaptation at once, at any load.
	c.SetFixed(2)
	if st := c.Status(); st.Mode != ModeFixed || st.Procs != 2 {
		t.Fatalf("fixed: %+v", st)
	}
	time.Sleep(10 * o.period)
	if st := c.Status(); st.Procs != 2 {
		t.Fatalf("fixed setting adapted: %+v", st)
	}
	c.SetFixed(0)
	waitProcs(t, c, 1)

	// Stopping gives the runtime its default back.
	cancel()
	wg.Wait()
	if p := f.procs; p != 2 {
		t.Fatalf("procs after stop %d, want the default 2", p)
	}
	// Going up always asks for the runtime's default (setProcs(0)), never a number, so a
	// cgroup limit changed while edged runs is followed.
	for _, n := range f.sets {
		if n != 0 && n != 1 && n != 2 {
			t.Fatalf("set %d", n)
		}
	}
}

func TestControllerModes(t *testing.T) {
	t.Run("single CPU", func(t *testing.T) {
		f := &fakeRuntime{procs: 1, def: 1}
		c, err := New(f.opts(0))
		if err != nil {
			t.Fatal(err)
		}
		if st := c.Status(); st.Mode != ModeSingle || st.Procs != 1 {
			t.Fatalf("%+v", st)
		}
	})
	t.Run("fixed", func(t *testing.T) {
		f := &fakeRuntime{procs: 4, def: 4}
		c, err := New(f.opts(3))
		if err != nil {
			t.Fatal(err)
		}
		if st := c.Status(); st.Mode != ModeFixed || st.Procs != 3 || st.Max != 4 {
			t.Fatalf("%+v", st)
		}
	})
	t.Run("environment wins", func(t *testing.T) {
		t.Setenv("GOMAXPROCS", "3")
		f := &fakeRuntime{procs: 3, def: 3}
		c, err := New(f.opts(1))
		if err != nil {
			t.Fatal(err)
		}
		if st := c.Status(); st.Mode != ModeEnv || st.Procs != 3 || len(f.sets) != 0 {
			t.Fatalf("%+v sets %v", st, f.sets)
		}
	})
}

// TestControllerRealRuntime drives the real runtime: a fixed setting is applied to
// GOMAXPROCS and a stopped adaptive controller leaves the runtime's default in place.
func TestControllerRealRuntime(t *testing.T) {
	if os.Getenv("GOMAXPROCS") != "" {
		t.Skip("GOMAXPROCS is set in the environment: the controller leaves it alone")
	}
	def := runtime.GOMAXPROCS(0)
	defer runtime.SetDefaultGOMAXPROCS()
	c, err := New(Options{Fixed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOMAXPROCS(0) != 1 {
		t.Fatalf("GOMAXPROCS %d after fixed 1", runtime.GOMAXPROCS(0))
	}
	c.SetFixed(0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	cancel()
	<-done
	if got := runtime.GOMAXPROCS(0); got != def {
		t.Fatalf("GOMAXPROCS %d after stop, want the default %d", got, def)
	}
}
