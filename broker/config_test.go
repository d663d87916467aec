package broker

import (
	"errors"
	"strings"
	"testing"

	"github.com/edged-dev/edged/internal/confkit"
	"gopkg.in/yaml.v3"
)

func TestDefaultsValid(t *testing.T) {
	c := Defaults()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.Listeners) != 1 || c.Listeners[0].Address != "127.0.0.1:1883" || c.MaxPacketSize != 1<<20 {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestConfigYAML(t *testing.T) {
	src := `
listeners:
  - {type: tcp, address: 127.0.0.1:1883}
  - {type: websocket, address: 127.0.0.1:8080}
allow_anonymous: false
users:
  - {username: sensor1, password_hash: "$2a$04$6Tz0F6qkL3wL3vj8Qm9rXeJ6V5o9mB3XQ7XQvJ3Y2wq1b0m3x7x8K", role: device}
roles:
  device: {publish: ["sensors/%c/#"], subscribe: ["cmd/%c/#"]}
max_packet_size: 256KiB
max_topic_levels: 16
max_subscriptions_per_client: 50
`
	var c Config
	if err := yaml.Unmarshal([]byte(src), &c); err != nil {
		t.Fatal(err)
	}
	c.ApplyDefaults()
	if c.MaxPacketSize != 256<<10 || c.Roles["device"].Publish[0] != "sensors/%c/#" || len(c.Listeners) != 2 ||
		c.MaxTopicLevels != 16 || c.MaxSubscriptionsPerClient != 50 || c.MaxTopicLength != DefaultMaxTopicLength {
		t.Fatalf("decoded %+v", c)
	}
}

func TestValidateErrors(t *testing.T) {
	good := hash(t, "pw")
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		key  string
		msg  string
	}{
		{"bad type", func(c *Config) { c.Listeners[0].Type = "quic" }, "listeners[0].type", "unknown listener type"},
		{"bad address", func(c *Config) { c.Listeners[0].Address = "localhost" }, "listeners[0].address", "host:port"},
		{"bad port", func(c *Config) { c.Listeners[0].Address = "127.0.0.1:99999" }, "listeners[0].address", "invalid port"},
		{"tls no cert", func(c *Config) { c.Listeners[0].Type = ListenerTLS }, "listeners[0].cert", "needs cert"},
		{"tls missing file", func(c *Config) {
			c.Listeners[0] = Listener{Type: ListenerTLS, Address: "127.0.0.1:0", Cert: "/nonexistent.crt", Key: "/nonexistent.key"}
		}, "listeners[0].cert", "load certificate"},
		{"cert on tcp", func(c *Config) { c.Listeners[0].Cert = "x.crt" }, "listeners[0].cert", "not used by a tcp listener"},
		{"unknown role", func(c *Config) { c.Users = []User{{Username: "u", PasswordHash: good, Role: "nope"}} }, "users[0].role", `unknown role "nope"`},
		{"bad hash", func(c *Config) {
			c.Roles = map[string]Role{"r": {}}
			c.Users = []User{{Username: "u", PasswordHash: "secret", Role: "r"}}
		}, "users[0].password_hash", "not a bcrypt hash"},
		{"duplicate user", func(c *Config) {
			c.Roles = map[string]Role{"r": {}}
			c.Users = []User{{Username: "u", PasswordHash: good, Role: "r"}, {Username: "u", PasswordHash: good, Role: "r"}}
		}, "users[1].username", "duplicate"},
		{"bad filter", func(c *Config) { c.Roles = map[string]Role{"r": {Publish: []string{"a/#/b"}}} }, "roles.r.publish[0]", "'#' must be the last level"},
		{"bad wildcard", func(c *Config) { c.Roles = map[string]Role{"r": {Subscribe: []string{"a/b+"}}} }, "roles.r.subscribe[0]", "whole level"},
		{"packet size", func(c *Config) { c.MaxPacketSize = 1 << 30 }, "max_packet_size", "out of range"},
		{"topic length", func(c *Config) { c.MaxTopicLength = 70000 }, "max_topic_length", "out of range"},
		{"topic levels", func(c *Config) { c.MaxTopicLevels = 1000 }, "max_topic_levels", "out of range"},
		{"filters per subscribe", func(c *Config) { c.MaxFiltersPerSubscribe = -1 }, "max_filters_per_subscribe", "out of range"},
		{"subscriptions per client", func(c *Config) { c.MaxSubscriptionsPerClient = 2000000 }, "max_subscriptions_per_client", "out of range"},
		{"anonymous 0.0.0.0", func(c *Config) { c.Listeners[0].Address = "0.0.0.0:1883" }, "listeners[0].address", "allow_anonymous: true"},
		{"anonymous empty host", func(c *Config) { c.Listeners[0].Address = ":1883" }, "listeners[0].address", "add users"},
		{"anonymous LAN", func(c *Config) { c.Listeners[0].Address = "192.168.1.10:1883" }, "listeners[0].address", "reachable from the network"},
		{"anonymous ::", func(c *Config) { c.Listeners[0].Address = "[::]:1883" }, "listeners[0].address", "reachable from the network"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := localConfig()
			tc.mod(&c)
			c.ApplyDefaults()
			err := c.Validate()
			if err == nil {
				t.Fatal("no error")
			}
			var found bool
			for _, e := range confkit.Flatten(err) {
				var ke *confkit.KeyError
				if !errors.As(e, &ke) {
					t.Fatalf("not a KeyError: %v", e)
				}
				if ke.Key == tc.key && strings.Contains(ke.Msg, tc.msg) {
					found = true
				}
			}
			if !found {
				t.Fatalf("want %s: ...%s...; got %v", tc.key, tc.msg, err)
			}
		})
	}
}

func TestExposedListenerAllowed(t *testing.T) {
	c := Config{Listeners: []Listener{{Type: ListenerTCP, Address: "0.0.0.0:1883"}}, AllowAnonymous: true}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("allow_anonymous: %v", err)
	}
	c = Config{Listeners: []Listener{{Type: ListenerTCP, Address: "0.0.0.0:1883"}},
		Users: []User{{Username: "u", PasswordHash: hash(t, "p"), Role: "r"}}, Roles: map[string]Role{"r": {}}}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("with users: %v", err)
	}
	for _, a := range []string{"127.0.0.1:1883", "[::1]:1883", "localhost:1883", "127.0.0.2:1"} {
		c := Config{Listeners: []Listener{{Type: ListenerTCP, Address: a}}}
		c.ApplyDefaults()
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", a, err)
		}
	}
}

func TestNewRefusesAnonymousExposedListener(t *testing.T) {
	_, err := New(Options{Config: Config{Listeners: []Listener{{Type: ListenerTCP, Address: "0.0.0.0:0"}}}})
	if err == nil || !strings.Contains(err.Error(), "allow_anonymous") {
		t.Fatalf("New = %v", err)
	}
}

func TestCovers(t *testing.T) {
	for _, tc := range []struct {
		allowed, filter string
		want            bool
	}{
		{"a/b", "a/b", true}, {"a/b", "a/c", false}, {"a/#", "a", true}, {"a/#", "a/b/c", true},
		{"a/#", "a/+", true}, {"a/#", "a/#", true}, {"a/+", "a/b", true}, {"a/+", "a/b/c", false},
		{"a/+", "a/+", true}, {"a/+", "a/#", false}, {"a/b", "a/+", false}, {"#", "$SYS/x", false},
		{"+/x", "$SYS/x", false}, {"$SYS/#", "$SYS/x", true}, {"a/+/c", "a/b/c", true}, {"a/b/c", "a/b", false},
	} {
		if got := covers(tc.allowed, tc.filter); got != tc.want {
			t.Errorf("covers(%q, %q) = %v", tc.allowed, tc.filter, got)
		}
	}
	if _, ok := expandPattern("s/%c/#", "a/b", ""); ok {
		t.Error("client id with / must not expand")
	}
	if _, ok := expandPattern("s/%u/#", "c", "#"); ok {
		t.Error("username # must not expand")
	}
	if f, ok := expandPattern("s/%u/%c", "c1", "bob"); !ok || f != "s/bob/c1" {
		t.Errorf("expand = %q %v", f, ok)
	}
}
