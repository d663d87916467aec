package hwkit

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/edged-dev/edged/internal/confkit"
	"github.com/edged-dev/edged/internal/testutil"
	"github.com/prometheus/client_golang/prometheus"
)

// Run walks a device through absent -> failed -> open -> lost -> open, counting reopens and
// keeping the state, path and last error of each step; cancel stops it while open.
func TestLinkRun(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := NewRegistrar(reg)
	met := LinkMetrics{Up: r.Gauge("t_up", "", "dev"), Reopens: r.Counter("t_reopens_total", "", "dev"),
		Dropped: r.Counter("t_dropped_total", "", "dev", "reason")}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	var l Link[int]
	l.Init("d", "test", "dev", "/dev/x", slog.New(slog.NewTextHandler(io.Discard, nil)), met)

	var mu sync.Mutex
	var states []string
	opens := []error{fs.ErrNotExist, errors.New("busy"), nil, nil}
	serves := 0
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.Run(ctx, confkit.Backoff{Min: time.Millisecond, Max: 2 * time.Millisecond}, Device{
			Subscribe: func() {},
			Open: func() (string, error) {
				mu.Lock()
				defer mu.Unlock()
				err := opens[0]
				if len(opens) > 1 {
					opens = opens[1:]
				}
				return "/dev/y", err
			},
			Absent: func(err error) bool { return errors.Is(err, fs.ErrNotExist) },
			Serve: func(ctx context.Context, path string) (bool, error) {
				l.Lock()
				st := l.State
				l.Unlock()
				mu.Lock()
				states = append(states, st)
				serves++
				first := serves == 1
				mu.Unlock()
				if first {
					return true, errors.New("unplugged")
				}
				<-ctx.Done()
				return false, nil
			},
			Down: func() {
				l.Lock()
				st := l.State
				l.Unlock()
				mu.Lock()
				states = append(states, st)
				mu.Unlock()
			},
		})
	}()
	testutil.WaitFor(t, 10*time.Second, time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if serves < 2 {
			return errors.New("not reopened yet")
		}
		return nil
	})
	cancel()
	<-done
	mu.Lock()
	got := states
	mu.Unlock()
	want := []string{StateWaiting, StateError, StateOpen, StateError, StateOpen}
	if len(got) != len(want) {
		t.Fatalf("states %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("states %v, want %v", got, want)
		}
	}
	if l.Reopens != 1 || l.Path != "/dev/y" || l.LastError != "unplugged" {
		t.Errorf("link after run: reopens %d, path %q, last error %q", l.Reopens, l.Path, l.LastError)
	}
	if v, _ := testutil.MetricValue(t, reg, "t_reopens_total", map[string]string{"dev": "d"}); v != 1 {
		t.Errorf("reopens metric %v", v)
	}
	if v, _ := testutil.MetricValue(t, reg, "t_up", map[string]string{"dev": "d"}); v != 0 {
		t.Errorf("up %v after run returned", v)
	}

	l.Queue.Push(7, 1, false)
	l.Stop("shutdown")
	if l.State != StateStopped || l.Queue.Len() != 0 || l.Dropped != 1 || l.LastError != "shutdown: shutdown" {
		t.Errorf("after stop: state %s, queued %d, dropped %d, last error %q", l.State, l.Queue.Len(), l.Dropped, l.LastError)
	}
	if v, _ := testutil.MetricValue(t, reg, "t_dropped_total", map[string]string{"dev": "d", "reason": "shutdown"}); v != 1 {
		t.Errorf("dropped metric %v", v)
	}
}
