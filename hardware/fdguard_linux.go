//go:build linux

package hardware

import "golang.org/x/sys/unix"

// fdSetSize is FD_SETSIZE: go.bug.st/serial's select-based Read panics on fds at or above it.
const fdSetSize = 1024

// reserveFDs holds n low file descriptors (/dev/null) that are released right before a port is
// opened, so the kernel, which always hands out the lowest free number, gives them to the port
// and its close-signal pipe. Fds that are already >= fdSetSize are not worth holding.
func reserveFDs(n int) []int {
	var fds []int
	for range n {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			break
		}
		if fd >= fdSetSize {
			unix.Close(fd)
			break
		}
		fds = append(fds, fd)
	}
	return fds
}

func releaseFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
