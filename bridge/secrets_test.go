package bridge_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/internal/testutil"
	"github.com/edged-dev/edged/storage"
	"github.com/edged-dev/edged/wire"
)

// Secrets a user wrote into connector URLs and headers. Each is long enough to be unmistakable
// in output and none is a substring of ordinary text.
const (
	secretPass   = "S3cretPassW0rd"
	secretToken  = "T0kenQueryValue"
	secretHeader = "HeaderApiKey987"
)

// secretForms is every spelling of the secrets that must never appear: as written, escaped, and
// the HTTP Basic credential Go derives from URL userinfo.
func secretForms() []string {
	return []string{secretPass, secretToken, secretHeader, url.QueryEscape(secretPass),
		base64.StdEncoding.EncodeToString([]byte("edge:" + secretPass))}
}

func assertNoSecret(t *testing.T, what, text string) {
	t.Helper()
	for _, s := range secretForms() {
		if strings.Contains(text, s) {
			i := strings.Index(text, s)
			t.Errorf("%s leaks %q: ...%s...", what, s, text[max(0, i-120):min(len(text), i+len(s)+40)])
		}
	}
}

// echoServer is a failing remote that reflects everything it was sent (URL with query,
// Authorization and X-Api-Key headers) into its error body, as careless servers do: 400 for a
// single envelope whose payload is "bad" (dead letter), 403 for a WebSocket handshake, 503 otherwise.
func echoServer(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		bad := false
		if env, err := wire.UnmarshalEnvelopeJSON(body); err == nil {
			bad = string(env.Payload) == "bad"
		}
		echo := fmt.Sprintf("you sent %s %s auth=%q key=%q", r.Method, r.URL.String(), r.Header.Get("Authorization"), r.Header.Get("X-Api-Key"))
		switch {
		case r.Header.Get("Upgrade") != "":
			http.Error(w, echo, http.StatusForbidden)
		case bad:
			http.Error(w, echo, http.StatusBadRequest)
		default:
			http.Error(w, echo, http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// refusedAddr is a loopback address nothing listens on.
func refusedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

type secretCase struct{ name, yaml string }

func secretCases(t *testing.T) []secretCase {
	echo := strings.TrimPrefix(echoServer(t).URL, "http://")
	dead := refusedAddr(t)
	common := "backoff: {min: 10ms, max: 50ms}\nbreaker: {failures: -1}\nconnect_timeout: 2s\n"
	hdr := "headers: {X-Api-Key: " + secretHeader + "}\n"
	var cs []secretCase
	add := func(name, typ, u, extra string) {
		cs = append(cs, secretCase{name, fmt.Sprintf("name: %s\ntype: %s\nurl: %s\n%s%sforward: [{from: \"t/%s\", to: \"r/%s\"}]\n",
			name, typ, u, common, extra, name, name)})
	}
	up := "edge:" + secretPass + "@"
	add("mqtt5_tcp_refused", "mqtt", "tcp://"+up+dead, "")
	add("mqtt311_tcp_refused", "mqtt", "tcp://"+up+dead, "protocol: \"3.1.1\"\n")
	add("mqtt5_ws_refused", "mqtt", "ws://"+up+dead+"/mqtt?token="+secretToken, "")
	add("mqtt5_ws_echo", "mqtt", "ws://"+up+echo+"/mqtt?token="+secretToken, "")
	add("mqtt311_ws_echo", "mqtt", "ws://"+up+echo+"/mqtt?token="+secretToken, "protocol: \"3.1.1\"\n")
	add("http_echo", "http", "http://"+up+echo+"/v1?access_token="+secretToken, hdr+"batch: {max_messages: 1}\n")
	add("http_refused", "http", "http://"+up+dead+"/v1?access_token="+secretToken, hdr)
	add("websocket_echo", "websocket", "ws://"+up+echo+"/ws?token="+secretToken, hdr)
	add("websocket_refused", "websocket", "ws://"+up+dead+"/ws?token="+secretToken, hdr)
	return cs
}

// TestSecretsNeverLeak runs every connector type against refusing and failing (echoing)
// peers with credentials in the URL, a token query parameter and an API key header, and
// checks that none of them appears in the log, the status JSON, the Prometheus metrics, the
// dead-letter reasons or the errors connectors return.
func TestSecretsNeverLeak(t *testing.T) {
	cases := secretCases(t)
	var cfgs []bridge.ConnectorConfig
	for _, c := range cases {
		cfgs = append(cfgs, decodeConnector(t, c.yaml))
	}
	logs := &testutil.LockedBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	db, err := storage.Open(storage.Options{Dir: t.TempDir(), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	reg := prometheus.NewRegistry()
	b, err := bridge.New(bridge.Options{Connectors: cfgs, GatewayID: "gw1", DB: db, Defaults: storage.Defaults(), Logger: log, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		for _, p := range []string{"bad", "good"} {
			if err := b.Capture(context.Background(), &broker.Message{Topic: "t/" + c.name, Payload: []byte(p), QoS: 1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	waitFor(t, 30*time.Second, func() error {
		for _, st := range b.Status() {
			if st.Failed < 3 {
				return fmt.Errorf("%s: %d failures (%s)", st.Name, st.Failed, st.LastError)
			}
			if st.Name == "http_echo" && st.DeadLetters < 1 {
				return fmt.Errorf("http_echo: no dead letter yet (%s)", st.LastError)
			}
		}
		return nil
	})
	cancel()
	<-done

	status, _ := json.Marshal(b.Status())
	for _, st := range b.Status() {
		// Not vacuous: each connector failed for a visible reason, and its endpoint is shown.
		if st.LastError == "" || !strings.Contains(st.Endpoint, "edge:xxxxx@") {
			t.Errorf("%s: last_error %q endpoint %q", st.Name, st.LastError, st.Endpoint)
		}
		t.Logf("%s: %s", st.Name, st.LastError)
	}
	assertNoSecret(t, "status JSON", string(status))
	if !strings.Contains(string(status), "REDACTED") {
		t.Errorf("status never shows a redacted value; the echo peers were not reached?\n%s", status)
	}
	assertNoSecret(t, "log", logs.String())
	if !strings.Contains(logs.String(), "connector failure") {
		t.Errorf("no failure logged:\n%s", logs.String())
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var metrics strings.Builder
	for _, mf := range mfs {
		metrics.WriteString(mf.String())
	}
	assertNoSecret(t, "metrics", metrics.String())
	for _, ob := range db.Outboxes() {
		dls, err := ob.DeadLetters(0, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, dl := range dls {
			assertNoSecret(t, "dead-letter reason", dl.Reason)
		}
	}

	// The errors connectors return, built outside a Bridge (no scrubber handed in).
	for i, c := range cases {
		typ, _ := bridge.LookupType(cfgs[i].Common().Type)
		conn, err := typ.New(decodeConnector(t, c.yaml), bridge.Env{Name: c.name, GatewayID: "gw1", Logger: log,
			Deliver: func(context.Context, *bridge.Inbound) error { return nil }})
		if err != nil {
			t.Fatal(err)
		}
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		var texts []string
		if err := conn.Connect(cctx); err != nil {
			texts = append(texts, err.Error(), fmt.Sprintf("%+v", err))
		} else {
			msgs := []*bridge.Message{{Seq: 1, Env: &wire.Envelope{Version: wire.Version, ID: wire.NewID(), Topic: "x", QoS: 1, Payload: []byte("bad")}}}
			serr := conn.Send(cctx, msgs, func(_ int, err error) {
				if err != nil {
					texts = append(texts, err.Error())
				}
			})
			if serr != nil {
				texts = append(texts, serr.Error())
			}
		}
		ccancel()
		conn.Close()
		if len(texts) == 0 {
			t.Errorf("%s: no error from a failing peer", c.name)
		}
		assertNoSecret(t, c.name+" returned error", strings.Join(texts, "\n"))
	}
}

// Credentials in URLs, per connector type: mqtt takes userinfo as CONNECT username/password
// (conflicting keys are an error) and allows a query only over WebSocket; http and websocket
// send userinfo as Basic auth, which conflicts with another auth type. Errors never echo the
// secret.
func TestURLCredentialsConfig(t *testing.T) {
	for _, c := range []struct{ name, yaml, want string }{
		{"mqtt userinfo and username", "type: mqtt\nurl: tcp://u:" + secretPass + "@h:1\nusername: x\n", "credentials in the url and in username"},
		{"mqtt userinfo and password_file", "type: mqtt\nurl: tcp://u:" + secretPass + "@h:1\npassword_file: /nonexistent\n", "credentials in the url and in username"},
		{"mqtt query on tcp", "type: mqtt\nurl: tcp://h:1?token=" + secretToken + "\n", "query string is only sent for ws"},
		{"http userinfo with bearer", "type: http\nurl: https://u:" + secretPass + "@h/x\nauth: {type: bearer, token_file: /nonexistent}\n", "conflict with auth type bearer"},
		{"websocket userinfo with hmac", "type: websocket\nurl: wss://u:" + secretPass + "@h/x\nauth: {type: hmac, key_id: k, secret_file: /nonexistent}\n", "conflict with auth type hmac"},
		{"http bad url", "type: http\nurl: \"ftp://u:" + secretPass + "@h/x?sig=" + secretToken + "\"\n", "want an http:// or https:// URL"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := bridge.NewConfig(strings.SplitN(strings.TrimPrefix(c.yaml, "type: "), "\n", 2)[0])
			if err != nil {
				t.Fatal(err)
			}
			if err := decodeInto(c.yaml+"name: c\nforward: [{from: a, to: b}]\n", cfg); err != nil {
				t.Fatal(err)
			}
			err = cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want an error containing %q, got %v", c.want, err)
			}
			var ke interface{ Error() string }
			if !errors.As(err, &ke) {
				t.Fatal("no error")
			}
			assertNoSecret(t, "config error", err.Error())
		})
	}
	// Accepted forms.
	for _, y := range []string{
		"type: mqtt\nurl: tcp://u:p@h:1\n",
		"type: mqtt\nurl: wss://h/mqtt?token=t\n",
		"type: http\nurl: https://u:p@h/x\n",
		"type: http\nurl: https://h/x?access_token=t\nauth: {type: none}\n",
		"type: websocket\nurl: wss://u:p@h/x?token=t\n",
	} {
		decodeConnector(t, y+"name: c\nforward: [{from: a, to: b}]\n")
	}
}

// TestMQTTURLUserinfoIsUsed: with userinfo in the URL and no username/password keys, the
// CONNECT carries them; a mosquitto that requires that password accepts the connector.
func TestMQTTURLUserinfoIsUsed(t *testing.T) {
	pwbin := testutil.RequireCommand(t, "mosquitto_passwd")
	// mosquitto started as root reads its password file after dropping to its own user:
	// the file and its directory must be readable by others.
	dir, err := os.MkdirTemp("", "edged-pw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	pwfile := filepath.Join(dir, "passwd")
	if out, err := runCmd(pwbin, "-c", "-b", pwfile, "edge", secretPass); err != nil {
		t.Fatalf("mosquitto_passwd: %v %s", err, out)
	}
	if err := errors.Join(os.Chmod(dir, 0o755), os.Chmod(pwfile, 0o644)); err != nil {
		t.Fatal(err)
	}
	cloud := testutil.StartMosquitto(t, 0, "allow_anonymous false\npassword_file "+pwfile+"\n")
	for _, proto := range []string{"5", "3.1.1"} {
		t.Run(proto, func(t *testing.T) {
			sub := subscribeCloudAuth(t, cloud.Addr, "edge", secretPass, "r/#")
			s := startStack(t, "", mqttConnector(t, "cloud", "tcp://edge:"+secretPass+"@"+cloud.Addr,
				"protocol: \""+proto+"\"\nforward: [{from: \"t/#\", to: \"r/{1}\"}]\n"))
			s.waitConnected("cloud")
			local := localClient(t, s.addr, "dev1")
			publishN(t, local, "t/x", 0, 3)
			sub.waitCount(t, 3, 10*time.Second)
			if st := s.status("cloud"); strings.Contains(st.Endpoint, secretPass) || !strings.Contains(st.Endpoint, "edge:xxxxx@") {
				t.Fatalf("endpoint %q", st.Endpoint)
			}
		})
	}
	// A wrong password in the URL is refused by the broker, and the error does not echo it.
	s := startStack(t, "", mqttConnector(t, "cloud", "tcp://edge:Wr0ngPassw0rd@"+cloud.Addr, "forward: [{from: \"t/#\", to: \"r/{1}\"}]\n"))
	waitFor(t, 10*time.Second, func() error {
		if st := s.status("cloud"); st.Failed == 0 {
			return errors.New("no failure yet")
		}
		return nil
	})
	if st := s.status("cloud"); strings.Contains(st.LastError, "Wr0ngPassw0rd") {
		t.Fatalf("last_error leaks: %s", st.LastError)
	}
}
