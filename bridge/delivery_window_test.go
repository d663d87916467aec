package bridge

import (
	"errors"
	"fmt"
	"testing"
	"time"

	paho3packets "github.com/eclipse/paho.mqtt.golang/packets"

	"github.com/edged-dev/edged/bridge/internal/mqtt5"
	"github.com/edged-dev/edged/internal/redact"
)

func TestQuantileWindow(t *testing.T) {
	var w quantileWindow
	t0 := time.Unix(1_800_000_000, 0)
	for i := 1; i <= 1000; i++ {
		w.observe(t0.Add(time.Duration(i)*time.Millisecond), time.Duration(i)*time.Millisecond)
	}
	q, n := w.quantiles(t0.Add(2*time.Second), 0.5, 0.99)
	if n != 1000 {
		t.Fatalf("n = %d", n)
	}
	// Bins grow by 1.25x: a quantile is reported as the upper bound of its bin.
	for i, want := range []time.Duration{500 * time.Millisecond, 990 * time.Millisecond} {
		if q[i] < want || q[i] > want*5/4 {
			t.Errorf("quantile %d = %v, want %v..%v", i, q[i], want, want*5/4)
		}
	}
	// Five minutes later the window has moved on.
	if _, n := w.quantiles(t0.Add(windowSlots*slotLength+time.Minute), 0.5); n != 0 {
		t.Fatalf("old observations still counted: %d", n)
	}
	// A slot reused after a full turn starts empty.
	w.observe(t0.Add(windowSlots*slotLength), time.Second)
	if _, n := w.quantiles(t0.Add(windowSlots*slotLength), 0.5); n != 1 {
		t.Fatalf("after a turn: n = %d, want 1", n)
	}
}

func TestFailureClass(t *testing.T) {
	scrub := redact.NewScrubber("s3cret")
	for _, tc := range []struct {
		err  error
		want string
	}{
		{errors.New("dial tcp: connection refused"), ClassNetwork},
		{errStalled, ClassNetwork},
		{&RedirectError{Status: 301, Location: "x"}, ClassRedirect},
		{&StatusError{Code: 302, Err: &RedirectError{Status: 302}}, ClassRedirect},
		{&StatusError{Code: 401, Err: errors.New("http 401")}, ClassAuth},
		{&StatusError{Code: 403, Err: Permanent(errors.New("http 403"))}, ClassAuth},
		{&StatusError{Code: 429, Err: &RetryAfterError{Err: errors.New("http 429")}}, ClassThrottled},
		{&StatusError{Code: 503, Err: errors.New("http 503")}, ClassThrottled},
		{&StatusError{Code: 500, Err: errors.New("http 500")}, ClassNetwork},
		{&StatusError{Code: 400, Err: Permanent(errors.New("http 400"))}, ClassRejected},
		{&RetryAfterError{After: time.Second, Err: errors.New("slow down")}, ClassThrottled},
		{fmt.Errorf("connect: %w", &mqtt5.ReasonError{Packet: "connack", Code: 0x86}), ClassAuth},
		{fmt.Errorf("connect: %w", &mqtt5.ReasonError{Packet: "connack", Code: 0x87}), ClassAuth},
		{fmt.Errorf("connect: %w", &mqtt5.ReasonError{Packet: "connack", Code: 0x89}), ClassThrottled},
		{Permanent(&mqtt5.ReasonError{Packet: "puback", Code: 0x97}), ClassThrottled},
		{Permanent(&mqtt5.ReasonError{Packet: "puback", Code: 0x87}), ClassAuth},
		{Permanent(&mqtt5.ReasonError{Packet: "puback", Code: 0x99}), ClassRejected},
		{fmt.Errorf("connect: %w", paho3packets.ErrorRefusedBadUsernameOrPassword), ClassAuth},
		{fmt.Errorf("connect: %w", paho3packets.ErrorRefusedNotAuthorised), ClassAuth},
		{Permanent(errors.New("encode")), ClassRejected},
	} {
		// Errors reach the counter scrubbed; the class must survive that.
		if got := failureClass(scrub.Error(tc.err)); got != tc.want {
			t.Errorf("%v: class %s, want %s", tc.err, got, tc.want)
		}
	}
}
