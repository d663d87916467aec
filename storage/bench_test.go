package storage

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edged-dev/edged/wire"
)

func benchEnv(size int) *wire.Envelope {
	return &wire.Envelope{ID: wire.NewID(), Topic: "sensors/bench/temp", Payload: make([]byte, size), QoS: 1, Time: time.Now().UnixMilli()}
}

// BenchmarkAppendDurable: every Append returns only when fsynced; producers share group commits.
// Reports msgs/s, messages per fsync and bytes written to the device per message.
func BenchmarkAppendDurable(b *testing.B) {
	for _, producers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("producers=%d", producers), func(b *testing.B) {
			db := openT(b, b.TempDir())
			ob := outboxT(b, db, "bench", Config{})
			c0, w0 := db.Stats().Commits, procWriteBytes()
			var next atomic.Int64
			b.ResetTimer()
			t0 := time.Now()
			var wg sync.WaitGroup
			for range producers {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						if err := ob.Append(context.Background(), benchEnv(200)); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			el := time.Since(t0)
			b.StopTimer()
			s := db.Stats()
			b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
			b.ReportMetric(float64(b.N)/float64(s.Commits-c0), "msgs/fsync")
			b.ReportMetric(float64(s.BytesWritten-w0)/float64(b.N), "wbytes/msg")
		})
	}
}

// BenchmarkDrain: Read a batch + Ack it, as a forwarder does, over a prefilled backlog.
func BenchmarkDrain(b *testing.B) {
	db := openT(b, b.TempDir())
	ob := outboxT(b, db, "bench", Config{MaxMessages: 1 << 40, MaxBytes: 1 << 50})
	es := make([]*wire.Envelope, 500)
	for i := range es {
		es[i] = benchEnv(200)
	}
	for i := 0; i < b.N; i += len(es) {
		if err := ob.Append(context.Background(), es[:min(len(es), b.N-i)]...); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	t0 := time.Now()
	n := 0
	for n < b.N {
		recs, err := ob.Read(0, 1000, 1<<20)
		if err != nil || len(recs) == 0 {
			b.Fatalf("read: %d %v", len(recs), err)
		}
		if err := ob.Ack(recs[len(recs)-1].Seq); err != nil {
			b.Fatal(err)
		}
		n += len(recs)
	}
	b.ReportMetric(float64(n)/time.Since(t0).Seconds(), "msgs/s")
}

// backlogIdle is how long the backlog child stays idle before its last measurement: long enough
// for badger to free its pooled table builders (one per 2 s without a build) and for trimLoop to
// hand them back to the OS.
const backlogIdle = 35 * time.Second

// backlogChild builds a backlog of EDGED_BACKLOG messages of 200 B (8 producers) in a fresh
// store and prints its memory figures from /proc/self/status: "loaded" right after the last
// append, "settled" 3 s later, "idle" after backlogIdle. With EDGED_BACKLOG_WARM set it first
// appends and acks that many messages (a store that has worked and drained). With
// EDGED_BACKLOG_HEAPPROF=file it writes a heap profile (after a GC) at the end.
func backlogChild() error {
	n, _ := strconv.Atoi(os.Getenv("EDGED_BACKLOG"))
	warm, _ := strconv.Atoi(os.Getenv("EDGED_BACKLOG_WARM"))
	dir := os.Getenv("EDGED_BACKLOG_DIR")
	db, err := Open(Options{Dir: dir, MinFreeBytes: -1})
	if err != nil {
		return err
	}
	ob, err := db.Outbox("mem", Config{})
	if err != nil {
		return err
	}
	fill := func(n int) {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for {
					i := next.Add(10) - 10
					if i >= int64(n) {
						return
					}
					var es []*wire.Envelope
					for range min(10, int64(n)-i) {
						es = append(es, benchEnv(200))
					}
					if err := ob.Append(context.Background(), es...); err != nil {
						panic(err)
					}
				}
			})
		}
		wg.Wait()
	}
	if warm > 0 {
		fill(warm)
		if err := ob.Ack(ob.Stats().Tail); err != nil {
			return err
		}
		time.Sleep(backlogIdle) // the warm-up's own burst is over and trimmed
	}
	fill(n)
	if d := ob.Stats().Depth; d != int64(n) {
		return fmt.Errorf("depth %d, want %d", d, n)
	}
	loaded := procStatus()
	time.Sleep(3 * time.Second) // compactions settle; the backlog is still held
	settled := procStatus()
	time.Sleep(backlogIdle - 3*time.Second)
	idle := procStatus()
	fmt.Printf("loaded %s\nsettled %s\nidle %s\n", loaded, settled, idle)
	if f := os.Getenv("EDGED_BACKLOG_HEAPPROF"); f != "" {
		w, err := os.Create(f)
		if err != nil {
			return err
		}
		runtime.GC()
		_ = pprof.Lookup("heap").WriteTo(w, 0)
		w.Close()
	}
	return db.Close()
}

// procStatus returns "VmHWM=<kB> RssAnon=<kB> RssFile=<kB> HeapInuse=<kB>".
func procStatus() string {
	b, _ := os.ReadFile("/proc/self/status")
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		for _, k := range []string{"VmHWM", "RssAnon", "RssFile"} {
			if v, ok := strings.CutPrefix(line, k+":"); ok {
				out = append(out, k+"="+strings.Fields(v)[0])
			}
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	out = append(out, fmt.Sprintf("HeapInuse=%d", ms.HeapInuse>>10))
	return strings.Join(out, " ")
}

func parseStatus(s string) map[string]float64 {
	m := map[string]float64{}
	for _, f := range strings.Fields(s) {
		k, v, _ := strings.Cut(f, "=")
		x, _ := strconv.ParseFloat(v, 64)
		m[k] = x
	}
	return m
}

// benchMemoryLimit is the soft Go memory limit the storage benchmarks run under (GOMEMLIMIT=48MiB),
// a tighter budget than the daemon's default (memory_limit: 56MiB, internal/config, which buys
// back ingest rate under a long backlog). The storage profile (tuneBadger) keeps its own
// working set (two 4 MB memtables, one or two table builders) well inside it; the limit is what
// makes the Go runtime return freed builder and memtable buffers instead of letting the heap
// double between collections while writes go on. Once writes stop, trimLoop returns the burst's
// buffers. Measured (BenchmarkBacklogMemory, RssAnon): fresh store 2.5 MB; 1M queued messages
// 34 MB 3 s after the last append (badger still pools its builders), 5.3 MB after 35 s idle.
const benchMemoryLimit = 48 << 20

// BenchmarkBacklogMemory runs a separate process per backlog size (GOMEMLIMIT=benchMemoryLimit,
// a daemon-like budget) and reports its memory in MB. b.N is ignored: one child per size.
//
// The target (RssAnon with 1M queued within 10 MB of RssAnon with none, and < 64 MB) is
// measured against "backlog=0", an untouched fresh store. "backlog=0/warmed" is a store that
// appended and acked 100k messages first (its memtable arena is touched, the burst's buffers
// returned): the working set any store that has ever written carries, reported alongside, not
// instead. Metrics: RssAnon-loaded-MB right after the last append, RssAnon-MB 3 s later (badger
// may still be compacting and still pools its table builders), RssAnon-idle-MB after
// backlogIdle (builders freed, trimLoop ran), VmHWM-MB the peak (includes the mmap'ed tables).
func BenchmarkBacklogMemory(b *testing.B) {
	for _, c := range []struct {
		name    string
		n, warm int
	}{{"backlog=0", 0, 0}, {"backlog=0/warmed", 0, 100_000}, {"backlog=100000", 100_000, 0}, {"backlog=1000000", 1_000_000, 0}} {
		b.Run(c.name, func(b *testing.B) {
			cmd := childCommand("backlog", "EDGED_BACKLOG="+strconv.Itoa(c.n),
				"EDGED_BACKLOG_WARM="+strconv.Itoa(c.warm), "EDGED_BACKLOG_DIR="+b.TempDir(),
				"GOMEMLIMIT="+strconv.Itoa(benchMemoryLimit))
			out, err := cmd.CombinedOutput()
			if err != nil {
				b.Fatalf("child: %v\n%s", err, out)
			}
			st := map[string]map[string]float64{}
			for _, line := range strings.Split(string(out), "\n") {
				if k, v, ok := strings.Cut(line, " "); ok {
					st[k] = parseStatus(v)
				}
			}
			b.Logf("%s: loaded %v settled %v idle %v", c.name, st["loaded"], st["settled"], st["idle"])
			b.ReportMetric(st["idle"]["VmHWM"]/1024, "VmHWM-MB")
			b.ReportMetric(st["loaded"]["RssAnon"]/1024, "RssAnon-loaded-MB")
			b.ReportMetric(st["settled"]["RssAnon"]/1024, "RssAnon-MB")
			b.ReportMetric(st["idle"]["RssAnon"]/1024, "RssAnon-idle-MB")
			for range b.N {
			}
		})
	}
}
