// Package sdnotify speaks systemd's service notification protocol (sd_notify(3)) without a
// dependency: one datagram per state change to the unix socket named by $NOTIFY_SOCKET.
//
// edged's unit (deploy/arm/edged.service) is Type=notify with WatchdogSec=: cmd/edged calls
// Ready once the broker listeners and the admin API are up, runs Watchdog for the life of the
// process, and calls Stopping when shutdown begins. Outside systemd ($NOTIFY_SOCKET unset) every
// call is a cheap no-op, so the daemon needs no special case.
package sdnotify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Notify sends one state string ("READY=1", "WATCHDOG=1", "STATUS=...", several joined by
// newlines) to $NOTIFY_SOCKET. It reports whether a datagram was sent: false with a nil error
// when the process does not run under a notify-aware service manager.
func Notify(state string) (bool, error) {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return false, nil
	}
	// A leading '@' names a Linux abstract socket; the net package maps it to a leading NUL.
	if sock[0] != '/' && sock[0] != '@' {
		return false, fmt.Errorf("sdnotify: NOTIFY_SOCKET %q: not a unix socket path", sock)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("sdnotify: dial %s: %w", sock, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("sdnotify: send %q: %w", firstLine(state), err)
	}
	return true, nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Ready tells systemd that start-up finished: listeners bound, admin API answering. status is
// shown by `systemctl status` ("" sends none).
func Ready(status string) error {
	msg := "READY=1"
	if status != "" {
		msg += "\nSTATUS=" + status
	}
	_, err := Notify(msg)
	return err
}

// Stopping tells systemd that a clean shutdown began, so a slow drain is not mistaken for a hang.
func Stopping() error {
	_, err := Notify("STOPPING=1\nSTATUS=stopping")
	return err
}

// Status updates the free-form status line shown by `systemctl status`.
func Status(status string) error {
	_, err := Notify("STATUS=" + status)
	return err
}

// WatchdogInterval returns systemd's watchdog timeout ($WATCHDOG_USEC) when the watchdog is
// enabled for this process ($WATCHDOG_PID unset or equal to our pid). ok is false otherwise.
func WatchdogInterval() (d time.Duration, ok bool, err error) {
	us := os.Getenv("WATCHDOG_USEC")
	if us == "" {
		return 0, false, nil
	}
	if pid := os.Getenv("WATCHDOG_PID"); pid != "" {
		p, err := strconv.Atoi(pid)
		if err != nil {
			return 0, false, fmt.Errorf("sdnotify: WATCHDOG_PID %q: %w", pid, err)
		}
		if p != os.Getpid() {
			return 0, false, nil
		}
	}
	n, err := strconv.ParseUint(us, 10, 63)
	if err != nil {
		return 0, false, fmt.Errorf("sdnotify: WATCHDOG_USEC %q: %w", us, err)
	}
	if n == 0 {
		return 0, false, errors.New("sdnotify: WATCHDOG_USEC is 0")
	}
	return time.Duration(n) * time.Microsecond, true, nil
}

// Watchdog sends WATCHDOG=1 every half of the watchdog timeout until ctx is done, but only
// while healthy() (nil: always) returns true: a wedged daemon stops pinging and systemd
// restarts it (Restart=on-failure). It returns at once, with nil, when the watchdog is not
// enabled, so callers may always start it: `go sdnotify.Watchdog(ctx, healthy)`.
func Watchdog(ctx context.Context, healthy func() bool) error {
	d, ok, err := WatchdogInterval()
	if err != nil || !ok {
		return err
	}
	t := time.NewTicker(d / 2)
	defer t.Stop()
	for {
		if healthy == nil || healthy() {
			// A failed ping is retried on the next tick; systemd tolerates one miss.
			_, _ = Notify("WATCHDOG=1")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
