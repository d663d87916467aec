package testutil

import (
	"context"
	"sync"
)

// Recorder keeps, in order, what a fake was handed (messages published to it, or captured by
// it): the goroutines under test add, the test reads.
type Recorder[T any] struct {
	mu  sync.Mutex
	got []T
}

// Record appends v.
func (r *Recorder[T]) Record(v T) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, v)
}

// Capture records v and accepts it: a Recorder of broker messages is a broker.Capturer that
// keeps everything it is given.
func (r *Recorder[T]) Capture(_ context.Context, v T) error {
	r.Record(v)
	return nil
}

// Where returns, in order, the recorded values keep accepts.
func (r *Recorder[T]) Where(keep func(T) bool) []T {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []T
	for _, v := range r.got {
		if keep(v) {
			out = append(out, v)
		}
	}
	return out
}

// FakeLocal is an in-memory stand-in for the broker's in-process client as the serial ports
// and Modbus buses use it (Publish and Subscribe): it records every publish and hands the test
// the subscriber of a filter, to deliver commands as the broker would. It is generic in the
// message type because this package cannot import the broker (whose tests import this
// package). The zero value is ready to use.
type FakeLocal[M any] struct {
	Recorder[M]
	mu   sync.Mutex
	subs map[string]func(M)
}

// Publish records m.
func (f *FakeLocal[M]) Publish(m M) error {
	f.Record(m)
	return nil
}

// Subscribe registers fn for filter (replacing an earlier one); the returned func removes it.
func (f *FakeLocal[M]) Subscribe(filter string, fn func(M)) (func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.subs == nil {
		f.subs = map[string]func(M){}
	}
	f.subs[filter] = fn
	return func() {
		f.mu.Lock()
		delete(f.subs, filter)
		f.mu.Unlock()
	}, nil
}

// Subscriber returns the function subscribed to exactly filter, nil if there is none.
func (f *FakeLocal[M]) Subscriber(filter string) func(M) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.subs[filter]
}
