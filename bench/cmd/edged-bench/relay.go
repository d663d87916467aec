package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
)

// The relay is the floor of the paced-latency figures: the smallest MQTT 3.1.1 server the load
// generator can talk to. It answers CONNECT and SUBSCRIBE and forwards every QoS 0 PUBLISH to
// every subscriber, with no topic matching, sessions, hooks or store. Two ways of writing to a
// subscriber tell where a Go broker's latency goes:
//
//   - direct: the publisher's connection goroutine writes to the subscriber's socket itself
//     (under the subscriber's lock), as a single-threaded C broker does;
//   - queue: it hands the packet to the subscriber's own writer goroutine through a channel,
//     the shape of mochi-mqtt (and so of edged's embedded broker).
//
// It runs as a child process (`edged-bench -relay ADDR -relay-mode MODE`), so it has its own
// Go runtime, like the brokers.
const (
	relayDirect = "direct"
	relayQueue  = "queue"
)

type relaySub struct {
	mu   sync.Mutex
	c    net.Conn
	ch   chan []byte
	done chan struct{} // closed when the subscriber's connection ends
}

type relay struct {
	mode string
	mu   sync.Mutex
	subs []*relaySub
}

// runRelay serves on addr until the process is killed.
func runRelay(addr, mode string) error {
	if mode != relayDirect && mode != relayQueue {
		return fmt.Errorf("relay mode %q: want %s or %s", mode, relayDirect, relayQueue)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	r := &relay{mode: mode}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go r.serve(c)
	}
}

func (r *relay) serve(c net.Conn) {
	defer c.Close()
	in := bufio.NewReaderSize(c, 2048)
	var sub *relaySub
	for {
		first, body, err := readPacket(in, nil) // forward keeps body: a new slice each
		if err != nil {
			return
		}
		switch first >> 4 {
		case pktConnect:
			_, err = c.Write([]byte{pktConnack << 4, 2, 0, 0})
		case pktSubscribe:
			if len(body) < 3 {
				return
			}
			if sub == nil { // a second SUBSCRIBE must not deliver twice
				sub = r.subscribe(c)
				defer r.unsubscribe(sub)
			}
			_, err = c.Write([]byte{pktSuback << 4, 3, body[0], body[1], 0})
		case pktPublish:
			if (first>>1)&3 != 0 {
				return // the relay floor is measured at QoS 0 only
			}
			r.forward(appendHeader(nil, first, len(body)), body)
		case pktPingreq:
			_, err = c.Write([]byte{pktPingresp << 4, 0})
		case pktDisconnect:
			return
		}
		if err != nil {
			return
		}
	}
}

// subscribe adds c as a subscriber until unsubscribe: the warm-up's subscriber is gone before
// the measured run, and nothing is written to it after.
func (r *relay) subscribe(c net.Conn) *relaySub {
	s := &relaySub{c: c, done: make(chan struct{})}
	if r.mode == relayQueue {
		s.ch = make(chan []byte, 1024)
		go func() {
			for {
				select {
				case b := <-s.ch:
					s.write(b)
				case <-s.done:
					return
				}
			}
		}()
	}
	r.mu.Lock()
	r.subs = append(r.subs, s)
	r.mu.Unlock()
	return s
}

func (r *relay) unsubscribe(s *relaySub) {
	r.mu.Lock()
	r.subs = slices.DeleteFunc(slices.Clone(r.subs), func(x *relaySub) bool { return x == s })
	r.mu.Unlock()
	close(s.done) // its writer goroutine ends; a forward still holding s fills or drops its queue
}

func (s *relaySub) write(b []byte) {
	s.mu.Lock()
	_, _ = s.c.Write(b)
	s.mu.Unlock()
}

func (r *relay) forward(head, body []byte) {
	pk := append(head, body...)
	r.mu.Lock()
	subs := r.subs
	r.mu.Unlock()
	for _, s := range subs {
		if r.mode == relayQueue {
			select {
			case s.ch <- pk:
			default: // a full queue drops, as mochi does
			}
		} else {
			s.write(pk)
		}
	}
}

// startRelay runs this program as a relay child on a free loopback port.
func startRelay(mode string) (*proc, error) {
	return startSelf("relay "+mode, "-relay", "-relay-mode", mode)
}

// startSelf runs this program as a server child (`edged-bench FLAG ADDR ARGS...`) on a free
// loopback port and waits until it accepts connections.
func startSelf(name, flag string, args ...string) (*proc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort())
	p, err := start(name, "", append([]string{self, flag, addr}, args...), nil)
	if err != nil {
		return nil, err
	}
	p.addr = addr
	if err := p.waitTCP(addr); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}
