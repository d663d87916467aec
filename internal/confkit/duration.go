package confkit

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ParseDuration parses a duration as time.ParseDuration does ("500ms", "1h30m", "-2s", "0")
// and also with days and weeks, which retention and session settings are naturally written in:
// "7d", "2w", "1d12h", "1.5d". A day is 24h and a week 168h (no calendar, no DST).
func ParseDuration(s string) (time.Duration, error) {
	orig := s
	s = strings.TrimSpace(s)
	if !strings.ContainsAny(s, "dw") {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("invalid duration %q (want e.g. 500ms, 30s, 1h30m, 7d, 2w)", orig)
		}
		return d, nil
	}
	neg := false
	if s != "" && (s[0] == '-' || s[0] == '+') {
		neg = s[0] == '-'
		s = s[1:]
	}
	if s == "" {
		return 0, fmt.Errorf("invalid duration %q (want e.g. 500ms, 30s, 1h30m, 7d, 2w)", orig)
	}
	var total float64
	for s != "" {
		i := 0
		for i < len(s) && (s[i] == '.' || (s[i] >= '0' && s[i] <= '9')) {
			i++
		}
		j := i
		for j < len(s) && !(s[j] == '.' || (s[j] >= '0' && s[j] <= '9')) {
			j++
		}
		num, unit := s[:i], s[i:j]
		s = s[j:]
		n, err := strconv.ParseFloat(num, 64)
		if num == "" || err != nil || unit == "" {
			return 0, fmt.Errorf("invalid duration %q (want e.g. 500ms, 30s, 1h30m, 7d, 2w)", orig)
		}
		var mult time.Duration
		switch unit {
		case "w":
			mult = 7 * 24 * time.Hour
		case "d":
			mult = 24 * time.Hour
		case "h":
			mult = time.Hour
		case "m":
			mult = time.Minute
		case "s":
			mult = time.Second
		case "ms":
			mult = time.Millisecond
		case "us", "µs", "μs":
			mult = time.Microsecond
		case "ns":
			mult = time.Nanosecond
		default:
			return 0, fmt.Errorf("invalid duration %q: unknown unit %q (want ns, us, ms, s, m, h, d, w)", orig, unit)
		}
		total += n * float64(mult)
		if total >= math.MaxInt64 {
			return 0, fmt.Errorf("duration %q is too long", orig)
		}
	}
	if neg {
		total = -total
	}
	return time.Duration(total), nil
}

// Duration is a time.Duration written in YAML as ParseDuration accepts ("30s", "7d", "2w").
// The config loader accepts the same forms for every time.Duration field of every section;
// this type gives the same to YAML decoded outside the loader.
type Duration time.Duration

// UnmarshalYAML accepts a duration string; a YAML type error keeps the decoder collecting
// every bad value of the file.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	return UnmarshalScalar(n, "a duration such as 30s or 7d", func(s string) (Duration, error) {
		v, err := ParseDuration(s)
		return Duration(v), err
	}, d)
}

// MarshalYAML writes the Go form ("168h0m0s"), which ParseDuration reads back.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

func (d Duration) String() string { return time.Duration(d).String() }
