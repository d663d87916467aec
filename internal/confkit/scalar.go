package confkit

import (
	"fmt"

	"gopkg.in/yaml.v3"
)

// ParseScalar parses a YAML scalar node with parse; want describes the expected value for any
// other node ("a rate such as 20/s"). Its errors are *yaml.TypeError naming the node's line
// (not plain errors), which let yaml.v3 go on decoding and report every bad value of the file
// at once.
func ParseScalar[T any](n *yaml.Node, want string, parse func(string) (T, error)) (T, error) {
	var zero T
	if n.Kind != yaml.ScalarNode {
		return zero, &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want %s", n.Line, want)}}
	}
	v, err := parse(n.Value)
	if err != nil {
		return zero, &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	return v, nil
}

// UnmarshalScalar is the body of an UnmarshalYAML method of a value written as one scalar:
// ParseScalar into *dst, which a failure leaves as it was.
func UnmarshalScalar[T any](n *yaml.Node, want string, parse func(string) (T, error), dst *T) error {
	v, err := ParseScalar(n, want, parse)
	if err != nil {
		return err
	}
	*dst = v
	return nil
}
