package redact

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"
)

// Mask replaces a secret value; PasswordMask replaces a URL userinfo password (the form
// net/url's Redacted uses, so both spellings look alike in logs).
const (
	Mask         = "REDACTED"
	PasswordMask = "xxxxx"
)

// secretWords are the query parameter names (compared case-insensitively, ignoring '-' and
// '_') whose values are credentials. A name that ends in one of the longer words
// (x_api_key, client_secret, sas_token, X-Amz-Signature) is secret too.
var secretWords = []string{
	"token", "accesstoken", "refreshtoken", "idtoken", "apikey", "key", "secret", "clientsecret",
	"password", "passwd", "pass", "pwd", "sig", "signature", "auth", "authorization", "credential",
	"credentials", "sessionid", "session", "code", "jwt", "bearer", "privatekey",
}

// secretSuffixes are matched at the end of a normalized name; short words such as "key" or
// "sig" would match too much ("monkey") as a suffix, so only these.
var secretSuffixes = []string{"token", "apikey", "secret", "password", "signature", "credential", "credentials"}

// IsSecretParam reports whether a query parameter (or header, or config key) called name
// carries a credential.
func IsSecretParam(name string) bool {
	n := strings.ToLower(name)
	n = strings.NewReplacer("-", "", "_", "", ".", "").Replace(n)
	for _, w := range secretWords {
		if n == w {
			return true
		}
	}
	for _, s := range secretSuffixes {
		if strings.HasSuffix(n, s) {
			return true
		}
	}
	return false
}

// userinfoRE finds "scheme://user:password@" in text that is not a parseable URL.
var userinfoRE = regexp.MustCompile(`(//[^/?#@\s:]*):[^/?#@\s]*@`)

// queryRE finds "name=value" pairs of a query string in text that is not a parseable URL.
var queryRE = regexp.MustCompile(`([?&;])([^=&;#\s"']+)=([^&;#\s"']*)`)

// URL returns raw with the userinfo password replaced by "xxxxx" and the values of secret
// query parameters by "REDACTED". Text that does not parse as a URL is masked by pattern, so
// the result never contains what looked like a credential.
func URL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" {
		return redactText(raw)
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), PasswordMask)
		}
	}
	if u.RawQuery != "" {
		u.RawQuery = redactQuery(u.RawQuery)
	}
	if u.Fragment != "" && strings.Contains(u.Fragment, "=") {
		// OAuth implicit flows put access_token in the fragment.
		u.RawFragment = redactQuery(u.EscapedFragment())
		u.Fragment, _ = url.PathUnescape(u.RawFragment)
	}
	return u.String()
}

// redactQuery masks secret values in a raw query, keeping order and everything else byte for
// byte (url.Values.Encode would reorder).
func redactQuery(q string) string {
	parts := strings.Split(q, "&")
	for i, p := range parts {
		k, _, ok := strings.Cut(p, "=")
		if !ok {
			continue
		}
		name, err := url.QueryUnescape(k)
		if err != nil {
			name = k
		}
		if IsSecretParam(name) {
			parts[i] = k + "=" + Mask
		}
	}
	return strings.Join(parts, "&")
}

// Text masks what looks like a credential in free text: the password of anything written
// like a URL with userinfo (scheme://user:pass@) and the values of secret query parameters.
// For messages that quote what a user wrote without knowing it is a URL (a config key).
func Text(s string) string { return redactText(s) }

func redactText(s string) string {
	s = userinfoRE.ReplaceAllString(s, "$1:"+PasswordMask+"@")
	return queryRE.ReplaceAllStringFunc(s, func(m string) string {
		sm := queryRE.FindStringSubmatch(m)
		if IsSecretParam(sm[2]) {
			return sm[1] + sm[2] + "=" + Mask
		}
		return m
	})
}

// Header returns a copy of h fit for a log or status: every value replaced by "REDACTED"
// (configured headers carry API keys and tenant credentials; their names are what helps).
func Header(h http.Header) http.Header {
	out := make(http.Header, len(h))
	for k, vs := range h {
		out[k] = make([]string, len(vs))
		for i := range vs {
			out[k][i] = Mask
		}
	}
	return out
}

// HeaderNames lists the names of a configured header map, sorted, for logs.
func HeaderNames(h map[string]string) []string {
	out := make([]string, 0, len(h))
	for k := range h {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// MinSecretLen is the shortest string a Scrubber removes from free text. Shorter strings
// occur in ordinary messages ("401", "tcp") and masking them would make errors unreadable
// while protecting next to nothing; structured values (URLs, headers) are masked whatever
// their length.
const MinSecretLen = 4

// Scrubber removes known secret strings from text. The zero value is not usable; call
// NewScrubber. Safe for concurrent use; Add may be called while others scrub.
type Scrubber struct {
	mu      sync.RWMutex
	secrets []string // longest first, so a secret containing another is masked whole
}

// NewScrubber returns a Scrubber for secrets (empty and short ones are ignored).
func NewScrubber(secrets ...string) *Scrubber {
	s := &Scrubber{}
	s.Add(secrets...)
	return s
}

// Add registers more secrets, e.g. one read from a file at connect time. For each it also
// registers the forms it takes inside a URL or a quoted error (query- and path-escaped).
func (s *Scrubber) Add(secrets ...string) {
	if s == nil {
		return
	}
	s.mu.RLock()
	known := true
	for _, v := range secrets {
		v = strings.TrimSpace(v)
		known = known && (len(v) < MinSecretLen || contains(s.secrets, v))
	}
	s.mu.RUnlock()
	if known {
		return // the common case: a token file re-read on every request
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range secrets {
		v = strings.TrimSpace(v)
		for _, form := range []string{v, url.QueryEscape(v), url.PathEscape(v), (&url.URL{User: url.User(v)}).String()[2:]} {
			form = strings.TrimSuffix(form, "@")
			if len(form) < MinSecretLen || contains(s.secrets, form) {
				continue
			}
			s.secrets = append(s.secrets, form)
		}
	}
	sort.Slice(s.secrets, func(i, j int) bool { return len(s.secrets[i]) > len(s.secrets[j]) })
}

func contains(ss []string, v string) bool {
	for _, s := range ss {
		if s == v {
			return true
		}
	}
	return false
}

// AddURL registers the credentials written into raw (see URLSecrets).
func (s *Scrubber) AddURL(raw string) { s.Add(URLSecrets(raw)...) }

// URLSecrets lists the credentials written into a URL: the userinfo password, the HTTP Basic
// credential Go derives from the userinfo (a server may echo request headers into an error
// body), and the values of secret query parameters (raw and decoded).
func URLSecrets(raw string) []string {
	u, err := url.Parse(raw)
	if err != nil {
		return nil
	}
	var out []string
	if u.User != nil {
		if p, ok := u.User.Password(); ok {
			out = append(out, p, base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+p)))
		}
	}
	for _, q := range []string{u.RawQuery, u.RawFragment, u.Fragment} {
		for _, p := range strings.Split(q, "&") {
			k, v, ok := strings.Cut(p, "=")
			if !ok || !IsSecretParam(k) {
				continue
			}
			out = append(out, v)
			if dv, err := url.QueryUnescape(v); err == nil && dv != v {
				out = append(out, dv)
			}
		}
	}
	return out
}

// String masks every known secret in text, and any URL credentials by pattern.
func (s *Scrubber) String(text string) string {
	if s != nil {
		s.mu.RLock()
		for _, v := range s.secrets {
			if strings.Contains(text, v) {
				text = strings.ReplaceAll(text, v, Mask)
			}
		}
		s.mu.RUnlock()
	}
	return redactText(text)
}

// Error wraps err so that its message is scrubbed; errors.Is and errors.As still see the
// original chain (code must not print what As extracts: use the wrapper's Error).
func (s *Scrubber) Error(err error) error {
	if err == nil {
		return nil
	}
	var se *scrubbed
	if errors.As(err, &se) && se.s == s && se.Error() == err.Error() {
		return err
	}
	return &scrubbed{s: s, err: err, msg: s.String(err.Error())}
}

type scrubbed struct {
	s   *Scrubber
	err error
	msg string
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }

// Handler wraps h so that every message and attribute value is scrubbed: strings, errors and
// Stringers are rendered and masked before h sees them. It is the last line of defence for
// log calls that pass an error or URL straight through.
func Handler(h slog.Handler, s *Scrubber) slog.Handler { return &handler{h: h, s: s} }

type handler struct {
	h slog.Handler
	s *Scrubber
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.h.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	nr := slog.NewRecord(r.Time, r.Level, h.s.String(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		nr.AddAttrs(h.attr(a))
		return true
	})
	return h.h.Handle(ctx, nr)
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	out := make([]slog.Attr, len(as))
	for i, a := range as {
		out[i] = h.attr(a)
	}
	return &handler{h: h.h.WithAttrs(out), s: h.s}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{h: h.h.WithGroup(name), s: h.s}
}

func (h *handler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.s.String(v.String()))
	case slog.KindGroup:
		gs := v.Group()
		out := make([]any, len(gs))
		for i, g := range gs {
			out[i] = h.attr(g)
		}
		return slog.Group(a.Key, out...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, h.s.String(x.Error()))
		case interface{ String() string }:
			return slog.String(a.Key, h.s.String(x.String()))
		case []string:
			ys := make([]string, len(x))
			for i, y := range x {
				ys[i] = h.s.String(y)
			}
			return slog.Any(a.Key, ys)
		case nil:
			return a
		default:
			// Structs and maps would be printed by the inner handler with %+v: render them here
			// so nothing unscrubbed slips through.
			return slog.String(a.Key, h.s.String(slog.AnyValue(x).String()))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
