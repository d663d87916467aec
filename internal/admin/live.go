package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/edged-dev/edged/broker"
)

// Live view limits. A viewer gets at most liveRate messages a second (burst liveRate); what
// exceeds it is counted and reported, never queued, so a busy topic costs the gateway no
// memory and a phone on Wi-Fi keeps up. At most liveViewers watch at once.
const (
	liveRate    = 20
	liveViewers = 4
	liveBuffer  = 64
	liveStats   = time.Second // how often the dropped count is sent
)

// Tapper is the broker's live tap (broker.Broker.Tap).
type Tapper interface {
	Tap(filter string, fn func(broker.TapMessage)) (func(), error)
}

type liveMsg struct {
	Topic    string  `json:"topic"`
	QoS      byte    `json:"qos"`
	Retain   bool    `json:"retain"`
	Replayed bool    `json:"replayed,omitempty"`
	ClientID string  `json:"client_id"`
	Username string  `json:"username,omitempty"`
	Time     string  `json:"time"`
	Payload  Preview `json:"payload"`

	raw  []byte // the first previewBytes of the payload, copied on the publisher's goroutine
	size int
}

// live streams messages matching ?filter= as server-sent events: "message" events (liveMsg)
// and "stats" events ({"delivered": n, "dropped": n}) every second.
func (s *Server) live(w http.ResponseWriter, r *http.Request, c who) {
	if s.tap == nil {
		http.Error(w, "live view not available", http.StatusNotFound)
		return
	}
	filter := r.URL.Query().Get("filter")
	if filter == "" {
		filter = "#"
	}
	if n := s.viewers.Add(1); n > liveViewers {
		s.viewers.Add(-1)
		http.Error(w, fmt.Sprintf("at most %d live viewers at once", liveViewers), http.StatusTooManyRequests)
		return
	}
	defer s.viewers.Add(-1)
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming not supported", http.StatusInternalServerError)
		return
	}

	ch := make(chan *liveMsg, liveBuffer)
	var dropped, delivered atomic.Int64
	// Token bucket on the publisher's goroutine: a dropped message costs one counter
	// increment, no copy.
	var tokens atomic.Int64
	tokens.Store(liveRate)
	stop, err := s.tap.Tap(filter, func(m broker.TapMessage) {
		if tokens.Add(-1) < 0 {
			tokens.Add(1)
			dropped.Add(1)
			return
		}
		n := min(len(m.Payload), previewBytes)
		lm := &liveMsg{Topic: m.Topic, QoS: m.QoS, Retain: m.Retain, Replayed: m.Replayed, ClientID: m.ClientID,
			Username: m.Username, Time: m.Time.UTC().Format(time.RFC3339Nano), raw: append([]byte(nil), m.Payload[:n]...), size: len(m.Payload)}
		select {
		case ch <- lm:
		default:
			dropped.Add(1)
		}
	})
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	defer stop()
	s.log.Info("admin live view opened", "filter", filter, "remote", c.remote, "auth", c.auth)
	defer s.log.Info("admin live view closed", "filter", filter, "remote", c.remote)

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	refill := time.NewTicker(time.Second / liveRate)
	defer refill.Stop()
	stats := time.NewTicker(liveStats)
	defer stats.Stop()
	send := func(event string, v any) bool {
		b, _ := json.Marshal(v)
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return false
		}
		fl.Flush()
		return true
	}
	if !send("hello", map[string]any{"filter": filter, "rate": liveRate}) {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.quit:
			return
		case <-refill.C:
			if tokens.Load() < liveRate {
				tokens.Add(1)
			}
		case m := <-ch:
			m.Payload = MakePreview(m.raw, m.size)
			if !send("message", m) {
				return
			}
			delivered.Add(1)
		case <-stats.C:
			if !send("stats", map[string]int64{"delivered": delivered.Load(), "dropped": dropped.Load()}) {
				return
			}
		}
	}
}
