package storage

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
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
			ob, _ := db.Outbox("bench", Config{})
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
	ob, _ := db.Outbox("bench", Config{MaxMessages: 1 << 40, MaxBytes: 1 << 50})
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

func init() { childModes["backlog"] = backlogChild }

// backlogChild builds a backlog of EDGED_BACKLOG messages of 200 B (8 producers) in a fresh
// store and prints its memory figures from /proc/self/status.
func backlogChild() error {
	n, _ := strconv.Atoi(os.Getenv("EDGED_BACKLOG"))
	dir := os.Getenv("EDGED_BACKLOG_DIR")
	db, err := Open(Options{Dir: dir, MinFreeBytes: -1})
	if err != nil {
		return err
	}
	ob, err := db.Outbox("mem", Config{})
	if err != nil {
		return err
	}
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
	if d := ob.Stats().Depth; d != int64(n) {
		return fmt.Errorf("depth %d, want %d", d, n)
	}
	loaded := procStatus()
	time.Sleep(3 * time.Second) // compactions settle; the backlog is still held
	settled := procStatus()
	fmt.Printf("loaded %s\nsettled %s\n", loaded, settled)
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

// BenchmarkBacklogMemory runs a separate process per backlog size (GOMEMLIMIT=MemoryLimit, as
// the daemon sets it) and reports its memory in MB. b.N is ignored: one child per size.
func BenchmarkBacklogMemory(b *testing.B) {
	for _, n := range []int{0, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("backlog=%d", n), func(b *testing.B) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), childEnv+"=backlog", "EDGED_BACKLOG="+strconv.Itoa(n),
				"EDGED_BACKLOG_DIR="+b.TempDir(), "GOMEMLIMIT="+strconv.Itoa(MemoryLimit))
			out, err := cmd.CombinedOutput()
			if err != nil {
				b.Fatalf("child: %v\n%s", err, out)
			}
			var loaded, settled map[string]float64
			for _, line := range strings.Split(string(out), "\n") {
				if v, ok := strings.CutPrefix(line, "loaded "); ok {
					loaded = parseStatus(v)
				}
				if v, ok := strings.CutPrefix(line, "settled "); ok {
					settled = parseStatus(v)
				}
			}
			b.Logf("backlog %d: loaded %v settled %v", n, loaded, settled)
			b.ReportMetric(settled["VmHWM"]/1024, "VmHWM-MB")
			b.ReportMetric(loaded["RssAnon"]/1024, "RssAnon-loaded-MB")
			b.ReportMetric(settled["RssAnon"]/1024, "RssAnon-MB")
			for range b.N {
			}
		})
	}
}

var _ = debug.SetMemoryLimit
