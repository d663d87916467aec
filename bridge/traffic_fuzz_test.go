package bridge

import (
	"math"
	"testing"
)

// FuzzTrafficRates: the rate parsers take config text; they never panic, never return a
// negative, NaN or infinite rate, and a rate they accept reads back from its own YAML form.
func FuzzTrafficRates(f *testing.F) {
	for _, s := range []string{"32KiB/s", "1MB/s", "600KiB/min", "20/s", "1200/min", "1/h", "0/s", "1.5/s", "/s", "32KiB", "-1/s", "1e308/s", "NaN/s", "Inf/s", "1/ms"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if r, err := ParseByteRate(s); err == nil {
			if r < 0 || math.IsNaN(float64(r)) || math.IsInf(float64(r), 0) {
				t.Fatalf("ParseByteRate(%q) = %v", s, r)
			}
		}
		if r, err := ParseRequestRate(s); err == nil {
			if r < 0 || math.IsNaN(float64(r)) || math.IsInf(float64(r), 0) {
				t.Fatalf("ParseRequestRate(%q) = %v", s, r)
			}
			back, _ := r.MarshalYAML()
			r2, err := ParseRequestRate(back.(string))
			if err != nil || math.Abs(float64(r2-r)) > 1e-9*math.Max(1, float64(r)) {
				t.Fatalf("ParseRequestRate(%q) = %v, its YAML %q reads back as %v, %v", s, r, back, r2, err)
			}
		}
		if p, err := parsePriority(s); err == nil && (p < 0 || p > 9) {
			t.Fatalf("parsePriority(%q) = %d", s, p)
		}
	})
}
