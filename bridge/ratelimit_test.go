package bridge

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestThrottleConn: 96KiB through a 64KiB/s throttle with a 4KiB burst takes (96-4)/64 s;
// every byte is counted; Close ends a write waiting for tokens.
func TestThrottleConn(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			_, _ = io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	th := NewThrottle(64<<10, 4<<10)
	env := &Env{Throttle: th}
	c, err := env.Dialer(nil)(t.Context(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	n, err := c.Write(make([]byte, 96<<10))
	el := time.Since(t0)
	if err != nil || n != 96<<10 || th.Written() != 96<<10 {
		t.Fatalf("wrote %d (%v), counted %d", n, err, th.Written())
	}
	want := time.Duration(float64(92) / 64 * float64(time.Second))
	if el < want-50*time.Millisecond {
		t.Fatalf("96KiB took %v: faster than the cap allows (%v)", el, want)
	}
	t.Logf("96KiB at 64KiB/s, burst 4KiB: %v (ideal %v)", el, want)
	// A write that must wait 1 s for tokens returns at once when the conn is closed.
	done := make(chan error, 1)
	go func() { _, err := c.Write(make([]byte, 64<<10)); done <- err }()
	time.Sleep(100 * time.Millisecond)
	c.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("write on a closed throttled conn succeeded")
		}
	case <-time.After(500 * time.Millisecond):
		t.Fatal("Close did not end a write waiting for tokens")
	}
}
