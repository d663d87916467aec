package main

import (
	"encoding/binary"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// tpResult is one fan-in run: what was sent, what the subscriber got, and when.
type tpResult struct {
	sent, recv int
	rate       float64 // delivered msgs/s, first publish to last delivery
	p50, p99   float64 // ms, publish to delivery (timestamp in the payload)
}

// subscriber counts deliveries on filter; payload[0:8] is the send time (UnixNano) and
// payload[8:16] a sequence number, so duplicates (at-least-once) are told apart.
type subscriber struct {
	c        *client
	total    int
	mu       sync.Mutex
	seen     []bool
	distinct int
	dups     int
	lat      []int64
	first    time.Time
	last     time.Time
	done     chan struct{}
	finished atomic.Bool
}

func newSubscriber(addr, id, filter string, qos byte, total int, keepLatency bool) (*subscriber, error) {
	c, err := dial(addr, id, true)
	if err != nil {
		return nil, err
	}
	if err := c.subscribe(filter, qos); err != nil {
		c.close()
		return nil, err
	}
	s := &subscriber{c: c, total: total, seen: make([]bool, total), done: make(chan struct{})}
	if keepLatency {
		s.lat = make([]int64, 0, total)
	}
	go s.loop()
	return s, nil
}

func (s *subscriber) loop() {
	defer close(s.done)
	for {
		typ, flags, body, err := s.c.read()
		if err != nil {
			return
		}
		if typ != pktPublish {
			continue
		}
		_, id, payload, err := parsePublish(flags, body)
		if err != nil {
			return
		}
		now := time.Now()
		if id != 0 {
			_ = s.c.puback(id)
		}
		if s.c.r.Buffered() == 0 {
			_ = s.c.flush()
		}
		if len(payload) < 16 {
			continue
		}
		ts := int64(binary.BigEndian.Uint64(payload))
		seq := int(binary.BigEndian.Uint64(payload[8:]))
		s.mu.Lock()
		if s.distinct == 0 {
			s.first = now
		}
		if seq >= 0 && seq < s.total {
			if s.seen[seq] {
				s.dups++
			} else {
				s.seen[seq] = true
				s.distinct++
				s.last = now
				if s.lat != nil {
					s.lat = append(s.lat, now.UnixNano()-ts)
				}
			}
		}
		complete := s.distinct == s.total
		s.mu.Unlock()
		if complete && s.finished.CompareAndSwap(false, true) {
			return
		}
	}
}

func (s *subscriber) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.distinct
}

// wait returns when every message arrived, or no new one came for idle, or total passed.
func (s *subscriber) wait(idle, total time.Duration) {
	deadline := time.Now().Add(total)
	lastN, lastChange := -1, time.Now()
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return
		case <-time.After(20 * time.Millisecond):
		}
		if n := s.count(); n != lastN {
			lastN, lastChange = n, time.Now()
		} else if time.Since(lastChange) > idle {
			return
		}
	}
}

func (s *subscriber) close() { s.c.close(); <-s.done }

func payload(size int, seq int) []byte {
	p := make([]byte, size)
	for i := 16; i < size; i++ {
		p[i] = 'a' + byte(i%26)
	}
	binary.BigEndian.PutUint64(p[8:], uint64(seq))
	return p
}

// publisher sends n messages with sequence numbers from base. QoS 1 keeps at most window
// PUBLISHes unacknowledged (a reader goroutine frees slots on PUBACK).
// interval > 0 paces the sends (one every interval, each flushed at once).
func publisher(addr, id, topic string, qos byte, base, n, size, window int, interval time.Duration, start <-chan struct{}) error {
	c, err := dial(addr, id, true)
	if err != nil {
		return err
	}
	defer c.close()
	p := payload(size, 0)
	var slots chan struct{}
	acked := make(chan error, 1)
	if qos > 0 {
		slots = make(chan struct{}, window)
		go func() {
			got := 0
			for got < n {
				typ, _, _, err := c.read()
				if err != nil {
					acked <- fmt.Errorf("%s: read puback after %d/%d: %w", id, got, n, err)
					return
				}
				if typ == pktPuback {
					got++
					<-slots
				}
			}
			acked <- nil
		}()
	}
	<-start
	t0 := time.Now()
	var pid uint16
	for i := 0; i < n; i++ {
		if interval > 0 {
			if d := time.Until(t0.Add(time.Duration(i) * interval)); d > 0 {
				time.Sleep(d)
			}
		}
		if qos > 0 {
			if len(slots) == cap(slots) {
				_ = c.flush() // about to block: send what is buffered
			}
			select {
			case slots <- struct{}{}:
			case err := <-acked: // the connection died (e.g. the broker was OOM-killed)
				if err == nil {
					err = fmt.Errorf("%s: acks ended after %d sent", id, i)
				}
				return err
			}
			pid++
			if pid == 0 {
				pid = 1
			}
		}
		binary.BigEndian.PutUint64(p, uint64(time.Now().UnixNano()))
		binary.BigEndian.PutUint64(p[8:], uint64(base+i))
		if err := c.publish(topic, p, qos, pid); err != nil {
			return fmt.Errorf("%s: publish %d: %w", id, i, err)
		}
		if interval > 0 {
			if err := c.flush(); err != nil {
				return err
			}
		}
	}
	if err := c.flush(); err != nil {
		return err
	}
	if qos > 0 {
		select {
		case err := <-acked:
			return err
		case <-time.After(10 * time.Minute):
			return fmt.Errorf("%s: pubacks did not arrive", id)
		}
	}
	return nil
}

// fanIn runs pubs publishers -> 1 subscriber through the broker at addr.
// interval > 0 paces every publisher (latency at a fixed load instead of saturation).
func fanIn(addr string, pubs, perPub int, qos byte, size int, interval time.Duration) (tpResult, error) {
	total := pubs * perPub
	sub, err := newSubscriber(addr, "bench-sub", "bench/tp/#", qos, total, true)
	if err != nil {
		return tpResult{}, err
	}
	defer sub.close()
	startCh := make(chan struct{})
	errs := make(chan error, pubs)
	for i := 0; i < pubs; i++ {
		go func(i int) {
			errs <- publisher(addr, fmt.Sprintf("bench-pub-%d", i), fmt.Sprintf("bench/tp/%d", i), qos, i*perPub, perPub, size, 64, interval, startCh)
		}(i)
	}
	time.Sleep(200 * time.Millisecond) // every publisher connected
	t0 := time.Now()
	close(startCh)
	for i := 0; i < pubs; i++ {
		if err := <-errs; err != nil {
			return tpResult{}, err
		}
	}
	sub.wait(2*time.Second, 5*time.Minute)
	sub.mu.Lock()
	defer sub.mu.Unlock()
	r := tpResult{sent: total, recv: sub.distinct}
	if sub.distinct > 0 {
		r.rate = float64(sub.distinct) / sub.last.Sub(t0).Seconds()
	}
	r.p50, r.p99 = percentile(sub.lat, 0.50), percentile(sub.lat, 0.99)
	return r, nil
}

func percentile(ns []int64, q float64) float64 {
	if len(ns) == 0 {
		return 0
	}
	s := append([]int64(nil), ns...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return float64(s[int(q*float64(len(s)-1))]) / 1e6
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// ingest publishes n QoS 1 messages from pubs publishers as fast as PUBACKs come back and
// returns msgs/s; the sequence numbers run from base.
func ingest(addr string, pubs, n, base, size int) (float64, error) {
	return ingestWindow(addr, pubs, n, base, size, 64)
}

// ingestWindow is ingest with window QoS 1 messages in flight per publisher.
func ingestWindow(addr string, pubs, n, base, size, window int) (float64, error) {
	per := n / pubs
	startCh := make(chan struct{})
	errs := make(chan error, pubs)
	for i := 0; i < pubs; i++ {
		go func(i int) {
			errs <- publisher(addr, fmt.Sprintf("bench-ingest-%d-%d", base, i), fmt.Sprintf("bench/up/%d", i), 1, base+i*per, per, size, window, 0, startCh)
		}(i)
	}
	time.Sleep(200 * time.Millisecond)
	t0 := time.Now()
	close(startCh)
	for i := 0; i < pubs; i++ {
		if err := <-errs; err != nil {
			return 0, err
		}
	}
	return float64(per*pubs) / time.Since(t0).Seconds(), nil
}
