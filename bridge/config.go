package bridge

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/edged-dev/edged/internal/confkit"
	"github.com/edged-dev/edged/storage"
	"gopkg.in/yaml.v3"
)

// ConnectorConfig is the decoded `bridge.connectors[i]` entry of one connector type. Every type
// embeds Common (as its alias Base) with `yaml:",inline"`.
type ConnectorConfig interface {
	// Common returns the settings every connector shares.
	Common() *Common
	// Validate returns errors.Join of *confkit.KeyError, keys relative to the connector
	// ("url", "forward[0].from"). It changes nothing: the defaults are in the value NewConfig
	// returns, before the connector's YAML is decoded over it, so a zero left after decoding was
	// written by the user and is checked like any other value.
	Validate() error
}

// Formats of the bytes sent to the remote.
const (
	FormatRaw  = "raw"  // the payload as published locally (mqtt only)
	FormatCBOR = "cbor" // the wire CBOR envelope (batch: wire CBOR batch)
	FormatJSON = "json" // the wire JSON envelope (batch: wire JSON batch)
)

// Common holds the settings every connector type shares. Each type embeds it inline, so these
// keys sit directly in the connector's YAML mapping.
type Common struct {
	// Name identifies the connector in logs, metrics, status and the name of its outbox. It must
	// be unique, [A-Za-z0-9_.-], at most 64 characters. Renaming a connector orphans its outbox.
	Name string `yaml:"name"`
	// Type selects the connector implementation: mqtt, http or websocket (`edged connectors`
	// lists them).
	Type string `yaml:"type"`
	// Format of each message sent to the remote: raw (the payload exactly as published locally;
	// mqtt only), cbor (the edged CBOR envelope with id, capture time, gateway, client id, user
	// properties) or json (the same envelope as JSON). Default: raw for mqtt, json otherwise.
	Format string `yaml:"format"`
	// Forward maps local topics to this connector (uplink). A message matching several entries
	// is stored once per distinct remote topic.
	Forward []Rule `yaml:"forward"`
	// Subscribe maps remote topics to local topics (downlink, e.g. commands to devices). Not
	// every connector type can subscribe (http cannot).
	Subscribe []Rule `yaml:"subscribe"`
	// Batch bounds how many outbox messages the forwarder hands the connector at once.
	Batch BatchConfig `yaml:"batch"`
	// Window is the maximum number of messages sent but not yet confirmed. For MQTT 5 the
	// remote's Receive Maximum lowers it further. Default 1000 for mqtt, 1 batch otherwise.
	Window int `yaml:"window"`
	// StallTimeout: when messages are waiting and the connection is up but nothing has been
	// confirmed for this long, the connector is marked stalled, counted, and reconnected.
	// Default 30s.
	StallTimeout time.Duration `yaml:"stall_timeout"`
	// ConnectTimeout bounds one connection attempt. Default 10s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// Backoff between failed attempts: exponential from min to max with jitter. Default 200ms
	// to 5s; a min written alone raises the max to at least itself, a max alone lowers the min.
	Backoff confkit.Backoff `yaml:"backoff"`
	// Breaker opens the circuit after consecutive failures: no attempt while open, then one
	// probe (half-open); a success closes it.
	Breaker BreakerConfig `yaml:"breaker"`
	// Outbox overrides the `storage:` limits for this connector's outbox (max_bytes,
	// max_messages, ttl, when_full); zero values inherit.
	Outbox storage.Config `yaml:"outbox"`
	// Traffic control: live_first, rate, rate_burst (traffic.go).
	TrafficConfig `yaml:",inline"`
}

// Rule is one forward or subscribe entry.
type Rule struct {
	// From is an MQTT topic filter (+ and # allowed): a local filter for forward, a remote filter
	// for subscribe. {gateway_id} is replaced by the gateway id (e.g. "{gateway_id}/cmd/#");
	// any other placeholder is an error.
	From string `yaml:"from"`
	// To is the destination topic template. Placeholders: {topic} the whole source topic, {1},
	// {2}.. the levels matched by the wildcards of From in order ('#' is the remainder joined
	// with '/'), {gateway_id}, and for forward rules {client_id} (the local publisher).
	To string `yaml:"to"`
	// QoS used toward the destination: 0 or 1 for forward (delivery is confirmed and
	// deduplicated by id), 0..2 for subscribe. Default 1.
	QoS byte `yaml:"qos"`
	// Traffic control of forward rules: priority, keep_latest, ttl (traffic.go).
	RuleTraffic `yaml:",inline"`
}

// BatchConfig bounds one send.
type BatchConfig struct {
	// MaxMessages per send (an HTTP request, a websocket frame, a burst of MQTT publishes).
	// Default 1000 for mqtt, 100 otherwise; 1 sends single messages.
	MaxMessages int `yaml:"max_messages"`
	// MaxBytes of payload per send; default 1MiB. A single larger message is still sent alone.
	MaxBytes confkit.ByteSize `yaml:"max_bytes"`
	// MaxDelay to wait for a batch to fill when fewer than max_messages are queued. Default 0
	// (send what is there).
	MaxDelay time.Duration `yaml:"max_delay"`
}

// BreakerConfig is the circuit breaker.
type BreakerConfig struct {
	// Failures is the number of consecutive failed attempts that opens the breaker; default 5,
	// -1 disables the breaker.
	Failures int `yaml:"failures"`
	// OpenFor is how long the breaker stays open before a probe; default 5s.
	OpenFor time.Duration `yaml:"open_for"`
}

// Base is Common under the name connector configs embed it by (`Base `+"`yaml:\",inline\"`"+`).
// A struct cannot have both a field and a method called Common, so embedding the alias keeps
// the promoted Common() method that ConnectorConfig needs.
type Base = Common

// Common implements ConnectorConfig for types that embed it (as Base).
func (c *Common) Common() *Common { return c }

// defaults fills zero values; each type's NewConfig calls it once, before decoding.
// batchMsgs/window are the type's defaults.
func (c *Common) defaults(format string, batchMsgs, window int) {
	if c.Format == "" {
		c.Format = format
	}
	if c.Batch.MaxMessages == 0 {
		c.Batch.MaxMessages = batchMsgs
	}
	if c.Batch.MaxBytes == 0 {
		c.Batch.MaxBytes = 1 << 20
	}
	if c.Window == 0 {
		c.Window = window
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = 30 * time.Second
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	// A 5 s cap (mosquitto's bridge retries every 5 s) bounds how long a returning uplink waits
	// for us; a dead uplink costs one TCP SYN per ~5 s. Set before decoding like every default
	// here, so a written 0 is refused; confkit.Backoff's decoding moves the default of a key left
	// out to follow the one written (`{min: 10s}` alone gives max 10s, `{max: 50ms}` min 50ms).
	c.Backoff = confkit.Backoff{Min: 200 * time.Millisecond, Max: 5 * time.Second}
	if c.Breaker.Failures == 0 {
		c.Breaker.Failures = 5
	}
	// The breaker also counts failed connects, so open_for is the worst-case delay between
	// the uplink returning and the first probe: keep it as short as the backoff cap.
	if c.Breaker.OpenFor == 0 {
		c.Breaker.OpenFor = 5 * time.Second
	}
}

// UnmarshalYAML decodes a rule with qos defaulting to 1 (absent and 0 differ) and rejects
// unknown keys itself, because a nested Node.Decode is not strict.
func (r *Rule) UnmarshalYAML(n *yaml.Node) error {
	// Problems are a *yaml.TypeError with "line N:" entries, so the loader reports each at its
	// own line and goes on decoding the rest of the file.
	var bad []string
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			switch k := n.Content[i]; k.Value {
			case "from", "to", "qos", "priority", "keep_latest", "ttl":
			default:
				bad = append(bad, fmt.Sprintf("line %d: field %s not found in rule (want from, to, qos, priority, keep_latest, ttl)", k.Line, k.Value))
			}
		}
	}
	type plain Rule
	p := plain{QoS: 1}
	if err := n.Decode(&p); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return err
		}
		bad = append(bad, te.Errors...)
	}
	*r = Rule(p)
	if len(bad) > 0 {
		return &yaml.TypeError{Errors: bad}
	}
	return nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// validate checks the shared keys; formats lists the formats the type supports; canSubscribe
// whether `subscribe` is allowed.
func (c *Common) validate(formats []string, canSubscribe bool) error {
	var errs []error
	if !nameRE.MatchString(c.Name) {
		errs = append(errs, confkit.Errorf("name", "%q: want 1-64 characters of A-Z a-z 0-9 _ . -", c.Name))
	}
	okFormat := false
	for _, f := range formats {
		okFormat = okFormat || f == c.Format
	}
	if !okFormat {
		errs = append(errs, confkit.Errorf("format", "%q: want one of %v", c.Format, formats))
	}
	if len(c.Forward) == 0 && len(c.Subscribe) == 0 {
		errs = append(errs, confkit.Errorf("forward", "a connector needs at least one forward or subscribe entry"))
	}
	errs = append(errs, c.ValidateRules())
	if len(c.Subscribe) > 0 && !canSubscribe {
		errs = append(errs, confkit.Errorf("subscribe", "connector type %q cannot subscribe", c.Type))
	}
	if c.Batch.MaxMessages < 1 {
		errs = append(errs, confkit.Errorf("batch.max_messages", "%d: must be >= 1", c.Batch.MaxMessages))
	}
	if c.Batch.MaxBytes <= 0 {
		errs = append(errs, confkit.Errorf("batch.max_bytes", "%v: must be positive", c.Batch.MaxBytes))
	}
	if c.Batch.MaxDelay < 0 {
		errs = append(errs, confkit.Errorf("batch.max_delay", "%v: must not be negative", c.Batch.MaxDelay))
	}
	if c.Window < 1 || c.Window > 65535 {
		errs = append(errs, confkit.Errorf("window", "%d: want 1..65535", c.Window))
	}
	if c.StallTimeout <= 0 {
		errs = append(errs, confkit.Errorf("stall_timeout", "%v: must be positive", c.StallTimeout))
	}
	if c.ConnectTimeout <= 0 {
		errs = append(errs, confkit.Errorf("connect_timeout", "%v: must be positive", c.ConnectTimeout))
	}
	if err := c.Backoff.Validate("backoff"); err != nil {
		errs = append(errs, err)
	}
	if c.Breaker.Failures < -1 || c.Breaker.Failures == 0 {
		errs = append(errs, confkit.Errorf("breaker.failures", "%d: want >= 1, or -1 to disable", c.Breaker.Failures))
	}
	if c.Breaker.OpenFor <= 0 {
		errs = append(errs, confkit.Errorf("breaker.open_for", "%v: must be positive", c.Breaker.OpenFor))
	}
	// Zero outbox limits inherit the storage: section, so they are valid here.
	errs = append(errs, confkit.Prefix("outbox", c.Outbox.Validate()))
	errs = append(errs, c.TrafficConfig.validate()...)
	return errors.Join(errs...)
}

// ValidateRules checks only the forward and subscribe entries; the config loader uses it for a
// connector whose type is unknown, whose other keys cannot be checked. Keys as in Validate.
func (c *Common) ValidateRules() error {
	var errs []error
	for i, r := range c.Forward {
		errs = append(errs, r.validate(fmt.Sprintf("forward[%d]", i), true)...)
	}
	for i, r := range c.Subscribe {
		errs = append(errs, r.validate(fmt.Sprintf("subscribe[%d]", i), false)...)
	}
	return errors.Join(errs...)
}

func (r Rule) validate(key string, forward bool) []error {
	var errs []error
	if err := validFilter(r.From); err != nil {
		errs = append(errs, confkit.Errorf(key+".from", "%v", err))
	} else if _, err := compileTemplate(r.To, wildcards(r.From), forward); err != nil {
		errs = append(errs, confkit.Errorf(key+".to", "%v", err))
	}
	max := byte(2)
	if forward {
		max = 1
	}
	if r.QoS > max {
		errs = append(errs, confkit.Errorf(key+".qos", "%d: want 0..%d", r.QoS, max))
	}
	if forward {
		errs = append(errs, r.RuleTraffic.validate(key)...)
	} else if r.RuleTraffic != (RuleTraffic{}) {
		errs = append(errs, confkit.Errorf(key, "priority, keep_latest and ttl apply to forward rules only"))
	}
	return errs
}

// ValidateAll checks what no single connector can: unique names. Keys are "[i].name".
func ValidateAll(cfgs []ConnectorConfig) error {
	var errs []error
	seen := map[string]int{}
	for i, c := range cfgs {
		n := c.Common().Name
		if j, dup := seen[n]; dup {
			errs = append(errs, confkit.Errorf(fmt.Sprintf("[%d].name", i), "%q is already the name of connector [%d]", n, j))
			continue
		}
		seen[n] = i
	}
	return errors.Join(errs...)
}
