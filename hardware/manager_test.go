package hardware

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/edged-dev/edged/hardware/hwkit"
	"github.com/edged-dev/edged/wire"
	"github.com/fxamacker/cbor/v2"
)

func TestPortLinesCOBSAndCBORFramesArePublished(t *testing.T) {
	local := newFakeLocal()
	r, devs := startOpen(t, local,
		SerialConfig{Name: "meter1", Topic: "sensors/meter1", QoS: 1},
		SerialConfig{Name: "cobs1", Framing: "cobs", Topic: "sensors/cobs1"},
		SerialConfig{Name: "cbor1", Framing: "slip", Format: "cbor", PublishAs: "json", Topic: "sensors/cbor1"},
	)
	lineDev, cobsDev, cborDev := devs[0], devs[1], devs[2]

	before := time.Now()
	// A line split across writes, CRLF, and two lines in one write.
	lineDev.write(t, []byte("temp=2"))
	lineDev.write(t, []byte("1.5\r\nhum=40\nrssi=-70\n"))
	expectPayloads(t, local, "sensors/meter1", "temp=21.5", "hum=40", "rssi=-70")

	cobsDev.write(t, append(wire.EncodeCOBS([]byte{1, 0, 2, 0}), wire.EncodeCOBS([]byte("x"))...))
	expectPayloads(t, local, "sensors/cobs1", "\x01\x00\x02\x00", "x")

	item, err := cbor.Marshal(map[string]any{"t": 21.5, "id": "m1"})
	if err != nil {
		t.Fatal(err)
	}
	cborDev.write(t, wire.EncodeSLIP(item))
	expectPayloads(t, local, "sensors/cbor1", `{"id":"m1","t":21.5}`)

	m := local.onTopic("sensors/meter1")[0]
	if m.QoS != 1 || !m.Inline || m.Time.Before(before.Add(-time.Millisecond)) || m.Time.After(time.Now()) {
		t.Errorf("message = %+v", m)
	}
	props := map[string]string{}
	for _, p := range m.UserProps {
		props[p.Key] = p.Value
	}
	if props[PropPort] != "meter1" || props[PropTime] != strconv.FormatInt(m.Time.UnixMilli(), 10) {
		t.Errorf("user props = %v", m.UserProps)
	}
	if c := local.onTopic("sensors/cbor1")[0].ContentType; c != "application/json" {
		t.Errorf("content type %q", c)
	}
	r.wantMetric(t, 3, "edged_serial_frames_in_total", "port", "meter1")
	if s := r.status("meter1"); s.FramesIn != 3 || s.BytesIn != 27 || s.Path != lineDev.path() {
		t.Errorf("status = %+v", s)
	}
	r.wantMetric(t, 1, "edged_serial_port_up", "port", "cobs1")
}

func TestPortCommandIsFramedOnTheDevice(t *testing.T) {
	local := newFakeLocal()
	r, devs := startOpen(t, local,
		SerialConfig{Name: "a", Topic: "s/a", CommandTopic: "cmd/a", Delimiter: "\r"},
		SerialConfig{Name: "b", Framing: "slip", Topic: "s/b", CommandTopic: "cmd/b"},
	)
	lineDev, slipDev := devs[0], devs[1]

	local.command(t, "cmd/a", []byte("reboot"))
	local.command(t, "cmd/a", []byte("bad\rcommand")) // cannot be line-framed: dropped, counted
	local.command(t, "cmd/a", []byte("led on\r"))
	local.command(t, "cmd/b", []byte{0xC0, 1, 0xDB})
	waitFor(t, "line command", func() error {
		if got := lineDev.received(); string(got) != "reboot\rled on\r" {
			return fmt.Errorf("device got %q", got)
		}
		return nil
	})
	waitFor(t, "slip command", func() error {
		if got, want := slipDev.received(), []byte{0xC0, 0xDB, 0xDC, 1, 0xDB, 0xDD, 0xC0}; !bytes.Equal(got, want) {
			return fmt.Errorf("device got % x, want % x", got, want)
		}
		return nil
	})
	if s := r.status("a"); s.FramesOut != 2 || s.Dropped != 1 || s.LastError == "" {
		t.Errorf("status = %+v", s)
	}
	r.wantMetric(t, 1, "edged_serial_dropped_total", "port", "a", "reason", DropUnframeable)
	r.wantMetric(t, 1, "edged_serial_frames_out_total", "port", "b")
}

func TestPortGarbageAndOversizeAreDroppedAndStreamResyncs(t *testing.T) {
	local := newFakeLocal()
	r, devs := startOpen(t, local,
		SerialConfig{Name: "j", Format: "json", MaxFrame: 16, Topic: "s/j", ErrorTopic: "err/j"},
		SerialConfig{Name: "c", Framing: "cobs", Format: "cbor", MaxFrame: 16, Topic: "s/c"},
	)
	jsonDev, cobsDev := devs[0], devs[1]

	jsonDev.write(t, []byte("{\"a\":1}\n{not json\n"+string(bytes.Repeat([]byte("9"), 40))+"\n[1,2]\n"))
	expectPayloads(t, local, "s/j", `{"a":1}`, `[1,2]`)
	expectPayloads(t, local, "err/j", `{not json`) // oversize frames are incomplete: never republished
	if e := local.onTopic("err/j")[0]; e.UserProps[len(e.UserProps)-1].Value != ReasonInvalidJSON {
		t.Errorf("error props %v", e.UserProps)
	}

	good := []byte{0x82, 0x01, 0x02} // [1, 2]
	var stream []byte
	stream = append(stream, wire.EncodeCOBS(good)...)
	stream = append(stream, wire.EncodeCOBS([]byte{0xff, 0xff})...)          // not CBOR
	stream = append(stream, 0x05, 0x01, 0x00)                                // truncated COBS block
	stream = append(stream, wire.EncodeCOBS(bytes.Repeat([]byte{7}, 40))...) // oversize
	stream = append(stream, wire.EncodeCOBS(good)...)
	cobsDev.write(t, stream)
	expectPayloads(t, local, "s/c", "\x82\x01\x02", "\x82\x01\x02")

	waitFor(t, "invalid counters", func() error {
		for _, c := range []struct {
			port, reason string
			want         float64
		}{
			{"j", ReasonInvalidJSON, 1}, {"j", ReasonOversize, 1},
			{"c", ReasonInvalidCBOR, 1}, {"c", ReasonMalformed, 1}, {"c", ReasonOversize, 1},
		} {
			if got := r.metric(t, "edged_serial_invalid_total", "port", c.port, "reason", c.reason); got != c.want {
				return fmt.Errorf("%s %s = %v, want %v", c.port, c.reason, got, c.want)
			}
		}
		if s := r.status("c"); s.Invalid != 3 || s.FramesIn != 2 {
			return fmt.Errorf("status %+v", s)
		}
		return nil
	})
}

// Replug: the configured path is a symlink (like /dev/serial/by-id/...). The device goes away,
// a command sent meanwhile is queued, a new device appears behind the link, and everything flows
// again without restarting.
func TestPortReplugIsRecovered(t *testing.T) {
	at := symlinkPath(t)
	dev1 := newDevice(t)
	link(t, at, dev1.path())
	local := newFakeLocal()
	r := startManager(t, local, SerialConfig{Name: "p", Line: hwkit.Line{Port: at}, Topic: "s/p", CommandTopic: "cmd/p"})
	r.waitState(t, "p", StateOpen)
	dev1.write(t, []byte("one\n"))
	expectPayloads(t, local, "s/p", "one")

	// Unplug: the link disappears first (as udev does), then the device.
	if err := removeLink(at); err != nil {
		t.Fatal(err)
	}
	dev1.unplug()
	waitFor(t, "port noticed", func() error {
		if s := r.status("p"); s.State == StateOpen || s.LastError == "" {
			return fmt.Errorf("status %+v", s)
		}
		if up := r.metric(t, "edged_serial_port_up", "port", "p"); up != 0 {
			return fmt.Errorf("port_up %v", up)
		}
		return nil
	})
	r.waitState(t, "p", StateWaiting) // path missing: waiting for the device
	local.command(t, "cmd/p", []byte("hello again"))
	if s := r.status("p"); s.Queued != 1 {
		t.Errorf("queued = %d", s.Queued)
	}

	dev2 := newDevice(t)
	link(t, at, dev2.path())
	r.waitState(t, "p", StateOpen)
	dev2.write(t, []byte("two\n"))
	expectPayloads(t, local, "s/p", "one", "two")
	waitFor(t, "queued command written after replug", func() error {
		if got := string(dev2.received()); got != "hello again\n" {
			return fmt.Errorf("device got %q", got)
		}
		return nil
	})
	if s := r.status("p"); s.Reopens != 1 || s.Path != at {
		t.Errorf("status %+v", s)
	}
	r.wantMetric(t, 1, "edged_serial_reopens_total", "port", "p")
}

func TestPortCommandsWhileAwayWithoutQueueAreCounted(t *testing.T) {
	zero := 0
	local := newFakeLocal()
	r := startManager(t, local, SerialConfig{Name: "gone", Line: hwkit.Line{Port: "/dev/does-not-exist-edged"}, Topic: "s/g",
		CommandTopic: "cmd/g", Away: hwkit.Away{CommandQueue: &zero}})
	r.waitState(t, "gone", StateWaiting)
	waitFor(t, "subscribed", func() error {
		if !local.subscribed("cmd/g") {
			return errors.New("not yet")
		}
		return nil
	})
	local.command(t, "cmd/g", []byte("x"))
	r.wantMetric(t, 1, "edged_serial_dropped_total", "port", "gone", "reason", DropPortAway)
	if s := r.status("gone"); s.Dropped != 1 {
		t.Errorf("status %+v", s)
	}
}

func TestRunLeavesNoGoroutines(t *testing.T) {
	base := runtime.NumGoroutine()
	at := symlinkPath(t)
	dev := newDevice(t)
	link(t, at, dev.path())
	local := newFakeLocal()
	r := startManager(t, local,
		SerialConfig{Name: "a", Line: hwkit.Line{Port: at}, Topic: "s/a", CommandTopic: "cmd/a"},
		SerialConfig{Name: "missing", Line: hwkit.Line{Port: "/dev/does-not-exist-edged"}, Topic: "s/m"},
	)
	r.waitState(t, "a", StateOpen)
	dev.write(t, []byte("x\n"))
	expectPayloads(t, local, "s/a", "x")
	// one lost-and-found cycle, then stop while the port is open
	removeLink(at)
	dev.unplug()
	r.waitState(t, "a", StateWaiting)
	dev2 := newDevice(t)
	link(t, at, dev2.path())
	r.waitState(t, "a", StateOpen)
	r.stop()
	if s := r.status("a"); s.State != StateStopped {
		t.Errorf("state after Run = %s", s.State)
	}
	if local.subscribed("cmd/a") {
		t.Errorf("command subscription left behind")
	}
	dev2.unplug()
	waitFor(t, "goroutines back to baseline", func() error {
		if n := runtime.NumGoroutine(); n > base {
			buf := make([]byte, 1<<16)
			return fmt.Errorf("%d goroutines, baseline %d\n%s", n, base, buf[:runtime.Stack(buf, true)])
		}
		return nil
	})
}
