package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edged-dev/edged/internal/testutil"
)

// The signals go to this test process, which trapSignals has told the runtime to catch.
func TestTrapSignals(t *testing.T) {
	var logs testutil.LockedBuffer
	hup := make(chan struct{}, 1)
	ctx, forced, stop := trapSignals(context.Background(), slog.New(slog.NewTextHandler(&logs, nil)), func() { hup <- struct{}{} })
	defer stop()

	_ = syscall.Kill(syscall.Getpid(), syscall.SIGHUP)
	select {
	case <-hup:
	case <-time.After(10 * time.Second):
		t.Fatal("SIGHUP did not ask for a reload")
	}
	if !strings.Contains(logs.String(), "reload requested") {
		t.Fatalf("SIGHUP not logged: %s", logs.String())
	}
	if ctx.Err() != nil {
		t.Fatal("SIGHUP cancelled the context")
	}

	_ = syscall.Kill(syscall.Getpid(), syscall.SIGTERM)
	<-ctx.Done()
	var se *signalError
	if !errors.As(context.Cause(ctx), &se) || se.sig != syscall.SIGTERM {
		t.Fatalf("cause %v, want the SIGTERM", context.Cause(ctx))
	}
	first := time.Now()
	// A copy of the first request right after it is not a second request.
	_ = syscall.Kill(syscall.Getpid(), syscall.SIGTERM)
	select {
	case <-forced:
		if time.Since(first) < forceAfter {
			t.Fatal("a signal right after the first forced the exit")
		}
	case <-time.After(200 * time.Millisecond):
	}
	time.Sleep(time.Until(first.Add(forceAfter + 50*time.Millisecond)))
	_ = syscall.Kill(syscall.Getpid(), syscall.SIGINT)
	select {
	case <-forced:
	case <-time.After(10 * time.Second):
		t.Fatal("a second signal after forceAfter did not force the exit")
	}
}

func TestUniqueAttrsInnermostWins(t *testing.T) {
	var b bytes.Buffer
	log := slog.New(newUniqueAttrs(slog.NewJSONHandler(&b, nil)))
	log.With("component", "broker").With("component", "mochi", "x", 1).Info("m", "k", "v")
	log.With("component", "a").WithGroup("g").With("component", "b").Info("n")
	got := b.String()
	want := `"msg":"m","component":"mochi","x":1,"k":"v"}` + "\n"
	if !strings.Contains(got, want) {
		t.Errorf("got %s want …%s", got, want)
	}
	if !strings.Contains(got, `"msg":"n","component":"a","g":{"component":"b"}}`) {
		t.Errorf("group: got %s", got)
	}
}

func TestHumanFormats(t *testing.T) {
	for d, want := range map[time.Duration]string{
		850 * time.Millisecond: "850ms", 42 * time.Second: "42s", 192 * time.Second: "3m12s",
		5*time.Hour + 4*time.Minute: "5h04m", 50 * time.Hour: "2d02h", 168 * time.Hour: "7d00h",
	} {
		if got := age(d); got != want {
			t.Errorf("age(%v) = %q, want %q", d, got, want)
		}
	}
	for r, want := range map[float64]string{0: "0", 0.30133918336322135: "0.3", 9.96: "10.0", 1234.6: "1,235"} {
		if got := rate(r); got != want {
			t.Errorf("rate(%v) = %q, want %q", r, got, want)
		}
	}
}
