// Package confkit holds the small vocabulary every config section shares: byte sizes and
// key-located validation errors, defaults, retry delay ranges. It is a leaf: it imports nothing of edged, so broker, storage,
// bridge and hardware can all describe their own config problems without knowing about the YAML
// loader (internal/config), which turns a key path into FILE:LINE.
package confkit

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// KeyError is a config problem at a key path such as "broker.listeners[1].address". Validate
// methods return keys relative to their section; the loader prefixes the section and finds the
// line.
type KeyError struct {
	Key string
	Msg string
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Msg }

// Errorf builds a KeyError.
func Errorf(key, format string, args ...any) error {
	return &KeyError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Prefix re-roots every KeyError inside err (a single error or an errors.Join tree) under
// prefix, so a section can validate its children and hand their problems up unchanged.
func Prefix(prefix string, err error) error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range Flatten(err) {
		var ke *KeyError
		if errors.As(e, &ke) {
			k := ke.Key
			switch {
			case k == "":
				k = prefix
			case strings.HasPrefix(k, "["):
				k = prefix + k
			default:
				k = prefix + "." + k
			}
			out = append(out, &KeyError{Key: k, Msg: ke.Msg})
			continue
		}
		out = append(out, &KeyError{Key: prefix, Msg: e.Error()})
	}
	return errors.Join(out...)
}

// Flatten unpacks an errors.Join tree into its leaves.
func Flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, Flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// ByteSize is a size in bytes written in YAML as a plain integer or with a unit: "512KiB",
// "64MB", "1GiB". Binary (KiB, MiB, GiB, TiB) and decimal (kB/KB, MB, GB, TB) units are both
// accepted because users copy values from both worlds; the bare suffix "B" means bytes.
type ByteSize int64

var units = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"kB", 1000}, {"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"TB", 1000 * 1000 * 1000 * 1000},
	{"B", 1},
}

// ParseByteSize parses "1GiB", "200 MB", "4096".
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			mult = u.mult
			t = strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n < 0 || math.IsNaN(n) || math.IsInf(n, 0) {
		return 0, fmt.Errorf("invalid size %q (want e.g. 4096, 64MiB, 1GiB)", s)
	}
	v := n * float64(mult)
	if v > float64(1<<62) {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return ByteSize(v), nil
}

// UnmarshalYAML accepts an integer or a string with a unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	return UnmarshalScalar(n, "a size such as 64MiB", ParseByteSize, b)
}

// MarshalYAML writes the size back in the most readable exact binary unit.
func (b ByteSize) MarshalYAML() (any, error) { return b.String(), nil }

func (b ByteSize) String() string {
	for _, u := range []struct {
		s string
		m int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if int64(b) >= u.m && int64(b)%u.m == 0 {
			return strconv.FormatInt(int64(b)/u.m, 10) + u.s
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// Default sets *v to d when *v is the zero value (the key was left out).
func Default[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

// DefaultPtr points a nil *p at d: for keys whose zero is a setting of its own
// (`command_queue: 0`), so only an absent key gets the default.
func DefaultPtr[T any](p **T, d T) {
	if *p == nil {
		*p = &d
	}
}

// Backoff is a retry delay range: the first delay after a failure is Min, doubling to Max
// (with the equal jitter of internal/backoff where it is used). The same keys, min and max,
// wherever edged retries: connectors' backoff, serial ports' and Modbus buses' reopen, Modbus
// units' offline_backoff.
type Backoff struct {
	// Min is the first delay after a failure.
	Min time.Duration `yaml:"min"`
	// Max caps the delay.
	Max time.Duration `yaml:"max"`
}

// ApplyDefaults completes a range decoded without defaults, for sections that set them after
// decoding: a zero Min becomes lo, a zero Max hi, each moved so that a key written alone never
// makes the pair invalid (see complete). Such a section cannot tell a written 0 from a key left
// out; one that must (bridge connectors) sets the defaults before decoding and gets the same
// rule from UnmarshalYAML.
func (b *Backoff) ApplyDefaults(lo, hi time.Duration) {
	b.complete(b.Min != 0, b.Max != 0, lo, hi)
}

// complete sets the keys not written from the defaults lo and hi, moved where the other key was
// written so that the pair stays ordered: max defaults to max(hi, min) and min to min(lo, max).
// Raising only min raises the cap with it; lowering only max lowers the first delay. A written
// max <= 0 leaves min at lo, so that Validate refuses the max the user wrote rather than a min
// derived from it.
func (b *Backoff) complete(minSet, maxSet bool, lo, hi time.Duration) {
	if !minSet {
		b.Min = lo
		if maxSet && b.Max > 0 {
			b.Min = min(lo, b.Max)
		}
	}
	if !maxSet {
		b.Max = max(hi, b.Min)
	}
}

// UnmarshalYAML decodes min and max over the values already in b. Where those are defaults set
// before decoding, a key written alone moves the other's default by ApplyDefaults' rule (here it
// is still known which keys were written, so a written 0 stays 0 for Validate to refuse, and
// `{min: 10s, max: 5s}` is left as written, to be refused). A b still zero holds no defaults:
// its section applies ApplyDefaults after decoding. Durations take days and weeks ("1d") as every
// config duration does. Unknown keys are the loader's to report, at their own key path (see
// PlainFields); like any nested decode, this one ignores them.
func (b *Backoff) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		got := strconv.Quote(n.Value)
		if n.Kind == yaml.SequenceNode {
			got = "a list"
		}
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want a mapping with min and max, got %s", n.Line, got)}}
	}
	minSet, maxSet := writtenKeys(n)
	lo, hi := b.Min, b.Max
	w := struct {
		Min Duration `yaml:"min"`
		Max Duration `yaml:"max"`
	}{Duration(b.Min), Duration(b.Max)}
	// A bad value is a *yaml.TypeError: the decoder goes on and the loader reports it located.
	err := n.Decode(&w)
	b.Min, b.Max = time.Duration(w.Min), time.Duration(w.Max)
	if lo != 0 || hi != 0 {
		b.complete(minSet, maxSet, lo, hi)
	}
	return err
}

// writtenKeys reports which of min and max the mapping n gives a value, as the decoder sees it:
// through aliases and merged mappings (`<<: *base`). A key with no value (`min:`) is not
// written: the decoder leaves the field as it was, so it keeps its default. Each node is looked
// at once, so a merge that contains itself or an alias bomb costs no more than the document.
func writtenKeys(n *yaml.Node) (minSet, maxSet bool) {
	seen := map[*yaml.Node]bool{}
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		n = unalias(n)
		if n == nil || seen[n] {
			return
		}
		seen[n] = true
		switch n.Kind {
		case yaml.SequenceNode: // `<<: [*a, *b]`
			for _, c := range n.Content {
				walk(c)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], unalias(n.Content[i+1])
				if k.ShortTag() == "!!merge" {
					walk(v)
					continue
				}
				written := v != nil && v.ShortTag() != "!!null"
				switch k.Value {
				case "min":
					minSet = minSet || written
				case "max":
					maxSet = maxSet || written
				}
			}
		}
	}
	walk(n)
	return minSet, maxSet
}

// unalias follows an alias to the node it names.
func unalias(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 8; i++ {
		n = n.Alias
	}
	return n
}

// PlainFields is implemented by a config struct whose UnmarshalYAML decodes its fields as a
// plain struct's would and only watches which keys are written (Backoff). The config loader
// checks such a struct's keys and durations like a plain struct's, each problem at its own key
// path, where it leaves any other type with a decoder of its own alone.
type PlainFields interface{ plainFields() }

func (*Backoff) plainFields() {}

// Validate checks the range configured at key ("reopen"); the problems' keys are key.min and
// key.max.
func (b *Backoff) Validate(key string) error {
	var errs []error
	if b.Min <= 0 {
		errs = append(errs, Errorf(key+".min", "%v is not valid (must be > 0)", b.Min))
	}
	if b.Max < b.Min {
		errs = append(errs, Errorf(key+".max", "%v is less than %s.min %v", b.Max, key, b.Min))
	}
	return errors.Join(errs...)
}
