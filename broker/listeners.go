package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// connectTimeout bounds the TLS handshake, WebSocket upgrade and CONNECT of a new connection;
// mochi replaces the deadline with the client's keepalive once CONNECT is read.
const connectTimeout = 10 * time.Second

// tlsSetup is a listener's TLS. cfg hands every handshake the config in cur, which a reload
// replaces (certificate files re-read) without closing the listener or its connections.
type tlsSetup struct {
	cfg *tls.Config
	cur atomic.Pointer[tls.Config]
}

func newTLSSetup(l Listener) (*tlsSetup, error) {
	cfg, err := l.tlsConfig()
	if err != nil || cfg == nil {
		return nil, err
	}
	s := &tlsSetup{}
	s.cur.Store(cfg)
	s.cfg = &tls.Config{MinVersion: cfg.MinVersion, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return s.cur.Load(), nil
	}}
	return s, nil
}

// netListener is a mochi listeners.Listener over a socket we bind ourselves, so that Start
// reports bind errors and Status the real address (port 0), which mochi's websocket listener
// can't (it binds inside Serve). It tracks every accepted connection so Close never waits for
// a client that has not sent CONNECT yet.
type netListener struct {
	id   string
	spec listenerSpec
	ln   net.Listener
	log  *slog.Logger

	// guard checks each packet before mochi decodes it (guard.go).
	guard *packetGuard

	// closeClients disconnects this listener's clients on Close (Broker.closeListenerClients;
	// see there why mochi's own is not used).
	closeClients func(listenerID string)

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup // Serve and connection goroutines
	http   *http.Server
}

var _ listeners.Listener = (*netListener)(nil)

func bindListener(s listenerSpec, log *slog.Logger, guard *packetGuard) (*netListener, error) {
	ln, err := net.Listen("tcp", s.cfg.Address)
	if err != nil {
		return nil, err
	}
	return &netListener{id: s.id, spec: s, ln: ln, log: log.With("listener", s.id), guard: guard, conns: map[net.Conn]struct{}{}}, nil
}

func (l *netListener) ID() string      { return l.id }
func (l *netListener) Address() string { return l.ln.Addr().String() }

func (l *netListener) Protocol() string {
	switch {
	case l.spec.cfg.Type == ListenerWebsocket && l.spec.tls != nil:
		return "wss"
	case l.spec.cfg.Type == ListenerWebsocket:
		return "ws"
	case l.spec.tls != nil:
		return "tls"
	}
	return "tcp"
}

// Init is a no-op: the socket is bound by bindListener.
func (l *netListener) Init(*slog.Logger) error { return nil }

func (l *netListener) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *netListener) untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// Serve accepts connections until Close.
func (l *netListener) Serve(establish listeners.EstablishFn) {
	l.wg.Add(1)
	defer l.wg.Done()
	if l.spec.cfg.Type == ListenerWebsocket {
		l.serveWebsocket(establish)
		return
	}
	for {
		c, err := l.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		if !l.track(c) {
			_ = c.Close()
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			defer l.untrack(c)
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(connectTimeout))
			if l.spec.tls != nil {
				tc := tls.Server(c, l.spec.tls.cfg)
				if err := tc.Handshake(); err != nil {
					l.log.Debug("tls handshake failed", "remote", c.RemoteAddr().String(), "error", err)
					return
				}
				c = tc
			}
			if err := establish(l.id, l.guard.wrap(c, l.id)); err != nil && !isQuietError(err) {
				l.log.Debug("client connection ended", "remote", c.RemoteAddr().String(), "error", err)
			}
		}()
	}
}

var acceptOptions = websocket.AcceptOptions{
	Subprotocols: []string{"mqtt"},
	// Authentication is MQTT's (credentials or client certificates), never cookies, so
	// cross-origin pages gain nothing: allow browser dashboards on any origin.
	InsecureSkipVerify: true,
	CompressionMode:    websocket.CompressionDisabled,
}

func (l *netListener) serveWebsocket(establish listeners.EstablishFn) {
	l.mu.Lock()
	l.http = &http.Server{
		ReadHeaderTimeout: connectTimeout,
		ErrorLog:          slog.NewLogLogger(l.log.Handler(), slog.LevelDebug),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ws, err := websocket.Accept(w, r, &acceptOptions)
			if err != nil {
				return // Accept has answered the request
			}
			// NetConn lifts the library's 32KiB message limit: the broker's own packet size
			// limit applies, as for TCP clients.
			c := &wsConn{Conn: websocket.NetConn(context.Background(), ws, websocket.MessageBinary), ws: ws, tls: r.TLS}
			if !l.track(c) {
				_ = c.Close()
				return
			}
			defer l.untrack(c)
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(connectTimeout))
			if err := establish(l.id, l.guard.wrap(c, l.id)); err != nil && !isQuietError(err) {
				l.log.Debug("client connection ended", "remote", r.RemoteAddr, "error", err)
			}
		}),
	}
	if l.spec.tls != nil {
		l.http.TLSConfig = l.spec.tls.cfg
	}
	srv, closed := l.http, l.closed
	l.mu.Unlock()
	if closed {
		return
	}
	if l.spec.tls != nil {
		_ = srv.ServeTLS(l.ln, "", "")
	} else {
		_ = srv.Serve(l.ln)
	}
}

// Close stops accepting, disconnects this listener's clients through mochi (closeClients) and
// closes connections that have not completed CONNECT.
func (l *netListener) Close(closeClients listeners.CloseFn) {
	l.closeListener()
	if l.closeClients != nil {
		closeClients = l.closeClients
	}
	closeClients(l.id)
	l.mu.Lock()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
}

func (l *netListener) closeListener() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	if l.http != nil {
		_ = l.http.Close() // closes l.ln; hijacked websocket connections are ours
	}
	_ = l.ln.Close()
}

// wait blocks until Serve and every connection goroutine returned.
func (l *netListener) wait() { l.wg.Wait() }

func isQuietError(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}

// wsConn is MQTT over WebSocket binary messages as a net.Conn (a text message ends the
// connection), with the TLS state of wss for client-certificate auth.
type wsConn struct {
	net.Conn
	ws  *websocket.Conn
	tls *tls.ConnectionState
}

// Close drops the connection without the WebSocket closing handshake, which would wait up to
// 5s for each client's answer while the broker stops; MQTT has its own DISCONNECT.
func (c *wsConn) Close() error {
	err := c.ws.CloseNow()
	_ = c.Conn.Close() // stops the deadline timers; the connection is already closed
	return err
}

// ConnectionState exposes the TLS state of wss connections for client-certificate auth.
func (c *wsConn) ConnectionState() tls.ConnectionState {
	if c.tls == nil {
		return tls.ConnectionState{}
	}
	return *c.tls
}
