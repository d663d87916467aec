package admin

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/hardware"
	"github.com/edged-dev/edged/internal/testutil"
	"github.com/edged-dev/edged/storage"
	"github.com/edged-dev/edged/wire"
)

const testToken = "s3cret-token-0123456789abcdef"

func writeToken(t testing.TB, tok string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// openOutbox opens a store in a temporary directory with one configured outbox, name.
func openOutbox(t testing.TB, name string) (*storage.DB, *storage.Outbox) {
	t.Helper()
	db, err := storage.Open(storage.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	ob, err := db.Outbox(name, storage.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return db, ob
}

type fixture struct {
	s    *Server
	base string
	log  *testutil.LockedBuffer
	reg  *prometheus.Registry
}

func start(t testing.TB, o Options) *fixture {
	t.Helper()
	f := &fixture{log: &testutil.LockedBuffer{}, reg: prometheus.NewRegistry()}
	if o.Address == "" {
		o.Address = "127.0.0.1:0"
	}
	o.Gatherer, o.Registerer = f.reg, f.reg
	o.Logger = slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if o.Status == nil {
		o.Status = func() any { return map[string]any{"version": "test"} }
	}
	s, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	f.s, f.base = s, "http://"+s.Addr()
	return f
}

func (f *fixture) do(t *testing.T, method, path, body string, hdr map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, f.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestNonLoopbackNeedsToken(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0"} {
		_, err := Start(Options{Address: addr, Status: func() any { return nil }})
		if err == nil || !strings.Contains(err.Error(), "token_file") {
			t.Fatalf("%s without a token: %v, want a refusal naming token_file", addr, err)
		}
	}
	// With a token the same address is served.
	f := start(t, Options{Address: "0.0.0.0:0", TokenFile: writeToken(t, testToken)})
	if !strings.HasPrefix(f.s.Addr(), "[::]:") && !strings.HasPrefix(f.s.Addr(), "0.0.0.0:") {
		t.Fatalf("bound %s", f.s.Addr())
	}
}

func TestLoadTokenErrorsNeverShowIt(t *testing.T) {
	for _, tok := range []string{"short-secret", "two words-but-long-enough"} {
		_, err := LoadToken(writeToken(t, tok))
		if err == nil || strings.Contains(err.Error(), tok) || strings.Contains(err.Error(), "short-secret") {
			t.Fatalf("token %q: %v", tok, err)
		}
	}
	if _, err := LoadToken(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("missing token file accepted")
	}
	if got, err := LoadToken(writeToken(t, "  "+testToken+"  \nignored")); err != nil || got != testToken {
		t.Fatalf("LoadToken = %q, %v", got, err)
	}
}

// With a token every endpoint but /healthz and the dashboard's static files needs it; the
// token never reaches the log.
func TestTokenRequired(t *testing.T) {
	f := start(t, Options{TokenFile: writeToken(t, testToken), Healthy: func() error { return nil }})
	good := map[string]string{"Authorization": "Bearer " + testToken}
	for _, p := range []string{"/api/v1/status", "/metrics", "/api/v1/outboxes/x/dead-letters", "/api/v1/live"} {
		for _, h := range []map[string]string{nil, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": testToken},
			{"Authorization": "Basic " + testToken}} {
			if code, _ := f.do(t, "GET", p, "", h); code != http.StatusUnauthorized {
				t.Fatalf("GET %s with %v: %d, want 401", p, h, code)
			}
		}
	}
	if code, body := f.do(t, "GET", "/api/v1/status", "", good); code != 200 || !strings.Contains(body, `"version": "test"`) {
		t.Fatalf("status with the token: %d %s", code, body)
	}
	if code, _ := f.do(t, "GET", "/metrics", "", good); code != 200 {
		t.Fatalf("metrics with the token: %d", code)
	}
	if code, _ := f.do(t, "GET", "/healthz", "", nil); code != 200 {
		t.Fatalf("healthz: %d", code)
	}
	if code, body := f.do(t, "GET", "/", "", nil); code != 200 || !strings.Contains(body, "<title>edged</title>") {
		t.Fatalf("dashboard: %d", code)
	}
	if code, _ := f.do(t, "POST", "/api/v1/clients/disconnect", `{"id":"a"}`, map[string]string{actionHeader: "1"}); code != 401 {
		t.Fatalf("action without token: %d", code)
	}
	if v, _ := testutil.MetricValue(t, f.reg, "edged_admin_refused_total", map[string]string{"reason": "unauthorized"}); v < 17 {
		t.Fatalf("refused_total = %v", v)
	}
	if strings.Contains(f.log.String(), testToken) {
		t.Fatalf("token in the log:\n%s", f.log.String())
	}
	if !strings.Contains(f.log.String(), "admin request refused") {
		t.Fatalf("refusals not logged:\n%s", f.log.String())
	}
}

// Without a token (loopback only) a request naming a foreign host is refused: a DNS-rebinding
// page in the technician's browser must not read the API.
func TestNoTokenRefusesForeignHost(t *testing.T) {
	f := start(t, Options{})
	if code, _ := f.do(t, "GET", "/api/v1/status", "", nil); code != 200 {
		t.Fatalf("loopback status: %d", code)
	}
	if code, _ := f.do(t, "GET", "/api/v1/status", "", map[string]string{"Host": "localhost:9100"}); code != 200 {
		t.Fatalf("localhost status: %d", code)
	}
	if code, _ := f.do(t, "GET", "/api/v1/status", "", map[string]string{"Host": "rebound.example.com:9100"}); code != 401 {
		t.Fatalf("foreign host: %d, want 401", code)
	}
}

// Actions are POSTs that need the action header and pass the cross-origin check; each one
// is logged with who did it.
func TestActionsCSRFAndAudit(t *testing.T) {
	db, _ := openOutbox(t, "cloud")
	f := start(t, Options{TokenFile: writeToken(t, testToken), Outboxes: db})
	auth := "Bearer " + testToken
	for name, h := range map[string]map[string]string{
		"no action header":    {"Authorization": auth},
		"cross-site fetch":    {"Authorization": auth, actionHeader: "1", "Sec-Fetch-Site": "cross-site"},
		"foreign origin":      {"Authorization": auth, actionHeader: "1", "Origin": "http://evil.example"},
		"same-site subdomain": {"Authorization": auth, actionHeader: "1", "Sec-Fetch-Site": "same-site"},
	} {
		if code, body := f.do(t, "POST", "/api/v1/outboxes/cloud/dead-letters/purge", "", h); code != http.StatusForbidden {
			t.Fatalf("%s: %d %s, want 403", name, code, body)
		}
	}
	if code, _ := f.do(t, "GET", "/api/v1/outboxes/cloud/dead-letters/purge", "", map[string]string{"Authorization": auth}); code == http.StatusOK {
		t.Fatalf("GET of an action: %d", code)
	}
	ok := map[string]string{"Authorization": auth, actionHeader: "1", "Sec-Fetch-Site": "same-origin", "Content-Type": "application/json"}
	if code, body := f.do(t, "POST", "/api/v1/outboxes/cloud/dead-letters/purge", "", ok); code != 200 || !strings.Contains(body, `"purged": 0`) {
		t.Fatalf("purge: %d %s", code, body)
	}
	if code, _ := f.do(t, "POST", "/api/v1/outboxes/nope/dead-letters/purge", "", ok); code != 404 {
		t.Fatalf("unknown outbox: %d", code)
	}
	if code, _ := f.do(t, "POST", "/api/v1/outboxes/cloud/dead-letters/requeue", `{}`, ok); code != 400 {
		t.Fatalf("requeue without seqs: %d", code)
	}
	if code, body := f.do(t, "POST", "/api/v1/outboxes/cloud/dead-letters/requeue", `{"seqs":[7]}`, ok); code != 200 || !strings.Contains(body, "not found") {
		t.Fatalf("requeue of a missing seq: %d %s", code, body)
	}
	logs := f.log.String()
	if !regexp.MustCompile(`msg="admin action" .*action=purge_dead_letters outbox=cloud purged=0 .*remote=127\.0\.0\.1:\d+ auth=token`).MatchString(logs) {
		t.Fatalf("purge not audited:\n%s", logs)
	}
	if v, _ := testutil.MetricValue(t, f.reg, "edged_admin_refused_total", map[string]string{"reason": "csrf"}); v != 4 {
		t.Fatalf("csrf refusals counted %v, want 4", v)
	}
}

// The whole dashboard stays within its size budget and loads nothing from elsewhere.
func TestUIBudget(t *testing.T) {
	const budget = 200 << 10
	total := 0
	ext := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?(https?:)?//|fetch\(\s*["']https?:`)
	err := fs.WalkDir(uiFiles, "ui", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := uiFiles.ReadFile(p)
		if err != nil {
			return err
		}
		total += len(b)
		if m := ext.Find(b); m != nil {
			t.Errorf("%s loads from another origin: %q", p, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dashboard: %d bytes uncompressed (budget %d)", total, budget)
	if total > budget {
		t.Fatalf("dashboard is %d bytes, over its %d byte budget", total, budget)
	}
}

func TestPreview(t *testing.T) {
	cborMap := []byte{0xa2, 0x61, 'c', 0xf9, 0x4d, 0x60, 0x61, 'u', 0x63, 'k', 'W', 'h'} // {"c": 21.5, "u": "kWh"}
	long := strings.Repeat("x", previewBytes+10)
	for _, c := range []struct {
		name      string
		in        []byte
		size      int
		kind      string
		text      string
		truncated bool
	}{
		{"empty", nil, 0, "empty", "", false},
		{"json text", []byte(`{"c": 21.5}`), 11, "text", `{"c": 21.5}`, false},
		{"utf-8 text", []byte("température 21,5 °C"), 21, "text", "température 21,5 °C", false},
		{"cbor as diagnostic notation", cborMap, len(cborMap), "cbor", `{"c": 21.5, "u": "kWh"}`, false},
		{"binary as hex", []byte{0x00, 0x01, 0xff}, 3, "hex", "0001ff", false},
		{"long text cut", []byte(long), len(long), "text", strings.Repeat("x", previewChars), true},
		{"partial payload is cut", []byte("abc"), 10, "text", "abc", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := MakePreview(c.in, c.size)
			if got.Kind != c.kind || got.Text != c.text || got.Truncated != c.truncated || got.Size != c.size {
				t.Fatalf("MakePreview = %+v, want kind %s text %q truncated %v", got, c.kind, c.text, c.truncated)
			}
		})
	}
	// The diagnostic notation is wire's, the one `edged cbor decode` prints.
	want, _ := wire.Diagnose(cborMap)
	if got := MakePreview(cborMap, len(cborMap)).Text; got != want {
		t.Fatalf("preview %q, wire.Diagnose %q", got, want)
	}
}

func FuzzPreview(f *testing.F) {
	f.Add([]byte(`{"a":1}`))
	f.Add([]byte{0xa1, 0x01, 0x02})
	f.Add([]byte{0xff, 0xfe, 0x00})
	f.Add([]byte("caf\xc3"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := MakePreview(b, len(b))
		if len([]rune(p.Text)) > previewChars {
			t.Fatalf("preview of %d runes", len([]rune(p.Text)))
		}
		if _, err := json.Marshal(p); err != nil {
			t.Fatal(err)
		}
		// What the dashboard is told must be true of the payload: its size, its kind, and
		// whether the text shows all of it.
		if p.Size != len(b) {
			t.Fatalf("size %d of %d bytes", p.Size, len(b))
		}
		switch p.Kind {
		case "empty":
			if len(b) != 0 || p.Text != "" {
				t.Fatalf("empty preview of %d bytes", len(b))
			}
		case "text":
			if !p.Truncated && p.Text != string(b) {
				t.Fatalf("untruncated text %q of %q", p.Text, b)
			}
			if !strings.HasPrefix(string(b), p.Text) {
				t.Fatalf("text %q is not the start of %q", p.Text, b)
			}
		case "hex":
			raw, err := hex.DecodeString(p.Text)
			if err != nil || !bytes.HasPrefix(b, raw) || (!p.Truncated && len(raw) != len(b)) {
				t.Fatalf("hex %q of %x (truncated %v): %v", p.Text, b, p.Truncated, err)
			}
		case "cbor":
			if d, err := wire.Diagnose(b); err != nil || (!p.Truncated && d != p.Text) {
				t.Fatalf("cbor preview %q, Diagnose %q, %v", p.Text, d, err)
			}
		default:
			t.Fatalf("kind %q", p.Kind)
		}
	})
}

func TestHistoryBounded(t *testing.T) {
	var mu sync.Mutex
	depth := map[string]int64{"a": 1, "b": 2}
	written := uint64(1000)
	stats := func() storage.Stats {
		mu.Lock()
		defer mu.Unlock()
		s := storage.Stats{BytesWritten: written}
		for _, n := range []string{"a", "b"} {
			if d, ok := depth[n]; ok {
				s.Outboxes = append(s.Outboxes, storage.OutboxStats{Name: n, Depth: d})
			}
		}
		return s
	}
	h := NewHistory(stats, time.Hour, 3)
	t0 := time.Now().Add(-3 * time.Hour)
	h.sample(t0)
	if s := h.snapshotAt(t0.Add(time.Minute), 1000); s.BytesWrittenPerHour != nil {
		t.Fatal("a rate before one interval passed")
	}
	for i := 1; i <= 4; i++ {
		mu.Lock()
		depth["a"] = int64(10 * i)
		written += 3600
		if i == 3 {
			delete(depth, "b")
		}
		mu.Unlock()
		h.sample(t0.Add(time.Duration(i) * time.Hour))
	}
	s := h.snapshotAt(t0.Add(4*time.Hour), written)
	if len(s.Times) != 3 || len(s.BytesWritten) != 3 {
		t.Fatalf("kept %d samples, want 3", len(s.Times))
	}
	if fmt.Sprint(s.OutboxDepth["a"]) != "[20 30 40]" {
		t.Fatalf("depth a %v", s.OutboxDepth["a"])
	}
	if _, ok := s.OutboxDepth["b"]; ok {
		t.Fatal("a vanished outbox is still kept")
	}
	// Window: samples at t0+2h..t0+4h, 2*3600 bytes in 2 h.
	if s.BytesWrittenPerHour == nil || *s.BytesWrittenPerHour < 3599 || *s.BytesWrittenPerHour > 3600 {
		t.Fatalf("rate %v", s.BytesWrittenPerHour)
	}
	var nilH *History
	if nilH.Snapshot(0) != nil {
		t.Fatal("nil history snapshot")
	}
}

func TestEndpointsHideCredentials(t *testing.T) {
	for in, want := range map[string]string{
		"tcp://user:pw@cloud.example:1883":              "tcp://cloud.example:1883",
		"wss://h.example/v1/stream?token=abc#frag":      "wss://h.example/v1/stream",
		"https://api.example/in?access_token=SECRET123": "https://api.example/in",
	} {
		if got := endpointOf(&urlConfig{URL: in}); got != want {
			t.Fatalf("%s -> %s, want %s", in, got, want)
		}
	}
	// Failover: urls instead of url shows the primary, credentials hidden.
	type urlsConfig struct {
		URL  string
		URLs []string
	}
	if got := endpointOf(&urlsConfig{URLs: []string{"tcp://u:p@a.example:1883", "tcp://b.example:1883"}}); got != "tcp://a.example:1883" {
		t.Fatalf("urls -> %s", got)
	}
}

// The live view streams what is published, at most liveRate a second, and counts the rest.
func TestLiveRateLimited(t *testing.T) {
	b, err := broker.New(broker.Options{Config: broker.Config{AllowAnonymous: true,
		Listeners: []broker.Listener{{Type: broker.ListenerTCP, Address: "127.0.0.1:0"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	f := start(t, Options{Tap: b})
	req, _ := http.NewRequest("GET", f.base+"/api/v1/live?filter=s/%23", nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := make(chan [2]string, 1000)
	go func() {
		defer close(events)
		var ev, data string
		buf := make([]byte, 0, 4096)
		tmp := make([]byte, 4096)
		for {
			n, err := resp.Body.Read(tmp)
			buf = append(buf, tmp[:n]...)
			for {
				i := bytes.Index(buf, []byte("\n\n"))
				if i < 0 {
					break
				}
				for _, l := range strings.Split(string(buf[:i]), "\n") {
					if v, ok := strings.CutPrefix(l, "event: "); ok {
						ev = v
					} else if v, ok := strings.CutPrefix(l, "data: "); ok {
						data = v
					}
				}
				events <- [2]string{ev, data}
				buf = buf[i+2:]
			}
			if err != nil {
				return
			}
		}
	}()
	if e := <-events; e[0] != "hello" {
		t.Fatalf("first event %v", e)
	}
	const n = 300
	for i := 0; i < n; i++ {
		if err := b.Publish(&broker.Message{Topic: "s/x", Payload: []byte{0xa1, 0x01, 0x02}}); err != nil {
			t.Fatal(err)
		}
	}
	msgs, last := 0, map[string]int64{}
	deadline := time.After(30 * time.Second)
	for last["delivered"]+last["dropped"] < n {
		select {
		case e := <-events:
			switch e[0] {
			case "message":
				msgs++
				var m liveMsg
				if err := json.Unmarshal([]byte(e[1]), &m); err != nil || m.Topic != "s/x" || m.Payload.Kind != "cbor" || m.Payload.Text != "{1: 2}" {
					t.Fatalf("message %s (%v)", e[1], err)
				}
			case "stats":
				last = map[string]int64{}
				_ = json.Unmarshal([]byte(e[1]), &last)
			}
		case <-deadline:
			t.Fatalf("stats %v after 30 s, want delivered+dropped = %d", last, n)
		}
	}
	if last["dropped"] == 0 || last["delivered"] > n/2 || int64(msgs) < last["delivered"] {
		t.Fatalf("%d published at once: %v, %d message events: no rate limit", n, last, msgs)
	}
}

type urlConfig struct{ URL string }

func TestVerdict(t *testing.T) {
	ok := Verdict([]bridge.ConnectorStatus{{Name: "c", State: bridge.StateConnected}},
		[]hardware.PortStatus{{Name: "p", State: hardware.StateOpen}}, storage.Stats{DiskFree: 10 << 30})
	if ok.Verdict != VerdictOK || len(ok.Reasons) != 0 {
		t.Fatalf("healthy gateway: %+v", ok)
	}
	h := Verdict([]bridge.ConnectorStatus{{Name: "c", State: bridge.StateBreakerOpen, DeadLetterDepth: 2, OldestAgeSeconds: 3600}},
		[]hardware.PortStatus{{Name: "p", State: hardware.StateWaiting}}, storage.Stats{DiskFree: 100 << 20})
	if h.Verdict != VerdictDegraded || len(h.Reasons) != 5 {
		t.Fatalf("degraded gateway: %+v", h)
	}
	f := Verdict(nil, nil, storage.Stats{DiskFree: 10 << 20})
	if f.Verdict != VerdictFailing || !strings.Contains(f.Reasons[0], "refused") {
		t.Fatalf("full disk: %+v", f)
	}
	if u := Verdict(nil, nil, storage.Stats{DiskFree: -1}); u.Verdict != VerdictOK {
		t.Fatalf("unknown disk space: %+v", u)
	}
}

// Close ends open live streams (http.Server.Shutdown alone would wait for them) and stops the
// history sampler.
func TestCloseEndsLiveStreams(t *testing.T) {
	b, err := broker.New(broker.Options{Config: broker.Config{Listeners: []broker.Listener{{Type: broker.ListenerTCP, Address: "127.0.0.1:0"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	hist := NewHistory(func() storage.Stats { return storage.Stats{} }, time.Hour, 2)
	s, err := Start(Options{Address: "127.0.0.1:0", Tap: b, History: hist, Status: func() any { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + s.Addr() + "/api/v1/live?filter=%23")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ended := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, resp.Body); ended <- err }()
	// Shutdown returns its context's error if a stream kept it waiting past its deadline.
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the live stream outlived Close")
	}
}
