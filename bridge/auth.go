package bridge

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/edged-dev/edged/internal/confkit"
	"github.com/edged-dev/edged/internal/redact"
)

// AuthConfig is how the http and websocket connectors authenticate.
type AuthConfig struct {
	// Type: none (default), bearer, token or hmac.
	//   bearer: `Authorization: Bearer <token>` with the token read from token_file (re-read
	//           after a 401, so rotating the file needs no restart).
	//   token:  OAuth2 client credentials: POST token_url (form grant_type=client_credentials,
	//           client_id, client_secret, scope) and use the access_token as a bearer token,
	//           cached until 30s (at most 10% of expires_in) before it expires, fetched again
	//           once at once after a 401.
	//   hmac:   every request is signed, see the package documentation ("HMAC signature").
	Type string `yaml:"type"`
	// TokenFile holds the bearer token (type bearer).
	TokenFile string `yaml:"token_file"`
	// TokenURL is the token endpoint (type token).
	TokenURL string `yaml:"token_url"`
	// ClientID (type token).
	ClientID string `yaml:"client_id"`
	// ClientSecretFile holds the client secret (type token).
	ClientSecretFile string `yaml:"client_secret_file"`
	// Scope requested (type token), optional.
	Scope string `yaml:"scope"`
	// KeyID identifies the key to the remote (type hmac): header X-Edged-Key-Id.
	KeyID string `yaml:"key_id"`
	// SecretFile holds the shared HMAC secret (type hmac).
	SecretFile string `yaml:"secret_file"`
}

func (a AuthConfig) validate() []error {
	var errs []error
	need := func(key, v string) {
		if v == "" {
			errs = append(errs, confkit.Errorf("auth."+key, "required for auth type %s", a.Type))
		}
	}
	switch a.Type {
	case "", "none":
	case "bearer":
		need("token_file", a.TokenFile)
	case "token":
		need("token_url", a.TokenURL)
		need("client_id", a.ClientID)
		need("client_secret_file", a.ClientSecretFile)
		if a.TokenURL != "" {
			if u, err := url.Parse(a.TokenURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				errs = append(errs, confkit.Errorf("auth.token_url", "%q: want an http(s) URL", a.TokenURL))
			}
		}
	case "hmac":
		need("key_id", a.KeyID)
		need("secret_file", a.SecretFile)
	default:
		errs = append(errs, confkit.Errorf("auth.type", "%q: want none, bearer, token or hmac", a.Type))
	}
	for k, f := range map[string]string{"token_file": a.TokenFile, "client_secret_file": a.ClientSecretFile, "secret_file": a.SecretFile} {
		if err := checkSecretFile("auth."+k, f); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// authorizer adds credentials to requests.
type authorizer struct {
	cfg    AuthConfig
	client *http.Client
	secret []byte // hmac key or client secret
	scrub  *redact.Scrubber

	mu      sync.Mutex
	token   string
	expires time.Time
}

// newAuthorizer reads the secret files; their contents are added to scrub so they are masked
// wherever the connector's text goes.
func newAuthorizer(cfg AuthConfig, client *http.Client, scrub *redact.Scrubber) (*authorizer, error) {
	a := &authorizer{cfg: cfg, client: client, scrub: scrub}
	switch cfg.Type {
	case "hmac":
		s, err := readSecret(cfg.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("auth secret_file: %w", err)
		}
		a.secret = []byte(s)
	case "token":
		s, err := readSecret(cfg.ClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("auth client_secret_file: %w", err)
		}
		a.secret = []byte(s)
	case "bearer":
		s, err := readSecret(cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("auth token_file: %w", err)
		}
		scrub.Add(s)
	}
	scrub.Add(string(a.secret))
	return a, nil
}

// prepare fetches what later requests need (a token); called from Connect.
func (a *authorizer) prepare(ctx context.Context) error {
	if a.cfg.Type != "token" {
		return nil
	}
	_, err := a.bearer(ctx)
	return err
}

// invalidate forgets a cached token after a 401.
func (a *authorizer) invalidate() {
	a.mu.Lock()
	a.token = ""
	a.mu.Unlock()
}

func (a *authorizer) bearer(ctx context.Context) (string, error) {
	switch a.cfg.Type {
	case "bearer":
		// Re-read on every request so a rotated file needs no restart; a new token is
		// masked from then on.
		s, err := readSecret(a.cfg.TokenFile)
		if err == nil {
			a.scrub.Add(s)
		}
		return s, err
	case "token":
	default:
		return "", nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.token != "" && time.Now().Before(a.expires) {
		return a.token, nil
	}
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {a.cfg.ClientID}, "client_secret": {string(a.secret)}}
	if a.cfg.Scope != "" {
		form.Set("scope", a.cfg.Scope)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.cfg.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("token request: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("token request: %s: %s", resp.Status, snippet(body))
	}
	tok, exp, err := parseTokenResponse(body)
	if err != nil {
		return "", err
	}
	// The token is a credential like the client secret: mask it wherever the remote's
	// answers (echoed in error snippets) reach logs and status.
	a.scrub.Add(tok)
	margin := min(30*time.Second, exp/10)
	a.token, a.expires = tok, time.Now().Add(exp-margin)
	return a.token, nil
}

// maxTokenLifetime caps expires_in. A token cached too long costs one 401 and a refetch;
// an unbounded expires_in (1e300, "Infinity") overflowed time.Duration into a negative
// lifetime, and a negative lifetime made every request fetch a new token.
const maxTokenLifetime = 30 * 24 * time.Hour

// parseTokenResponse reads an OAuth2 token endpoint's 200 answer (outside bytes, fuzzed by
// FuzzTokenResponse): the access token and its lifetime, expires_in seconds as a number or a
// string, one hour when absent or not a positive number, at most maxTokenLifetime.
func parseTokenResponse(body []byte) (token string, lifetime time.Duration, err error) {
	var tr struct {
		AccessToken string          `json:"access_token"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &tr); err != nil || tr.AccessToken == "" {
		return "", 0, fmt.Errorf("token response without access_token: %s", snippet(body))
	}
	lifetime = time.Hour
	if s := strings.Trim(string(tr.ExpiresIn), `"`); s != "" {
		// n > 0 also refuses NaN; the comparison in float64 keeps the conversion in range.
		if n, err := strconv.ParseFloat(s, 64); err == nil && n > 0 {
			if n >= maxTokenLifetime.Seconds() {
				lifetime = maxTokenLifetime
			} else {
				lifetime = time.Duration(n * float64(time.Second))
			}
		}
	}
	return tr.AccessToken, lifetime, nil
}

// apply sets the auth headers on req whose body is body.
func (a *authorizer) apply(ctx context.Context, req *http.Request, body []byte) error {
	switch a.cfg.Type {
	case "bearer", "token":
		tok, err := a.bearer(ctx)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	case "hmac":
		ts := strconv.FormatInt(time.Now().Unix(), 10)
		var nb [16]byte
		_, _ = rand.Read(nb[:])
		nonce := hex.EncodeToString(nb[:])
		req.Header.Set("X-Edged-Key-Id", a.cfg.KeyID)
		req.Header.Set("X-Edged-Timestamp", ts)
		req.Header.Set("X-Edged-Nonce", nonce)
		req.Header.Set("X-Edged-Signature", SignHMAC(a.secret, req.Method, req.URL.RequestURI(), ts, nonce, body))
	}
	return nil
}

// HMACStringToSign is the exact string the hmac auth signs:
//
//	METHOD + "\n" + PATH + "\n" + TIMESTAMP + "\n" + NONCE + "\n" + hex(sha256(BODY))
//
// METHOD is upper case ("POST"), PATH the request target as sent (path and, if any, "?" and
// the raw query, e.g. "/v1/messages?x=1"), TIMESTAMP the X-Edged-Timestamp header (Unix
// seconds, decimal), NONCE the X-Edged-Nonce header (32 lower-case hex digits), and the body
// hash is lower-case hex (the hash of the empty string for a body-less request).
func HMACStringToSign(method, path, ts, nonce string, body []byte) string {
	h := sha256.Sum256(body)
	return method + "\n" + path + "\n" + ts + "\n" + nonce + "\n" + hex.EncodeToString(h[:])
}

// SignHMAC returns the X-Edged-Signature value: lower-case hex of HMAC-SHA256(secret,
// HMACStringToSign(...)). A cloud verifies by recomputing it, comparing in constant time,
// rejecting timestamps more than a few minutes off and nonces it has seen in that window.
func SignHMAC(secret []byte, method, path, ts, nonce string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(HMACStringToSign(method, path, ts, nonce, body)))
	return hex.EncodeToString(m.Sum(nil))
}

// VerifyHMAC checks the X-Edged-* headers of r (body already read) against secret; for clouds
// written in Go and for tests.
func VerifyHMAC(secret []byte, r *http.Request, body []byte, maxSkew time.Duration) error {
	ts := r.Header.Get("X-Edged-Timestamp")
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("bad X-Edged-Timestamp")
	}
	if d := time.Since(time.Unix(n, 0)); d > maxSkew || d < -maxSkew {
		return fmt.Errorf("timestamp off by %v", d)
	}
	want := SignHMAC(secret, r.Method, r.URL.RequestURI(), ts, r.Header.Get("X-Edged-Nonce"), body)
	if !hmac.Equal([]byte(want), []byte(r.Header.Get("X-Edged-Signature"))) {
		return errors.New("signature mismatch")
	}
	return nil
}

// snippet is the start of a remote's answer for an error message: at most 200 bytes, cut at a
// character boundary and with invalid UTF-8 replaced, since it goes to logs and the status
// JSON (a cut through "é" left half a character there).
func snippet(b []byte) string {
	s := strings.ToValidUTF8(strings.TrimSpace(string(b)), "\uFFFD")
	if len(s) > 200 {
		n := 200
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n] + "..."
	}
	return s
}
