package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"
)

// recorder builds parts that log their start and stop into one sequence.
type recorder struct{ seq []string }

func (r *recorder) part(name string, startErr error, stop func() error) part {
	return part{
		name: name,
		start: func(context.Context) error {
			if startErr != nil {
				return startErr
			}
			r.seq = append(r.seq, "start "+name)
			return nil
		},
		stop: func() error {
			r.seq = append(r.seq, "stop "+name)
			if stop != nil {
				return stop()
			}
			return nil
		},
	}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestLifecycleFailedStartStopsStartedInReverse(t *testing.T) {
	r := &recorder{}
	lc := &lifecycle{log: quiet()}
	bind := errors.New("address already in use")
	err := lc.start(context.Background(), []part{r.part("a", nil, nil), r.part("b", nil, nil), r.part("c", bind, nil), r.part("d", nil, nil)})
	if !errors.Is(err, bind) || !strings.Contains(err.Error(), "start c") {
		t.Fatalf("start error %v, want it to name part c and wrap the cause", err)
	}
	if err := lc.stop(time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(r.seq, ", "), "start a, start b, stop b, stop a"; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestLifecycleStopErrorsAreJoinedAndEveryPartStops(t *testing.T) {
	r := &recorder{}
	lc := &lifecycle{log: quiet()}
	closeErr := errors.New("fsync failed")
	if err := lc.start(context.Background(), []part{r.part("store", nil, func() error { return closeErr }), r.part("net", nil, nil)}); err != nil {
		t.Fatal(err)
	}
	err := lc.stop(time.Minute)
	if !errors.Is(err, closeErr) || !strings.Contains(err.Error(), "stop store") {
		t.Fatalf("stop error %v", err)
	}
	if got, want := strings.Join(r.seq, ", "), "start store, start net, stop net, stop store"; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

// A stop that hangs past the deadline is an exit-3 error naming the part, returned to main
// (no os.Exit inside the daemon).
func TestLifecycleStopDeadline(t *testing.T) {
	r := &recorder{}
	lc := &lifecycle{log: quiet()}
	release := make(chan struct{})
	defer close(release)
	_ = lc.start(context.Background(), []part{r.part("wedged", nil, func() error { <-release; return nil }), r.part("ok", nil, nil)})
	err := lc.stop(50 * time.Millisecond)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitForced || !strings.Contains(err.Error(), "while stopping wedged") {
		t.Fatalf("got %v, want exit %d naming the wedged part", err, exitForced)
	}
}

func TestLifecycleSignalDuringStart(t *testing.T) {
	r := &recorder{}
	lc := &lifecycle{log: quiet()}
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(&signalError{sig: syscall.SIGTERM})
	err := lc.start(ctx, []part{r.part("a", nil, nil)})
	var se *signalError
	if !errors.As(err, &se) || len(r.seq) != 0 {
		t.Fatalf("start after a stop signal: %v, started %v", err, r.seq)
	}
}

func TestExitCodeMapping(t *testing.T) {
	for _, c := range []struct {
		err  error
		code int
		out  string
	}{
		{nil, exitOK, ""},
		{errors.New("boom"), exitFailure, "edged x: boom\n"},
		{usageError("bad %s", "flag"), exitUsage, "edged x: bad flag\n"},
		{errors.Join(errors.New("start mqtt: bind"), &exitError{code: exitForced, err: errors.New("deadline")}), exitForced, "edged x: start mqtt: bind\ndeadline\n"},
		{reported(exitUsage), exitUsage, ""},
	} {
		var b strings.Builder
		if got := exitCode(c.err, "edged x", &b); got != c.code || b.String() != c.out {
			t.Errorf("exitCode(%v) = %d %q, want %d %q", c.err, got, b.String(), c.code, c.out)
		}
	}
}
