package confkit

import (
	"errors"
	"strconv"
	"testing"

	"gopkg.in/yaml.v3"
)

// level is a value written as one scalar, decoded through UnmarshalScalar.
type level int

func (l *level) UnmarshalYAML(n *yaml.Node) error {
	return UnmarshalScalar(n, "a level such as 3", func(s string) (level, error) {
		v, err := strconv.Atoi(s)
		if err != nil {
			return 0, errors.New("invalid level " + strconv.Quote(s))
		}
		return level(v), nil
	}, l)
}

// Every bad value of a document is reported, each with its line, in the decoder's one error.
func TestUnmarshalScalar(t *testing.T) {
	var doc struct {
		A level `yaml:"a"`
		B level `yaml:"b"`
		C level `yaml:"c"`
	}
	err := yaml.Unmarshal([]byte("a: 7\nb: [1]\nc: high\n"), &doc)
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		t.Fatalf("error %v (%T), want a *yaml.TypeError", err, err)
	}
	want := []string{"line 2: want a level such as 3", `line 3: invalid level "high"`}
	if len(te.Errors) != len(want) || te.Errors[0] != want[0] || te.Errors[1] != want[1] {
		t.Fatalf("errors %q, want %q", te.Errors, want)
	}
	if doc.A != 7 {
		t.Fatalf("a = %d, want 7 (decoded beside the bad values)", doc.A)
	}
}
