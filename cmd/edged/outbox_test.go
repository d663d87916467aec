package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged-dev/edged/storage"
	"github.com/edged-dev/edged/wire"
)

// The dead-letter commands of `edged outbox` on a stopped gateway's data dir.
func TestOutboxCLI(t *testing.T) {
	dir := t.TempDir()
	db, err := storage.Open(storage.Options{Dir: dir, Registerer: prometheus.NewRegistry(), MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	ob, err := db.Outbox("cloud", storage.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		e := &wire.Envelope{ID: wire.NewID(), Topic: "sensors/t", Payload: []byte("0123456789"), QoS: 1, Time: time.Now().UnixMilli()}
		if err := ob.Append(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	if err := errors.Join(ob.DeadLetter(2, "http 400"), ob.DeadLetter(3, "http 422")); err != nil {
		t.Fatal(err)
	}

	// While the store is open (a running daemon), the commands refuse.
	var out, errb bytes.Buffer
	if code := outboxCLI([]string{"dlq", "list"}, dir, &out, &errb); code != 1 || !strings.Contains(errb.String(), "locked") || !strings.Contains(errb.String(), "stopped edged") {
		t.Fatalf("cli on a live dir: %d %q", code, errb.String())
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	run := func(want int, args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := outboxCLI(args, dir, &out, &errb); code != want {
			t.Fatalf("%v: exit %d, want %d; stderr %s", args, code, want, errb.String())
		}
		return out.String() + errb.String()
	}
	if o := run(0, "dlq", "list"); !strings.Contains(o, "http 400") || !strings.Contains(o, "http 422") {
		t.Fatalf("list:\n%s", o)
	}
	run(2)
	run(2, "dlq", "requeue", "cloud")
	run(2, "dlq", "requeue", "cloud", "x")
	run(2, "frobnicate")
	run(1, "dlq", "purge", "nope")
	if o := run(0, "dlq", "requeue", "cloud", "2"); !strings.Contains(o, "requeued 1") {
		t.Fatalf("requeue: %s", o)
	}
	if o := run(0, "dlq", "list", "cloud"); strings.Contains(o, "http 400") || !strings.Contains(o, "http 422") {
		t.Fatalf("list after requeue:\n%s", o)
	}
	if o := run(0, "dlq", "purge", "cloud"); !strings.Contains(o, "purged 1") {
		t.Fatalf("purge: %s", o)
	}
	run(1, "dlq", "list", "-x-")
	var o2, e2 bytes.Buffer
	if code := outboxCLI([]string{"dlq", "list"}, filepath.Join(dir, "missing"), &o2, &e2); code != 1 {
		t.Fatalf("missing dir: exit %d", code)
	}
}

// outbox stats lists keep-latest stores (keep_latest rules) too: they are stores of their own
// and were missing from the offline view.
func TestOutboxStatsKeepLatest(t *testing.T) {
	dir := t.TempDir()
	db, err := storage.Open(storage.Options{Dir: dir, Registerer: prometheus.NewRegistry(), MinFreeBytes: -1})
	if err != nil {
		t.Fatal(err)
	}
	lt, err := db.Latest("cloud#latest", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, topic := range []string{"state/a", "state/a", "state/b"} {
		e := &wire.Envelope{ID: wire.NewID(), Topic: topic, Payload: []byte("on"), QoS: 1, Time: time.Now().UnixMilli()}
		if err := lt.Put(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if err := outboxStats(dir, false, &env{stdout: &out, stderr: &errb}); err != nil {
		t.Fatalf("%v: %s", err, errb.String())
	}
	if !regexp.MustCompile(`(?m)^  KEEP-LATEST STORE +TOPICS.*\n  cloud#latest +2 +\d+ B +0 +1 +0$`).MatchString(out.String()) {
		t.Fatalf("outbox stats:\n%s", out.String())
	}
	out.Reset()
	if err := outboxStats(dir, true, &env{stdout: &out, stderr: &errb}); err != nil {
		t.Fatal(err)
	}
	var s struct {
		KeepLatest []struct {
			Name  string            `json:"name"`
			Depth int64             `json:"depth"`
			Drops map[string]uint64 `json:"drops"`
		} `json:"keep_latest"`
	}
	if err := json.Unmarshal(out.Bytes(), &s); err != nil || len(s.KeepLatest) != 1 || s.KeepLatest[0].Depth != 2 || s.KeepLatest[0].Drops[storage.ReasonSuperseded] != 1 {
		t.Fatalf("outbox stats -json: %v:\n%s", err, out.String())
	}
}
