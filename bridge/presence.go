package bridge

import (
	"encoding/json"
	"strings"
	"sync"
	"time"

	"github.com/edged-dev/edged/internal/confkit"
	"github.com/edged-dev/edged/wire"
)

// PresenceConfig makes an mqtt connector announce the gateway upstream: a retained `online` on
// Topic when the link comes up, the same topic's MQTT will `offline` (retained) that the remote
// broker publishes when the link dies without a goodbye (its keepalive timeout: 1.5 x
// keepalive), an explicit `offline` on a clean stop, and a health report every HealthInterval.
// Both travel in the connector's format: raw sends the bare word and the report as a JSON
// body; cbor and json wrap them in an envelope (payload as above) like every other message.
type PresenceConfig struct {
	// Topic of the online/offline status (retained, QoS 1). Placeholder {gateway_id}.
	// Example: "{gateway_id}/status".
	Topic string `yaml:"topic"`
	// HealthTopic of the periodic health report (QoS 1, not retained); "" = no reports.
	// Placeholder {gateway_id}. The report (JSON): gateway, time, version, uptime_seconds,
	// disk_free, and per connector state, depth, oldest_age_seconds, dead_letter_depth and
	// drops_since_last (messages the outbox dropped since the previous report).
	HealthTopic string `yaml:"health_topic"`
	// HealthInterval between reports; the first goes out right after `online`. Default 60s.
	HealthInterval time.Duration `yaml:"health_interval"`
}

// Presence payloads (raw format; the envelope payload otherwise).
const (
	PresenceOnline  = "online"
	PresenceOffline = "offline"
)

func (p *PresenceConfig) defaults() {
	if p != nil && p.HealthInterval == 0 {
		p.HealthInterval = 60 * time.Second
	}
}

func (p *PresenceConfig) validate() []error {
	if p == nil {
		return nil
	}
	var errs []error
	check := func(key, topic string, required bool) {
		switch {
		case topic == "" && required:
			errs = append(errs, confkit.Errorf(key, "required (e.g. \"{gateway_id}/status\")"))
		case strings.ContainsAny(topic, "+#"):
			errs = append(errs, confkit.Errorf(key, "%q: a topic to publish to cannot hold wildcards", topic))
		case strings.Contains(strings.ReplaceAll(topic, "{gateway_id}", ""), "{"):
			errs = append(errs, confkit.Errorf(key, "%q: the only placeholder is {gateway_id}", topic))
		}
	}
	check("presence.topic", p.Topic, true)
	check("presence.health_topic", p.HealthTopic, false)
	if p.HealthInterval < 0 || (p.HealthInterval > 0 && p.HealthInterval < time.Second) {
		errs = append(errs, confkit.Errorf("presence.health_interval", "%v: want at least 1s", p.HealthInterval))
	}
	return errs
}

// HealthReport is the body of a health message.
type HealthReport struct {
	Gateway       string            `json:"gateway"`
	Time          time.Time         `json:"time"`
	Version       string            `json:"version,omitempty"`
	UptimeSeconds int64             `json:"uptime_seconds"`
	DiskFree      int64             `json:"disk_free"` // bytes free in the data dir; -1 unknown
	Connectors    []HealthConnector `json:"connectors"`
}

// HealthConnector is one connector's outbox in a HealthReport.
type HealthConnector struct {
	Name             string  `json:"name"`
	State            string  `json:"state"`
	Depth            int64   `json:"depth"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	DeadLetterDepth  int64   `json:"dead_letter_depth"`
	DropsSinceLast   uint64  `json:"drops_since_last"`
}

// healthReporter returns a fresh Env.Health: each connector keeps its own "since last".
func (b *Bridge) healthReporter() func() *HealthReport {
	var mu sync.Mutex
	last := map[string]uint64{}
	return func() *HealthReport {
		r := &HealthReport{Gateway: b.opts.GatewayID, Time: time.Now().UTC(), Version: b.opts.Version,
			UptimeSeconds: int64(time.Since(b.started).Seconds()), DiskFree: -1}
		if b.opts.DB != nil {
			r.DiskFree = b.opts.DB.Stats().DiskFree
		}
		mu.Lock()
		defer mu.Unlock()
		for _, f := range b.forwarders() { // the running set: reload swaps it
			st := f.ob.Stats()
			var drops uint64
			for _, n := range st.Drops {
				drops += n
			}
			f.mu.Lock()
			state := f.state
			f.mu.Unlock()
			r.Connectors = append(r.Connectors, HealthConnector{Name: f.cfg.Name, State: state, Depth: st.Depth,
				OldestAgeSeconds: st.OldestAge.Seconds(), DeadLetterDepth: st.DLQDepth, DropsSinceLast: drops - last[f.cfg.Name]})
			last[f.cfg.Name] = drops
		}
		return r
	}
}

// presenceBody renders a presence or health payload in format; contentType is the payload's.
func presenceBody(env *Env, format, topic string, payload []byte, contentType string) ([]byte, string, error) {
	if format == FormatRaw {
		return payload, contentType, nil
	}
	e := &wire.Envelope{Version: wire.Version, ID: wire.NewID(), Topic: topic, Payload: payload, QoS: 1,
		Time: time.Now().UnixMilli(), Gateway: env.GatewayID, ContentType: contentType}
	body, err := env.EncodeEnvelope(format, e)
	return body, ContentType(format), err
}

// healthBody is the health report in format.
func healthBody(env *Env, format, topic string, r *HealthReport) ([]byte, string, error) {
	js, err := json.Marshal(r)
	if err != nil {
		return nil, "", err
	}
	return presenceBody(env, format, topic, js, "application/json")
}

// resolveTopic replaces {gateway_id}.
func resolveTopic(t, gateway string) string { return strings.ReplaceAll(t, "{gateway_id}", gateway) }
