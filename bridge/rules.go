package bridge

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// rule is a compiled forward or subscribe entry.
type rule struct {
	from   []string // filter levels
	to     []part   // template
	qos    byte
	filter string
}

// part of a template: a literal or a placeholder.
type part struct {
	lit string
	ph  int // 0 literal; -1 {topic}; -2 {client_id}; -3 {gateway_id}; n>0 {n}
}

// ResolveFilter replaces the placeholders a rule's `from` may hold ({gateway_id}) by their
// values. Both the subscription sent to a remote and the local matching use the result.
func ResolveFilter(from, gatewayID string) string {
	return strings.ReplaceAll(from, "{gateway_id}", gatewayID)
}

// checkFilterPlaceholders rejects any placeholder in a filter other than {gateway_id}: a
// filter with an unknown or misspelt one would silently subscribe to its literal text.
func checkFilterPlaceholders(f string) error {
	rest := f
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			if strings.IndexByte(rest, '}') >= 0 {
				return fmt.Errorf("%q: '}' without '{'", f)
			}
			return nil
		}
		if strings.IndexByte(rest[:i], '}') >= 0 {
			return fmt.Errorf("%q: '}' without '{'", f)
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return fmt.Errorf("%q: unclosed '{'", f)
		}
		if name := rest[i+1 : i+j]; name != "gateway_id" {
			return fmt.Errorf("%q: unknown placeholder {%s} in a filter (want {gateway_id})", f, name)
		}
		rest = rest[i+j+1:]
	}
}

// validFilter checks an MQTT topic filter; {gateway_id} stands for a non-empty level part
// (the gateway id is checked on its own: no '/', '+' or '#').
func validFilter(f string) error {
	if f == "" {
		return fmt.Errorf("empty topic filter")
	}
	if err := checkFilterPlaceholders(f); err != nil {
		return err
	}
	f = ResolveFilter(f, "gw")
	lv := strings.Split(f, "/")
	for i, l := range lv {
		switch {
		case l == "#":
			if i != len(lv)-1 {
				return fmt.Errorf("%q: '#' must be the last level", f)
			}
		case l == "+":
		case strings.ContainsAny(l, "#+"):
			return fmt.Errorf("%q: wildcards must fill a whole level", f)
		}
	}
	return nil
}

func wildcards(filter string) int {
	n := 0
	for _, l := range strings.Split(filter, "/") {
		if l == "+" || l == "#" {
			n++
		}
	}
	return n
}

// compileTemplate parses "gw/{gateway_id}/{1}/x" against the number of wildcards in from.
// allowClient: {client_id} is only meaningful for forward rules.
func compileTemplate(tpl string, nwild int, allowClient bool) ([]part, error) {
	if tpl == "" {
		return nil, fmt.Errorf("empty topic template")
	}
	var out []part
	rest := tpl
	for rest != "" {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			out = append(out, part{lit: rest})
			break
		}
		if i > 0 {
			out = append(out, part{lit: rest[:i]})
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("%q: unclosed '{'", tpl)
		}
		name := rest[i+1 : i+j]
		rest = rest[i+j+1:]
		switch name {
		case "topic":
			out = append(out, part{ph: -1})
		case "client_id":
			if !allowClient {
				return nil, fmt.Errorf("%q: {client_id} is only known for forward rules", tpl)
			}
			out = append(out, part{ph: -2})
		case "gateway_id":
			out = append(out, part{ph: -3})
		default:
			n, err := strconv.Atoi(name)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("%q: unknown placeholder {%s} (want {topic}, {1}.., {client_id}, {gateway_id})", tpl, name)
			}
			if n > nwild {
				return nil, fmt.Errorf("%q: {%d} but the filter has only %d wildcard(s)", tpl, n, nwild)
			}
			out = append(out, part{ph: n})
		}
	}
	for _, p := range out {
		if p.ph == 0 && strings.ContainsAny(p.lit, "+#") {
			return nil, fmt.Errorf("%q: a topic name must not contain '+' or '#'", tpl)
		}
	}
	return out, nil
}

// compileRule resolves the placeholders of r.From with gatewayID and compiles r.To.
func compileRule(r Rule, allowClient bool, gatewayID string) (*rule, error) {
	if err := validFilter(r.From); err != nil {
		return nil, err
	}
	r.From = ResolveFilter(r.From, gatewayID)
	parts, err := compileTemplate(r.To, wildcards(r.From), allowClient)
	if err != nil {
		return nil, err
	}
	return &rule{from: strings.Split(r.From, "/"), to: parts, qos: r.QoS, filter: r.From}, nil
}

// match returns the values captured by the wildcards of the filter ('#' captures the rest joined
// with '/', "" when it matches the parent level), and whether topic matches. Topics starting
// with '$' never match a leading wildcard (MQTT 4.7.2).
func (r *rule) match(topic string) ([]string, bool) {
	if strings.HasPrefix(topic, "$") && (r.from[0] == "+" || r.from[0] == "#") {
		return nil, false
	}
	tl := strings.Split(topic, "/")
	var caps []string
	for i, f := range r.from {
		if f == "#" {
			return append(caps, strings.Join(tl[i:], "/")), true
		}
		if i >= len(tl) {
			return nil, false
		}
		if f == "+" {
			caps = append(caps, tl[i])
		} else if f != tl[i] {
			return nil, false
		}
	}
	return caps, len(tl) == len(r.from)
}

// expand renders the template.
func (r *rule) expand(topic string, caps []string, clientID, gatewayID string) string {
	if len(r.to) == 1 && r.to[0].ph == 0 {
		return r.to[0].lit
	}
	var b strings.Builder
	for _, p := range r.to {
		switch {
		case p.ph == 0:
			b.WriteString(p.lit)
		case p.ph == -1:
			b.WriteString(topic)
		case p.ph == -2:
			b.WriteString(clientID)
		case p.ph == -3:
			b.WriteString(gatewayID)
		case p.ph <= len(caps):
			b.WriteString(caps[p.ph-1])
		}
	}
	for _, c := range caps {
		if c == "" {
			return cleanTopic(b.String())
		}
	}
	return b.String()
}

// cleanTopic collapses the "//" and trailing "/" an empty '#' capture leaves behind
// ("gw/{1}" with "a/#" on topic "a" would give "gw/").
func cleanTopic(s string) string {
	for strings.Contains(s, "//") {
		s = strings.ReplaceAll(s, "//", "/")
	}
	if len(s) > 1 {
		s = strings.TrimSuffix(s, "/")
	}
	return s
}

// validTopicName is MQTT's rule for a PUBLISH topic name (4.7.3): not empty, UTF-8, no NUL, no
// wildcard, at most 65535 bytes.
func validTopicName(s string) bool {
	return s != "" && len(s) <= 65535 && utf8.ValidString(s) && !strings.ContainsAny(s, "+#\x00")
}
