package modbus

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	mb "github.com/simonvetter/modbus"

	"github.com/edged-dev/edged/broker"
)

// fuzzPeer is a Modbus TCP server that answers every request with the PDU it is given: the
// MBAP header (transaction id, length, unit id) is made right, so the client never waits for a
// timeout, and the PDU is whatever the fuzzer chose.
type fuzzPeer struct {
	ln    net.Listener
	pdu   atomic.Pointer[[]byte]
	fixFC atomic.Bool // replace the PDU's function code by the request's
}

func startFuzzPeer(tb testing.TB) *fuzzPeer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &fuzzPeer{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	tb.Cleanup(func() { _ = ln.Close() })
	return p
}

func (p *fuzzPeer) serve(c net.Conn) {
	defer c.Close()
	req := make([]byte, 260)
	for {
		if _, err := io.ReadFull(c, req[:7]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(req[4:6]))
		if n < 1 || n > 253 {
			return
		}
		if _, err := io.ReadFull(c, req[7:6+n]); err != nil {
			return
		}
		pdu := append([]byte(nil), *p.pdu.Load()...)
		if len(pdu) > 0 && p.fixFC.Load() {
			pdu[0] = pdu[0]&0x80 | req[7]
		}
		out := append([]byte{req[0], req[1], 0, 0, 0, 0, req[6]}, pdu...)
		binary.BigEndian.PutUint16(out[4:6], uint16(len(pdu)+1))
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}

// The bus the peer answers: every register type and data type, in a few requests.
const fuzzPeerBus = `
- name: b
  tcp: "%s"
  retries: 0
  units:
    - name: u
      id: 1
      points:
        - {name: h16, type: holding, address: 0, data_type: int16, writable: true}
        - {name: hf, type: holding, address: 1, data_type: float32, word_order: low_first, writable: true}
        - {name: hs, type: holding, address: 3, data_type: string, count: 3}
        - {name: i64, type: input, address: 10, data_type: uint64, scale: 0.5}
        - {name: c, type: coil, address: 0, writable: true}
        - {name: c9, type: coil, address: 9}
        - {name: d, type: discrete_input, address: 3}
`

// FuzzPeerResponse: what a Modbus peer answers is outside bytes. A poll or a write on any
// answer returns (an error or nil) without panicking, in the library or in edged, and every
// sample it publishes is a well-formed JSON sample of quality good (with a value) or bad.
func FuzzPeerResponse(f *testing.F) {
	peer := startFuzzPeer(f)
	for _, s := range []struct {
		pdu []byte
		fix bool
	}{
		{[]byte{0x03, 12, 0xff, 0xfe, 0x41, 0x48, 0, 0, 'a', 'b', 'c', 0, 0, 0}, true}, // holding 0..5
		{[]byte{0x04, 8, 0, 0, 0, 0, 0, 0, 0, 2}, true},                                // input 10..13
		{[]byte{0x01, 2, 0x01, 0x02}, true},                                            // coils 0..9
		{[]byte{0x02, 1, 0x08}, true},                                                  // discrete 3
		{[]byte{0x83, 0x02}, true},                                                     // exception: illegal address
		{[]byte{0x03, 200, 1, 2}, false},                                               // byte count lies
		{[]byte{0x2b, 0x0e}, false},                                                    // unexpected function
		{[]byte{}, false},
	} {
		f.Add(s.pdu, s.fix)
	}
	f.Fuzz(func(t *testing.T, pdu []byte, fix bool) {
		if len(pdu) > 252 {
			return // beyond a Modbus TCP frame: the MBAP length cannot say it
		}
		peer.pdu.Store(&pdu)
		peer.fixFC.Store(fix)
		buses := parseBuses(t, fmt.Sprintf(fuzzPeerBus, peer.ln.Addr().String()))
		ApplyDefaults(buses)
		if err := Validate(buses); err != nil {
			t.Fatal(err)
		}
		buses[0].Timeout = 2 * time.Second // a reply always comes; only a broken peer would wait
		local := newFakeLocal()
		b := newBus(buses[0], local, slog.New(slog.DiscardHandler), mustMetrics(t), plainSerial{})
		c, err := mb.NewClient(&mb.ClientConfiguration{URL: "tcp://" + peer.ln.Addr().String(), Timeout: buses[0].Timeout, Logger: logDiscard()})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Open(); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, r := range b.reqs {
			_ = b.poll(context.Background(), c, r)
		}
		// The answers to writes too: a single register, several, a coil.
		for _, p := range b.units[0].points {
			if p.cfg.Writable {
				_ = b.write(context.Background(), c, writeCmd{p: p, value: float64(1), at: time.Now()})
			}
		}
		all := local.Where(func(*broker.Message) bool { return true })
		for _, m := range all {
			var s struct {
				V any    `json:"v"`
				Q string `json:"q"`
				T int64  `json:"t"`
			}
			if err := json.Unmarshal(m.Payload, &s); err != nil || (s.Q != QualityGood && s.Q != QualityBad) || (s.Q == QualityGood && s.V == nil) {
				t.Fatalf("sample on %s: %s (%v)", m.Topic, m.Payload, err)
			}
		}
	})
}
