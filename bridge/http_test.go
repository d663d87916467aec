package bridge_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/wire"
)

// imConnector is an http connector "im" posting to url, with more keys.
func imConnector(t testing.TB, url, keys string) bridge.ConnectorConfig {
	t.Helper()
	return decodeConnector(t, "name: im\ntype: http\nurl: "+url+"\n"+keys)
}

func writeSecret(t testing.TB, name, val string) string {
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(val+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type httpReq struct {
	at      time.Time
	key     string
	payload string
	status  int
}

// TestHTTPHMACRetriesAndDeadLetters: single-envelope POSTs signed with HMAC; the server answers
// 500, then 429 with Retry-After, then 200 for the first message, and 400 for a bad one.
func TestHTTPHMACRetriesAndDeadLetters(t *testing.T) {
	secret := "s3cret"
	var mu sync.Mutex
	var reqs []httpReq
	attempts := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := bridge.VerifyHMAC([]byte(secret), r, body, time.Minute); err != nil || r.Header.Get("X-Edged-Key-Id") != "gw1" {
			t.Errorf("hmac: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		env, err := wire.UnmarshalEnvelopeJSON(body)
		if err != nil || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("body: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		p := string(env.Payload)
		attempts[p]++
		status := http.StatusOK
		switch {
		case p == "m0" && attempts[p] == 1:
			status = http.StatusInternalServerError
		case p == "m0" && attempts[p] == 2:
			w.Header().Set("Retry-After", "1")
			status = http.StatusTooManyRequests
		case p == "bad":
			status = http.StatusBadRequest
		}
		if env.ID.String() != r.Header.Get("Idempotency-Key") {
			t.Errorf("idempotency key %q for id %s", r.Header.Get("Idempotency-Key"), env.ID)
		}
		reqs = append(reqs, httpReq{at: time.Now(), key: r.Header.Get("Idempotency-Key"), payload: p, status: status})
		w.WriteHeader(status)
	}))
	defer srv.Close()
	cfg := imConnector(t, srv.URL+"/v1/messages?tenant=a", fmt.Sprintf(`
format: json
batch: {max_messages: 1}
backoff: {min: 50ms, max: 100ms}
auth: {type: hmac, key_id: gw1, secret_file: %s}
forward:
  - {from: "alerts/#", to: "alerts/{1}"}
`, writeSecret(t, "hmac", secret)))
	s := startStack(t, "", cfg)
	local := localClient(t, s.addr, "dev1")
	for _, p := range []string{"m0", "m1", "bad", "m2"} {
		if tok := local.Publish("alerts/x", 1, false, []byte(p)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	s.waitOneDeadLetter("im", "400", 30*time.Second)
	mu.Lock()
	defer mu.Unlock()
	var order []string
	for _, r := range reqs {
		order = append(order, fmt.Sprintf("%s:%d", r.payload, r.status))
	}
	if got := strings.Join(order, " "); got != "m0:500 m0:429 m0:200 m1:200 bad:400 m2:200" {
		t.Fatalf("requests: %s", got)
	}
	if reqs[0].key != reqs[1].key || reqs[1].key != reqs[2].key {
		t.Fatalf("idempotency key changed across retries: %q %q %q", reqs[0].key, reqs[1].key, reqs[2].key)
	}
	if d := reqs[2].at.Sub(reqs[1].at); d < 950*time.Millisecond {
		t.Fatalf("Retry-After 1 not honoured: retried after %v", d)
	}
	if st := s.status("im"); st.Sent != 3 {
		t.Fatalf("status %+v", st)
	}
}

// TestHTTPTokenAuthBatches: client-credentials token, refreshed once after a 401; batches with
// their idempotency key; Retry-After as an HTTP date.
func TestHTTPTokenAuthBatches(t *testing.T) {
	var mu sync.Mutex
	tokens := 0
	valid := map[string]bool{}
	var batches []*wire.Batch
	var keys []string
	posts := 0
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		if r.Form.Get("grant_type") != "client_credentials" || r.Form.Get("client_id") != "gw1" || r.Form.Get("client_secret") != "cs" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		mu.Lock()
		tokens++
		tok := fmt.Sprintf("tok-%d", tokens)
		valid[tok] = true
		mu.Unlock()
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 3600})
	})
	mux.HandleFunc("POST /v1/messages", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !valid[tok] {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		posts++
		if posts == 1 {
			valid[tok] = false // revoke: the connector must fetch a new token once
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if posts == 2 {
			w.Header().Set("Retry-After", time.Now().Add(1500*time.Millisecond).UTC().Format(http.TimeFormat))
			w.WriteHeader(http.StatusTooManyRequests)
			keys = append(keys, r.Header.Get("Idempotency-Key"))
			return
		}
		b, err := wire.UnmarshalBatchJSON(body)
		if err != nil {
			t.Errorf("batch: %v", err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		batches = append(batches, b)
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		w.WriteHeader(http.StatusAccepted)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	cfg := imConnector(t, srv.URL+"/v1/messages", fmt.Sprintf(`
batch: {max_messages: 50}
backoff: {min: 20ms, max: 50ms}
auth: {type: token, token_url: %s/token, client_id: gw1, client_secret_file: %s}
forward:
  - {from: "alerts/#", to: "alerts"}
`, srv.URL, writeSecret(t, "cs", "cs")))
	s := startStack(t, "", cfg)
	local := localClient(t, s.addr, "dev1")
	publishN(t, local, "alerts/a", 0, 120)
	waitFor(t, 20*time.Second, func() error {
		if st := s.status("im"); st.Depth != 0 {
			return fmt.Errorf("depth %d %s %s", st.Depth, st.State, st.LastError)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if tokens != 2 {
		t.Fatalf("token fetched %d times, want 2 (initial + one refresh after 401)", tokens)
	}
	var all []cloudMsg
	for i, b := range batches {
		if len(b.Envelopes) == 0 || keys[i+1] != fmt.Sprintf("%s.%d", b.Envelopes[0].ID, len(b.Envelopes)) {
			t.Fatalf("batch %d key %q", i, keys[i+1])
		}
		for _, e := range b.Envelopes {
			if e.Topic != "alerts" || e.Gateway != "gw1" {
				t.Fatalf("envelope %+v", e)
			}
			all = append(all, cloudMsg{Payload: e.Payload, ID: e.ID.String()})
		}
	}
	if keys[0] != keys[1] {
		t.Fatalf("retried batch changed key: %q -> %q", keys[0], keys[1])
	}
	checkSeqs(t, all, 120, rawSeq)
}
