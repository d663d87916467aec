package confkit

import (
	"errors"
	"testing"

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
