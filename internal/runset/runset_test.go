package runset

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
)

// probe is a run func that records it started and holds on until its context is done, then
// marks that it returned.
type probe struct {
	started  chan struct{}
	returned atomic.Bool
}

func newProbe() *probe { return &probe{started: make(chan struct{})} }

func (p *probe) run(ctx context.Context) {
	close(p.started)
	<-ctx.Done()
	p.returned.Store(true)
}

func TestStartBeforeRunRunsNothing(t *testing.T) {
	var s Set[string]
	s.Start("a", func(context.Context) { t.Error("run before Run") })
	if s.Running("a") {
		t.Fatal("Running before Run")
	}
	s.Stop("a") // no-op
	s.stopAll()
}

func TestStopWaitsForOnePart(t *testing.T) {
	var s Set[string]
	s.open(context.Background())
	a, b := newProbe(), newProbe()
	s.Start("a", a.run)
	s.Start("b", b.run)
	<-a.started
	<-b.started
	if !s.Running("a") || !s.Running("b") {
		t.Fatal("started parts not Running")
	}
	s.Stop("a")
	if !a.returned.Load() {
		t.Fatal("Stop returned before the part's goroutine did")
	}
	if s.Running("a") {
		t.Fatal("stopped part still Running")
	}
	if b.returned.Load() || !s.Running("b") {
		t.Fatal("Stop of a touched b")
	}
	s.Stop("a") // again: no-op
	// The key can run again after its stop (a reload's changed part).
	a2 := newProbe()
	s.Start("a", a2.run)
	<-a2.started
	s.stopAll()
	if !a2.returned.Load() || !b.returned.Load() {
		t.Fatal("stopAll returned before every part did")
	}
	s.Start("c", func(context.Context) { t.Error("run after stopAll") })
	if s.Running("c") {
		t.Fatal("Start after stopAll registered a part")
	}
}

func TestContextCancelsParts(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var s Set[int]
	s.open(ctx)
	ps := make([]*probe, 4)
	for i := range ps {
		ps[i] = newProbe()
		s.Start(i, ps[i].run)
		<-ps[i].started
	}
	cancel()
	s.stopAll()
	for i, p := range ps {
		if !p.returned.Load() {
			t.Fatalf("part %d still running after stopAll", i)
		}
	}
}

// A part that returns on its own stays Running until stopped, and Stop of it returns at once.
func TestPartReturningOnItsOwn(t *testing.T) {
	var s Set[string]
	s.open(context.Background())
	done := make(chan struct{})
	s.Start("a", func(context.Context) { close(done) })
	<-done
	if !s.Running("a") {
		t.Fatal("a part that returned is not Running until stopped")
	}
	s.Stop("a")
	s.stopAll()
}

// Stop, Start and stopAll from many goroutines at once (run with -race): stopAll returns only
// once every part started before it has returned, and nothing starts after it.
func TestConcurrentStopAndstopAll(t *testing.T) {
	var s Set[int]
	s.open(context.Background())
	var live atomic.Int32
	run := func(ctx context.Context) {
		live.Add(1)
		<-ctx.Done()
		live.Add(-1)
	}
	for i := range 16 {
		s.Start(i, run)
	}
	done := make(chan struct{})
	for i := range 16 {
		go func() {
			s.Stop(i)
			s.Start(i+100, run)
			done <- struct{}{}
		}()
	}
	s.stopAll()
	for range 16 {
		<-done
	}
	if n := live.Load(); n != 0 {
		t.Fatalf("%d parts still running after stopAll", n)
	}
}

// Run starts the first parts under the caller's lock, and returns once ctx is done and every
// part, also those started later, has returned.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var (
		s    Set[string]
		mu   sync.Mutex
		a, b = newProbe(), newProbe()
		ran  = make(chan struct{})
	)
	go func() {
		defer close(ran)
		s.Run(ctx, &mu, func() {
			if mu.TryLock() {
				t.Error("start called without the lock held")
				mu.Unlock()
			}
			s.Start("a", a.run)
		})
	}()
	<-a.started
	mu.Lock() // a reload: after Run's start
	s.Start("b", b.run)
	mu.Unlock()
	<-b.started
	select {
	case <-ran:
		t.Fatal("Run returned before its context was done")
	default:
	}
	cancel()
	<-ran
	if !a.returned.Load() || !b.returned.Load() {
		t.Fatal("Run returned before its parts did")
	}
	s.Start("c", func(context.Context) { t.Error("run after Run") })
}
