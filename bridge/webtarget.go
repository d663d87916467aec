package bridge

import (
	"net/url"

	"github.com/edged-dev/edged/internal/confkit"
	"github.com/edged-dev/edged/internal/redact"
)

// WebTarget is where an http or websocket connector goes and how it authenticates; its keys
// sit inline in HTTPConfig and WebSocketConfig.
type WebTarget struct {
	// URL of the remote: http:// or https:// for type http (each batch is POSTed to it), ws://
	// or wss:// for type websocket. Credentials in it are used as given and masked in every
	// log, status and error: userinfo (https://user:pass@host) is sent as HTTP Basic auth (of
	// a websocket, on the opening handshake) and is allowed only with auth type none; query
	// parameters (?access_token=...) are sent unchanged. Redirects are never followed (a 3xx
	// is a retried failure: fix the url).
	URL string `yaml:"url"`
	// URLs lists endpoints for failover, primary first (instead of url; same rules): on
	// failure the connector moves to the next and returns to the primary once it passed a
	// probe a few times in a row (http: a HEAD request answered with any status below 500;
	// websocket: a completed opening handshake).
	URLs []string `yaml:"urls"`
	// Auth: none, bearer, token or hmac. A websocket applies it to the opening handshake (a
	// GET without body).
	Auth AuthConfig `yaml:"auth"`
	// TLS settings for https:// and wss://.
	TLS TLSConfig `yaml:"tls"`
	// Headers are extra request headers (e.g. a tenant id); a websocket sends them with the
	// opening handshake.
	Headers map[string]string `yaml:"headers"`
}

// validate checks url/urls (schemes are the two accepted URL schemes, want names them in the
// error, e.g. "an http:// or https:// URL"), auth and tls.
func (w *WebTarget) validate(schemes [2]string, want string) []error {
	errs := validateEndpoints(w.URL, w.URLs, func(key, raw string) []error {
		if u, err := url.Parse(raw); err != nil || (u.Scheme != schemes[0] && u.Scheme != schemes[1]) || u.Host == "" {
			return []error{confkit.Errorf(key, "%q: want %s", redact.URL(raw), want)}
		} else if u.User != nil && w.Auth.Type != "" && w.Auth.Type != "none" {
			return []error{confkit.Errorf(key, "%q: credentials in the url (HTTP Basic) conflict with auth type %s; remove one", redact.URL(raw), w.Auth.Type)}
		}
		return nil
	})
	errs = append(errs, w.Auth.validate()...)
	return append(errs, w.TLS.validate("tls")...)
}

// Secrets implements SecretHolder: URL credentials (also of auth.token_url) and header values.
func (w *WebTarget) Secrets() []string {
	out := redact.URLSecrets(w.URL)
	for _, v := range w.Headers {
		out = append(out, v) // headers carry API keys
	}
	for _, u := range w.URLs {
		out = append(out, redact.URLSecrets(u)...)
	}
	return append(out, redact.URLSecrets(w.Auth.TokenURL)...)
}

// Endpoint implements Endpointer: the primary.
func (w *WebTarget) Endpoint() string { return redact.URL(endpointList(w.URL, w.URLs)[0]) }
