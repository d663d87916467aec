//go:build unix

package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// pidFile is written inside the locked data dir so that ErrLocked can name the holder. It is
// the same file badger itself would write, so badger's own tools see a familiar layout.
const pidFile = "LOCK"

// dirLock is an exclusive flock on the data directory itself (the same lock badger takes, so
// badger tooling also refuses a live store). badger's own lock is bypassed: holding our own lets
// Open tell "locked" from "corrupt" without parsing badger's error strings, and keeps the lock
// across moving a corrupt directory aside.
type dirLock struct {
	f   *os.File
	pid string
}

func lockDir(dir string) (*dirLock, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open data dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			who := "another process"
			if b, rerr := os.ReadFile(filepath.Join(dir, pidFile)); rerr == nil {
				if pid := strings.TrimSpace(string(b)); pid != "" {
					who = "process " + pid
				}
			}
			return nil, fmt.Errorf("%w: %s is held by %s (a running edged?); stop it first", ErrLocked, dir, who)
		}
		return nil, fmt.Errorf("lock data dir %s: %w", dir, err)
	}
	pid := filepath.Join(dir, pidFile)
	_ = os.WriteFile(pid, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	return &dirLock{f: f, pid: pid}, nil
}

// unlock releases the lock; removePid is false when the directory was moved aside (the pid file
// went with it).
func (l *dirLock) unlock(removePid bool) {
	if l == nil || l.f == nil {
		return
	}
	if removePid {
		_ = os.Remove(l.pid)
	}
	_ = syscall.Flock(int(l.f.Fd()), syscall.LOCK_UN)
	_ = l.f.Close()
	l.f = nil
}

// diskFree returns the bytes available to unprivileged users on the file system holding dir.
func diskFree(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil //nolint:unconvert // Bsize is int32 on linux/arm
}
