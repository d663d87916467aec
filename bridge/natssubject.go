package bridge

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MQTT topics and NATS subjects split on different characters and forbid different ones. The
// nats connector maps between them level by level, reversibly:
//
//   - the MQTT level separator '/' becomes the NATS token separator '.';
//   - inside a level, the characters a NATS subject token cannot hold, and '%' itself, are
//     percent-escaped: '.' -> %2E, '*' -> %2A, '>' -> %3E, '%' -> %25, and space, tab, every
//     other ASCII control character and DEL -> %XX (upper-case hex);
//   - an empty level (MQTT allows "a//b" and a leading "/") becomes the token "%", which the
//     escaping above can never produce on its own.
//
// So `sensors/room 1/temp.c` is `sensors.room%201.temp%2Ec`, and the subject maps back to the
// same topic. Filters map '+' to '*' and a trailing '#' to '>'.

// topicToSubject maps an MQTT topic name to a NATS subject.
func topicToSubject(topic string) string {
	levels := strings.Split(topic, "/")
	var b strings.Builder
	b.Grow(len(topic) + 8)
	for i, l := range levels {
		if i > 0 {
			b.WriteByte('.')
		}
		escapeLevel(&b, l)
	}
	return b.String()
}

func escapeLevel(b *strings.Builder, l string) {
	if l == "" {
		b.WriteByte('%')
		return
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case c == '.' || c == '*' || c == '>' || c == '%' || c <= ' ' || c == 0x7f:
			fmt.Fprintf(b, "%%%02X", c)
		default:
			b.WriteByte(c)
		}
	}
}

// filterToSubject maps an MQTT topic filter (validated: '+' whole levels, '#' last) to a NATS
// subject filter.
func filterToSubject(filter string) string {
	levels := strings.Split(filter, "/")
	var b strings.Builder
	for i, l := range levels {
		if i > 0 {
			b.WriteByte('.')
		}
		switch l {
		case "+":
			b.WriteByte('*')
		case "#":
			b.WriteByte('>')
		default:
			escapeLevel(&b, l)
		}
	}
	return b.String()
}

var errBadSubject = errors.New("not a subject edged can map to a topic")

// subjectToTopic maps a NATS subject (bytes from the remote) back to an MQTT topic. It refuses
// what topicToSubject cannot produce: empty tokens, wildcards, bad escapes, and escapes that
// decode to '/' or NUL (which would change the topic's levels or be invalid in MQTT).
func subjectToTopic(subject string) (string, error) {
	if subject == "" {
		return "", errBadSubject
	}
	tokens := strings.Split(subject, ".")
	var b strings.Builder
	b.Grow(len(subject))
	for i, tok := range tokens {
		if i > 0 {
			b.WriteByte('/')
		}
		switch tok {
		case "":
			return "", fmt.Errorf("%w: empty token in %q", errBadSubject, subject)
		case "%":
			continue // an empty MQTT level
		case "*", ">":
			return "", fmt.Errorf("%w: wildcard in %q", errBadSubject, subject)
		}
		for j := 0; j < len(tok); j++ {
			c := tok[j]
			if c != '%' {
				if c <= ' ' || c == 0x7f || c == '/' || c == '+' || c == '#' {
					return "", fmt.Errorf("%w: character %q must be escaped in %q", errBadSubject, c, subject)
				}
				b.WriteByte(c)
				continue
			}
			if j+2 >= len(tok) {
				return "", fmt.Errorf("%w: truncated escape in %q", errBadSubject, subject)
			}
			hi, ok1 := unhex(tok[j+1])
			lo, ok2 := unhex(tok[j+2])
			if !ok1 || !ok2 {
				return "", fmt.Errorf("%w: bad escape in %q", errBadSubject, subject)
			}
			d := hi<<4 | lo
			if d == '/' || d == 0 || d == '+' || d == '#' {
				return "", fmt.Errorf("%w: escape %%%02X is not allowed in a topic level", errBadSubject, d)
			}
			b.WriteByte(d)
			j += 2
		}
	}
	out := b.String()
	if !utf8.ValidString(out) {
		return "", fmt.Errorf("%w: not UTF-8", errBadSubject)
	}
	return out, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
