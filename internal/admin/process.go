package admin

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
)

// ProcessStatus is the "process" part of the status document: what the gateway's memory
// budget is spent on.
type ProcessStatus struct {
	// RSSBytes and RSSAnonBytes come from /proc/self/status (VmRSS, RssAnon); 0 elsewhere.
	// RssAnon is the figure to watch: VmRSS includes mapped store files the kernel can drop.
	RSSBytes     int64 `json:"rss_bytes"`
	RSSAnonBytes int64 `json:"rss_anon_bytes"`
	// GoBytes is all memory the Go runtime holds from the OS; HeapBytes the live heap.
	GoBytes   uint64 `json:"go_bytes"`
	HeapBytes uint64 `json:"heap_bytes"`
	// MemoryLimit is the Go soft limit (memory_limit or GOMEMLIMIT); -1 if none.
	MemoryLimit int64 `json:"memory_limit"`
	Goroutines  int   `json:"goroutines"`
}

// Process reads the current figures; it does not stop the world (runtime/metrics).
func Process() ProcessStatus {
	samples := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(samples)
	p := ProcessStatus{Goroutines: runtime.NumGoroutine(), MemoryLimit: debug.SetMemoryLimit(-1)}
	if samples[0].Value.Kind() == metrics.KindUint64 {
		p.GoBytes = samples[0].Value.Uint64()
	}
	if samples[1].Value.Kind() == metrics.KindUint64 {
		p.HeapBytes = samples[1].Value.Uint64()
	}
	if p.MemoryLimit == 1<<63-1 {
		p.MemoryLimit = -1
	}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		p.RSSBytes = procKB(b, "VmRSS:")
		p.RSSAnonBytes = procKB(b, "RssAnon:")
	}
	return p
}

func procKB(status []byte, key string) int64 {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		line := sc.Bytes()
		if rest, ok := bytes.CutPrefix(line, []byte(key)); ok {
			f := bytes.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(string(f[0]), 10, 64)
				return n * 1024
			}
		}
	}
	return 0
}
