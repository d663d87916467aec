package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// MinTokenLen is the shortest accepted admin token: shorter ones are guessable over a LAN.
const MinTokenLen = 16

// IsLoopback reports whether a host:port address only accepts connections from this machine.
// An empty host (":9100") means every interface and is not loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// LoadToken reads the bearer token from path: the first line, surrounding blanks removed.
// The error never contains the token.
func LoadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("admin token_file: %w", err)
	}
	tok, _, _ := strings.Cut(string(b), "\n")
	tok = strings.TrimSpace(tok)
	switch {
	case tok == "":
		return "", fmt.Errorf("admin token_file %s: empty", path)
	case len(tok) < MinTokenLen:
		return "", fmt.Errorf("admin token_file %s: token shorter than %d characters", path, MinTokenLen)
	case strings.ContainsAny(tok, " \t\r"):
		return "", fmt.Errorf("admin token_file %s: the token must be one word", path)
	}
	return tok, nil
}

// guard authenticates requests. With a token every protected request must carry it; without
// one (loopback only, enforced by Start) requests are accepted from loopback peers that name
// a loopback host, which keeps a DNS-rebinding page from reading the API through the browser.
type guard struct {
	sum      [32]byte // sha256 of the token; comparing digests keeps the length secret too
	hasToken bool
	denied   func(reason string)
	logDeny  *rateLog
	rotated  atomic.Pointer[[32]byte] // set by Server.SetToken: the re-read token's digest
}

// who identifies the caller of an action for the audit log: remote address and how it was
// admitted ("token" or "loopback").
type who struct{ remote, auth string }

var errUnauthorized = errors.New("missing or wrong bearer token")

func (g *guard) check(r *http.Request) (who, error) {
	if !g.hasToken {
		if !loopbackPeer(r.RemoteAddr) || !loopbackHost(r.Host) {
			return who{}, errors.New("without admin.token_file only loopback clients naming a loopback host are served")
		}
		return who{remote: r.RemoteAddr, auth: "loopback"}, nil
	}
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return who{}, errUnauthorized
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	want := g.token()
	if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
		return who{}, errUnauthorized
	}
	return who{remote: r.RemoteAddr, auth: "token"}, nil
}

// protect wraps h with the token check.
func (g *guard) protect(h func(http.ResponseWriter, *http.Request, who)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := g.check(r)
		if err != nil {
			g.deny(w, r, http.StatusUnauthorized, err)
			return
		}
		h(w, r, c)
	}
}

func (g *guard) deny(w http.ResponseWriter, r *http.Request, code int, err error) {
	reason := "unauthorized"
	if code == http.StatusForbidden {
		reason = "csrf"
	}
	g.denied(reason)
	g.logDeny.log("admin request refused", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "status", code, "err", err)
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="edged"`)
	}
	http.Error(w, err.Error(), code)
}

// actionHeader must accompany every POST. A cross-site form cannot set a header, and a
// cross-site fetch that sets one needs a CORS preflight this server never grants: together
// with the Sec-Fetch-Site/Origin check this stops CSRF even on a loopback API without token.
const actionHeader = "X-Edged-Action"

// action wraps a state-changing handler: POST only, token checked, CSRF checks.
func (g *guard) action(csrf *http.CrossOriginProtection, h func(http.ResponseWriter, *http.Request, who)) http.HandlerFunc {
	return g.protect(func(w http.ResponseWriter, r *http.Request, c who) {
		if r.Header.Get(actionHeader) == "" {
			g.deny(w, r, http.StatusForbidden, fmt.Errorf("actions need the %s header", actionHeader))
			return
		}
		if err := csrf.Check(r); err != nil {
			g.deny(w, r, http.StatusForbidden, err)
			return
		}
		h(w, r, c)
	})
}

func loopbackPeer(remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// loopbackHost accepts the Host header forms a browser sends for a loopback address.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// rateLog logs at most one line per interval and says how many it held back, so a client
// hammering the API cannot flood the journal.
type rateLog struct {
	mu         sync.Mutex
	every      time.Duration
	last       time.Time
	suppressed int
	warn       func(msg string, args ...any)
}

func (l *rateLog) log(msg string, args ...any) {
	l.mu.Lock()
	now := time.Now()
	if now.Sub(l.last) < l.every {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	l.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	l.warn(msg, args...)
}
