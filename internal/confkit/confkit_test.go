package confkit

import (
	"errors"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestParseByteSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want ByteSize
		bad  bool
	}{
		{"4096", 4096, false}, {"64MiB", 64 << 20, false}, {"1GiB", 1 << 30, false},
		{"2 MB", 2000000, false}, {"10KB", 10000, false}, {"100B", 100, false},
		{"-1", 0, true}, {"lots", 0, true}, {"1XB", 0, true},
	} {
		got, err := ParseByteSize(c.in)
		if (err != nil) != c.bad || got != c.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d, bad=%v", c.in, got, err, c.want, c.bad)
		}
	}
	var s struct {
		M ByteSize `yaml:"m"`
	}
	if err := yaml.Unmarshal([]byte("m: 16MiB"), &s); err != nil || s.M != 16<<20 {
		t.Fatalf("yaml: %v %d", err, s.M)
	}
	if s.M.String() != "16MiB" {
		t.Fatalf("String = %s", s.M)
	}
}

func TestPrefix(t *testing.T) {
	err := Prefix("broker", errors.Join(Errorf("listeners[0].address", "bad"), Errorf("[2]", "x"), errors.New("plain")))
	got := Flatten(err)
	want := []string{"broker.listeners[0].address: bad", "broker[2]: x", "broker: plain"}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i].Error() != want[i] {
			t.Errorf("%d: %q want %q", i, got[i], want[i])
		}
	}
}

func TestParseDuration(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
	}{
		{"7d", 7 * 24 * time.Hour}, {"2w", 14 * 24 * time.Hour}, {"1d12h", 36 * time.Hour},
		{"1.5d", 36 * time.Hour}, {"1w2d3h4m5s6ms", (9*24+3)*time.Hour + 4*time.Minute + 5*time.Second + 6*time.Millisecond},
		{"-1d", -24 * time.Hour}, {"168h", 168 * time.Hour}, {"50ms", 50 * time.Millisecond}, {"0", 0}, {" 30s ", 30 * time.Second},
	} {
		got, err := ParseDuration(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "7", "d", "7x", "1d-2h", "7dd", "1..5d", "99999999999w", "-", "1 d"} {
		if d, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, d)
		}
	}
}

func TestDurationYAML(t *testing.T) {
	var v struct {
		TTL Duration `yaml:"ttl"`
	}
	if err := yaml.Unmarshal([]byte("ttl: 7d\n"), &v); err != nil || time.Duration(v.TTL) != 168*time.Hour {
		t.Fatalf("%v %v", v.TTL, err)
	}
	err := yaml.Unmarshal([]byte("ttl: 7 days\n"), &v)
	if err == nil || !strings.Contains(err.Error(), "line 1: invalid duration \"7 days\"") {
		t.Fatalf("error %v", err)
	}
	out, _ := yaml.Marshal(v)
	if strings.TrimSpace(string(out)) != "ttl: 168h0m0s" {
		t.Fatalf("marshal: %s", out)
	}
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"7d", "2w", "1d12h", "1.5d", "-1d", "500ms", "0", "7dd", "1e9w"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			return
		}
		// Whatever parses must round-trip through the Go form the loader rewrites it to.
		back, err := time.ParseDuration(d.String())
		if err != nil || back != d {
			t.Fatalf("%q -> %v -> %v, %v", s, d, back, err)
		}
	})
}
