package bridge_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/fxamacker/cbor/v2"

	"github.com/edged-dev/edged/internal/testutil"
	"github.com/edged-dev/edged/wire"
)

// wsServer is an IM-style websocket endpoint: it records envelopes, acks each frame's last id
// (cumulative), rejects payload "reject", drops the link without acking its 3rd frame, and
// pushes one downlink envelope on every new connection.
type wsServer struct {
	t      *testing.T
	format string
	mu     sync.Mutex
	msgs   []cloudMsg
	frames int
	conns  int
	acked  []string // ids of downlink envelopes edged acked
	down   wire.ID
}

func (s *wsServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer wstoken" {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx := r.Context()
	s.mu.Lock()
	s.conns++
	s.mu.Unlock()
	typ := websocket.MessageText
	enc := func(v any) []byte { b, _ := json.Marshal(v); return b }
	if s.format == "cbor" {
		typ = websocket.MessageBinary
		enc = func(v any) []byte { b, _ := cbor.Marshal(v); return b }
	}
	down := &wire.Envelope{Version: wire.Version, ID: s.down, Topic: "cmd/dev1", Payload: []byte("open"), QoS: 1, Time: time.Now().UnixMilli()}
	var db []byte
	if s.format == "cbor" {
		db, _ = wire.MarshalEnvelope(down)
	} else {
		db, _ = wire.MarshalEnvelopeJSON(down)
	}
	if err := c.Write(ctx, typ, db); err != nil {
		return
	}
	for {
		mt, data, err := c.Read(ctx)
		if err != nil {
			return
		}
		if mt != typ {
			s.t.Errorf("frame type %v", mt)
		}
		var ctl map[string]string
		if s.format == "cbor" {
			_ = cbor.Unmarshal(data, &ctl)
		} else {
			_ = json.Unmarshal(data, &ctl)
		}
		if ctl["ack"] != "" {
			s.mu.Lock()
			s.acked = append(s.acked, ctl["ack"])
			s.mu.Unlock()
			continue
		}
		var b *wire.Batch
		if s.format == "cbor" {
			b, err = wire.UnmarshalBatch(data)
		} else {
			b, err = wire.UnmarshalBatchJSON(data)
		}
		if err != nil {
			s.t.Errorf("batch: %v", err)
			return
		}
		s.mu.Lock()
		s.frames++
		drop := s.frames == 3
		if !drop {
			for _, e := range b.Envelopes {
				s.msgs = append(s.msgs, cloudMsg{Payload: e.Payload, ID: e.ID.String()})
			}
		}
		s.mu.Unlock()
		if drop {
			return // no ack: edged must resend after reconnecting
		}
		for _, e := range b.Envelopes {
			if string(e.Payload) == "reject" {
				_ = c.Write(ctx, typ, enc(map[string]string{"reject": e.ID.String(), "error": "bad payload"}))
			}
		}
		if err := c.Write(ctx, typ, enc(map[string]string{"ack": b.Envelopes[len(b.Envelopes)-1].ID.String()})); err != nil {
			return
		}
	}
}

func TestWebSocketConnector(t *testing.T) {
	for _, format := range []string{"json", "cbor"} {
		t.Run(format, func(t *testing.T) {
			ws := &wsServer{t: t, format: format, down: wire.NewID()}
			srv := httptest.NewServer(ws)
			defer srv.Close()
			cfg := decodeConnector(t, fmt.Sprintf(`
name: im
type: websocket
url: ws%s/im
format: %s
batch: {max_messages: 20}
backoff: {min: 20ms, max: 50ms}
auth: {type: bearer, token_file: %s}
forward:
  - {from: "chat/#", to: "im/{1}"}
subscribe:
  - {from: "cmd/#", to: "local/cmd/{1}"}
`, strings.TrimPrefix(srv.URL, "http"), format, writeSecret(t, "tok", "wstoken")))
			s := startStack(t, "", cfg)
			local := localClient(t, s.addr, "dev1")
			got := testutil.Subscribe(t, local, "local/cmd/#")
			// the downlink pushed on connect reaches the local subscriber (the first push may
			// race the subscription above; a reconnect pushes it again)
			publishN(t, local, "chat/room1", 0, 50)
			if tok := local.Publish("chat/room1", 1, false, []byte("reject")); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatal(tok.Error())
			}
			publishN(t, local, "chat/room1", 50, 50)
			waitFor(t, 20*time.Second, func() error {
				if st := s.status("im"); st.Depth != 0 || st.DeadLetters != 1 {
					return fmt.Errorf("depth %d dead %d %s %s", st.Depth, st.DeadLetters, st.State, st.LastError)
				}
				return nil
			})
			testutil.Expect(t, got, "local/cmd/dev1", "open", 5*time.Second)
			ws.mu.Lock()
			defer ws.mu.Unlock()
			var msgs []cloudMsg
			for _, m := range ws.msgs {
				if string(m.Payload) != "reject" {
					msgs = append(msgs, m)
				}
			}
			checkSeqs(t, msgs, 100, rawSeq)
			if ws.conns < 2 || len(ws.acked) == 0 || ws.acked[0] != ws.down.String() {
				t.Fatalf("conns %d, downlink acks %v", ws.conns, ws.acked)
			}
			if st := s.status("im"); st.Reconnects < 1 {
				t.Fatalf("status %+v", st)
			}
		})
	}
}
