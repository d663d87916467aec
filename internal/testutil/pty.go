package testutil

import (
	"os"
	"syscall"
	"testing"

	"github.com/creack/pty"
)

// OpenPTY opens a pseudo-terminal pair for a test that plays a serial device: the code under
// test opens slave.Name(), the test reads and writes master. master is a non-blocking copy of
// the master side in the runtime poller, so closing it ends a Read blocked in another
// goroutine (a blocking *os.File read would not return). slave stays open until cleanup, so
// master never reads EIO before the port under test has opened it. Both close at cleanup (a
// test that unplugs the device closes them earlier). Without ptys the test skips, or fails
// under CI.
func OpenPTY(t testing.TB) (master, slave *os.File) {
	t.Helper()
	pm, s, err := pty.Open()
	if err != nil {
		if InCI() {
			t.Fatalf("pty: %v", err)
		}
		t.Skipf("no pty: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	fd, err := syscall.Dup(int(pm.Fd()))
	pm.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	m := os.NewFile(uintptr(fd), "ptmx")
	t.Cleanup(func() { m.Close() })
	return m, s
}
