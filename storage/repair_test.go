package storage

import (
	"fmt"
	"github.com/edged-dev/edged/internal/testutil"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// TestRepairBeforeQuarantine: the files a power cut leaves behind right after a start or a
// rotation (created by badger, never synced) are repaired at Open: every record is still
// there, the repair is counted, and the store is not moved aside.
func TestRepairBeforeQuarantine(t *testing.T) {
	shapes := []struct {
		name, kind string
		damage     func(t *testing.T, dir string)
	}{
		{"next WAL 0 bytes", repairEmptyWAL, func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, memName(maxFidIn(dir, memExt)+1)), nil, 0o644))
		}},
		{"next WAL shorter than its header", repairEmptyWAL, func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, memName(maxFidIn(dir, memExt)+1)), make([]byte, 7), 0o644))
		}},
		{"trailing value log 0 bytes", repairEmptyVlog, func(t *testing.T, dir string) {
			must(t, os.Truncate(filepath.Join(dir, vlogName(maxFidIn(dir, vlogExt))), 0))
		}},
		{"trailing value log shorter than its header", repairEmptyVlog, func(t *testing.T, dir string) {
			must(t, os.Truncate(filepath.Join(dir, vlogName(maxFidIn(dir, vlogExt))), 11))
		}},
		{"new value log 0 bytes after the last one", repairEmptyVlog, func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, vlogName(maxFidIn(dir, vlogExt)+1)), nil, 0o644))
		}},
	}
	for _, sh := range shapes {
		t.Run(sh.name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "data")
			db := openT(t, dir)
			ob := outboxT(t, db, "r", Config{})
			appendBatch(t, ob, 0, 3000, 200, 100)
			must(t, ob.Ack(1000)) // messages 0..999 (seqs 1..1000) acked: 2000 queued, the head moved
			// A second run, so the store has more than one value log and WAL generation.
			must(t, db.Close())
			db = openT(t, dir)
			ob = outboxT(t, db, "r", Config{})
			appendBatch(t, ob, 3000, 1000, 200, 100)
			must(t, db.Close())

			sh.damage(t, dir)
			reg := prometheus.NewRegistry()
			db = openT(t, dir, func(o *Options) { o.Registerer = reg })
			if s := db.Stats(); s.CorruptRecoveries != 0 {
				t.Fatalf("store moved aside to %s instead of repaired", s.MovedAside)
			}
			ob = outboxT(t, db, "r", Config{})
			nums, _ := readAll(t, ob)
			if len(nums) != 3000 || nums[0] != 1000 || nums[len(nums)-1] != 3999 {
				t.Fatalf("after repair: %d records", len(nums))
			}
			for i, n := range nums {
				if n != 1000+i {
					t.Fatalf("record %d is message %d", i, n)
				}
			}
			if v := metricValue(t, reg, "edged_storage_repairs_total", map[string]string{"kind": sh.kind}); v != 1 {
				t.Fatalf("repairs metric %v", v)
			}
			if r := db.Stats().Space.Repairs[sh.kind]; r != 1 {
				t.Fatalf("stats repairs %v", db.Stats().Space.Repairs)
			}
			if m, _ := filepath.Glob(dir + ".corrupt-*"); len(m) != 0 {
				t.Fatalf("moved aside: %v", m)
			}
			// Still a working store.
			appendN(t, ob, 4000, 1, 10)
		})
	}
}

// TestPreparedWALIsNotARepair: after Open the store holds a prepared next WAL (0 bytes,
// blocks allocated), and a clean Close removes it again; a restart after a crash removes it
// without counting a repair.
func TestPreparedWALIsNotARepair(t *testing.T) {
	dir := t.TempDir()
	db := openT(t, dir)
	ob := outboxT(t, db, "p", Config{})
	appendN(t, ob, 0, 10, 10)
	next := filepath.Join(dir, memName(maxFidIn(dir, memExt)))
	fi, err := os.Stat(next)
	must(t, err)
	if fi.Size() != 0 {
		t.Fatalf("prepared WAL %s is %d bytes", next, fi.Size())
	}
	must(t, db.Close())
	if _, err := os.Stat(next); !os.IsNotExist(err) {
		t.Fatalf("Close left the prepared WAL: %v", err)
	}
	// A crash leaves it behind: put one back as the guard makes it.
	f, err := os.Create(next)
	must(t, err)
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, 1<<20); err != nil {
		if testutil.InCI() {
			t.Fatalf("no fallocate on %s: %v", dir, err)
		}
		t.Skipf("no fallocate on %s: %v (skipping outside CI)", dir, err)
	}
	f.Close()
	reg := prometheus.NewRegistry()
	db = openT(t, dir, func(o *Options) { o.Registerer = reg })
	if r := db.Stats().Space.Repairs; len(r) != 0 {
		t.Fatalf("a prepared WAL counted as a repair: %v", r)
	}
	ob = outboxT(t, db, "p", Config{})
	if n, _ := readAll(t, ob); len(n) != 10 {
		t.Fatalf("%d records", len(n))
	}
}

func maxFidIn(dir, ext string) int {
	ents, _ := os.ReadDir(dir)
	m := 0
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ext); ok {
			var fid int
			if _, err := fmt.Sscanf(n, "%d", &fid); err == nil && fid > m {
				m = fid
			}
		}
	}
	return m
}
