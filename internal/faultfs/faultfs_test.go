package faultfs

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/edged-dev/edged/internal/testutil"
)

// requireFUSE skips outside CI when FUSE mounts cannot be made here, and fails under CI.
func requireFUSE(t *testing.T) {
	t.Helper()
	if err := Supported(); err != nil {
		if testutil.InCI() {
			t.Fatalf("%v: CI must provide /dev/fuse and root (see .ci/run)", err)
		}
		t.Skipf("%v; skipping outside CI", err)
	}
}

type rig struct {
	t       *testing.T
	backing string
	mnt     string
	fs      *FS
	opts    Options
}

func newRig(t *testing.T, o Options) *rig {
	t.Helper()
	requireFUSE(t)
	dir := t.TempDir()
	r := &rig{t: t, backing: filepath.Join(dir, "disk"), mnt: filepath.Join(dir, "mnt"), opts: o}
	for _, d := range []string{r.backing, r.mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r.mount()
	t.Cleanup(func() {
		if r.fs != nil {
			_, _ = r.fs.Cut()
		}
		Unmount(r.mnt)
	})
	return r
}

func (r *rig) mount() {
	r.t.Helper()
	f, err := Mount(r.backing, r.mnt, r.opts)
	if err != nil {
		r.t.Fatal(err)
	}
	r.fs = f
}

// cut throws away what is not durable and mounts again.
func (r *rig) cut() Stats {
	r.t.Helper()
	st, err := r.fs.Cut()
	r.fs = nil
	if err != nil {
		r.t.Fatal(err)
	}
	r.mount()
	return st
}

func (r *rig) path(name string) string { return filepath.Join(r.mnt, name) }

func (r *rig) syncDir(name string) {
	r.t.Helper()
	d, err := os.Open(r.path(name))
	if err != nil {
		r.t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		r.t.Fatalf("fsync dir %s: %v", name, err)
	}
}

func (r *rig) write(name string, data []byte, sync bool) {
	r.t.Helper()
	f, err := os.OpenFile(r.path(name), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	if _, err := f.WriteAt(data, st.Size()); err != nil {
		r.t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			r.t.Fatal(err)
		}
	}
}

func (r *rig) read(name string) (string, bool) {
	r.t.Helper()
	b, err := os.ReadFile(r.path(name))
	if os.IsNotExist(err) {
		return "", false
	}
	if err != nil {
		r.t.Fatal(err)
	}
	return string(b), true
}

// wantLive checks what the mount shows (the backing directory may hold less).
func (r *rig) wantLive(name, content string) {
	r.t.Helper()
	if got, ok := r.read(name); !ok || got != content {
		r.t.Fatalf("%s: %q (present %v), want %q", name, got, ok, content)
	}
}

// want checks the mount and the backing directory: after a cut both hold the durable state.
func (r *rig) want(name, content string) {
	r.t.Helper()
	got, ok := r.read(name)
	if !ok {
		r.t.Fatalf("%s: missing, want %q", name, content)
	}
	if got != content {
		r.t.Fatalf("%s: %q, want %q", name, got, content)
	}
	// The backing directory holds the same, outside the mount.
	b, err := os.ReadFile(filepath.Join(r.backing, name))
	if err != nil || string(b) != content {
		r.t.Fatalf("backing %s: %q %v, want %q", name, b, err, content)
	}
}

func (r *rig) wantGone(name string) {
	r.t.Helper()
	if got, ok := r.read(name); ok {
		r.t.Fatalf("%s: present (%q), want gone", name, got)
	}
	if _, err := os.Lstat(filepath.Join(r.backing, name)); !os.IsNotExist(err) {
		r.t.Fatalf("backing %s: %v, want gone", name, err)
	}
}

func TestUnsyncedWriteIsLost(t *testing.T) {
	r := newRig(t, Options{})
	r.write("f", nil, true)
	r.syncDir(".")
	r.write("f", []byte("hello"), false)
	r.wantLive("f", "hello") // what processes see before the cut
	st := r.cut()
	if st.DiscardedBytes != 5 || st.DiscardedFiles != 1 {
		t.Fatalf("cut stats %+v, want 5 bytes of 1 file discarded", st)
	}
	r.want("f", "")
}

func TestFsyncKeepsData(t *testing.T) {
	r := newRig(t, Options{})
	r.write("f", []byte("durable"), true)
	r.syncDir(".")
	r.write("f", []byte("+pending"), false)
	r.wantLive("f", "durable+pending")
	r.cut()
	r.want("f", "durable")
	// and the file system goes on after the remount
	r.write("f", []byte("+more"), true)
	r.cut()
	r.want("f", "durable+more")
}

func TestCreateWithoutDirFsyncIsLost(t *testing.T) {
	r := newRig(t, Options{StrictNames: true})
	r.write("f", []byte("synced data, unsynced name"), true)
	if err := os.Mkdir(r.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	r.cut()
	r.wantGone("f")
	r.wantGone("d")
}

// A name made durable before its data was synced comes back empty: badger's "created, sized
// with ftruncate, directory synced, file not" case.
func TestDirFsyncWithoutFileFsyncKeepsEmptyFile(t *testing.T) {
	r := newRig(t, Options{})
	f, err := os.Create(r.path("wal"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r.syncDir(".")
	r.cut()
	r.want("wal", "")
}

func TestRenameIsDurableOnlyAfterDirFsync(t *testing.T) {
	r := newRig(t, Options{StrictNames: true})
	r.write("a", []byte("A"), true)
	r.syncDir(".")
	if err := os.Rename(r.path("a"), r.path("b")); err != nil {
		t.Fatal(err)
	}
	r.cut()
	r.want("a", "A")
	r.wantGone("b")

	// rename over an existing name (the MANIFEST pattern), then the dir fsync
	r.write("new", []byte("NEW"), true)
	if err := os.Rename(r.path("new"), r.path("a")); err != nil {
		t.Fatal(err)
	}
	r.syncDir(".")
	r.cut()
	r.want("a", "NEW")
	r.wantGone("new")
}

// By default (the journal model) any fsync commits every pending name, and only names.
func TestAnyFsyncCommitsNames(t *testing.T) {
	r := newRig(t, Options{})
	r.write("a", []byte("A"), true)
	r.write("unsynced", []byte("U"), false)
	if err := os.Mkdir(r.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	r.write("d/f", []byte("F"), false)
	r.cut()
	r.want("a", "A") // its own fsync committed its name
	r.wantGone("unsynced")
	r.wantGone("d")

	r.write("b", []byte("B"), false)
	if err := os.Rename(r.path("a"), r.path("c")); err != nil {
		t.Fatal(err)
	}
	r.cut() // no fsync at all: nothing changed
	r.want("a", "A")
	r.wantGone("b")

	r.write("b", []byte("B"), false)
	if err := os.Mkdir(r.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	r.write("d/f", []byte("F"), false)
	if err := os.Rename(r.path("a"), r.path("c")); err != nil {
		t.Fatal(err)
	}
	r.write("other", []byte("O"), true) // a journal commit
	r.cut()
	r.want("b", "")   // name durable, data not
	r.want("d/f", "") // in a new directory too
	r.want("c", "A")
	r.wantGone("a")
}

func TestUnlinkIsDurableOnlyAfterDirFsync(t *testing.T) {
	r := newRig(t, Options{})
	r.write("a", []byte("A"), true)
	r.syncDir(".")
	if err := os.Remove(r.path("a")); err != nil {
		t.Fatal(err)
	}
	r.cut()
	r.want("a", "A")
	if err := os.Remove(r.path("a")); err != nil {
		t.Fatal(err)
	}
	r.syncDir(".")
	r.cut()
	r.wantGone("a")
}

// unlink removes files only and rmdir empty directories only, each with the errno of a real
// file system for the other kind.
func TestUnlinkAndRmdirErrors(t *testing.T) {
	r := newRig(t, Options{})
	if err := os.Mkdir(r.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	r.write("d/f", []byte("F"), false)
	r.write("g", []byte("G"), false)
	for _, c := range []struct {
		op   string
		name string
		want error
	}{
		{"unlink", "d", unix.EISDIR},
		{"rmdir", "g", unix.ENOTDIR},
		{"rmdir", "d", unix.ENOTEMPTY},
		{"unlink", "nope", unix.ENOENT},
		{"rmdir", "nope", unix.ENOENT},
		{"unlink", "d/f", nil},
		{"rmdir", "d", nil},
		{"unlink", "g", nil},
	} {
		rm := unix.Unlink
		if c.op == "rmdir" {
			rm = unix.Rmdir
		}
		if err := rm(r.path(c.name)); !errors.Is(err, c.want) {
			t.Errorf("%s %s: %v, want %v", c.op, c.name, err, c.want)
		}
	}
	for _, name := range []string{"d", "g"} {
		if _, err := os.Lstat(r.path(name)); !os.IsNotExist(err) {
			t.Errorf("%s after removal: %v, want gone", name, err)
		}
	}
}

func TestTruncateIsPending(t *testing.T) {
	r := newRig(t, Options{})
	r.write("f", []byte("0123456789"), true)
	r.syncDir(".")
	if err := os.Truncate(r.path("f"), 3); err != nil {
		t.Fatal(err)
	}
	r.write("f", []byte("x"), false)
	r.wantLive("f", "012x")
	r.cut()
	r.want("f", "0123456789")
	if err := os.Truncate(r.path("f"), 3); err != nil {
		t.Fatal(err)
	}
	r.write("f", []byte("y"), true)
	r.cut()
	r.want("f", "012y")
}

func TestSubdirectoryNeedsBothFsyncs(t *testing.T) {
	r := newRig(t, Options{StrictNames: true})
	if err := os.Mkdir(r.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	r.write("d/f", []byte("F"), true)
	r.syncDir(".") // d is durable, its entry f is not
	r.cut()
	r.wantGone("d/f")
	if fi, err := os.Stat(filepath.Join(r.backing, "d")); err != nil || !fi.IsDir() {
		t.Fatalf("d after the cut: %v", err)
	}
	r.write("d/f", []byte("F"), true)
	r.syncDir("d")
	r.cut()
	r.want("d/f", "F")
}

// TestMmapMsync measures what reaches the file system from a shared mapping: stores into
// mapped pages arrive only at write-back, msync(MS_SYNC) sends them and then FUSE_FSYNC, and
// stores that were never msync'd are lost at the cut even after munmap and close. The mapping
// is used by a child process: a page fault on a FUSE file served by the faulting process
// itself can deadlock the Go runtime (the faulting thread cannot be stopped for GC while the
// server goroutines are).
func TestMmapMsync(t *testing.T) {
	r := newRig(t, Options{})
	const size = 64 << 10
	f, err := os.Create(r.path("m"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r.syncDir(".")
	before := r.fs.Stats()
	cmd := exec.Command(os.Args[0], "-test.run=^TestMmapChild$")
	cmd.Env = append(os.Environ(), "FAULTFS_MMAP_FILE="+r.path("m"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mmap child: %v\n%s", err, out)
	}
	after := r.fs.Stats()
	t.Logf("a shared mapping written, msync'd once, written again, unmapped, closed: %d write requests (%d bytes), %d fsyncs",
		after.Writes-before.Writes, after.WriteBytes-before.WriteBytes, after.Fsyncs-before.Fsyncs)
	if after.Fsyncs != before.Fsyncs+1 || after.Writes == before.Writes {
		t.Fatalf("want the msync as >=1 write and exactly 1 fsync")
	}
	r.cut()
	got, _ := os.ReadFile(filepath.Join(r.backing, "m"))
	if len(got) != size {
		t.Fatalf("size %d, want %d", len(got), size)
	}
	if string(got[0:6]) != "synced" || string(got[40000:40010]) != "synced too" {
		t.Fatalf("msync'd bytes lost: %q %q", got[0:6], got[40000:40010])
	}
	if !bytes.Equal(got[8192:8204], make([]byte, 12)) {
		t.Fatalf("bytes stored after the last msync survived the cut: %q", got[8192:8204])
	}
}

// TestMmapChild is TestMmapMsync's child process; it does nothing when run on its own.
func TestMmapChild(t *testing.T) {
	path := os.Getenv("FAULTFS_MMAP_FILE")
	if path == "" {
		t.Skip("child process of TestMmapMsync")
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap on faultfs: %v", err)
	}
	copy(m[0:], "synced")
	copy(m[40000:], "synced too")
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		t.Fatal(err)
	}
	copy(m[8192:], "never synced")
	if err := unix.Munmap(m); err != nil {
		t.Fatal(err)
	}
}

// DropFsync is the negative control's switch: with it, fsync reports success and keeps
// nothing.
func TestDropFsyncLosesData(t *testing.T) {
	r := newRig(t, Options{DropFsync: func(name string) bool { return name == "lost" }})
	r.write("kept", []byte("K"), true)
	r.write("lost", []byte("L"), true)
	r.syncDir(".")
	st := r.cut()
	if st.DroppedFsyncs != 1 {
		t.Fatalf("dropped fsyncs %d, want 1", st.DroppedFsyncs)
	}
	r.want("kept", "K")
	r.want("lost", "")
}

// TestRandomOpsMatchModel drives random writes, truncates and fsyncs through the mount and
// checks the live view and the state after each cut against a plain in-memory model.
func TestRandomOpsMatchModel(t *testing.T) {
	r := newRig(t, Options{})
	rng := rand.New(rand.NewPCG(1, 2))
	r.write("f", nil, true)
	r.syncDir(".")
	var live, durable []byte
	for round := 0; round < 5; round++ {
		f, err := os.OpenFile(r.path("f"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 60; i++ {
			switch op := rng.IntN(10); {
			case op < 6:
				off := rng.IntN(len(live) + 5000)
				b := make([]byte, 1+rng.IntN(3000))
				for k := range b {
					b[k] = byte(rng.Uint32())
				}
				if _, err := f.WriteAt(b, int64(off)); err != nil {
					t.Fatal(err)
				}
				if off+len(b) > len(live) {
					live = append(live, make([]byte, off+len(b)-len(live))...)
				}
				copy(live[off:], b)
			case op < 8:
				n := rng.IntN(len(live) + 3000)
				if err := f.Truncate(int64(n)); err != nil {
					t.Fatal(err)
				}
				if n < len(live) {
					live = live[:n]
				} else {
					live = append(live, make([]byte, n-len(live))...)
				}
			default:
				if err := f.Sync(); err != nil {
					t.Fatal(err)
				}
				durable = append([]byte(nil), live...)
			}
			got, err := os.ReadFile(r.path("f"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, live) {
				t.Fatalf("round %d op %d: live view differs from the model (%d vs %d bytes)", round, i, len(got), len(live))
			}
		}
		f.Close()
		r.cut()
		got, err := os.ReadFile(r.path("f"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, durable) {
			t.Fatalf("round %d: after the cut %d bytes, want the %d durable bytes", round, len(got), len(durable))
		}
		live = append([]byte(nil), durable...)
	}
}

func TestRanges(t *testing.T) {
	var r ranges
	r = r.add(10, 20)
	r = r.add(30, 40)
	r = r.add(20, 25) // adjacent: merges
	r = r.add(0, 5)
	if want := (ranges{{0, 5}, {10, 25}, {30, 40}}); !equalRanges(r, want) {
		t.Fatalf("%v, want %v", r, want)
	}
	r = r.add(3, 35)
	if want := (ranges{{0, 40}}); !equalRanges(r, want) {
		t.Fatalf("%v, want %v", r, want)
	}
	r = r.add(50, 60).clip(55)
	if want := (ranges{{0, 40}, {50, 55}}); !equalRanges(r, want) || r.bytes() != 45 {
		t.Fatalf("%v, want %v", r, want)
	}
}

func equalRanges(a, b ranges) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
