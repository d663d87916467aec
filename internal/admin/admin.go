package admin

import (
	"context"
	"crypto/sha256"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edged-dev/edged/internal/netaddr"
)

//go:embed ui
var uiFiles embed.FS

// Server is the admin HTTP server.
type Server struct {
	srv      *http.Server
	ln       net.Listener
	log      *slog.Logger
	done     chan struct{}
	quit     chan struct{} // closed by Close: ends live streams, which Shutdown would wait for
	close    sync.Once
	histStop context.CancelFunc
	histDone chan struct{}

	outboxes Outboxes
	clients  Clients
	tap      Tapper
	viewers  atomic.Int64
	actions  *prometheus.CounterVec
	guard    *guard
	reload   ReloadFunc
}

// Options configures Start.
type Options struct {
	Address string
	// TokenFile holds the bearer token (admin.token_file); it is read once, here. Without it
	// Start refuses any address that is not loopback.
	TokenFile string
	Gatherer  prometheus.Gatherer
	// Registerer receives the admin's own metrics (refused requests, actions); nil: none.
	Registerer prometheus.Registerer
	// Status returns the document served at /api/v1/status; the dashboard renders it.
	Status func() any
	// Healthy returns nil while edged is serving; /healthz answers 503 with the error otherwise.
	Healthy func() error
	Logger  *slog.Logger

	// Dashboard actions and data; nil ones answer 404.
	Outboxes Outboxes // dead letters: list, requeue, purge
	Clients  Clients  // disconnect
	Tap      Tapper   // live view
	// History, when set, is sampled for as long as the server runs.
	History *History
	// Reload applies the config file again (POST /api/v1/reload); nil answers 404.
	Reload ReloadFunc
}

// Start binds the address and serves until Close.
func Start(o Options) (*Server, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &guard{logDeny: &rateLog{every: 10 * time.Second, warn: log.Warn}}
	if o.TokenFile != "" {
		tok, err := LoadToken(o.TokenFile)
		if err != nil {
			return nil, err
		}
		g.sum, g.hasToken = sha256.Sum256([]byte(tok)), true
	} else if !netaddr.IsLoopback(o.Address) {
		return nil, fmt.Errorf("admin address %q is reachable from the network: set admin.token_file (or bind 127.0.0.1)", o.Address)
	}
	denied := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "edged", Subsystem: "admin", Name: "refused_total",
		Help: "Admin API requests refused, by reason (unauthorized, csrf)."}, []string{"reason"})
	actions := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "edged", Subsystem: "admin", Name: "actions_total",
		Help: "Dashboard/API actions performed (requeue, purge, purge_outbox, disconnect, reload)."}, []string{"action"})
	if o.Registerer != nil {
		for _, c := range []prometheus.Collector{denied, actions} {
			if err := o.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("admin metrics: %w", err)
			}
		}
	}
	g.denied = func(reason string) { denied.WithLabelValues(reason).Inc() }

	ln, err := net.Listen("tcp", o.Address)
	if err != nil {
		return nil, fmt.Errorf("admin listen %q: %w", o.Address, err)
	}
	s := &Server{ln: ln, log: log, done: make(chan struct{}), quit: make(chan struct{}),
		outboxes: o.Outboxes, clients: o.Clients, tap: o.Tap, actions: actions, guard: g, reload: o.Reload}
	csrf := http.NewCrossOriginProtection()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if o.Healthy != nil {
			if err := o.Healthy(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	metrics := promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{ErrorLog: nil})
	mux.HandleFunc("GET /metrics", g.protect(func(w http.ResponseWriter, r *http.Request, _ who) { metrics.ServeHTTP(w, r) }))
	mux.HandleFunc("GET /api/v1/status", g.protect(func(w http.ResponseWriter, r *http.Request, _ who) { writeJSON(w, o.Status()) }))
	mux.HandleFunc("GET /api/v1/outboxes/{name}/dead-letters", g.protect(s.deadLetters))
	mux.HandleFunc("POST /api/v1/outboxes/{name}/dead-letters/requeue", g.action(csrf, s.requeue))
	mux.HandleFunc("POST /api/v1/outboxes/{name}/dead-letters/purge", g.action(csrf, s.purge))
	mux.HandleFunc("POST /api/v1/clients/disconnect", g.action(csrf, s.disconnect))
	mux.HandleFunc("GET /api/v1/live", g.protect(s.live))
	mux.HandleFunc("POST /api/v1/reload", g.action(csrf, s.reloadConfig))
	mux.HandleFunc("POST /api/v1/outboxes/{name}/purge", g.action(csrf, s.purgeOrphaned))
	// The dashboard's files hold no data (everything comes from the API with the token),
	// so they are served without it: the login page has to load.
	ui, _ := fs.Sub(uiFiles, "ui")
	files := http.FileServerFS(ui)
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.Header().Set("Cache-Control", "no-cache")
		// A name io/fs refuses (invalid UTF-8: GET /%D3) is a file that does not exist, not a
		// server error: FileServer would answer 500.
		if name := strings.TrimPrefix(path.Clean(r.URL.Path), "/"); name != "" && !fs.ValidPath(name) {
			http.NotFound(w, r)
			return
		}
		files.ServeHTTP(w, r)
	})

	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	if o.History != nil {
		ctx, cancel := context.WithCancel(context.Background())
		s.histStop, s.histDone = cancel, make(chan struct{})
		go func() { defer close(s.histDone); o.History.Run(ctx) }()
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin server stopped", "err", err)
		}
	}()
	if g.hasToken {
		log.Info("admin API requires a bearer token", "address", s.Addr())
	}
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server, ends live streams and the history sampler, waiting briefly for
// in-flight requests. It is idempotent.
func (s *Server) Close() error {
	var err error
	s.close.Do(func() {
		close(s.quit)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err = s.srv.Shutdown(ctx)
		<-s.done
		if s.histStop != nil {
			s.histStop()
			<-s.histDone
		}
	})
	return err
}

// Get fetches a document from a running edged's admin API (for `edged status`), sending the
// bearer token when one is given.
func Get(url, token string) ([]byte, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", url, err)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return nil, fmt.Errorf("GET %s: %s (the admin API needs its token: pass -c with the config naming admin.token_file)", url, resp.Status)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	return b, nil
}
