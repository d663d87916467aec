package bridge_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/wire"
)

func decompress(t testing.TB, enc string, b []byte) []byte {
	t.Helper()
	switch enc {
	case "zstd":
		d, err := zstd.NewReader(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		out, err := d.DecodeAll(b, nil)
		if err != nil {
			t.Errorf("zstd body: %v", err)
		}
		return out
	case "gzip":
		r, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Errorf("gzip body: %v", err)
			return nil
		}
		out, err := io.ReadAll(r)
		if err != nil {
			t.Errorf("gzip body: %v", err)
		}
		return out
	}
	return b
}

// TestHTTPCompressionAndRequestCap (issue 16): request bodies compressed with the configured
// Content-Encoding and signed as sent (hmac over the compressed bytes); max_requests keeps the
// requests at the cap; a 429's Retry-After is still honoured on top of it.
func TestHTTPCompressionAndRequestCap(t *testing.T) {
	for _, enc := range []string{"zstd", "gzip"} {
		t.Run(enc, func(t *testing.T) {
			const secret, rate, n, per = "s3cret", 4.0, 40, 5
			var mu sync.Mutex
			var at []time.Time
			var got []string
			var wireBytes, plainBytes int
			requests := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				raw, _ := io.ReadAll(r.Body)
				if err := bridge.VerifyHMAC([]byte(secret), r, raw, time.Minute); err != nil {
					t.Errorf("hmac over the compressed body: %v", err)
				}
				if ce := r.Header.Get("Content-Encoding"); ce != enc {
					t.Errorf("Content-Encoding %q, want %q", ce, enc)
				}
				body := decompress(t, enc, raw)
				b, err := wire.UnmarshalBatchJSON(body)
				if err != nil {
					t.Errorf("batch: %v", err)
					w.WriteHeader(http.StatusBadRequest)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				requests++
				at = append(at, time.Now())
				if requests == 2 {
					w.Header().Set("Retry-After", "1")
					w.WriteHeader(http.StatusTooManyRequests)
					return
				}
				wireBytes += len(raw)
				plainBytes += len(body)
				for _, e := range b.Envelopes {
					got = append(got, string(e.Payload))
				}
			}))
			defer srv.Close()
			cfg := imConnector(t, srv.URL+"/v1", fmt.Sprintf(`
format: json
compression: %s
max_requests: 4/s
batch: {max_messages: %d}
backoff: {min: 10ms, max: 20ms}
breaker: {failures: -1}
auth: {type: hmac, key_id: gw1, secret_file: %s}
forward:
  - {from: "telemetry/#", to: "t/{1}"}
`, enc, per, writeSecret(t, "hmac", secret)))
			s := startStack(t, "", cfg)
			local := localClient(t, s.addr, "dev1")
			payload := bytes.Repeat([]byte(`{"temp":21.5,"unit":"C","sensor":"kitchen"}`), 4)
			publishPayloads(t, local, n, func(i int) (string, []byte) {
				return "telemetry/t", append([]byte(fmt.Sprintf("%03d", i)), payload...)
			})
			waitFor(t, 60*time.Second, func() error {
				if st := s.status("im"); st.Depth != 0 {
					return fmt.Errorf("depth %d (%s)", st.Depth, st.LastError)
				}
				return nil
			})
			mu.Lock()
			defer mu.Unlock()
			if len(got) != n {
				t.Fatalf("server got %d messages, want %d", len(got), n)
			}
			for i, p := range got {
				if p[:3] != fmt.Sprintf("%03d", i) {
					t.Fatalf("message %d is %q: out of order", i, p[:3])
				}
			}
			// Request j's token comes (j-i)/rate after request i's, so it cannot arrive sooner
			// than that after i, less how late i itself arrived (jitter of a busy machine,
			// allowed up to 150 ms).
			for i := range at {
				for j := i + 1; j < len(at); j++ {
					if min := time.Duration(float64(j-i)/rate*float64(time.Second)) - 150*time.Millisecond; at[j].Sub(at[i]) < min {
						t.Errorf("requests %d and %d came %v apart, want >= %v (max_requests 4/s, burst 1)", i, j, at[j].Sub(at[i]), min)
					}
				}
			}
			// A 429's Retry-After: 1 is waited out on top of the cap (after the response,
			// itself after the request arrived).
			if len(at) > 2 && at[2].Sub(at[1]) < time.Second {
				t.Errorf("the retry after a 429 with Retry-After: 1 came after %v", at[2].Sub(at[1]))
			}
			t.Logf("%d requests; %s: %d bytes on the wire for %d bytes of JSON batches (ratio %.2f)", len(at), enc, wireBytes, plainBytes,
				float64(wireBytes)/float64(plainBytes))
			// The throttle under the http transport counted every byte the requests took
			// (headers and the 429'd attempt included).
			if up := s.status("im").Traffic.UplinkSent; up < uint64(wireBytes) {
				t.Errorf("uplink bytes %d < %d body bytes the server accepted", up, wireBytes)
			}
			if wireBytes*2 > plainBytes {
				t.Errorf("%s: %d compressed bytes for %d: less than 2x on repetitive JSON", enc, wireBytes, plainBytes)
			}
		})
	}
}

// TestWebSocketCompressedFrames (issue 16): with compression: zstd every batch frame is a
// binary frame starting with the zstd magic whose content is the JSON batch; acks work as
// before.
func TestWebSocketCompressedFrames(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := startWSCloud(t, func(typ websocket.MessageType, data []byte) (string, error) {
		if typ != websocket.MessageBinary || !bytes.HasPrefix(data, bridge.ZstdMagic) {
			return "", fmt.Errorf("frame type %v starting %x: want a binary zstd frame", typ, data[:min(4, len(data))])
		}
		b, err := wire.UnmarshalBatchJSON(decompress(t, "zstd", data))
		if err != nil {
			return "", fmt.Errorf("batch: %w", err)
		}
		mu.Lock()
		for _, e := range b.Envelopes {
			got = append(got, string(e.Payload))
		}
		mu.Unlock()
		return b.Envelopes[len(b.Envelopes)-1].ID.String(), nil
	})
	cfg := decodeConnector(t, fmt.Sprintf(`
name: ws
type: websocket
url: ws%s/
format: json
compression: zstd
forward:
  - {from: "telemetry/#", to: "t/{1}"}
`, srv.URL[len("http"):]))
	s := startStack(t, "", cfg)
	s.waitConnected("ws")
	local := localClient(t, s.addr, "dev1")
	publishN(t, local, "telemetry/x", 0, 50)
	waitFor(t, 30*time.Second, func() error {
		if st := s.status("ws"); st.Depth != 0 || st.Sent != 50 {
			return fmt.Errorf("depth %d sent %d (%s)", st.Depth, st.Sent, st.LastError)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	for i, p := range got {
		if p != fmt.Sprintf("seq=%d", i) {
			t.Fatalf("message %d is %q", i, p)
		}
	}
	if len(got) != 50 {
		t.Fatalf("server got %d, want 50", len(got))
	}
	if up := s.status("ws").Traffic.UplinkSent; up == 0 {
		t.Errorf("no uplink bytes counted for the websocket connector")
	}
}
