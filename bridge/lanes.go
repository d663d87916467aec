package bridge

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged-dev/edged/storage"
	"github.com/edged-dev/edged/wire"
)

// Lanes. A connector's messages wait in one or more lanes, all in the one storage DB (so they
// share its group commit: a lane costs no fsync of its own, and memory does not grow with any
// backlog). A lane is keyed by the priority and ttl of the forward rules that feed it, whether
// it keeps only the latest message per topic, and, with live_first, whether it holds the
// backlog stored while the link was down. One forwarder drains every lane of its connector:
// each batch comes from the highest priority that has messages (live before backlog within a
// priority; among lanes of equal rank the one whose head waited longest), and a lane is FIFO.
//
// The lane of the default key (priority normal, no rule ttl, not keep-latest, live) is the
// outbox named after the connector, as before lanes existed, so an upgrade keeps its backlog.

type laneKey struct {
	prio    int
	ttl     time.Duration // 0: the connector's
	latest  bool
	backlog bool
}

// lane is one queue of a connector: an outbox or a keep-latest store.
type lane struct {
	key  laneKey
	name string
	ob   *storage.Outbox
	lt   *storage.Latest

	sent  atomic.Uint64
	meter rateMeter
}

// storeName is the storage name of the lane of connector conn with key k. '#' cannot occur in
// a connector name, so lanes never collide with another connector's outbox.
func storeName(conn string, k laneKey) string {
	if k == (laneKey{prio: DefaultPriority}) {
		return conn
	}
	s := conn + "#p" + strconv.Itoa(k.prio)
	if k.ttl > 0 {
		s += "-ttl" + k.ttl.String()
	}
	if k.latest {
		s += "-latest"
	}
	if k.backlog {
		s += "-backlog"
	}
	return s
}

// label is the lane's name in status and metrics: the storage name without the connector.
func (l *lane) label(conn string) string {
	if l.name == conn {
		return "p" + strconv.Itoa(DefaultPriority)
	}
	return l.name[len(conn)+1:]
}

func (l *lane) stats() storage.OutboxStats {
	if l.lt != nil {
		return l.lt.Stats()
	}
	return l.ob.Stats()
}

func (l *lane) notify() <-chan struct{} {
	if l.lt != nil {
		return l.lt.Notify()
	}
	return l.ob.Notify()
}

func (l *lane) append(ctx context.Context, envs []*wire.Envelope) error {
	if l.lt != nil {
		return l.lt.Put(ctx, envs...)
	}
	return l.ob.Append(ctx, envs...)
}

func (l *lane) part(envs []*wire.Envelope) *storage.LaneAppend {
	return &storage.LaneAppend{Outbox: l.ob, Latest: l.lt, Envs: envs}
}

func (l *lane) read(maxMsgs, maxBytes int) ([]storage.Record, error) {
	if l.lt != nil {
		return l.lt.Read(maxMsgs, maxBytes)
	}
	return l.ob.Read(0, maxMsgs, maxBytes)
}

// ack removes the confirmed prefix recs (in read order).
func (l *lane) ack(recs []storage.Record) error {
	if len(recs) == 0 {
		return nil
	}
	if l.lt != nil {
		return l.lt.Remove(recs)
	}
	return l.ob.Ack(recs[len(recs)-1].Seq)
}

func (l *lane) deadLetter(r storage.Record, reason string) error {
	if l.lt != nil {
		return l.lt.DeadLetter(r, reason)
	}
	return l.ob.DeadLetter(r.Seq, reason)
}

// rank orders lanes for draining: priority first, live before backlog.
func (l *lane) rank() int {
	r := l.key.prio * 2
	if !l.key.backlog {
		r++
	}
	return r
}

// openLanes creates the lanes of f's forward rules; ruleLanes[i] (and, with live_first,
// backlogLanes[i]) is the lane of forward rule i.
func (f *forwarder) openLanes(db *storage.DB, lim storage.Config) error {
	byKey := map[laneKey]*lane{}
	get := func(k laneKey) (*lane, error) {
		if l := byKey[k]; l != nil {
			return l, nil
		}
		l := &lane{key: k, name: storeName(f.cfg.Name, k)}
		if k.latest {
			ttl := k.ttl
			if ttl == 0 {
				ttl = lim.TTL
			}
			lt, err := db.Latest(l.name, ttl)
			if err != nil {
				return nil, err
			}
			l.lt = lt
		} else {
			ll := lim
			if k.ttl > 0 {
				ll.TTL = k.ttl
			}
			ob, err := db.Outbox(l.name, ll)
			if err != nil {
				return nil, err
			}
			l.ob = ob
		}
		byKey[k] = l
		f.lanes = append(f.lanes, l)
		return l, nil
	}
	// The default lane always exists: it is the connector's outbox of old, which may hold a
	// backlog from before priorities were configured.
	if _, err := get(laneKey{prio: DefaultPriority}); err != nil {
		return err
	}
	for _, r := range f.cfg.Forward {
		k := laneKey{prio: r.priority(), ttl: time.Duration(r.TTL), latest: r.KeepLatest}
		l, err := get(k)
		if err != nil {
			return err
		}
		f.ruleLanes = append(f.ruleLanes, l)
		if f.cfg.LiveFirst {
			k.backlog = true
			bl, err := get(k)
			if err != nil {
				return err
			}
			f.backlogLanes = append(f.backlogLanes, bl)
		}
	}
	if err := f.adoptLanes(db, lim, byKey); err != nil {
		return err
	}
	sort.SliceStable(f.lanes, func(i, j int) bool { return f.lanes[i].rank() > f.lanes[j].rank() })
	f.ob = f.lanes[0].ob
	for _, l := range f.lanes {
		if l.name == f.cfg.Name {
			f.ob = l.ob
		}
	}
	return nil
}

// adoptLanes adds, drain-only, the lanes of an earlier configuration of this connector (a
// rule's priority, ttl or keep_latest changed, or live_first was turned off): acked messages
// must reach the remote whatever the config became. They keep the priority in their name and
// rank as backlog; nothing new is captured into them.
func (f *forwarder) adoptLanes(db *storage.DB, lim storage.Config, byKey map[laneKey]*lane) error {
	known := map[string]bool{}
	for _, l := range byKey {
		known[l.name] = true
	}
	pfx := f.cfg.Name + "#"
	prio := func(name string) int {
		p := DefaultPriority
		if rest, ok := strings.CutPrefix(name[len(pfx):], "p"); ok && rest != "" && rest[0] >= '0' && rest[0] <= '9' {
			p = int(rest[0] - '0')
		}
		return p
	}
	for _, ob := range db.Outboxes() {
		name := ob.Name()
		// Adopted even when empty: until a reload's swap, the previous forwarder may still
		// capture into it.
		if !strings.HasPrefix(name, pfx) || known[name] {
			continue
		}
		o, err := db.Outbox(name, lim)
		if err != nil {
			return err
		}
		f.lanes = append(f.lanes, &lane{key: laneKey{prio: prio(name), backlog: true}, name: name, ob: o})
		if d := o.Stats().Depth; d > 0 {
			f.log.Info("draining a lane of an earlier configuration", "lane", name, "depth", d)
		}
	}
	names, err := db.LatestNames()
	if err != nil {
		return fmt.Errorf("list keep-latest stores: %w", err)
	}
	for _, name := range names {
		if !strings.HasPrefix(name, pfx) || known[name] {
			continue
		}
		lt, err := db.Latest(name, 0)
		if err != nil {
			return err
		}
		f.lanes = append(f.lanes, &lane{key: laneKey{prio: prio(name), latest: true, backlog: true}, name: name, lt: lt})
		if d := lt.Stats().Depth; d > 0 {
			f.log.Info("draining a keep-latest lane of an earlier configuration", "lane", name, "depth", d)
		}
	}
	return nil
}

// relimitLanes applies new outbox limits (a reload with new storage defaults) to every lane,
// each keeping its rule's ttl.
func (f *forwarder) relimitLanes(db *storage.DB, lim storage.Config) error {
	for _, l := range f.lanes {
		if l.ob == nil {
			continue
		}
		ll := lim
		if l.key.ttl > 0 {
			ll.TTL = l.key.ttl
		}
		if _, err := db.Outbox(l.name, ll); err != nil {
			return err
		}
	}
	return nil
}

// captureLane is where a message of forward rule i goes now: with live_first, to the backlog
// while the link is down.
func (f *forwarder) captureLane(i int) *lane {
	if f.cfg.LiveFirst && !f.live.Load() {
		return f.backlogLanes[i]
	}
	return f.ruleLanes[i]
}

// pick returns the lane the next batch comes from, nil when every lane is empty.
func (f *forwarder) pick() *lane {
	var best *lane
	var bestAge time.Duration
	for _, l := range f.lanes {
		st := l.stats()
		if st.Depth == 0 {
			continue
		}
		if best == nil || l.rank() > best.rank() || (l.rank() == best.rank() && st.OldestAge > bestAge) {
			best, bestAge = l, st.OldestAge
		}
	}
	return best
}

// waitAny blocks until a lane is notified, ctx is done, linkDone closes or extra fires, and
// two.
func (f *forwarder) waitAny(ctx context.Context, linkDone, extra <-chan struct{}) waitResult {
	cases := make([]reflect.SelectCase, 0, len(f.lanes)+3)
	cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ctx.Done())})
	// A nil channel in a reflect.Select never fires, like in a select statement.
	cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(linkDone)})
	cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(extra)})
	for _, l := range f.lanes {
		cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(l.notify())})
	}
	i, _, _ := reflect.Select(cases)
	switch i {
	case 0:
		return waitDone
	case 1:
		return waitLinkClosed
	case 2:
		return waitExtra
	}
	return waitLane
}

// waitResult says what ended waitAny.
type waitResult int

const (
	waitLane       waitResult = iota // a lane has new messages
	waitDone                         // ctx is done
	waitLinkClosed                   // the connector's link closed
	waitExtra                        // the extra channel fired
)

// batchBytes bounds one batch. Under a bandwidth cap a batch is at most half a second of the
// cap, so a message of higher priority waits at most about that long behind one in flight.
func (f *forwarder) batchBytes() int {
	b := int(f.cfg.Batch.MaxBytes)
	if r := f.cfg.Rate; r > 0 {
		b = min(b, max(4096, int(r/2)))
	}
	return b
}

// LaneStatus is one lane of a connector in status.
type LaneStatus struct {
	// Name is the lane ("p8", "p5-latest", "p2-backlog"); Store its storage name.
	Name  string `json:"name"`
	Store string `json:"store"`
	// Priority 0..9; KeepLatest for a keep-latest lane; Backlog for the live_first backlog.
	Priority   int  `json:"priority"`
	KeepLatest bool `json:"keep_latest,omitempty"`
	Backlog    bool `json:"backlog,omitempty"`
	// Depth, Bytes and OldestAgeSeconds describe what waits (oldest age is 0 for keep-latest).
	Depth            int64   `json:"depth"`
	Bytes            int64   `json:"bytes"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	// SentRate is messages confirmed per second from this lane, over the last few seconds.
	SentRate float64 `json:"sent_rate"`
	Sent     uint64  `json:"sent"`
	// Drops by reason (max_bytes, max_messages, ttl, superseded).
	Drops map[string]uint64 `json:"drops,omitempty"`
}

// TrafficStatus is the traffic-control part of a connector's status.
type TrafficStatus struct {
	// Lanes in drain order.
	Lanes []LaneStatus `json:"lanes"`
	// UplinkRate is bytes per second written to the uplink sockets (protocol overhead
	// included) over the last few seconds; RateLimit the configured cap (0: none).
	UplinkRate float64 `json:"uplink_bytes_per_second"`
	RateLimit  float64 `json:"rate_limit_bytes_per_second"`
	UplinkSent uint64  `json:"uplink_bytes"`
	// DrainSeconds estimates the time to send the backlog: stored bytes over the current
	// uplink rate (over the cap when idle; -1 when neither is known).
	DrainSeconds float64 `json:"drain_seconds"`
}

func (f *forwarder) trafficStatus() TrafficStatus {
	var ts TrafficStatus
	var bytes int64
	for _, l := range f.lanes {
		st := l.stats()
		ls := LaneStatus{Name: l.label(f.cfg.Name), Store: l.name, Priority: l.key.prio, KeepLatest: l.key.latest,
			Backlog: l.key.backlog, Depth: st.Depth, Bytes: st.Bytes, OldestAgeSeconds: st.OldestAge.Seconds(),
			Sent: l.sent.Load()}
		ls.SentRate = l.meter.update(ls.Sent)
		for k, v := range st.Drops {
			if v > 0 {
				if ls.Drops == nil {
					ls.Drops = map[string]uint64{}
				}
				ls.Drops[k] = v
			}
		}
		bytes += st.Bytes
		ts.Lanes = append(ts.Lanes, ls)
	}
	th := f.throttle
	ts.UplinkSent = th.Written()
	ts.UplinkRate = f.uplinkMeter.update(ts.UplinkSent)
	ts.RateLimit = th.Limit()
	rate := ts.UplinkRate
	if rate <= 0 {
		rate = ts.RateLimit
	}
	switch {
	case bytes == 0:
		ts.DrainSeconds = 0
	case rate > 0:
		ts.DrainSeconds = float64(bytes) / rate
	default:
		ts.DrainSeconds = -1
	}
	return ts
}

// laneCollector exports per-lane gauges at scrape time (no per-message gauge updates).
type laneCollector struct {
	b *Bridge
}

var (
	descLaneDepth = prometheus.NewDesc("edged_bridge_lane_depth", "Messages waiting in the lane.", []string{"connector", "lane"}, nil)
	descLaneBytes = prometheus.NewDesc("edged_bridge_lane_bytes", "Stored bytes waiting in the lane.", []string{"connector", "lane"}, nil)
	descLaneAge   = prometheus.NewDesc("edged_bridge_lane_oldest_age_seconds", "Age of the lane's oldest message (0 for keep-latest lanes).", []string{"connector", "lane"}, nil)
	descLaneSent  = prometheus.NewDesc("edged_bridge_lane_sent_total", "Messages confirmed by the remote, by lane (rate() gives the lane's rate).", []string{"connector", "lane"}, nil)
	descLaneDrop  = prometheus.NewDesc("edged_bridge_lane_dropped_total", "Messages dropped from the lane, by reason (max_bytes, max_messages, ttl, superseded).", []string{"connector", "lane", "reason"}, nil)
	descUplink    = prometheus.NewDesc("edged_bridge_uplink_bytes_total", "Bytes written to the connector's uplink sockets, protocol overhead included.", []string{"connector"}, nil)
	descRateLimit = prometheus.NewDesc("edged_bridge_rate_limit_bytes_per_second", "The connector's bandwidth cap (0: none).", []string{"connector"}, nil)
)

func (c *laneCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLaneDepth, descLaneBytes, descLaneAge, descLaneSent, descLaneDrop, descUplink, descRateLimit} {
		ch <- d
	}
}

func (c *laneCollector) Collect(ch chan<- prometheus.Metric) {
	for _, f := range c.b.forwarders() {
		n := f.cfg.Name
		for _, l := range f.lanes {
			st := l.stats()
			lbl := l.label(n)
			ch <- prometheus.MustNewConstMetric(descLaneDepth, prometheus.GaugeValue, float64(st.Depth), n, lbl)
			ch <- prometheus.MustNewConstMetric(descLaneBytes, prometheus.GaugeValue, float64(st.Bytes), n, lbl)
			ch <- prometheus.MustNewConstMetric(descLaneAge, prometheus.GaugeValue, st.OldestAge.Seconds(), n, lbl)
			ch <- prometheus.MustNewConstMetric(descLaneSent, prometheus.CounterValue, float64(l.sent.Load()), n, lbl)
			for r, v := range st.Drops {
				ch <- prometheus.MustNewConstMetric(descLaneDrop, prometheus.CounterValue, float64(v), n, lbl, r)
			}
		}
		ch <- prometheus.MustNewConstMetric(descUplink, prometheus.CounterValue, float64(f.throttle.Written()), n)
		ch <- prometheus.MustNewConstMetric(descRateLimit, prometheus.GaugeValue, f.throttle.Limit(), n)
	}
}

func laneErr(l *lane, op string, err error) error {
	return fmt.Errorf("%s lane %s: %w", op, l.name, err)
}
