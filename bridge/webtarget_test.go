package bridge_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/edged-dev/edged/internal/config"
)

// The http and websocket connectors share their url, urls, auth, tls and headers keys
// (WebTarget, inline): each problem of those keys, an unknown key beside them and a problem of
// a connector's own keys is still reported with its line, under the connector's key path.
func TestWebTargetConfigProblems(t *testing.T) {
	cert := filepath.Join(t.TempDir(), "cert.pem") // exists: only the missing key is a problem
	if err := os.WriteFile(cert, []byte("a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	doc := `bridge:
  connectors:
    - name: h
      type: http
      url: ws://127.0.0.1:9/x
      heders: {X-Tenant: t1}
      timeout: -1s
      forward: [{from: a, to: b}]
    - name: h2
      type: http
      urls: ["https://u:p@127.0.0.1:9/x", "https://u:p@127.0.0.1:9/x"]
      auth: {type: bearer}
      tls: {cert: ` + cert + `}
      forward: [{from: a, to: b}]
    - name: w
      type: websocket
      url: https://127.0.0.1:9/x
      headers: {X-Tenant: t1}
      ping_interval: -1s
      timeout: 1s
      forward: [{from: a, to: b}]
    - {name: w2, type: websocket, url: "wss://u:p@127.0.0.1:9/x", urls: ["wss://127.0.0.1:9/y"],
       auth: {type: hmac}, tls: {cert: ` + cert + `}, forward: [{from: a, to: b}]}
    - name: w3
      type: websocket
      urls: ["wss://u:p@127.0.0.1:9/x", "ws://127.0.0.1:9/y"]
      auth: {type: token}
      forward: [{from: a, to: b}]
`
	want := []string{
		`f:5: bridge.connectors[0].url: "ws://127.0.0.1:9/x": want an http:// or https:// URL`,
		`f:6: bridge.connectors[0].heders: unknown key (known keys here: auth, backoff, batch, breaker, compression, connect_timeout, format, forward, headers, live_first, max_requests, max_requests_burst, name, outbox, rate, rate_burst, stall_timeout, subscribe, timeout, tls, type, url, urls, window)`,
		`f:7: bridge.connectors[0].timeout: -1s: must be positive`,
		`f:11: bridge.connectors[1].urls[0]: "https://u:xxxxx@127.0.0.1:9/x": credentials in the url (HTTP Basic) conflict with auth type bearer; remove one`,
		`f:11: bridge.connectors[1].urls[1]: "https://u:xxxxx@127.0.0.1:9/x" is already urls[0]`,
		`f:11: bridge.connectors[1].urls[1]: "https://u:xxxxx@127.0.0.1:9/x": credentials in the url (HTTP Basic) conflict with auth type bearer; remove one`,
		`f:12: bridge.connectors[1].auth.token_file: required for auth type bearer`,
		`f:13: bridge.connectors[1].tls.cert: cert and key must be given together`,
		`f:17: bridge.connectors[2].url: "https://127.0.0.1:9/x": want a ws:// or wss:// URL`,
		`f:19: bridge.connectors[2].ping_interval: -1s: must be positive`,
		`f:20: bridge.connectors[2].timeout: unknown key (known keys here: auth, backoff, batch, breaker, compression, connect_timeout, format, forward, headers, live_first, name, outbox, ping_interval, rate, rate_burst, stall_timeout, subscribe, tls, type, url, urls, window)`,
		`f:22: bridge.connectors[3].urls: give url or urls, not both (urls[0] is the primary)`,
		`f:23: bridge.connectors[3].auth.key_id: required for auth type hmac`,
		`f:23: bridge.connectors[3].auth.secret_file: required for auth type hmac`,
		`f:23: bridge.connectors[3].tls.cert: cert and key must be given together`,
		`f:26: bridge.connectors[4].urls[0]: "wss://u:xxxxx@127.0.0.1:9/x": credentials in the url (HTTP Basic) conflict with auth type token; remove one`,
		`f:27: bridge.connectors[4].auth.token_url: required for auth type token`,
		`f:27: bridge.connectors[4].auth.client_id: required for auth type token`,
		`f:27: bridge.connectors[4].auth.client_secret_file: required for auth type token`,
	}
	_, err := config.Parse("f", []byte(doc))
	var ps config.Problems
	if !errors.As(err, &ps) {
		t.Fatalf("error %v (%T), want config.Problems", err, err)
	}
	for i, p := range ps {
		t.Logf("%d %s", i, p.Error())
	}
	if len(ps) != len(want) {
		t.Fatalf("%d problems, want %d", len(ps), len(want))
	}
	for i, w := range want {
		if got := ps[i].Error(); got != w {
			t.Errorf("problem %d:\n got %s\nwant %s", i, got, w)
		}
	}
}
