package admin

import (
	"context"
	"sync"
	"time"

	"github.com/edged-dev/edged/storage"
)

// History keeps the last hour (by default) of outbox depths and bytes written, sampled at a
// fixed interval, for the dashboard's sparklines and the SD card wear figure. Memory is
// bounded: samples*(outboxes+2) numbers; an outbox that disappears is forgotten.
type History struct {
	stats    func() storage.Stats
	interval time.Duration
	size     int

	mu      sync.Mutex
	times   []int64 // Unix seconds of each sample, oldest first
	written []uint64
	depth   map[string][]int64 // per outbox, aligned with times (0 before it existed)
}

// NewHistory samples stats every interval and keeps size samples. Run does the sampling.
func NewHistory(stats func() storage.Stats, interval time.Duration, size int) *History {
	if interval <= 0 {
		interval = 30 * time.Second
	}
	if size <= 0 {
		size = 120
	}
	return &History{stats: stats, interval: interval, size: size, depth: map[string][]int64{}}
}

// Run samples at once and then every interval until ctx ends.
func (h *History) Run(ctx context.Context) {
	t := time.NewTicker(h.interval)
	defer t.Stop()
	for {
		h.sample(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (h *History) sample(now time.Time) {
	s := h.stats()
	h.mu.Lock()
	defer h.mu.Unlock()
	n := len(h.times)
	drop := 0
	if n == h.size {
		drop = 1
	}
	h.times = append(h.times[drop:], now.Unix())
	h.written = append(h.written[drop:], s.BytesWritten)
	seen := map[string]bool{}
	for _, o := range s.Outboxes {
		seen[o.Name] = true
		d, ok := h.depth[o.Name]
		if !ok {
			d = make([]int64, n) // zeros for the samples before it existed
		}
		h.depth[o.Name] = append(d[drop:], o.Depth)
	}
	for name := range h.depth {
		if !seen[name] {
			delete(h.depth, name)
		}
	}
}

// HistorySnapshot is the "history" part of the status document.
type HistorySnapshot struct {
	IntervalSeconds float64            `json:"interval_seconds"`
	Times           []int64            `json:"times"` // Unix seconds, oldest first
	OutboxDepth     map[string][]int64 `json:"outbox_depth"`
	BytesWritten    []uint64           `json:"bytes_written"`
	// BytesWrittenPerHour is the write rate over the sampled window (up to size samples);
	// null until the window spans one interval, so start-up writes are not extrapolated.
	BytesWrittenPerHour *float64 `json:"bytes_written_per_hour"`
}

// Snapshot copies the samples; current is the latest bytes_written (from the same status
// document), the end of the rate's window. A nil History gives nil.
func (h *History) Snapshot(current uint64) *HistorySnapshot {
	if h == nil {
		return nil
	}
	return h.snapshotAt(time.Now(), current)
}

func (h *History) snapshotAt(now time.Time, current uint64) *HistorySnapshot {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := &HistorySnapshot{
		IntervalSeconds: h.interval.Seconds(),
		Times:           append([]int64{}, h.times...),
		BytesWritten:    append([]uint64{}, h.written...),
		OutboxDepth:     make(map[string][]int64, len(h.depth)),
	}
	for k, v := range h.depth {
		s.OutboxDepth[k] = append([]int64{}, v...)
	}
	if len(h.times) > 0 {
		first := time.Unix(h.times[0], 0)
		if el := now.Sub(first); el >= h.interval && current >= h.written[0] {
			r := float64(current-h.written[0]) / el.Hours()
			s.BytesWrittenPerHour = &r
		}
	}
	return s
}
