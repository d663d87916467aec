package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/storage"
	"github.com/edged-dev/edged/wire"
)

// fuzzClients answers Disconnect like the broker: unknown ids are ErrNoClient.
type fuzzClients struct{}

func (fuzzClients) Disconnect(id string) error {
	if id == "meter-1" {
		return nil
	}
	return broker.ErrNoClient
}

// refillDeadLetters keeps a few dead letters (one binary, one JSON) in ob, so listing and
// requeueing have something to work on after the fuzzer purged them.
func refillDeadLetters(t *testing.T, ob *storage.Outbox) {
	if d, err := ob.DeadLetters(0, 1); err != nil || len(d) > 0 {
		return
	}
	envs := []*wire.Envelope{
		{ID: wire.NewID(), Topic: "sensors/t1", Payload: []byte(`{"t":21.5}`), QoS: 1, ClientID: "t1"},
		{ID: wire.NewID(), Topic: "sensors/bin", Payload: []byte{0, 0xff, 0xc3}, QoS: 1},
	}
	if err := ob.Append(context.Background(), envs...); err != nil {
		t.Fatal(err)
	}
	recs, err := ob.Read(0, 10, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := ob.DeadLetter(r.Seq, "http 400: bad request"); err != nil {
			t.Fatal(err)
		}
	}
}

var fuzzMethods = []string{http.MethodGet, http.MethodPost, http.MethodHead, http.MethodPut, http.MethodDelete}

// FuzzAPI: every admin request is outside bytes: method, path and query, headers, body. The
// handler never panics and never fails with 500 on the input alone (the store behind it is
// healthy); without the token nothing under /api/ or /metrics succeeds; the token never
// appears in an answer; a 2xx JSON answer is valid JSON.
func FuzzAPI(f *testing.F) {
	db, ob := openOutbox(f, "cloud")
	reloads := 0
	var mu sync.Mutex
	fx := start(f, Options{TokenFile: writeToken(f, testToken), Outboxes: db, Clients: fuzzClients{},
		Reload: func(ctx context.Context, by string) (any, error) {
			mu.Lock()
			defer mu.Unlock()
			reloads++
			if reloads%2 == 0 {
				return map[string]any{"problems": []string{"f:1: x: bad"}}, errors.New("refused")
			}
			return map[string]any{"applied": true, "by": by}, nil
		}})
	h := fx.s.srv.Handler
	const authOK, action, jsonType, sameOrigin = 1, 2, 4, 8
	for _, s := range []struct {
		m     uint8
		path  string
		body  string
		flags uint8
	}{
		{0, "/api/v1/status", "", authOK},
		{0, "/api/v1/outboxes/cloud/dead-letters?after=0&limit=10", "", authOK},
		{0, "/api/v1/outboxes/cloud/dead-letters?after=18446744073709551615&limit=-1", "", authOK},
		{0, "/api/v1/outboxes/nope/dead-letters", "", authOK},
		{1, "/api/v1/outboxes/cloud/dead-letters/requeue", `{"seqs":[1,2]}`, authOK | action | jsonType | sameOrigin},
		{1, "/api/v1/outboxes/cloud/dead-letters/requeue", `{"all":true}`, authOK | action | jsonType | sameOrigin},
		{1, "/api/v1/outboxes/cloud/dead-letters/requeue", `{"seqs":[1],"all":true,"x":1}`, authOK | action | jsonType},
		{1, "/api/v1/outboxes/cloud/dead-letters/purge", "", authOK | action | sameOrigin},
		{1, "/api/v1/outboxes/cloud/purge", "", authOK | action | sameOrigin},
		{1, "/api/v1/clients/disconnect", `{"id":"meter-1"}`, authOK | action | jsonType | sameOrigin},
		{1, "/api/v1/clients/disconnect", `{"id":"a/b"}`, authOK | action | jsonType | sameOrigin},
		{1, "/api/v1/reload", "", authOK | action | sameOrigin},
		{0, "/api/v1/live?filter=sensors/%23", "", authOK},
		{0, "/metrics", "", 0},
		{0, "/healthz", "", 0},
		{0, "/", "", 0},
		{0, "/api/v1/outboxes/%2e%2e/dead-letters", "", authOK},
	} {
		f.Add(s.m, s.path, []byte(s.body), s.flags)
	}
	f.Fuzz(func(t *testing.T, m uint8, target string, body []byte, flags uint8) {
		if !strings.HasPrefix(target, "/") {
			return
		}
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return // net/http refuses the request line before any handler
		}
		refillDeadLetters(t, ob)
		req := &http.Request{Method: fuzzMethods[int(m)%len(fuzzMethods)], URL: u, RequestURI: target, Proto: "HTTP/1.1",
			ProtoMajor: 1, ProtoMinor: 1, Header: http.Header{}, Host: "127.0.0.1:9100", RemoteAddr: "127.0.0.1:40000",
			Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body))}
		req = req.WithContext(context.Background())
		if flags&authOK != 0 {
			req.Header.Set("Authorization", "Bearer "+testToken)
		} else if flags&16 != 0 {
			req.Header.Set("Authorization", "Bearer "+testToken[:len(testToken)-1])
		}
		if flags&action != 0 {
			req.Header.Set(actionHeader, "1")
		}
		if flags&jsonType != 0 {
			req.Header.Set("Content-Type", "application/json")
		}
		if flags&sameOrigin != 0 {
			req.Header.Set("Sec-Fetch-Site", "same-origin")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		res := rec.Result()
		out := rec.Body.Bytes()
		if res.StatusCode >= 500 {
			t.Fatalf("%s %q (flags %d, body %q): %d %s", req.Method, target, flags, body, res.StatusCode, out)
		}
		p := u.Path
		if flags&authOK == 0 && res.StatusCode < 300 && (strings.HasPrefix(p, "/api/") || p == "/metrics") {
			t.Fatalf("%s %q without the token: %d", req.Method, target, res.StatusCode)
		}
		if bytes.Contains(out, []byte(testToken)) {
			t.Fatalf("%s %q: the answer holds the token", req.Method, target)
		}
		if res.StatusCode < 300 && req.Method != http.MethodHead && strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") && !json.Valid(out) {
			t.Fatalf("%s %q: invalid JSON %q", req.Method, target, out)
		}
	})
}

// TestDashboardBadFileName: GET /%D3 (a name that is not UTF-8) made the dashboard's file
// server answer 500, a server error for a request that names no file.
func TestDashboardBadFileName(t *testing.T) {
	f := start(t, Options{})
	for _, p := range []string{"/%D3", "/ui/%FF%FE.js"} {
		if code, body := f.do(t, "GET", p, "", nil); code != http.StatusNotFound {
			t.Errorf("GET %s: %d %s, want 404", p, code, body)
		}
	}
	if code, _ := f.do(t, "GET", "/", "", nil); code != http.StatusOK {
		t.Errorf("GET /: %d", code)
	}
}
