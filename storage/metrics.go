package storage

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics: counters are updated by the committer; per-outbox gauges are computed at scrape time
// from the durable state (no per-message gauge updates).
type metrics struct {
	reg           prometheus.Registerer
	cs            []prometheus.Collector
	appended      *prometheus.CounterVec
	dropped       *prometheus.CounterVec
	commits       prometheus.Counter
	commitSeconds prometheus.Histogram
	diskFull      prometheus.Counter
	corrupt       prometheus.Counter
}

// appendedTo counts n messages made durable in store name and wakes its reader without
// blocking (a wake-up already pending covers these too). Committer goroutine.
func (m *metrics) appendedTo(name string, n int, notify chan<- struct{}) {
	if n <= 0 {
		return
	}
	m.appended.WithLabelValues(name).Add(float64(n))
	select {
	case notify <- struct{}{}:
	default:
	}
}

func newMetrics(db *DB, reg prometheus.Registerer) *metrics {
	m := &metrics{reg: reg}
	m.appended = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edged_outbox_appended_total",
		Help: "Messages appended to the outbox (durable)."}, []string{"outbox"})
	m.dropped = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edged_outbox_dropped_total",
		Help: "Messages dropped from the outbox, by reason (max_bytes, max_messages, ttl)."}, []string{"outbox", "reason"})
	m.commits = prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_storage_commits_total",
		Help: "Group commits (one transaction and one fsync each)."})
	m.commitSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "edged_storage_commit_seconds",
		Help: "Duration of a group commit including fsync.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 8)})
	m.diskFull = prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_storage_disk_full_total",
		Help: "Group commits that refused growth because the data dir file system was short of free space."})
	m.corrupt = prometheus.NewCounter(prometheus.CounterOpts{Name: "edged_storage_corrupt_recoveries_total",
		Help: "Times a corrupt store was moved aside (and salvaged into a fresh one) at start-up."})
	m.cs = []prometheus.Collector{m.appended, m.dropped, m.commits, m.commitSeconds, m.diskFull, m.corrupt, &collector{db: db}}
	m.cs = append(m.cs, db.integ.collectors()...) // integrity.go
	if reg != nil {
		for _, c := range m.cs {
			if err := reg.Register(c); err != nil {
				db.log.Warn("storage metric not registered", "error", err)
			}
		}
	}
	return m
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, c := range m.cs {
		m.reg.Unregister(c)
	}
}

var (
	descDepth   = prometheus.NewDesc("edged_outbox_depth", "Messages queued in the outbox.", []string{"outbox"}, nil)
	descBytes   = prometheus.NewDesc("edged_outbox_bytes", "Stored bytes queued in the outbox.", []string{"outbox"}, nil)
	descAge     = prometheus.NewDesc("edged_outbox_oldest_age_seconds", "Age of the oldest queued message (0 when empty).", []string{"outbox"}, nil)
	descDLQ     = prometheus.NewDesc("edged_outbox_dlq_depth", "Dead letters of the outbox.", []string{"outbox"}, nil)
	descRejects = prometheus.NewDesc("edged_outbox_rejected_total", "Appends refused because the outbox was full (when_full: reject).", []string{"outbox"}, nil)
	descWritten = prometheus.NewDesc("edged_storage_bytes_written_total", "Bytes this process wrote to the block device (write_bytes of /proc/self/io; SD card wear).", nil, nil)
	descLSM     = prometheus.NewDesc("edged_storage_lsm_bytes", "Size of badger's LSM tables on disk.", nil, nil)
	descVlog    = prometheus.NewDesc("edged_storage_vlog_bytes", "Size of badger's value log on disk.", nil, nil)
	descFree    = prometheus.NewDesc("edged_storage_disk_free_bytes", "Free space of the data dir file system.", nil, nil)
)

type collector struct{ db *DB }

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDepth, descBytes, descAge, descDLQ, descRejects, descWritten, descLSM, descVlog, descFree} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.db.Stats()
	for _, o := range s.Outboxes {
		ch <- prometheus.MustNewConstMetric(descDepth, prometheus.GaugeValue, float64(o.Depth), o.Name)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.GaugeValue, float64(o.Bytes), o.Name)
		ch <- prometheus.MustNewConstMetric(descAge, prometheus.GaugeValue, o.OldestAge.Seconds(), o.Name)
		ch <- prometheus.MustNewConstMetric(descDLQ, prometheus.GaugeValue, float64(o.DLQDepth), o.Name)
		ch <- prometheus.MustNewConstMetric(descRejects, prometheus.CounterValue, float64(o.Rejected), o.Name)
	}
	ch <- prometheus.MustNewConstMetric(descWritten, prometheus.CounterValue, float64(s.BytesWritten))
	ch <- prometheus.MustNewConstMetric(descLSM, prometheus.GaugeValue, float64(s.LSMBytes))
	ch <- prometheus.MustNewConstMetric(descVlog, prometheus.GaugeValue, float64(s.VlogBytes))
	if s.DiskFree >= 0 {
		ch <- prometheus.MustNewConstMetric(descFree, prometheus.GaugeValue, float64(s.DiskFree))
	}
}
