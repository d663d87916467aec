package bridge_test

import (
	"net"
	"sync"
	"testing"
	"time"
)

// holeProxy is a TCP proxy in front of a cloud with the failure modes presence and failover
// must survive:
//   - modeForward: relays both ways;
//   - modeBlackhole: open connections stay open but nothing is relayed any more (bytes are
//     read and discarded: a link that died without a FIN or RST); new connections are accepted
//     and held without an answer (a half-open endpoint: TCP works, the protocol never does);
//   - modeDead: open connections are cut and new ones closed at once (a killed process).
//
// Leaving blackhole cuts the connections it held: their streams lost bytes.
type holeProxy struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	mode     int
	conns    map[net.Conn]struct{}
	accepted int
	lastUp   time.Time // when bytes were last relayed toward upstream
	wg       sync.WaitGroup
}

const (
	modeForward = iota
	modeBlackhole
	modeDead
)

func startHoleProxy(t testing.TB, upstream string) *holeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &holeProxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *holeProxy) Addr() string { return p.ln.Addr().String() }

func (p *holeProxy) getMode() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// SetMode switches the mode; see holeProxy.
func (p *holeProxy) SetMode(m int) {
	p.mu.Lock()
	old := p.mode
	p.mode = m
	var cut []net.Conn
	if old != m && !(old == modeForward && m == modeBlackhole) {
		for c := range p.conns {
			cut = append(cut, c)
		}
	}
	p.mu.Unlock()
	for _, c := range cut {
		c.Close()
	}
}

// Accepted counts the connections accepted in any mode but dead.
func (p *holeProxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// LastUp is when bytes were last relayed toward upstream.
func (p *holeProxy) LastUp() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastUp
}

func (p *holeProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *holeProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	for _, c := range cs {
		delete(p.conns, c)
	}
	p.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

func (p *holeProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		switch p.getMode() {
		case modeDead:
			c.Close()
			continue
		case modeBlackhole:
			p.mu.Lock()
			p.accepted++
			p.mu.Unlock()
			p.track(c)
			p.wg.Add(1)
			go func() { // hold: read and discard until cut
				defer p.wg.Done()
				buf := make([]byte, 4096)
				for {
					if _, err := c.Read(buf); err != nil {
						p.untrack(c)
						return
					}
				}
			}()
			continue
		}
		u, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.accepted++
		p.mu.Unlock()
		p.track(c, u)
		p.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := src.Read(buf)
				if n > 0 && p.getMode() == modeForward {
					if _, werr := dst.Write(buf[:n]); werr != nil {
						break
					}
					if dst == u {
						p.mu.Lock()
						p.lastUp = time.Now()
						p.mu.Unlock()
					}
				}
				if err != nil {
					break
				}
			}
			if p.getMode() == modeBlackhole {
				// A dead link carries no FIN either: the other side stays open, silent,
				// until the mode changes.
				p.untrack(src)
				return
			}
			p.untrack(dst, src)
		}
		go pipe(u, c)
		go pipe(c, u)
	}
}

func (p *holeProxy) close() {
	p.ln.Close()
	p.SetMode(modeDead)
	p.wg.Wait()
}
