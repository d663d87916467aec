package storage

import (
	"fmt"
	"os"
	"testing"
)

// childEnv selects a child mode when the test binary re-executes itself (crash test, memory
// benchmark): the child runs instead of the tests.
const childEnv = "EDGED_STORAGE_CHILD"

var childModes = map[string]func() error{}

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
