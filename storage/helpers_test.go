package storage

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edged-dev/edged/internal/testutil"
	"github.com/edged-dev/edged/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// testScale is 1 normally and small under EDGED_TEST_SCALE=small (qemu runs).
func small() bool { return os.Getenv("EDGED_TEST_SCALE") == "small" || testing.Short() }

func scaled(n, smallN int) int {
	if small() {
		return smallN
	}
	return n
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("EDGED_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func openT(t testing.TB, dir string, mod ...func(*Options)) *DB {
	t.Helper()
	o := Options{Dir: dir, Logger: testLogger(t), Registerer: prometheus.NewRegistry(), MinFreeBytes: -1}
	for _, m := range mod {
		m(&o)
	}
	db, err := Open(o)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func env(i int, size int) *wire.Envelope {
	p := make([]byte, size)
	copy(p, strconv.Itoa(i))
	return &wire.Envelope{ID: wire.NewID(), Topic: "sensors/t/" + strconv.Itoa(i%10), Payload: p, QoS: 1, Time: time.Now().UnixMilli()}
}

// payloadNum extracts the number env() wrote at the start of the payload.
func payloadNum(e *wire.Envelope) int {
	end := 0
	for end < len(e.Payload) && e.Payload[end] >= '0' && e.Payload[end] <= '9' {
		end++
	}
	n, _ := strconv.Atoi(string(e.Payload[:end]))
	return n
}

func appendN(t testing.TB, ob *Outbox, from, n, size int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := ob.Append(context.Background(), env(i, size)); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
}

// appendBatch appends n messages in calls of per envelopes (fast setup).
func appendBatch(t testing.TB, ob *Outbox, from, n, size, per int) {
	t.Helper()
	for i := from; i < from+n; i += per {
		var es []*wire.Envelope
		for j := i; j < min(i+per, from+n); j++ {
			es = append(es, env(j, size))
		}
		if err := ob.Append(context.Background(), es...); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
}

// readAll reads the whole outbox in order, returning payload numbers and seqs.
func readAll(t testing.TB, ob *Outbox) (nums []int, seqs []uint64) {
	t.Helper()
	var after uint64
	for {
		recs, err := ob.Read(after, 1000, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			return
		}
		for _, r := range recs {
			nums = append(nums, payloadNum(r.Env))
			seqs = append(seqs, r.Seq)
		}
		after = recs[len(recs)-1].Seq
	}
}

func checkFor(t testing.TB, total, poll time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %v", err)
		}
		time.Sleep(poll)
	}
}

// dirSize is the allocated size of the store's data: the WALs (*.mem, preallocated at their
// full mapped size) and the emergency reserve are fixed overhead, not what the data occupies.
// waitProgress polls fn until it returns nil, failing only when progress() has not changed
// for stall: on a loaded machine (-race, other builds) the work gets slower, not stuck, so a
// fixed wall-clock deadline is what made these tests flaky.
func waitProgress(t testing.TB, stall, poll time.Duration, progress func() uint64, fn func() error) {
	t.Helper()
	last, since := progress(), time.Now()
	for {
		err := fn()
		if err == nil {
			return
		}
		if p := progress(); p != last {
			last, since = p, time.Now()
		} else if time.Since(since) > stall {
			t.Fatalf("no progress for %v: %v", stall, err)
		}
		time.Sleep(poll)
	}
}

func dirSize(dir string) int64 {
	var n int64
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), memExt) || e.Name() == reserveFile {
			continue
		}
		if fi, err := e.Info(); err == nil && !fi.IsDir() {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += int64(st.Blocks) * 512 //nolint:unconvert // Blocks is uint64 on linux/arm; allocated, not apparent: badger preallocates sparse files
			} else {
				n += fi.Size()
			}
		}
	}
	return n
}

var _ = fmt.Sprintf

// metricValue returns the value of the metric name with the given labels (nil: the first).
func metricValue(t testing.TB, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	v, ok := testutil.MetricValue(t, g, name, labels)
	if !ok {
		t.Fatalf("metric %s %v not found", name, labels)
	}
	return v
}

func fmtErr(f string, a ...any) error { return fmt.Errorf(f, a...) }

// outboxT opens outbox name of db, failing the test when it cannot.
func outboxT(t testing.TB, db *DB, name string, cfg Config) *Outbox {
	t.Helper()
	ob, err := db.Outbox(name, cfg)
	if err != nil {
		t.Fatalf("outbox %s: %v", name, err)
	}
	return ob
}
