package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"

	"github.com/edged-dev/edged/internal/testutil"
)

// A network-reachable admin API is accepted with a token file; loopback needs none.
func TestAdminTokenFile(t *testing.T) {
	for _, doc := range []string{
		"admin: {address: 0.0.0.0:9100, token_file: /etc/edged/admin.token}\n",
		"admin: {address: \"[::1]:9100\"}\n",
		"admin: {address: localhost:9100}\n",
		"admin: {address: \"\"}\n",
	} {
		cfg, err := Parse("f", []byte(doc))
		if err != nil {
			t.Fatalf("%q: %v", doc, err)
		}
		if strings.Contains(doc, "token_file") && cfg.Admin.TokenFile != "/etc/edged/admin.token" {
			t.Fatalf("token_file not decoded: %+v", cfg.Admin)
		}
	}
}

func TestEmptyFileIsDefaults(t *testing.T) {
	cfg, err := Parse("e.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "./data" || cfg.Admin.Address != "127.0.0.1:9100" || len(cfg.Broker.Listeners) != 1 ||
		cfg.Broker.Listeners[0].Address != "127.0.0.1:1883" {
		t.Fatalf("defaults: %+v", cfg)
	}
}

// Every problem of a file is reported, each with its line and key, in line order.
func TestProblemsLocated(t *testing.T) {
	for _, c := range []struct {
		name, doc string
		want      []string
	}{
		{"unknown keys at several depths", "data_dir: x\nlogg: {}\nbroker:\n  listeners:\n    - {type: tcp, address: 127.0.0.1:1, adress: x}\n", //nolint:misspell // the misspelt key is the test
			[]string{"f:2: logg: unknown key", "f:5: broker.listeners[0].adress: unknown key"}}, //nolint:misspell // the misspelt key is the test
		{"type error keeps going", "storage:\n  max_messages: lots\n  max_bytes: huge\nlog: {level: loud}\n",
			[]string{"f:2: storage.max_messages: cannot use", "f:3: storage.max_bytes:", "f:4: log.level: \"loud\""}},
		{"syntax error", "broker: [\n", []string{"f:"}},
		{"not a mapping", "- a\n- b\n", []string{"f:1: the config must be a mapping"}},
		{"unknown connector type", "bridge:\n  connectors:\n    - {name: c, type: pigeon}\n", []string{"f:3: bridge.connectors[0].type: unknown connector type \"pigeon\""}},
		{"unknown bridge key", "bridge:\n  conectors: []\n", []string{"f:2: bridge.conectors: unknown key"}},
		{"admin address", "admin: {address: nope}\n", []string{"f:1: admin.address: \"nope\" is not host:port"}},
		{"admin on the network without a token", "log: {level: info}\nadmin:\n  address: 0.0.0.0:9100\n",
			[]string{"f:3: admin.address: \"0.0.0.0:9100\" is reachable from the network and admin.token_file is not set: set token_file"}},
		{"admin on all interfaces without a token", "admin: {address: \":9100\"}\n",
			[]string{"f:1: admin.address: \":9100\" is reachable from the network"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("f", []byte(c.doc))
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("want Problems, got %T %v", err, err)
			}
			if len(ps) != len(c.want) {
				t.Fatalf("want %d problems, got %d:\n%v", len(c.want), len(ps), err)
			}
			for i, w := range c.want {
				if !strings.HasPrefix(ps[i].Error(), w) {
					t.Errorf("problem %d: %q does not start with %q", i, ps[i].Error(), w)
				}
			}
		})
	}
}

func TestExampleConfigs(t *testing.T) {
	root := filepath.Join("..", "..")
	files, _ := filepath.Glob(filepath.Join(root, "deploy", "arm", "edged*.yaml"))
	files = append(files, filepath.Join("testdata", "full.yaml"))
	for _, f := range files {
		if _, err := Load(f); err != nil {
			t.Errorf("%s:\n%v", f, err)
		}
	}
}

// FuzzParse: config files are outside bytes; any input must give a config or Problems, never
// a panic or a hang.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join("testdata", "full.yaml")); err == nil {
		f.Add(b)
	}
	f.Add([]byte("broker:\n  listeners:\n    - {type: tcp, address: 127.0.0.1:1883}\n"))
	f.Add([]byte("bridge:\n  connectors:\n    - {name: c, type: mqtt, url: tcp://127.0.0.1:1, forward: [{from: a/#, to: '{topic}'}]}\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("storage: &m {<<, [00],000000}\n")) // panicked in yaml.v3 before complexKeys
	f.Add([]byte("storage: {max_bytes: 1GiB, ttl: 1h}\n"))
	// Day/week durations, placeholders in filters, a connector after an unknown type.
	f.Add([]byte("storage: {ttl: 7d}\nbroker: {session_expiry: 1w2d3h, backpressure_wait: -1.5d}\n"))
	f.Add([]byte("storage: {ttl: 7 days}\n"))
	f.Add([]byte("bridge:\n  connectors:\n    - {name: a, type: pigeon, forward: [{from: '{x}/#', to: b}]}\n    - {name: b, type: mqtt, url: 'tcp://u:p@h:1', subscribe: [{from: '{gateway_id}/cmd/#', to: 'cmd/{1}'}]}\n"))
	f.Add([]byte("bridge:\n  connectors:\n    - {name: c, type: http, url: 'https://h/x?access_token=t', timeout: 2w, forward: [{from: '{gateway_id', to: b}]}\n"))
	// A password in a URL beside mistakes: the problems must not show it.
	f.Add([]byte("bridge:\n  connectors:\n    - {name: c, type: mqtt, url: 'tcp://gw:hunter2secret@h:1883/x y', username: u, forward: [{from: '#', to: '{9}'}]}\n"))
	f.Add([]byte("bridge:\n  connectors:\n    - {name: c, type: websocket, url: 'ftp://gw:s3cretpass99@h', forward: [{from: a, to: b}]}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := Parse("fuzz", b)
		if err == nil && cfg == nil {
			t.Fatal("nil config without error")
		}
		if err != nil {
			ps := Problems(nil)
			if !errors.As(err, &ps) {
				t.Fatalf("error is %T, want Problems", err)
			}
			checkProblems(t, b, ps)
		}
	})
}

// urlPassword finds the password of a URL with credentials (scheme://user:password@).
var urlPassword = regexp.MustCompile(`://[^:@/\s'"]*:([^@/\s'"]+)@`)

// checkProblems: every problem names the file, a line inside it (or none) and says what is
// wrong; a password written once, in a URL, never appears in them (problems are printed by
// `edged check` and logged on reload).
func checkProblems(t *testing.T, src []byte, ps Problems) {
	t.Helper()
	if len(ps) == 0 {
		t.Fatal("an error without problems")
	}
	// YAML breaks lines at CR and at NEL, LS and PS too ("\r0" is two lines for yaml.v3).
	lines := 1
	for _, br := range []string{"\n", "\r", "\u0085", "\u2028", "\u2029"} {
		lines += bytes.Count(src, []byte(br))
	}
	for _, p := range ps {
		if p.File != "fuzz" || p.Line < 0 || p.Line > lines || p.Msg == "" {
			t.Fatalf("problem %+v (input of %d lines)", p, lines)
		}
	}
	msg := ps.Error()
	for _, m := range urlPassword.FindAllSubmatch(src, -1) {
		pw := m[1]
		if len(pw) >= 8 && bytes.Count(src, pw) == 1 && bytes.ContainsAny(pw, "0123456789") &&
			bytes.IndexFunc(pw, unicode.IsLetter) >= 0 && strings.Contains(msg, string(pw)) {
			t.Fatalf("problems show the password %q:\n%s", pw, msg)
		}
	}
}

// The README's configuration reference must stay a valid config showing real keys.
func TestREADMEReference(t *testing.T) {
	doc := testutil.READMEYAML(t, "config:reference")
	cfg, err := Parse("README.md", []byte(doc))
	if err != nil {
		t.Fatalf("README reference config:\n%v", err)
	}
	if len(cfg.Bridge.Connectors) != 3 || len(cfg.Hardware.Serial) != 1 {
		t.Fatalf("reference lost sections: %d connectors, %d serial", len(cfg.Bridge.Connectors), len(cfg.Hardware.Serial))
	}
}

// A list or a mapping as a key beside a merge key made yaml.v3 panic ("hash of unhashable
// type"): `edged check` crashed, and a reload with such a file would have taken the running
// daemon down. Such keys are refused at their line, before decoding.
func TestParseRefusesComplexKeys(t *testing.T) {
	for _, doc := range []string{
		"storage: &m {<<, [00],000000}\n",
		"storage:\n  <<: {ttl: 1h}\n  ? [a, b]\n  : 1\n",
		"broker:\n  ? {a: 1}\n  : x\n",
		"k: &k [1]\nstorage: {*k : 1}\n",
	} {
		cfg, err := Parse("c.yaml", []byte(doc))
		var ps Problems
		if !errors.As(err, &ps) || cfg != nil {
			t.Fatalf("%q: got %v, %v; want Problems", doc, cfg, err)
		}
		if !strings.Contains(err.Error(), "c.yaml:") || !strings.Contains(err.Error(), "a key must be a plain name") {
			t.Errorf("%q: %v", doc, err)
		}
	}
}

// TestProblemsMaskURLKey: a URL with its password written where a key goes (a colon too many)
// came back verbatim in "unknown key"; edged check and reload logs printed the password.
func TestProblemsMaskURLKey(t *testing.T) {
	_, err := Parse("f", []byte("tcp://gw:hunter2secret@h: 1\nbridge:\n  connectors:\n    - {name: c, type: mqtt, url: x, forward: [{from: a, to: b}], 'wss://u:pw4567890@h/?token=abcdef123': 1}\n"))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, secret := range []string{"hunter2secret", "pw4567890", "abcdef123"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("problems show %q:\n%v", secret, err)
		}
	}
	if !strings.Contains(err.Error(), "tcp://gw:xxxxx@h: unknown key") {
		t.Errorf("the key is not named (masked):\n%v", err)
	}
}

// TestEmptyDocumentIsDefaults: a file holding only "---" (or only a null) is an empty config,
// like an empty file; it was refused with a problem on line 2 of a one-line file.
func TestEmptyDocumentIsDefaults(t *testing.T) {
	for _, src := range []string{"---", "---\n", "~\n", "--- # nothing yet\n", "null"} {
		cfg, err := Parse("f", []byte(src))
		if err != nil || cfg == nil {
			t.Errorf("%q: %v", src, err)
		}
	}
	if _, err := Parse("f", []byte("--- 7\n")); err == nil {
		t.Error("a scalar document accepted")
	}
}
