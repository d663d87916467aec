package testutil

import (
	"net"
	"sync"
	"testing"
	"time"
)

// RelayMode is what a Relay does with the link to its upstream.
type RelayMode int

const (
	// RelayForward relays bytes both ways.
	RelayForward RelayMode = iota
	// RelayBlackhole keeps open connections open but relays nothing any more (bytes are read
	// and discarded: a link that died without a FIN or RST); new connections are accepted and
	// held without an answer (a half-open endpoint: TCP works, the protocol never does).
	RelayBlackhole
	// RelayDead cuts open connections and closes new ones at once (a killed process, a
	// refused path).
	RelayDead
)

// Relay is a TCP relay on 127.0.0.1 in front of a peer (the cloud, as edged sees it) that a
// test switches between the failure modes of a link (RelayMode). Entering any mode but
// blackhole from forward cuts the open connections; so does leaving blackhole, whose held
// streams lost bytes.
type Relay struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	mode     RelayMode
	conns    map[net.Conn]struct{}
	accepted int
	lastUp   time.Time // when bytes were last relayed toward upstream
	wg       sync.WaitGroup
}

// StartRelay listens on a free loopback port, relaying to upstream in the given mode; the
// relay closes (every connection cut, its goroutines ended) in t.Cleanup.
func StartRelay(t testing.TB, upstream string, mode RelayMode) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{ln: ln, upstream: upstream, mode: mode, conns: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.close)
	return r
}

// Addr is the relay's host:port.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Mode is the current mode.
func (r *Relay) Mode() RelayMode {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mode
}

// SetMode switches the mode; see Relay for the connections it cuts.
func (r *Relay) SetMode(m RelayMode) {
	r.mu.Lock()
	old := r.mode
	r.mode = m
	var cut []net.Conn
	if old != m && !(old == RelayForward && m == RelayBlackhole) {
		cut = r.openLocked()
	}
	r.mu.Unlock()
	closeAll(cut)
}

// Set is SetMode(RelayForward) when on, else SetMode(RelayDead): a path that works or is gone.
func (r *Relay) Set(on bool) {
	if on {
		r.SetMode(RelayForward)
	} else {
		r.SetMode(RelayDead)
	}
}

// Accepted counts the connections accepted in forward (and relayed) or blackhole mode.
func (r *Relay) Accepted() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accepted
}

// LastUp is when bytes were last relayed toward upstream.
func (r *Relay) LastUp() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastUp
}

func (r *Relay) openLocked() []net.Conn {
	cs := make([]net.Conn, 0, len(r.conns))
	for c := range r.conns {
		cs = append(cs, c)
	}
	return cs
}

func closeAll(cs []net.Conn) {
	for _, c := range cs {
		c.Close()
	}
}

// track registers cs as open if the mode is still want (else closes them): a SetMode between
// the accept and here must not miss them.
func (r *Relay) track(want RelayMode, cs ...net.Conn) bool {
	r.mu.Lock()
	ok := r.mode == want
	if ok {
		r.accepted++
		for _, c := range cs {
			r.conns[c] = struct{}{}
		}
	}
	r.mu.Unlock()
	if !ok {
		closeAll(cs)
	}
	return ok
}

func (r *Relay) untrack(cs ...net.Conn) {
	r.mu.Lock()
	for _, c := range cs {
		delete(r.conns, c)
	}
	r.mu.Unlock()
	closeAll(cs)
}

func (r *Relay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		switch r.Mode() {
		case RelayDead:
			c.Close()
		case RelayBlackhole:
			if !r.track(RelayBlackhole, c) {
				continue
			}
			r.wg.Add(1)
			go func() { // hold: read and discard until cut
				defer r.wg.Done()
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						r.untrack(c)
						return
					}
				}
			}()
		default:
			u, err := net.Dial("tcp", r.upstream)
			if err != nil {
				c.Close()
				continue
			}
			if !r.track(RelayForward, c, u) {
				continue
			}
			r.wg.Add(2)
			go r.pipe(u, c, true)
			go r.pipe(c, u, false)
		}
	}
}

// pipe copies src to dst while the mode is forward (bytes read in blackhole are dropped).
func (r *Relay) pipe(dst, src net.Conn, up bool) {
	defer r.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && r.Mode() == RelayForward {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
			if up {
				r.mu.Lock()
				r.lastUp = time.Now()
				r.mu.Unlock()
			}
		}
		if err != nil {
			break
		}
	}
	if r.Mode() == RelayBlackhole {
		// A dead link carries no FIN either: the other side stays open, silent, until the
		// mode changes.
		r.untrack(src)
		return
	}
	r.untrack(dst, src)
}

func (r *Relay) close() {
	r.ln.Close()
	r.SetMode(RelayDead)
	r.wg.Wait()
}
