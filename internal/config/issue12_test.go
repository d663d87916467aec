package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/internal/confkit"
)

func problems(t *testing.T, doc string) Problems {
	t.Helper()
	_, err := Parse("f", []byte(doc))
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("want Problems, got %T %v", err, err)
	}
	return ps
}

func wantProblems(t *testing.T, ps Problems, want ...string) {
	t.Helper()
	if len(ps) != len(want) {
		t.Fatalf("want %d problems, got %d:\n%v", len(want), len(ps), ps)
	}
	for i, w := range want {
		if !strings.HasPrefix(ps[i].Error(), w) {
			t.Errorf("problem %d: %q does not start with %q", i, ps[i].Error(), w)
		}
	}
}

// A connector with an unknown type used to shift every later connector's problems onto the
// wrong index and line, and its own rule errors were not reported.
func TestProblemsAfterUnknownConnectorType(t *testing.T) {
	doc := `bridge:
  connectors:
    - name: a
      type: pigeon
      forward:
        - {from: "x/#/y", to: "{topic}"}
    - name: b
      type: mqtt
      url: ftp://h
      forward: [{from: "s/#", to: "{2}"}]
    - name: c
      type: http
      url: http://h/x
      forward: [{from: "a", to: "b"}]
    - name: c
      type: http
      url: http://h/y
      timeout: -1s
      forward: [{from: "a", to: "b"}]
`
	wantProblems(t, problems(t, doc),
		`f:4: bridge.connectors[0].type: unknown connector type "pigeon"`,
		`f:6: bridge.connectors[0].forward[0].from: "x/#/y": '#' must be the last level`,
		`f:9: bridge.connectors[1].url: "ftp://h": scheme must be`,
		`f:10: bridge.connectors[1].forward[0].to: "{2}": {2} but the filter has only 1 wildcard(s)`,
		`f:15: bridge.connectors[3].name: "c" is already the name of connector [2]`,
		`f:18: bridge.connectors[3].timeout: -1s: must be positive`,
	)
}

// Durations take days and weeks everywhere; a bad one is a located problem, not the decoder's
// raw "cannot unmarshal !!str into time.Duration".
func TestDurationsWithDaysAndWeeks(t *testing.T) {
	cfg, err := Parse("f", []byte(`storage: {ttl: 7d}
broker: {session_expiry: 2w}
bridge:
  connectors:
    - name: c
      type: mqtt
      url: tcp://127.0.0.1:1
      session_expiry: 1d12h
      stall_timeout: 0.5d
      outbox: {ttl: 1.5d}
      forward: [{from: "a", to: "b"}]
`))
	if err != nil {
		t.Fatal(err)
	}
	m := cfg.Bridge.Connectors[0].(*bridge.MQTTConfig)
	if cfg.Storage.TTL != 7*24*time.Hour || cfg.Broker.SessionExpiry != 14*24*time.Hour ||
		m.SessionExpiry != 36*time.Hour || m.Outbox.TTL != 36*time.Hour || m.StallTimeout != 12*time.Hour {
		t.Fatalf("ttl %v session %v conn session %v outbox ttl %v stall %v", cfg.Storage.TTL, cfg.Broker.SessionExpiry,
			m.SessionExpiry, m.Outbox.TTL, m.StallTimeout)
	}
	wantProblems(t, problems(t, "storage:\n  ttl: 7 days\nbridge:\n  connectors:\n    - {name: c, type: http, url: http://h/, timeout: 3x, forward: [{from: a, to: b}]}\n"),
		`f:2: storage.ttl: invalid duration "7 days"`,
		`f:5: bridge.connectors[0].timeout: invalid duration "3x"`)
}

// durationPaths lists every key path of t (YAML names, "[0]" for list items, "k" for map
// values) whose field is a duration, by reflection, so a new field cannot be forgotten.
func durationPaths(t reflect.Type, prefix []string, out *[][]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeOf(time.Duration(0)) || t == reflect.TypeOf(confkit.Duration(0)) {
		*out = append(*out, append([]string(nil), prefix...))
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			if strings.Contains(opts, "inline") {
				durationPaths(f.Type, prefix, out)
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			durationPaths(f.Type, append(prefix, name), out)
		}
	case reflect.Slice:
		durationPaths(t.Elem(), append(prefix, "[0]"), out)
	case reflect.Map:
		durationPaths(t.Elem(), append(prefix, "k"), out)
	}
}

// setPath builds the nested YAML value with v at path.
func setPath(path []string, v any) any {
	if len(path) == 0 {
		return v
	}
	if path[0] == "[0]" {
		return []any{setPath(path[1:], v)}
	}
	return map[string]any{path[0]: setPath(path[1:], v)}
}

// TestEveryDurationFieldTakesDays puts "1d12h" into every duration field of every section and
// of every connector type and checks that none is refused as a duration (other problems of
// these skeleton documents, such as missing required keys, are expected and ignored).
func TestEveryDurationFieldTakesDays(t *testing.T) {
	var paths [][]string
	durationPaths(reflect.TypeOf(Config{}), nil, &paths)
	type doc struct{ name, yaml string }
	var docs []doc
	for _, p := range paths {
		b, _ := yaml.Marshal(setPath(p, "1d12h"))
		docs = append(docs, doc{strings.Join(p, "."), string(b)})
	}
	for _, typ := range bridge.Types() {
		var cps [][]string
		durationPaths(reflect.TypeOf(typ.NewConfig()), nil, &cps)
		for _, p := range cps {
			item := setPath(p, "1d12h").(map[string]any)
			item["name"], item["type"] = "c", typ.Name
			b, _ := yaml.Marshal(map[string]any{"bridge": map[string]any{"connectors": []any{item}}})
			docs = append(docs, doc{typ.Name + "." + strings.Join(p, "."), string(b)})
		}
	}
	if len(docs) < 20 {
		t.Fatalf("found only %d duration fields; the reflection walk is broken", len(docs))
	}
	for _, d := range docs {
		_, err := Parse("f", []byte(d.yaml))
		if err != nil && strings.Contains(strings.ToLower(err.Error()), "duration") {
			t.Errorf("%s: %v\n%s", d.name, err, d.yaml)
		}
	}
	t.Logf("%d duration fields checked", len(docs))
}

// Placeholders in `from`: {gateway_id} is resolved (the README's own downlink example), any
// other placeholder is an error with its line.
func TestFilterPlaceholders(t *testing.T) {
	cfg, err := Parse("f", []byte(`gateway_id: gw7
bridge:
  connectors:
    - name: cloud
      type: mqtt
      url: tcp://127.0.0.1:1884
      forward:   [{from: "sensors/#", to: "{gateway_id}/{topic}", qos: 1}]
      subscribe: [{from: "{gateway_id}/cmd/#", to: "cmd/{1}", qos: 1}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := bridge.ResolveFilter(cfg.Bridge.Connectors[0].Common().Subscribe[0].From, cfg.GatewayID); got != "gw7/cmd/#" {
		t.Fatalf("resolved filter %q", got)
	}
	wantProblems(t, problems(t, `bridge:
  connectors:
    - name: cloud
      type: mqtt
      url: tcp://127.0.0.1:1884
      subscribe:
        - {from: "{gateway}/cmd/#", to: "cmd/{1}"}
        - {from: "gw/{gateway_id", to: "x"}
      forward:
        - {from: "{client_id}/x", to: "y"}
`),
		`f:7: bridge.connectors[0].subscribe[0].from: "{gateway}/cmd/#": unknown placeholder {gateway} in a filter (want {gateway_id})`,
		`f:8: bridge.connectors[0].subscribe[1].from: "gw/{gateway_id": unclosed '{'`,
		`f:10: bridge.connectors[0].forward[0].from: "{client_id}/x": unknown placeholder {client_id}`,
	)
}
