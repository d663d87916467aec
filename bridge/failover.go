package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/edged-dev/edged/internal/confkit"
	"github.com/edged-dev/edged/internal/redact"
)

// Failover between endpoints (`urls: [primary, secondary, ...]` on mqtt, http and websocket
// connectors).
//
// On any failed connect or lost link the forwarder moves to the next endpoint, so the next
// attempt (after at most backoff.max) already dials it: a dead primary costs at most
// backoff.max + connect_timeout. While it is not on the primary, a prober checks the primary
// every probeInterval with a full protocol handshake (MQTT CONNECT/CONNACK with its own client
// id, a WebSocket upgrade, an HTTP answer): an endpoint that accepts TCP but never answers the
// protocol is not healthy. After failoverSuccesses consecutive successes spanning at least a
// hold time of (failoverSuccesses-1) x probeInterval (so a flapping primary is not chosen) the
// forwarder switches back at the next batch boundary: every message in flight has a result by
// then, so the order promise holds across endpoints (a message confirmed nowhere is sent again
// on the next endpoint with the same id; the remote dedupes by id).
//
// probeInterval is backoff.max / 3 (re-armed after each probe), so a primary that is healthy
// again carries the traffic after at most one interval plus the hold time, about backoff.max,
// plus the probes' own time and the batch boundary; plus up to connect_timeout when a probe was
// still waiting on the endpoint's half-open past.
const failoverSuccesses = 3

// Failoverable is implemented by connectors configured with several endpoints.
type Failoverable interface {
	// Endpoints lists the configured endpoints, redacted, primary first.
	Endpoints() []string
	// UseEndpoint makes the next Connect dial endpoint i. Called between Close and Connect.
	UseEndpoint(i int)
	// Probe checks endpoint i with a protocol handshake and closes again. It runs concurrently
	// with the live link and must not disturb it (own client id, no will, no session).
	Probe(ctx context.Context, i int) error
}

// errSwitchBack ends a session on a secondary endpoint once the primary is healthy again.
var errSwitchBack = errors.New("primary endpoint healthy again: switching back")

type failover struct {
	conn Failoverable // nil: one endpoint
	eps  []string
	back chan struct{} // the prober found the primary healthy

	mu  sync.Mutex
	cur int
	n   uint64
}

func (f *forwarder) initFailover() {
	f.fo.back = make(chan struct{}, 1)
	if fc, ok := f.conn.(Failoverable); ok && len(fc.Endpoints()) > 1 {
		f.fo.conn, f.fo.eps = fc, fc.Endpoints()
	}
	f.b.dm.endpointActive.WithLabelValues(f.cfg.Name, "0").Set(1)
}

// status returns the endpoint in use (def when there is one endpoint), its index, the number of
// endpoints and the failovers so far.
func (fo *failover) status(def string) (string, int, int, uint64) {
	if fo.conn == nil {
		return def, 0, 0, 0
	}
	fo.mu.Lock()
	defer fo.mu.Unlock()
	return fo.eps[fo.cur], fo.cur, len(fo.eps), fo.n
}

func (fo *failover) current() int {
	fo.mu.Lock()
	defer fo.mu.Unlock()
	return fo.cur
}

// switchTo makes endpoint i the one the next Connect dials. Call only between Close and Connect.
func (f *forwarder) switchTo(i int, why string) {
	fo := &f.fo
	if fo.conn == nil {
		return
	}
	fo.mu.Lock()
	old := fo.cur
	if old == i {
		fo.mu.Unlock()
		return
	}
	fo.cur = i
	fo.n++
	fo.mu.Unlock()
	fo.conn.UseEndpoint(i)
	f.b.dm.failovers.WithLabelValues(f.cfg.Name).Inc()
	f.b.dm.endpointActive.WithLabelValues(f.cfg.Name, strconv.Itoa(old)).Set(0)
	f.b.dm.endpointActive.WithLabelValues(f.cfg.Name, strconv.Itoa(i)).Set(1)
	f.log.Info("endpoint switched", "from", fo.eps[old], "to", fo.eps[i], "from_index", old, "to_index", i, "why", why)
}

// failoverNext moves to the next endpoint after a failure (the link is closed).
func (f *forwarder) failoverNext() {
	if f.fo.conn == nil {
		return
	}
	// A switch-back signal of the old link is stale now.
	select {
	case <-f.fo.back:
	default:
	}
	f.switchTo((f.fo.current()+1)%len(f.fo.eps), "failure")
}

// probePrimary runs while the forwarder runs: whenever it is not on the primary, it checks the
// primary every interval and signals back after failoverSuccesses successes in a row.
func (f *forwarder) probePrimary(ctx context.Context) {
	if f.fo.conn == nil {
		return
	}
	interval := max(f.cfg.Backoff.Max/3, 50*time.Millisecond)
	hold := time.Duration(failoverSuccesses-1) * interval
	// A timer re-armed after each probe, not a ticker: a probe that waited out a half-open
	// endpoint must not leave ticks queued that would fire the next probes back to back.
	t := time.NewTimer(interval)
	defer t.Stop()
	streak := 0
	var first time.Time // of the current streak
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(interval)
		if f.fo.current() == 0 {
			streak = 0
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, f.cfg.ConnectTimeout)
		err := f.fo.conn.Probe(pctx, 0)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if streak > 0 {
				f.log.Debug("primary probe failed; streak reset", "after", streak, "err", f.scrub.Error(err))
			}
			streak = 0
			continue
		}
		streak++
		if streak == 1 {
			first = time.Now()
		}
		// The count alone could be met quickly by fast probes; the hold time makes the primary
		// prove itself for a while.
		if streak >= failoverSuccesses && time.Since(first) >= hold {
			streak = 0
			select {
			case f.fo.back <- struct{}{}:
			default:
			}
		}
	}
}

// endpointList is the urls of a connector config: urls if given, else url alone.
func endpointList(url string, urls []string) []string {
	if len(urls) > 0 {
		return urls
	}
	return []string{url}
}

// validateEndpoints checks url/urls with check(key, raw) for each entry.
func validateEndpoints(url string, urls []string, check func(key, raw string) []error) []error {
	if url != "" && len(urls) > 0 {
		return []error{confkit.Errorf("urls", "give url or urls, not both (urls[0] is the primary)")}
	}
	if len(urls) == 0 {
		return check("url", url)
	}
	var errs []error
	seen := map[string]int{}
	for i, u := range urls {
		key := fmt.Sprintf("urls[%d]", i)
		if j, dup := seen[u]; dup {
			errs = append(errs, confkit.Errorf(key, "%q is already urls[%d]", redact.URL(u), j))
		}
		seen[u] = i
		errs = append(errs, check(key, u)...)
	}
	return errs
}

// redactAll is redact.URL of each.
func redactAll(urls []string) []string {
	out := make([]string, len(urls))
	for i, u := range urls {
		out[i] = redact.URL(u)
	}
	return out
}

// endpoints is the url list of an http or websocket connector and the one in use.
type endpoints struct {
	urls []string
	mu   *sync.Mutex
	cur  *int
}

func newEndpoints(url string, urls []string) endpoints {
	return endpoints{urls: endpointList(url, urls), mu: &sync.Mutex{}, cur: new(int)}
}

func (e endpoints) url() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.urls[*e.cur]
}

func (e endpoints) use(i int) {
	e.mu.Lock()
	if i >= 0 && i < len(e.urls) {
		*e.cur = i
	}
	e.mu.Unlock()
}

// Endpoints implements Failoverable.
func (h *httpConn) Endpoints() []string { return redactAll(h.eps.urls) }

// UseEndpoint implements Failoverable.
func (h *httpConn) UseEndpoint(i int) { h.eps.use(i) }

// Probe implements Failoverable: a HEAD request (no body, no auth: nothing is delivered) that
// any answer below 500 passes. A server that accepts TCP but never answers HTTP fails it.
func (h *httpConn) Probe(ctx context.Context, i int) error {
	if i < 0 || i >= len(h.eps.urls) {
		return fmt.Errorf("probe: no endpoint %d", i)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, h.eps.urls[i], nil)
	if err != nil {
		return h.scrub.Error(err)
	}
	req.Header.Set("User-Agent", "edged")
	resp, err := h.client.Do(req)
	if err != nil {
		return h.scrub.Error(fmt.Errorf("probe: %w", err))
	}
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		return fmt.Errorf("probe %s: http %d", redact.URL(h.eps.urls[i]), resp.StatusCode)
	}
	return nil
}

// Endpoints implements Failoverable.
func (w *wsConn) Endpoints() []string { return redactAll(w.eps.urls) }

// UseEndpoint implements Failoverable.
func (w *wsConn) UseEndpoint(i int) { w.eps.use(i) }

// Probe implements Failoverable: the opening handshake with the configured headers and auth,
// then a normal close.
func (w *wsConn) Probe(ctx context.Context, i int) error {
	if i < 0 || i >= len(w.eps.urls) {
		return fmt.Errorf("probe: no endpoint %d", i)
	}
	c, err := w.handshake(ctx, w.eps.urls[i])
	if err != nil {
		return w.scrub.Error(fmt.Errorf("probe: %w", err))
	}
	return c.Close(websocket.StatusNormalClosure, "probe")
}

var (
	_ Failoverable = (*httpConn)(nil)
	_ Failoverable = (*wsConn)(nil)
)
