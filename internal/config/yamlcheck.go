package config

import (
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edged-dev/edged/internal/confkit"
	"github.com/edged-dev/edged/internal/redact"
)

// Problem is one located config error: "FILE:LINE: key: problem".
type Problem struct {
	File string
	Line int
	Key  string
	Msg  string
}

// Error is the problem as `edged check` prints it and a reload logs it. Key and message quote
// what the file says, and a credential can sit anywhere there (a URL with its password
// written as a key by a misplaced colon): it is masked like in every other error.
func (p Problem) Error() string {
	loc := p.File
	if p.Line > 0 {
		loc = fmt.Sprintf("%s:%d", p.File, p.Line)
	}
	if p.Key == "" {
		return loc + ": " + redact.Text(p.Msg)
	}
	return loc + ": " + redact.Text(p.Key) + ": " + redact.Text(p.Msg)
}

// Problems is every error found in one file, in line order.
type Problems []Problem

func (ps Problems) Error() string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.Error()
	}
	return strings.Join(s, "\n")
}

var (
	unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()
	plainFieldsType = reflect.TypeOf((*confkit.PlainFields)(nil)).Elem()
	durationType    = reflect.TypeOf(time.Duration(0))
)

// fixDuration rewrites a duration scalar written with days or weeks ("7d", "2w", "1d12h") into
// the form yaml.v3 decodes into a time.Duration ("168h0m0s"), so every duration field of every
// section accepts them without each package changing its field types; a value that is no
// duration at all is reported here, located, instead of as the decoder's raw type error.
func fixDuration(n *yaml.Node, path string, add func(line int, key, msg string)) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		return
	}
	d, err := confkit.ParseDuration(n.Value)
	if err != nil {
		add(n.Line, path, err.Error())
		d = 0 // reported once, here; the decoder must not report it again
	}
	n.Value, n.Tag, n.Style = d.String(), "!!str", 0
}

// yamlFields maps a struct's YAML keys to field types, following `,inline` embedding.
func yamlFields(t reflect.Type, out map[string]reflect.Type) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				yamlFields(ft, out)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
}

// strictCheck reports every mapping key of n that t has no field for. yaml.v3's KnownFields
// stops at the first decoder and cannot be used on a Node, and we want every unknown key of the
// file with its line, so the walk is ours. On the way it normalizes durations (fixDuration),
// because only this walk knows which nodes land in a time.Duration.
func strictCheck(n *yaml.Node, t reflect.Type, path string, add func(line int, key, msg string)) {
	if n == nil {
		return
	}
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			strictCheck(c, t, path, add)
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == durationType {
		fixDuration(n, path, add)
		return
	}
	if pt := reflect.PointerTo(t); (pt.Implements(unmarshalerType) && !pt.Implements(plainFieldsType)) || t.Kind() == reflect.Interface {
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if !isKind(n, yaml.MappingNode, path, add) {
			return
		}
		fields := map[string]reflect.Type{}
		yamlFields(t, fields)
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := join(path, k.Value)
			if seen[k.Value] {
				add(k.Line, key, "key given twice")
			}
			seen[k.Value] = true
			ft, ok := fields[k.Value]
			if !ok {
				add(k.Line, key, fmt.Sprintf("unknown key (known keys here: %s)", knownKeys(fields)))
				continue
			}
			strictCheck(v, ft, key, add)
		}
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return
		}
		if !isKind(n, yaml.SequenceNode, path, add) {
			return
		}
		for i, c := range n.Content {
			strictCheck(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), add)
		}
	case reflect.Map:
		if !isKind(n, yaml.MappingNode, path, add) {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			strictCheck(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), add)
		}
	}
}

// isKind reports whether n is a node of kind (a mapping or a list). A null node (a key with no
// value) is not, silently: the field keeps its zero value; anything else is reported.
func isKind(n *yaml.Node, kind yaml.Kind, path string, add func(line int, key, msg string)) bool {
	if n.Kind == kind {
		return true
	}
	if n.Tag != "!!null" {
		add(n.Line, path, fmt.Sprintf("want %s, got %s", describe(&yaml.Node{Kind: kind}), describe(n)))
	}
	return false
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	default:
		return strconv.Quote(n.Value)
	}
}

func knownKeys(f map[string]reflect.Type) string {
	ks := make([]string, 0, len(f))
	for k := range f {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var pathSeg = regexp.MustCompile(`([^.\[\]]+)|\[(\d+)\]`)

// lineOf finds the line of a key path such as "broker.listeners[1].address" in the document,
// falling back to the deepest part of the path that exists (a missing key is reported where
// its parent is).
func lineOf(root *yaml.Node, path string) int {
	n := root
	if n == nil {
		return 0
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	line := n.Line
	for _, m := range pathSeg.FindAllStringSubmatch(path, -1) {
		if n.Kind == yaml.AliasNode {
			n = n.Alias
		}
		var next *yaml.Node
		nextLine := 0
		if m[2] != "" {
			i, _ := strconv.Atoi(m[2])
			if n.Kind == yaml.SequenceNode && i < len(n.Content) {
				next = n.Content[i]
				nextLine = next.Line
			}
		} else if n.Kind == yaml.MappingNode {
			for j := 0; j+1 < len(n.Content); j += 2 {
				if n.Content[j].Value == m[1] {
					next = n.Content[j+1]
					nextLine = n.Content[j].Line
					break
				}
			}
		}
		if next == nil {
			return line
		}
		n, line = next, nextLine
	}
	return line
}

// keyAtLine names the key whose entry starts on line, for yaml.v3's type errors, which carry
// only a line.
func keyAtLine(root *yaml.Node, line int) string {
	var found string
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		if n == nil || found != "" {
			return
		}
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := join(path, k.Value)
				if v.Line == line && (v.Kind == yaml.ScalarNode || k.Line == line) {
					found = p
					if v.Kind == yaml.ScalarNode {
						return
					}
				}
				walk(v, p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				if c.Kind == yaml.ScalarNode && c.Line == line {
					found = p
					return
				}
				walk(c, p)
			}
		}
	}
	walk(root, "")
	return found
}

var typeErrLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// typeProblems turns yaml.v3's "line N: cannot unmarshal ..." strings into located problems.
func typeProblems(file string, root *yaml.Node, te *yaml.TypeError) Problems {
	var out Problems
	for _, e := range te.Errors {
		m := typeErrLine.FindStringSubmatch(e)
		if m == nil {
			out = append(out, Problem{File: file, Msg: e})
			continue
		}
		line, _ := strconv.Atoi(m[1])
		msg := strings.Replace(m[2], "cannot unmarshal ", "cannot use ", 1)
		out = append(out, Problem{File: file, Line: line, Key: keyAtLine(root, line), Msg: msg})
	}
	return out
}

// complexKeys reports every mapping key that is not a scalar (`? [a, b]: c`, `{[0]: x}`). No
// key of the config is a list or a mapping, and yaml.v3 panics when it merges (`<<`) a mapping
// beside such a key ("hash of unhashable type"), which would take the daemon down on a reload:
// they are refused here, before anything is decoded. Each node is looked at once, so aliases
// cost no more than the document.
func complexKeys(n *yaml.Node, add func(line int, key, msg string)) {
	seen := map[*yaml.Node]bool{}
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n == nil || seen[n] {
			return
		}
		seen[n] = true
		if n.Kind == yaml.AliasNode {
			walk(n.Alias)
			return
		}
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if k := n.Content[i]; k.Kind != yaml.ScalarNode && k.Kind != yaml.AliasNode {
					add(k.Line, "", "a key must be a plain name, not a list or a mapping")
				} else if k.Kind == yaml.AliasNode && k.Alias != nil && k.Alias.Kind != yaml.ScalarNode {
					add(k.Line, "", "a key must be a plain name, not an alias of a list or a mapping")
				}
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(n)
}

// decodeSafely is n.Decode(v) with a panic of the YAML decoder turned into an error: config
// files are outside bytes, and a decoder bug met on one must be a refused config, never a crash
// of the daemon that is reloading it. complexKeys refuses the one input known to panic first.
func decodeSafely(n *yaml.Node, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the YAML decoder failed on this document: %v", r)
		}
	}()
	return n.Decode(v)
}
