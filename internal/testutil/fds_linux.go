//go:build linux

package testutil

import (
	"testing"

	"golang.org/x/sys/unix"
)

// ExhaustLowFDs raises RLIMIT_NOFILE and opens /dev/null until the kernel hands out fds above
// 1100, so every fd below FD_SETSIZE (1024) is taken: the state in which a select-based serial
// library panics. The fds are closed when the test ends. Where the limit cannot be raised the
// test skips, and fails under CI.
func ExhaustLowFDs(t testing.TB) {
	t.Helper()
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		skipOrFail(t, "getrlimit: %v", err)
	}
	if lim.Cur < 2048 {
		lim.Cur = min(lim.Max, 4096)
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < 2048 {
			skipOrFail(t, "cannot raise RLIMIT_NOFILE to 2048 (max %d): %v", lim.Max, err)
		}
	}
	var held []int
	t.Cleanup(func() {
		for _, fd := range held {
			unix.Close(fd)
		}
	})
	for {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, fd)
		if fd > 1100 {
			return
		}
	}
}

func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf(format, args...)
	}
	t.Skipf(format+" (skipping outside CI)", args...)
}
