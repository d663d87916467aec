package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// signalError is the cancellation cause of a stop requested by a signal.
type signalError struct{ sig os.Signal }

func (e *signalError) Error() string { return "signal: " + e.sig.String() }

// forceAfter is how long after the first stop signal another one counts as a second request.
// `timeout`, shells and process-group kills deliver the same SIGTERM twice within
// milliseconds; that copy must not turn a graceful stop into a forced one.
const forceAfter = time.Second

// trapSignals is signal.NotifyContext with caddy's sigtrap on top: the first SIGINT or SIGTERM
// cancels ctx (cause *signalError); a second one more than forceAfter after the first
// closes forced (the operator means it: main exits 3). SIGHUP calls onHUP (reload the config;
// nil: logged and ignored), which must not block; its default action would kill the daemon
// without a clean stop. stop releases the signals and ends the goroutine.
func trapSignals(parent context.Context, log *slog.Logger, onHUP func()) (ctx context.Context, forced <-chan struct{}, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	force := make(chan struct{})
	quit := make(chan struct{})
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var first os.Signal
		var at time.Time
		for {
			select {
			case <-quit:
				return
			case s := <-sigs:
				switch {
				case s == syscall.SIGHUP && onHUP != nil:
					log.Info("reload requested", "signal", s.String())
					onHUP()
				case s == syscall.SIGHUP:
					log.Warn("reload is not available here; restart to apply a new config", "signal", s.String())
				case first == nil:
					first, at = s, time.Now()
					log.Info("stop requested", "signal", s.String())
					cancel(&signalError{s})
				case time.Since(at) < forceAfter:
					// a copy of the first request, not a second one
				default:
					log.Error("second signal, forcing exit", "signal", s.String(), "exit_code", exitForced)
					close(force)
					<-quit
					return
				}
			}
		}
	}()
	return ctx, force, func() {
		signal.Stop(sigs)
		close(quit)
		<-done
		cancel(nil)
	}
}
