package bridge

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Throttle is a connector's bandwidth cap: a token bucket that every byte written to any of the
// connector's uplink sockets passes through (Env.Dialer wraps each socket). It measures what
// the metered link carries, so MQTT, HTTP and WebSocket framing and TLS records count, and it
// paces the writer itself: a connector needs no code of its own for it.
type Throttle struct {
	rate  float64 // bytes per second; 0 = unlimited (only counting)
	burst int

	mu     sync.Mutex
	tokens float64
	last   time.Time

	written atomic.Uint64 // bytes written through the throttle since start
}

// NewThrottle returns a bucket of rate bytes/s holding at most burst bytes; rate 0 only counts.
func NewThrottle(rate float64, burst int) *Throttle {
	if burst <= 0 {
		burst = max(1024, int(rate/8))
	}
	return &Throttle{rate: rate, burst: burst, tokens: float64(burst), last: time.Now()}
}

// reserve takes n (<= burst) bytes from the bucket and returns how long the caller must wait
// before writing them. Tokens may go negative: later writers queue behind earlier ones, so the
// order of reservations is the order of writes and the average stays at rate.
func (t *Throttle) reserve(n int) time.Duration {
	if t == nil || t.rate <= 0 {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	t.tokens += now.Sub(t.last).Seconds() * t.rate
	if t.tokens > float64(t.burst) {
		t.tokens = float64(t.burst)
	}
	t.last = now
	t.tokens -= float64(n)
	if t.tokens >= 0 {
		return 0
	}
	return time.Duration(-t.tokens / t.rate * float64(time.Second))
}

// Written is the number of bytes written through the throttle.
func (t *Throttle) Written() uint64 {
	if t == nil {
		return 0
	}
	return t.written.Load()
}

// Limit is the cap in bytes per second (0: unlimited).
func (t *Throttle) Limit() float64 {
	if t == nil {
		return 0
	}
	return t.rate
}

// Conn wraps c so that its writes pass the bucket.
func (t *Throttle) Conn(c net.Conn) net.Conn {
	if t == nil {
		return c
	}
	return &throttledConn{Conn: c, t: t, closed: make(chan struct{})}
}

type throttledConn struct {
	net.Conn
	t      *Throttle
	once   sync.Once
	closed chan struct{}
}

// Write writes p in pieces of at most burst bytes, each after its tokens are available. A
// Close while waiting ends the write with net.ErrClosed, so a connector's Close is prompt.
func (c *throttledConn) Write(p []byte) (int, error) {
	if c.t.rate <= 0 { // counting only
		n, err := c.Conn.Write(p)
		c.t.written.Add(uint64(n))
		return n, err
	}
	n := 0
	for len(p) > 0 {
		k := min(len(p), c.t.burst)
		if d := c.t.reserve(k); d > 0 {
			tm := time.NewTimer(d)
			select {
			case <-tm.C:
			case <-c.closed:
				tm.Stop()
				return n, net.ErrClosed
			}
		}
		w, err := c.Conn.Write(p[:k])
		n += w
		c.t.written.Add(uint64(w))
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

func (c *throttledConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// NetConn returns the socket under the throttle (for TCP options such as NoDelay).
func (c *throttledConn) NetConn() net.Conn { return c.Conn }

// DialFunc is the signature of net.Dialer.DialContext.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Dialer returns the dial function a connector uses for every socket toward its remote: d's,
// with each connection wrapped by the connector's Throttle. A connector builds its HTTP
// transports and raw sockets on it, so the bandwidth cap and byte count hold for every type.
func (e *Env) Dialer(d *net.Dialer) DialFunc {
	if d == nil {
		d = &net.Dialer{KeepAlive: 30 * time.Second}
	}
	t := e.Throttle
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, address)
		if err != nil {
			return nil, err
		}
		return t.Conn(c), nil
	}
}

// dialTLS dials address with dial and runs a TLS client handshake over it (what tls.Dialer
// does, over a socket that may be throttled).
func dialTLS(ctx context.Context, dial DialFunc, address string, cfg *tls.Config) (net.Conn, error) {
	raw, err := dial(ctx, "tcp", address)
	if err != nil {
		return nil, err
	}
	c := cfg.Clone()
	if c == nil {
		c = &tls.Config{}
	}
	if c.ServerName == "" {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			host = address
		}
		c.ServerName = host
	}
	tc := tls.Client(raw, c)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return tc, nil
}

// setNoDelay turns Nagle off on a TCP socket, throttled or not.
func setNoDelay(c net.Conn) {
	if tc, ok := c.(*throttledConn); ok {
		c = tc.Conn
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
}

// rateMeter turns a monotonically growing count into a per-second rate over the last few
// seconds, for status.
type rateMeter struct {
	mu   sync.Mutex
	t    time.Time
	n    uint64
	rate float64
}

func (m *rateMeter) update(n uint64) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	if m.t.IsZero() {
		m.t, m.n = now, n
		return 0
	}
	if dt := now.Sub(m.t); dt >= time.Second {
		m.rate = float64(n-m.n) / dt.Seconds()
		m.t, m.n = now, n
	}
	return m.rate
}

// natsDialer adapts a DialFunc to nats.CustomDialer (which takes no context).
type natsDialer struct {
	dial    DialFunc
	timeout time.Duration
}

func (d natsDialer) Dial(network, address string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	defer cancel()
	return d.dial(ctx, network, address)
}
