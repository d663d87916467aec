package runset

import (
	"context"
	"sync"
)

// Set runs one goroutine per key. The zero value is ready; it starts nothing until Run. Its
// methods are safe for concurrent use.
type Set[K comparable] struct {
	mu      sync.Mutex
	ctx     context.Context // nil until Run
	closed  bool            // Run is over: Start does nothing
	wg      sync.WaitGroup
	running map[K]*part
}

type part struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when run returned
}

// Run is a component's Run: it makes Start run parts under contexts derived from ctx, calls
// start (which starts the first parts) with mu held, and once ctx is done stops every part and
// returns after all their goroutines have returned. mu is the lock the component's reload
// holds while it starts and stops parts, so a reload sees either none or all of the first parts.
// A Set runs once.
func (s *Set[K]) Run(ctx context.Context, mu sync.Locker, start func()) {
	mu.Lock()
	s.open(ctx)
	start()
	mu.Unlock()
	<-ctx.Done()
	s.stopAll()
}

func (s *Set[K]) open(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctx = ctx
	s.running = map[K]*part{}
}

// Start runs run(ctx) in a goroutine as key's part; ctx is cancelled by Stop(key) or when
// Run's context is done. It does nothing before Run or once Run is over (a component that does
// not run only records what it would run). A key already running must be stopped first.
func (s *Set[K]) Start(key K, run func(context.Context)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == nil || s.closed {
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	p := &part{cancel: cancel, done: make(chan struct{})}
	s.running[key] = p
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(p.done)
		defer cancel()
		run(ctx)
	}()
}

// Running reports whether key's part was started and not stopped by Stop(key): it may have
// returned on its own already, and it stays true after Run's end stopped every part.
func (s *Set[K]) Running(key K) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running[key] != nil
}

// Stop cancels key's part and waits until its goroutine returned. A key not running is a no-op.
func (s *Set[K]) Stop(key K) {
	s.mu.Lock()
	p := s.running[key]
	delete(s.running, key)
	s.mu.Unlock()
	if p == nil {
		return
	}
	p.cancel()
	<-p.done
}

// stopAll cancels every part, makes later Starts do nothing, and waits until every goroutine
// the set started has returned (those a concurrent Stop is waiting for too).
func (s *Set[K]) stopAll() {
	s.mu.Lock()
	s.closed = true
	for _, p := range s.running {
		p.cancel()
	}
	s.mu.Unlock()
	s.wg.Wait()
}
