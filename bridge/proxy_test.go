package bridge_test

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// proxy is a TCP proxy between edged and the cloud that a test can disable (new connections are
// accepted and closed at once) and cut (every open connection is dropped).
type proxy struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	enabled  bool
	conns    map[net.Conn]struct{}
	accepted int
	wg       sync.WaitGroup
}

func startProxy(t testing.TB, upstream string, enabled bool) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, upstream: upstream, enabled: enabled, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) Addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		on := p.enabled
		p.mu.Unlock()
		if !on {
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.accepted++
		p.conns[c], p.conns[u] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		go pipe(u, c)
		go pipe(c, u)
	}
}

// Set enables or disables new connections; disabling also cuts the open ones.
func (p *proxy) Set(on bool) {
	p.mu.Lock()
	p.enabled = on
	p.mu.Unlock()
	if !on {
		p.Cut()
	}
}

// Cut drops every open connection.
func (p *proxy) Cut() {
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
}

func (p *proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

func (p *proxy) close() {
	p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

// flapOnProgress cuts the link for 50 ms each time the cloud has received another fifth of
// n messages, until stop; it returns the number of cuts. Cuts follow progress rather than the
// clock, so a drain fast enough to fit one timed window is still cut several times.
func flapOnProgress(p *proxy, sub *cloudSub, n int, stop <-chan struct{}) int {
	flaps, next := 0, n/5
	for {
		select {
		case <-stop:
			return flaps
		case <-time.After(time.Millisecond):
		}
		if sub.count() < next {
			continue
		}
		p.Set(false)
		time.Sleep(50 * time.Millisecond)
		p.Set(true)
		flaps++
		next += n / 5
	}
}
