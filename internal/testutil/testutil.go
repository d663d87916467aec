// Package testutil starts the real peers edged's tests talk to: a built edged binary, a
// mosquitto broker, free loopback ports. It owns nothing at run time and is imported by tests
// only. Every helper binds 127.0.0.1 and cleans up through t.Cleanup.
package testutil

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// InCI reports whether tests run under CI, where a missing peer is a failure, not a skip.
func InCI() bool {
	return os.Getenv("CI") != "" && os.Getenv("CI") != "false" && os.Getenv("CI") != "0"
}

// RequireCommand returns the path of a peer program, skipping the test when it is absent on a
// developer machine and failing it under CI (CI installs every peer in .ci/run).
func RequireCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			return filepath.Join(dir, name)
		}
	}
	if InCI() {
		t.Fatalf("%s not found: CI must install it (see .ci/run)", name)
	}
	t.Skipf("%s not installed (apt-get install it, or run .ci/run); skipping outside CI", name)
	return ""
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// FreeAddr is FreePort as "127.0.0.1:PORT".
func FreeAddr(t testing.TB) string { return fmt.Sprintf("127.0.0.1:%d", FreePort(t)) }

// WaitFor polls fn every poll until it returns nil or total elapses, then fails with fn's last
// error. Tests poll instead of sleeping.
func WaitFor(t testing.TB, total, poll time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for {
		if err = fn(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %v", total, err)
		}
		time.Sleep(poll)
	}
}

// WaitTCP waits until addr accepts TCP connections.
func WaitTCP(t testing.TB, addr string, total time.Duration) {
	t.Helper()
	WaitFor(t, total, 20*time.Millisecond, func() error {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// RepoRoot finds the module root from the test's working directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// EdgedBinary builds ./cmd/edged once per test process (with -race when the tests have it, so
// the daemon is checked too) and returns its path.
func EdgedBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "edged-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "edged")
		args := []string{"build", "-o", buildPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "./cmd/edged")
		cmd := exec.Command("go", args...)
		cmd.Dir = RepoRoot(t)
		if raceEnabled {
			cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/edged: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// LockedBuffer is a goroutine-safe bytes.Buffer for a child's output.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Edged is a running edged process.
type Edged struct {
	t       testing.TB
	Cmd     *exec.Cmd
	Config  string // path of the config file
	DataDir string
	Admin   string // admin address
	Out     *LockedBuffer
	done    chan struct{}
	err     error
}

// EdgedOptions configures StartEdged.
type EdgedOptions struct {
	// ConfigYAML is the whole config; the placeholders {data_dir} and {admin} are replaced.
	ConfigYAML string
	DataDir    string // default t.TempDir()
	Admin      string // default a free loopback address
	Env        []string
	// Argv, when set, is the command run with "run -c CONFIG" appended instead of the binary
	// EdgedBinary builds: another build, or an emulator and an ARM binary.
	Argv []string
	// NoWait skips waiting for /healthz.
	NoWait bool
}

// StartEdged writes the config, starts the binary and waits until /healthz answers.
func StartEdged(t testing.TB, o EdgedOptions) *Edged {
	t.Helper()
	argv := o.Argv
	if len(argv) == 0 {
		argv = []string{EdgedBinary(t)}
	}
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	if o.Admin == "" {
		o.Admin = FreeAddr(t)
	}
	cfg := strings.NewReplacer("{data_dir}", o.DataDir, "{admin}", o.Admin).Replace(o.ConfigYAML)
	cfgPath := filepath.Join(t.TempDir(), "edged.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e := &Edged{t: t, Config: cfgPath, DataDir: o.DataDir, Admin: o.Admin, Out: &LockedBuffer{}, done: make(chan struct{})}
	e.Cmd = exec.Command(argv[0], append(argv[1:len(argv):len(argv)], "run", "-c", cfgPath)...)
	e.Cmd.Stdout = e.Out
	e.Cmd.Stderr = e.Out
	e.Cmd.Env = append(os.Environ(), o.Env...)
	if err := e.Cmd.Start(); err != nil {
		t.Fatalf("start edged: %v", err)
	}
	go func() { e.err = e.Cmd.Wait(); close(e.done) }()
	t.Cleanup(func() {
		select {
		case <-e.done:
		default:
			_ = e.Cmd.Process.Kill()
			<-e.done
		}
		if t.Failed() {
			t.Logf("edged output:\n%s", tail(e.Out.String(), 8000))
		}
	})
	if !o.NoWait {
		e.WaitHealthy(20 * time.Second)
	}
	return e
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// WaitHealthy waits for GET /healthz to answer 200, failing early if the process exits.
func (e *Edged) WaitHealthy(total time.Duration) {
	e.t.Helper()
	WaitFor(e.t, total, 25*time.Millisecond, func() error {
		select {
		case <-e.done:
			e.t.Fatalf("edged exited during start-up: %v\n%s", e.err, e.Out.String())
		default:
		}
		return HTTPGetOK("http://" + e.Admin + "/healthz")
	})
}

// Kill9 sends SIGKILL and waits for the process to be gone.
func (e *Edged) Kill9() {
	e.t.Helper()
	_ = e.Cmd.Process.Kill()
	<-e.done
}

// Stop sends SIGTERM and waits up to total for a clean exit; it returns the exit error.
func (e *Edged) Stop(total time.Duration) error {
	e.t.Helper()
	_ = e.Cmd.Process.Signal(syscallSIGTERM)
	select {
	case <-e.done:
		return e.err
	case <-time.After(total):
		_ = e.Cmd.Process.Kill()
		<-e.done
		return fmt.Errorf("edged did not stop within %v", total)
	}
}

// Done is closed when the process has exited.
func (e *Edged) Done() <-chan struct{} { return e.done }
