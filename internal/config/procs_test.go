package config

import (
	"errors"
	"strings"
	"testing"
)

func TestProcs(t *testing.T) {
	for doc, want := range map[string]int{"": 0, "procs: 0\n": 0, "procs: 2\n": 2} {
		cfg, err := Parse("f", []byte(doc))
		if err != nil || cfg.Procs != want {
			t.Fatalf("%q: procs %d, %v; want %d", doc, cfg.Procs, err, want)
		}
	}
	for _, doc := range []string{"log: {level: info}\nprocs: -1\n", "log: {level: info}\nprocs: 5000\n"} {
		_, err := Parse("f", []byte(doc))
		var ps Problems
		if !errors.As(err, &ps) || len(ps) != 1 || !strings.HasPrefix(ps[0].Error(), "f:2: procs: ") {
			t.Fatalf("%q: %v", doc, err)
		}
	}
}
