package bridge

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/edged-dev/edged/internal/confkit"
	"gopkg.in/yaml.v3"
)

// Traffic control: the keys of this file sit inline in a forward rule (RuleTraffic) and in a
// connector (TrafficConfig, HTTPTraffic). The README section "Traffic control" is the user's
// guide; these doc comments are the reference.

// Priority names accepted by `priority:` besides the numbers 0..9.
var priorityNames = map[string]int{"lowest": 0, "low": 2, "normal": 5, "high": 8, "highest": 9}

// DefaultPriority is the priority of a forward rule without `priority:`.
const DefaultPriority = 5

// RuleTraffic is the per-rule part of traffic control (inline in a forward rule).
type RuleTraffic struct {
	// Priority of the rule's messages on this connector: 0 (lowest) to 9 (highest), or a name:
	// lowest (0), low (2), normal (5), high (8), highest (9). Default normal. The forwarder
	// always sends from the highest priority that has messages queued; within one priority
	// messages leave in the order they were captured. Each priority is its own queue (a lane)
	// in the connector's storage; all lanes share the one group commit, so a priority costs no
	// extra fsync.
	Priority string `yaml:"priority"`
	// KeepLatest keeps only the newest message per remote topic while it waits (state-like
	// data: a setpoint, a device status). An update replaces the queued message of its topic,
	// counted as dropped with reason "superseded". Queued keep-latest messages go out in topic
	// order, not in capture order. Default false.
	KeepLatest bool `yaml:"keep_latest"`
	// TTL overrides the connector's outbox ttl for this rule's messages: older ones are
	// dropped (counted, reason "ttl") instead of sent. At least 1s; default: the connector's.
	TTL confkit.Duration `yaml:"ttl"`
}

// priority returns the numeric priority (validated configs only).
func (r RuleTraffic) priority() int {
	p, _ := parsePriority(r.Priority)
	return p
}

func parsePriority(s string) (int, error) {
	if s == "" {
		return DefaultPriority, nil
	}
	if p, ok := priorityNames[strings.ToLower(s)]; ok {
		return p, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 9 {
		return 0, fmt.Errorf("%q: want 0..9 or lowest, low, normal, high, highest", s)
	}
	return n, nil
}

func (r RuleTraffic) validate(key string) []error {
	var errs []error
	if _, err := parsePriority(r.Priority); err != nil {
		errs = append(errs, confkit.Errorf(key+".priority", "%v", err))
	}
	if r.TTL < 0 || (r.TTL > 0 && time.Duration(r.TTL) < time.Second) {
		errs = append(errs, confkit.Errorf(key+".ttl", "%v: must be at least 1s (as the outbox ttl)", r.TTL))
	}
	return errs
}

// TrafficConfig is the per-connector part of traffic control (inline in every connector).
type TrafficConfig struct {
	// LiveFirst: after an outage, messages captured while the link is up go out ahead of the
	// backlog stored while it was down; the backlog drains in the remaining capacity. Within
	// the live and within the backlog queue of a priority the order is kept, but a backlog
	// message may reach the remote after a newer live one (order by the envelope's time or id
	// if it matters). Default false (one FIFO per priority).
	LiveFirst bool `yaml:"live_first"`
	// Rate caps the bytes this connector writes to its uplink sockets, protocol overhead
	// (MQTT, HTTP, WebSocket, TLS framing) included, e.g. 32KiB/s. Every connection of the
	// connector shares the cap. Default 0: unlimited.
	Rate ByteRate `yaml:"rate"`
	// RateBurst is how many bytes may be written at once above the steady rate. Default an
	// eighth of a second of rate (at least 1KiB); a larger burst lets short spikes out faster
	// but a window of the link then carries up to rate*window+burst.
	RateBurst confkit.ByteSize `yaml:"rate_burst"`
}

func (t TrafficConfig) validate() []error {
	var errs []error
	if t.RateBurst < 0 {
		errs = append(errs, confkit.Errorf("rate_burst", "%v: must not be negative", t.RateBurst))
	}
	if t.RateBurst > 0 && t.Rate == 0 {
		errs = append(errs, confkit.Errorf("rate_burst", "set without rate"))
	}
	return errs
}

// burst is the effective burst in bytes (0 when unlimited).
func (t TrafficConfig) burst() int {
	if t.Rate == 0 {
		return 0
	}
	if t.RateBurst > 0 {
		return int(t.RateBurst)
	}
	return max(1024, int(t.Rate/8))
}

// ByteRate is a rate in bytes per second written as a size per unit of time: "32KiB/s",
// "1MB/s", "600KiB/min". 0 means unlimited.
type ByteRate float64

// ParseByteRate parses "32KiB/s".
func ParseByteRate(s string) (ByteRate, error) {
	size, per, err := splitRate(s)
	if err != nil {
		return 0, err
	}
	b, err := confkit.ParseByteSize(size)
	if err != nil {
		return 0, fmt.Errorf("rate %q: %w", s, err)
	}
	return ByteRate(float64(b) / per.Seconds()), nil
}

// UnmarshalYAML accepts "32KiB/s".
func (r *ByteRate) UnmarshalYAML(n *yaml.Node) error {
	return confkit.UnmarshalScalar(n, "a rate such as 32KiB/s", ParseByteRate, r)
}

// MarshalYAML writes bytes per second.
func (r ByteRate) MarshalYAML() (any, error) { return r.String(), nil }

func (r ByteRate) String() string {
	if r == ByteRate(math.Trunc(float64(r))) {
		return confkit.ByteSize(r).String() + "/s"
	}
	return strconv.FormatFloat(float64(r), 'f', -1, 64) + "B/s"
}

// RequestRate is a number of requests per unit of time: "20/s", "600/min", "1/h".
type RequestRate float64

// ParseRequestRate parses "20/s".
func ParseRequestRate(s string) (RequestRate, error) {
	num, per, err := splitRate(s)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || n < 0 || math.IsNaN(n) || math.IsInf(n, 0) {
		return 0, fmt.Errorf("invalid request rate %q (want e.g. 20/s, 600/min)", s)
	}
	return RequestRate(n / per.Seconds()), nil
}

// UnmarshalYAML accepts "20/s".
func (r *RequestRate) UnmarshalYAML(n *yaml.Node) error {
	return confkit.UnmarshalScalar(n, "a rate such as 20/s", ParseRequestRate, r)
}

// MarshalYAML writes requests per second.
func (r RequestRate) MarshalYAML() (any, error) {
	return strconv.FormatFloat(float64(r), 'f', -1, 64) + "/s", nil
}

func splitRate(s string) (string, time.Duration, error) {
	i := strings.LastIndexByte(s, '/')
	if i < 0 {
		return "", 0, fmt.Errorf("invalid rate %q: want AMOUNT/UNIT, e.g. 32KiB/s or 20/s", s)
	}
	var per time.Duration
	switch strings.TrimSpace(s[i+1:]) {
	case "s":
		per = time.Second
	case "m", "min":
		per = time.Minute
	case "h":
		per = time.Hour
	default:
		return "", 0, fmt.Errorf("invalid rate %q: unit after '/' must be s, min or h", s)
	}
	return s[:i], per, nil
}

// Compression of the connector's batches.
const (
	CompressNone = "none"
	CompressZstd = "zstd"
	CompressGzip = "gzip"
)

// HTTPTraffic is the traffic control of an http connector (inline in its config).
type HTTPTraffic struct {
	// MaxRequests caps the requests per unit of time, e.g. 20/s, for APIs that enforce a
	// quota: edged waits instead of collecting 429s. A 429's Retry-After is still honoured on
	// top. Default 0: unlimited.
	MaxRequests RequestRate `yaml:"max_requests"`
	// MaxRequestsBurst is how many requests may go at once above the steady rate. Default 1.
	MaxRequestsBurst int `yaml:"max_requests_burst"`
	// Compression of request bodies: none (default), zstd or gzip, sent with the matching
	// Content-Encoding. Only for remotes that accept it: one that does not answers 415 or
	// 400, which dead-letters the batch.
	Compression string `yaml:"compression"`
}

func (h HTTPTraffic) validate() []error {
	var errs []error
	if h.MaxRequestsBurst < 0 {
		errs = append(errs, confkit.Errorf("max_requests_burst", "%d: must not be negative", h.MaxRequestsBurst))
	}
	if h.MaxRequestsBurst > 0 && h.MaxRequests == 0 {
		errs = append(errs, confkit.Errorf("max_requests_burst", "set without max_requests"))
	}
	switch h.Compression {
	case "", CompressNone, CompressZstd, CompressGzip:
	default:
		errs = append(errs, confkit.Errorf("compression", "%q: want none, zstd or gzip", h.Compression))
	}
	return errs
}

// WSTraffic is the traffic control of a websocket connector (inline in its config).
type WSTraffic struct {
	// Compression of outgoing batch frames: none (default) or zstd. A compressed batch is a
	// binary frame holding the zstd-compressed bytes of the frame that would have been sent
	// (see "WebSocket protocol" in the package documentation); the server must accept it.
	Compression string `yaml:"compression"`
}

func (w WSTraffic) validate() []error {
	switch w.Compression {
	case "", CompressNone, CompressZstd:
		return nil
	}
	return []error{confkit.Errorf("compression", "%q: want none or zstd", w.Compression)}
}
