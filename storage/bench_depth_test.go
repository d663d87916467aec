package storage

import (
	"context"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/edged-dev/edged/wire"
)

// BenchmarkIngestByDepth appends EDGED_DEPTH (default 1M) messages of 200 B with nothing
// drained, EDGED_DEPTH_PRODUCERS (default 8) producers of 10 messages per Append (like
// pipelining publishers), and reports
// the rate of the first and of the last 10% of the run: durable ingest must not slow down as
// the backlog grows (the LSM under it does). b.N is ignored: one run.
//
//	go test -run '^$' -bench BenchmarkIngestByDepth -benchtime 1x ./storage
func BenchmarkIngestByDepth(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("EDGED_DEPTH")); err == nil && v > 0 {
		n = v
	}
	producers := 8
	if v, err := strconv.Atoi(os.Getenv("EDGED_DEPTH_PRODUCERS")); err == nil && v > 0 {
		producers = v
	}
	// EDGED_DEPTH_BASE_LEVEL_MB tries another badger BaseLevelSize (A/B of the LSM shape).
	if v, err := strconv.Atoi(os.Getenv("EDGED_DEPTH_BASE_LEVEL_MB")); err == nil && v > 0 {
		old := tuneHook
		tuneHook = func(o *badger.Options) { o.BaseLevelSize = int64(v) << 20 }
		defer func() { tuneHook = old }()
	}
	db := openT(b, b.TempDir())
	ob := outboxT(b, db, "depth", Config{MaxMessages: 1 << 40, MaxBytes: 1 << 50})
	const slices = 10
	marks := make([]time.Time, slices+1)
	var done atomic.Int64
	var mu sync.Mutex
	next := 1
	w0 := procWriteBytes()
	b.ResetTimer()
	marks[0] = time.Now()
	var claimed atomic.Int64
	var wg sync.WaitGroup
	for range producers {
		wg.Go(func() {
			es := make([]*wire.Envelope, 10)
			for {
				i := claimed.Add(10) - 10
				if i >= int64(n) {
					return
				}
				k := int(min(10, int64(n)-i))
				for j := range k {
					es[j] = benchEnv(200)
				}
				if err := ob.Append(context.Background(), es[:k]...); err != nil {
					b.Error(err)
					return
				}
				d := done.Add(int64(k))
				mu.Lock()
				for next <= slices && d >= int64(n*next/slices) {
					marks[next] = time.Now()
					next++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	rate := func(s int) float64 { return float64(n/slices) / marks[s+1].Sub(marks[s]).Seconds() }
	for s := range slices {
		b.Logf("messages %d-%d: %.0f msgs/s", n*s/slices, n*(s+1)/slices, rate(s))
	}
	b.ReportMetric(float64(n)/marks[slices].Sub(marks[0]).Seconds(), "msgs/s")
	b.ReportMetric(rate(0), "first10%-msgs/s")
	b.ReportMetric(rate(slices-1), "last10%-msgs/s")
	b.ReportMetric(rate(slices-1)/rate(0), "last/first")
	// What compaction rewrites shows here without the noise of a shared machine: bytes the
	// process caused to be written to the device, per message (a record is ~250 B).
	b.ReportMetric(float64(procWriteBytes()-w0)/float64(n), "wbytes/msg")
}
