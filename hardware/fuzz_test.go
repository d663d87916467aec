package hardware

import (
	"bytes"
	"strconv"
	"testing"
	"time"

	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/wire"
)

// fuzzModes are the port configurations FuzzFrameToPublish cycles through (mode % len).
var fuzzModes = []SerialConfig{
	{Framing: "line", Format: "raw"},
	{Framing: "line", Format: "json", ErrorTopic: "err/f"},
	{Framing: "line", Delimiter: ";", Format: "raw"},
	{Framing: "cobs", Format: "cbor"},
	{Framing: "cobs", Format: "cbor", PublishAs: "json", ErrorTopic: "err/f"},
	{Framing: "slip", Format: "json"},
	{Framing: "slip", Format: "cbor", PublishAs: "json"},
	{Framing: "cobs", Format: "raw"},
}

// runFramePath is the read loop's framing-to-publish path without the port: feed data in
// chunks of the given size, build the message for every frame, collect what would be published.
func runFramePath(cfg SerialConfig, data []byte, chunk int) (pub []*broker.Message, invalid int) {
	c, f := newCodec(&cfg), newFramer(&cfg)
	dec := c.newDecoder()
	now := time.UnixMilli(1700000000000)
	emit := func(frame []byte) {
		msg, reason, errMsg := f.build(frame, now)
		if reason != "" {
			invalid++
			if errMsg != nil {
				pub = append(pub, errMsg)
			}
			return
		}
		pub = append(pub, msg)
	}
	for len(data) > 0 {
		n := min(chunk, len(data))
		dec.Feed(data[:n], emit)
		data = data[n:]
	}
	d := dec.Dropped()
	return pub, invalid + int(d.Oversize+d.Malformed)
}

// FuzzFrameToPublish feeds arbitrary bytes, in arbitrary chunks, through decoder + format
// validation + message building: it must never panic, every message must be well-formed, and
// chunking must not change the result.
func FuzzFrameToPublish(f *testing.F) {
	f.Add([]byte("temp=21.5\r\nhum=40\n"), uint8(0), uint16(3))
	f.Add([]byte("{\"a\":1}\n{bad\n[1,2,3]\n"), uint8(1), uint16(1))
	f.Add([]byte{0x03, 0x82, 0x01, 0x00, 0x02, 0x02, 0x00}, uint8(3), uint16(2))
	f.Add([]byte{0xC0, 0xA1, 0x61, 0x76, 0x03, 0xC0, 0xDB, 0x00, 0xC0}, uint8(6), uint16(4))
	f.Fuzz(func(t *testing.T, data []byte, mode uint8, chunk uint16) {
		cfg := fuzzModes[int(mode)%len(fuzzModes)]
		cfg.Name, cfg.Port, cfg.Topic, cfg.QoS = "fz", "/dev/null", "s/fz", 1
		cfg.MaxFrame = 64
		cfg.ApplyDefaults()
		if err := cfg.Validate(); err != nil {
			t.Fatalf("mode %d: %v", mode, err)
		}
		whole, wholeInvalid := runFramePath(cfg, data, len(data)+1)
		parts, partsInvalid := runFramePath(cfg, data, int(chunk%64)+1)
		if len(whole) != len(parts) || wholeInvalid != partsInvalid {
			t.Fatalf("chunking changed the result: %d/%d messages, %d/%d invalid", len(whole), len(parts), wholeInvalid, partsInvalid)
		}
		for i, m := range whole {
			if !bytes.Equal(m.Payload, parts[i].Payload) || m.Topic != parts[i].Topic {
				t.Fatalf("message %d differs when chunked", i)
			}
			if m.Topic != cfg.Topic && m.Topic != cfg.ErrorTopic {
				t.Fatalf("topic %q", m.Topic)
			}
			if m.Topic == cfg.Topic && cfg.PublishAs == "" && len(m.Payload) > int(cfg.MaxFrame) {
				t.Fatalf("payload of %d bytes > max_frame", len(m.Payload))
			}
			if len(m.Payload) == 0 && m.Topic == cfg.Topic && cfg.Format == "raw" {
				t.Fatalf("empty frame published")
			}
			if len(m.UserProps) < 2 || m.UserProps[0] != (propOf(PropPort, "fz")) ||
				m.UserProps[1] != propOf(PropTime, strconv.FormatInt(1700000000000, 10)) || !m.Inline {
				t.Fatalf("message %+v", m)
			}
		}
	})
}

func propOf(k, v string) wire.UserProp { return wire.UserProp{Key: k, Value: v} }
