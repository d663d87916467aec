// Package config loads edged's YAML file: strict (every unknown key is an error), with every
// problem of the file reported at once as "FILE:LINE: key: problem". It owns the top-level
// sections and the file format; each section's meaning, defaults and validation belong to the
// package that owns that section (broker, storage, bridge, hardware). It must not hold logic of
// those packages.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/hardware"
	"github.com/edged-dev/edged/internal/confkit"
	"github.com/edged-dev/edged/internal/netaddr"
	"github.com/edged-dev/edged/storage"
)

// Config is the whole edged.yaml.
type Config struct {
	// DataDir holds the badger store (outboxes, dead letters, broker sessions and retained
	// messages). Default ./data. On a Pi use a directory on the SD card's data partition
	// (the .deb uses /var/lib/edged).
	DataDir string `yaml:"data_dir"`
	// GatewayID names this gateway in envelopes and `{gateway_id}` placeholders. Default: the
	// hostname.
	GatewayID string `yaml:"gateway_id"`
	// MemoryLimit is the Go runtime's soft memory limit (GOMEMLIMIT), the biggest single lever
	// on resident memory on a 512 MB board. Default 56MiB; 0 disables; the GOMEMLIMIT
	// environment variable, when set, wins. 56 rather than 64: right after 1M messages went into
	// the outbox, RssAnon measured 31-42 MB (7 runs) instead of 36-53 MB, for ingest within
	// 3 % (median 60.8k vs 62.9k msgs/s); 48MiB cost 10 % of the ingest, 40MiB half of it.
	MemoryLimit confkit.ByteSize `yaml:"memory_limit"`
	// Log sets the level (debug|info|warn|error) and format (text|json) of the log on stderr.
	Log Log `yaml:"log"`
	// Admin is the local HTTP API: /healthz, /metrics (Prometheus), /api/v1/status.
	Admin Admin `yaml:"admin"`
	// Broker is the embedded MQTT broker: listeners, users, roles.
	Broker broker.Config `yaml:"broker"`
	// Storage sets the default bounds of every connector's outbox.
	Storage storage.Config `yaml:"storage"`
	// Bridge lists the cloud connectors and their topic rules.
	Bridge Bridge `yaml:"bridge"`
	// Hardware lists serial devices.
	Hardware hardware.Config `yaml:"hardware"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info (default), warn or error.
	Level string `yaml:"level"`
	// Format is text (default, for journald and people) or json (for log shippers).
	Format string `yaml:"format"`
}

// Admin configures the admin HTTP server.
type Admin struct {
	// Address to listen on, default 127.0.0.1:9100. "" disables the admin API (and
	// `edged status`). An address other than loopback requires token_file.
	Address string `yaml:"address"`
	// TokenFile holds a bearer token (one line, at least 16 characters; read at start).
	// With it every endpoint but /healthz, the dashboard included, requires
	// `Authorization: Bearer <token>`; `edged status -c FILE` sends it.
	TokenFile string `yaml:"token_file"`
}

// Bridge is the `bridge:` section. Each connector is decoded by the config type its `type`
// registered (see `edged connectors`).
type Bridge struct {
	Connectors []bridge.ConnectorConfig `yaml:"-"`
	// index[i] is the position of Connectors[i] in the file's list: entries that could not be
	// decoded (an unknown type) are not in Connectors, and problems must name the right entry.
	index []int
}

// Default is the configuration `edged run` uses without -c.
func Default() *Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "edged"
	}
	return &Config{
		DataDir:     "./data",
		GatewayID:   host,
		MemoryLimit: 56 << 20,
		Log:         Log{Level: "info", Format: "text"},
		Admin:       Admin{Address: "127.0.0.1:9100"},
		Broker:      broker.Defaults(),
		Storage:     storage.Defaults(),
	}
}

// Load reads and validates path. The error, if any, is Problems.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, b)
}

// Parse decodes and validates a config document; file is used in messages only.
func Parse(file string, b []byte) (*Config, error) {
	var probs Problems
	add := func(line int, key, msg string) {
		probs = append(probs, Problem{File: file, Line: line, Key: key, Msg: msg})
	}
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return nil, typeProblems(file, &root, te)
		}
		// yaml.v3 syntax errors read "yaml: line N: ...".
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if m := typeErrLine.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1]) // the pattern matched digits
			return nil, Problems{{File: file, Line: line, Msg: m[2]}}
		}
		return nil, Problems{{File: file, Msg: msg}}
	}
	cfg := Default()
	if len(root.Content) == 0 {
		return cfg, nil // an empty file means "all defaults"
	}
	doc := root.Content[0]
	if doc.Kind == yaml.ScalarNode && doc.Tag == "!!null" {
		// "---" or "~" alone: a document without content is an empty file. (yaml.v3 places
		// it on the line after the marker, which a one-line file does not have.)
		return cfg, nil
	}
	if doc.Kind != yaml.MappingNode {
		return nil, Problems{{File: file, Line: doc.Line, Msg: "the config must be a mapping of sections (data_dir:, broker:, ...)"}}
	}

	complexKeys(doc, add)
	if len(probs) > 0 {
		return nil, probs
	}

	// The bridge section is decoded per connector type; take it out of the generic pass.
	var bridgeNode *yaml.Node
	for i := 0; i+1 < len(doc.Content); i += 2 {
		if doc.Content[i].Value == "bridge" {
			bridgeNode = doc.Content[i+1]
		}
	}
	strictCheck(doc, reflect.TypeOf(cfg).Elem(), "", func(line int, key, msg string) {
		if key == "bridge" || strings.HasPrefix(key, "bridge.") {
			return
		}
		add(line, key, msg)
	})
	if err := decodeSafely(doc, cfg); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			probs = append(probs, typeProblems(file, &root, te)...)
		} else {
			add(0, "", err.Error())
		}
	}
	if bridgeNode != nil {
		decodeBridge(file, &root, bridgeNode, cfg, add, &probs)
	}

	// Zero values a user left out (per list item too) get their defaults before validation.
	cfg.Broker.ApplyDefaults()
	cfg.Storage.ApplyDefaults()
	cfg.Hardware.ApplyDefaults()

	// Semantic validation, section by section; keys come back relative and get their lines. A
	// key whose value could not be decoded is already reported: what validation says about the
	// value left in its place would only mislead.
	undecoded := map[string]bool{}
	for _, p := range probs {
		undecoded[p.Key] = p.Key != ""
	}
	for _, e := range confkit.Flatten(cfg.validate()) {
		var ke *confkit.KeyError
		if errors.As(e, &ke) {
			if undecoded[ke.Key] {
				continue
			}
			add(lineOf(&root, ke.Key), ke.Key, ke.Msg)
		} else {
			add(0, "", e.Error())
		}
	}
	if len(probs) > 0 {
		sort.SliceStable(probs, func(i, j int) bool { return probs[i].Line < probs[j].Line })
		return nil, dedupe(probs)
	}
	return cfg, nil
}

func dedupe(ps Problems) Problems {
	seen := map[string]bool{}
	var out Problems
	for _, p := range ps {
		if s := p.Error(); !seen[s] {
			seen[s] = true
			out = append(out, p)
		}
	}
	return out
}

func decodeBridge(file string, root, n *yaml.Node, cfg *Config, add func(int, string, string), probs *Problems) {
	if n.Kind != yaml.MappingNode {
		if n.Tag != "!!null" {
			add(n.Line, "bridge", "want a mapping with connectors:")
		}
		return
	}
	var list *yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if k.Value == "connectors" {
			list = n.Content[i+1]
			continue
		}
		add(k.Line, "bridge."+k.Value, "unknown key (known keys here: connectors)")
	}
	if list == nil || list.Tag == "!!null" {
		return
	}
	if list.Kind != yaml.SequenceNode {
		add(list.Line, "bridge.connectors", "want a list of connectors")
		return
	}
	for i, c := range list.Content {
		key := fmt.Sprintf("bridge.connectors[%d]", i)
		if c.Kind != yaml.MappingNode {
			add(c.Line, key, "want a mapping with name:, type: and the type's keys")
			continue
		}
		typ, typLine := "", c.Line
		for j := 0; j+1 < len(c.Content); j += 2 {
			if c.Content[j].Value == "type" {
				typ, typLine = c.Content[j+1].Value, c.Content[j+1].Line
			}
		}
		t, ok := bridge.LookupType(typ)
		if !ok {
			add(typLine, key+".type", fmt.Sprintf("unknown connector type %q (registered: %s)", typ, strings.Join(typeNames(), ", ")))
			// The other keys belong to a type we do not know, but the keys every type shares
			// (the rules above all) are still checked, so one run shows every problem.
			var common bridge.Common
			if err := decodeSafely(c, &common); err == nil {
				for _, e := range confkit.Flatten(confkit.Prefix(key, common.ValidateRules())) {
					var ke *confkit.KeyError
					if errors.As(e, &ke) {
						add(lineOf(root, ke.Key), ke.Key, ke.Msg)
					}
				}
			}
			continue
		}
		cc := t.NewConfig()
		strictCheck(c, reflect.TypeOf(cc), key, add)
		if err := decodeSafely(c, cc); err != nil {
			var te *yaml.TypeError
			if errors.As(err, &te) {
				*probs = append(*probs, typeProblems(file, root, te)...)
			} else {
				add(c.Line, key, err.Error())
			}
			continue
		}
		cfg.Bridge.Connectors = append(cfg.Bridge.Connectors, cc)
		cfg.Bridge.index = append(cfg.Bridge.index, i)
	}
}

func (c *Config) validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, confkit.Errorf("data_dir", "must not be empty"))
	}
	if c.GatewayID == "" || strings.ContainsAny(c.GatewayID, "/+#") {
		errs = append(errs, confkit.Errorf("gateway_id", "%q is not a valid id (non-empty, no / + #)", c.GatewayID))
	}
	if c.MemoryLimit < 0 || (c.MemoryLimit > 0 && c.MemoryLimit < 16<<20) {
		errs = append(errs, confkit.Errorf("memory_limit", "%s is too small (minimum 16MiB, or 0 to disable)", c.MemoryLimit))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, confkit.Errorf("log.level", "%q is not one of debug, info, warn, error", c.Log.Level))
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		errs = append(errs, confkit.Errorf("log.format", "%q is not one of text, json", c.Log.Format))
	}
	if c.Admin.Address != "" {
		if _, _, err := net.SplitHostPort(c.Admin.Address); err != nil {
			errs = append(errs, confkit.Errorf("admin.address", "%q is not host:port", c.Admin.Address))
		} else if c.Admin.TokenFile == "" && !netaddr.IsLoopback(c.Admin.Address) {
			errs = append(errs, confkit.Errorf("admin.address", "%q is reachable from the network and admin.token_file is not set: "+
				"set token_file to a file holding a secret token (e.g. `head -c 32 /dev/urandom | base64 > /etc/edged/admin.token`), "+
				"or bind the admin API to 127.0.0.1", c.Admin.Address))
		}
	}
	errs = append(errs,
		confkit.Prefix("broker", c.Broker.Validate()),
		confkit.Prefix("storage", c.Storage.Validate()),
		confkit.Prefix("hardware", c.Hardware.Validate()),
		confkit.Prefix("bridge.connectors", validateConnectors(c.Bridge.Connectors, c.Bridge.index)),
	)
	return errors.Join(errs...)
}

// validateConnectors validates each decoded connector; index maps a position in cs to its
// entry in the file (nil: the same), so keys and messages name the entry the user wrote.
func validateConnectors(cs []bridge.ConnectorConfig, index []int) error {
	pos := func(i int) int {
		if i < len(index) {
			return index[i]
		}
		return i
	}
	var errs []error
	for i, c := range cs {
		errs = append(errs, confkit.Prefix(fmt.Sprintf("[%d]", pos(i)), c.Validate()))
	}
	for _, e := range confkit.Flatten(bridge.ValidateAll(cs)) {
		var ke *confkit.KeyError
		if !errors.As(e, &ke) {
			errs = append(errs, e)
			continue
		}
		renum := func(s string) string {
			return listIndex.ReplaceAllStringFunc(s, func(m string) string {
				n, _ := strconv.Atoi(m[1 : len(m)-1])
				return fmt.Sprintf("[%d]", pos(n))
			})
		}
		errs = append(errs, &confkit.KeyError{Key: renum(ke.Key), Msg: renum(ke.Msg)})
	}
	return errors.Join(errs...)
}

// listIndex is a "[n]" of ValidateAll's keys and messages, which count decoded connectors.
var listIndex = regexp.MustCompile(`\[\d+\]`)

func typeNames() []string {
	var out []string
	for _, t := range bridge.Types() {
		out = append(out, t.Name)
	}
	return out
}
