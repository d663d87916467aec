package storage

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestLockedDirIsNotMovedAside(t *testing.T) {
	dir := t.TempDir()
	db := openT(t, dir)
	ob := outboxT(t, db, "x", Config{})
	appendN(t, ob, 0, 3, 10)
	_, err := Open(Options{Dir: dir})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v", err)
	}
	if !strings.Contains(err.Error(), "process "+itoa(os.Getpid())) {
		t.Errorf("message does not name the holder: %v", err)
	}
	if m, _ := filepath.Glob(dir + ".corrupt-*"); len(m) != 0 {
		t.Fatalf("locked dir moved aside: %v", m)
	}
	// The offline commands' open (NoRecover) refuses too.
	if _, err := Open(Options{Dir: dir, NoRecover: true}); !errors.Is(err, ErrLocked) {
		t.Fatalf("NoRecover open of a live dir: %v", err)
	}
	must(t, db.Close())
	db = openT(t, dir)
	o2 := outboxT(t, db, "x", Config{})
	if o2.Stats().Depth != 3 {
		t.Fatal("data lost")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestCorruptStoreMovedAside(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "data")
	db := openT(t, dir)
	ob := outboxT(t, db, "x", Config{})
	appendN(t, ob, 0, 100, 10)
	must(t, db.Close())
	must(t, os.WriteFile(filepath.Join(dir, "MANIFEST"), bytes.Repeat([]byte{0xde, 0xad}, 100), 0o644))

	// The offline commands (NoRecover) must not repair behind the operator's back.
	if _, err := Open(Options{Dir: dir, NoRecover: true}); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("NoRecover open of a corrupt store: %v", err)
	}
	if m, _ := filepath.Glob(dir + ".corrupt-*"); len(m) != 0 {
		t.Fatalf("NoRecover moved the store aside: %v", m)
	}

	reg := prometheus.NewRegistry()
	db, err := Open(Options{Dir: dir, Logger: testLogger(t), Registerer: reg})
	if err != nil {
		t.Fatalf("open corrupt: %v", err)
	}
	defer db.Close()
	s := db.Stats()
	if s.CorruptRecoveries != 1 || !strings.HasPrefix(s.MovedAside, dir+".corrupt-") {
		t.Fatalf("stats %+v", s)
	}
	if _, err := os.Stat(filepath.Join(s.MovedAside, "MANIFEST")); err != nil {
		t.Fatalf("old store not kept: %v", err)
	}
	if n := metricValue(t, reg, "edged_storage_corrupt_recoveries_total", nil); n != 1 {
		t.Fatalf("metric %v", n)
	}
	ob = outboxT(t, db, "x", Config{})
	appendN(t, ob, 0, 1, 10)
	if d := ob.Stats().Depth; d != 101 { // the 100 salvaged (salvage_test.go) and the new one
		t.Fatalf("fresh store not usable: depth %d", d)
	}
}

func TestUnwritableDirIsNotCorruption(t *testing.T) {
	if os.Getuid() == 0 {
		t.Skip("root ignores permissions")
	}
	dir := t.TempDir()
	must(t, os.Chmod(dir, 0o500))
	defer os.Chmod(dir, 0o700)
	if _, err := Open(Options{Dir: dir}); err == nil {
		t.Fatal("opened an unwritable dir")
	}
	if m, _ := filepath.Glob(dir + ".corrupt-*"); len(m) != 0 {
		t.Fatalf("moved aside: %v", m)
	}
}

func TestPing(t *testing.T) {
	db := openT(t, t.TempDir())
	before := db.Stats()
	for range 3 {
		must(t, db.Ping(context.Background()))
	}
	if after := db.Stats(); after.Commits != before.Commits {
		t.Fatalf("Ping committed: %d -> %d commits", before.Commits, after.Commits)
	}
	must(t, db.Close())
	if err := db.Ping(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ping after Close: %v, want ErrClosed", err)
	}
}
