package admin

import (
	"fmt"
	"net/url"
	"reflect"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/hardware"
	"github.com/edged-dev/edged/storage"
)

// Verdicts, worst last.
const (
	VerdictOK       = "ok"       // everything connected and draining
	VerdictDegraded = "degraded" // messages are safe but something needs a look
	VerdictFailing  = "failing"  // messages are being refused or lost
)

// Thresholds of the verdict. The disk figure matches storage's own refusal threshold (new
// messages are refused below 64 MiB free), so "failing" means exactly that.
const (
	diskFailing   = 64 << 20
	diskLow       = 256 << 20
	oldestWarning = 15 * 60 // seconds a message may wait before the backlog is worth a look
)

// Health is the "health" part of the status document: one verdict for a technician and the
// reasons behind it, derived from the same document's figures.
type Health struct {
	Verdict string   `json:"verdict"`
	Reasons []string `json:"reasons"`
}

// Verdict judges the figures of one status document. It never includes error texts (they
// may carry remote details); the connectors section has them.
func Verdict(conns []bridge.ConnectorStatus, ports []hardware.PortStatus, st storage.Stats) Health {
	h := Health{Verdict: VerdictOK, Reasons: []string{}}
	worse := func(v, reason string, args ...any) {
		if v == VerdictFailing || h.Verdict == VerdictOK {
			h.Verdict = v
		}
		h.Reasons = append(h.Reasons, fmt.Sprintf(reason, args...))
	}
	switch {
	case st.DiskFree >= 0 && st.DiskFree < diskFailing:
		worse(VerdictFailing, "disk almost full: %d MiB free, new messages are refused", st.DiskFree>>20)
	case st.DiskFree >= 0 && st.DiskFree < diskLow:
		worse(VerdictDegraded, "disk low: %d MiB free", st.DiskFree>>20)
	}
	if st.Space.WritesBlocked {
		worse(VerdictFailing, "disk full: every write is refused, acknowledgements included, until space is freed")
	}
	if st.CorruptRecoveries > 0 {
		worse(VerdictDegraded, "the store was found corrupt at start and moved aside")
	}
	for _, c := range conns {
		switch c.State {
		case bridge.StateConnected:
		case bridge.StateOpen:
			worse(VerdictDegraded, "connector %s: uplink failing, circuit breaker open (messages are kept)", c.Name)
		case bridge.StateBackingOff, bridge.StateConnecting:
			worse(VerdictDegraded, "connector %s: not connected, retrying (messages are kept)", c.Name)
		default:
			worse(VerdictDegraded, "connector %s is %s", c.Name, c.State)
		}
		if c.OldestAgeSeconds > oldestWarning {
			worse(VerdictDegraded, "connector %s: oldest queued message waits %.0f min", c.Name, c.OldestAgeSeconds/60)
		}
		if c.DeadLetterDepth > 0 {
			worse(VerdictDegraded, "connector %s: %d dead letters", c.Name, c.DeadLetterDepth)
		}
	}
	for _, o := range st.Outboxes {
		if o.Rejected > 0 {
			worse(VerdictDegraded, "outbox %s was full and refused %d messages since start", o.Name, o.Rejected)
		}
	}
	for _, p := range ports {
		if p.State != hardware.StateOpen {
			worse(VerdictDegraded, "serial port %s is %s", p.Name, p.State)
		}
	}
	return h
}

// Endpoints maps connector names to the remote they talk to, for display: scheme, host, port
// and path only. Credentials (userinfo, query, fragment) never appear. A connector type
// without a url field maps to "".
func Endpoints(cs []bridge.ConnectorConfig) map[string]string {
	out := make(map[string]string, len(cs))
	for _, c := range cs {
		out[c.Common().Name] = endpointOf(c)
	}
	return out
}

func endpointOf(c any) string {
	v := reflect.ValueOf(c)
	for v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface {
		if v.IsNil() {
			return ""
		}
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return ""
	}
	f := v.FieldByName("URL")
	if !f.IsValid() || f.Kind() != reflect.String {
		return ""
	}
	u, err := url.Parse(f.String())
	if err != nil || u.Host == "" {
		return "(unparsable url)"
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}
