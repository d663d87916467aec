package hardware

import (
	"slices"
	"testing"
	"time"

	"github.com/edged-dev/edged/hardware/hwkit"
)

// Reload keeps an unchanged port open (no reopen, frames keep flowing), reopens a changed one
// with its new settings, closes a removed one and opens an added one.
func TestReloadPorts(t *testing.T) {
	a, b, c := newDevice(t), newDevice(t), newDevice(t)
	local := newFakeLocal()
	fast := Backoff{Min: 5 * time.Millisecond, Max: 50 * time.Millisecond}
	pa := SerialConfig{Name: "a", Line: hwkit.Line{Port: a.path()}, Topic: "s/a", Away: hwkit.Away{Reopen: fast}}
	pb := SerialConfig{Name: "b", Line: hwkit.Line{Port: b.path()}, Topic: "s/b", Away: hwkit.Away{Reopen: fast}}
	r := startManager(t, local, pa, pb)
	r.waitOpen(t, "a", "b")
	a.write(t, []byte("one\n"))
	expectPayloads(t, local, "s/a", "one")
	sinceA := r.status("a").Since

	pb2 := pb
	pb2.Topic = "s/b2"
	pc := SerialConfig{Name: "c", Line: hwkit.Line{Port: c.path()}, Topic: "s/c", Away: hwkit.Away{Reopen: fast}}
	res, err := r.m.Reload(Config{Serial: []SerialConfig{pa, pb2, pc}})
	if err != nil || !slices.Equal(res.Changed, []string{"b"}) || !slices.Equal(res.Added, []string{"c"}) || len(res.Removed) != 0 {
		t.Fatalf("reload: %+v, %v", res, err)
	}
	r.waitOpen(t, "b", "c")
	if st := r.status("a"); st.State != StateOpen || !st.Since.Equal(sinceA) || st.Reopens != 0 {
		t.Fatalf("unchanged port disturbed: %+v", st)
	}
	a.write(t, []byte("two\n"))
	b.write(t, []byte("bee\n"))
	c.write(t, []byte("sea\n"))
	expectPayloads(t, local, "s/a", "one", "two")
	expectPayloads(t, local, "s/b2", "bee")
	expectPayloads(t, local, "s/c", "sea")

	res, err = r.m.Reload(Config{Serial: []SerialConfig{pa}})
	if err != nil || !slices.Equal(res.Removed, []string{"b", "c"}) {
		t.Fatalf("reload removing: %+v, %v", res, err)
	}
	if names := len(r.m.Status()); names != 1 {
		t.Fatalf("status lists %d ports after removal, want 1", names)
	}
	a.write(t, []byte("three\n"))
	expectPayloads(t, local, "s/a", "one", "two", "three")
	r.stop()
}
