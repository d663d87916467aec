package storage

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"testing"
)

// childEnv selects a child mode when the test binary re-executes itself (crash test, memory
// benchmark): the child runs instead of the tests.
const childEnv = "EDGED_STORAGE_CHILD"

var childModes = map[string]func() error{
	"backlog":  backlogChild,  // BenchmarkBacklogMemory
	"crash":    crashChild,    // TestCrashKill9
	"diskfull": diskFullChild, // the full-disk tests
	"walfill":  walFillChild,  // killedStore
}

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		fn := childModes[mode]
		if fn == nil {
			fmt.Fprintf(os.Stderr, "unknown child mode %q\n", mode)
			os.Exit(3)
		}
		if err := fn(); err != nil {
			fmt.Fprintf(os.Stderr, "child %s: %v\n", mode, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// childCommand returns the command that re-executes this test binary in child mode, with
// extra environment (KEY=value).
func childCommand(mode string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), childEnv+"="+mode), env...)
	return cmd
}

// openChildOutbox opens a child's store at dir and its outbox name. The child logs warnings
// to stderr, which the parent shows when the child fails.
func openChildOutbox(dir string, minFree int64, name string, cfg Config) (*DB, *Outbox, error) {
	db, err := Open(Options{Dir: dir, MinFreeBytes: minFree,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return nil, nil, err
	}
	ob, err := db.Outbox(name, cfg)
	if err != nil {
		_ = db.Close()
		return nil, nil, err
	}
	return db, ob, nil
}
