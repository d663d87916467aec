package admin_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edged-dev/edged/internal/admin"
	"github.com/edged-dev/edged/internal/testutil"
)

var updateScreenshots = flag.Bool("update-screenshots", false, "write the dashboard screenshots to docs/screenshots")

const dashToken = "dashboard-test-token-0123456789"

// TestDashboardInChromium drives the dashboard in headless Chromium against the real edged
// binary with an HTTP connector (a local server that rejects one message for good, once), a
// serial meter on a pty and two MQTT clients: every page shows the figures of
// /api/v1/status; a dead letter is requeued and a client disconnected through the UI; the
// live view shows a CBOR message published during the test.
func TestDashboardInChromium(t *testing.T) {
	chrome := requireChromium(t)
	began := time.Now()

	// The "cloud": accepts everything except the first delivery of alerts/bad (400: dead letter).
	var rejected atomic.Bool
	var mu sync.Mutex
	var got []string
	cloud := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if strings.Contains(string(b), `"alerts/bad"`) && rejected.CompareAndSwap(false, true) {
			http.Error(w, "schema violation", http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, string(b))
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	})}
	cln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = cloud.Serve(cln) }()
	t.Cleanup(func() { _ = cloud.Close() })

	// The master side plays the meter; what edged writes to it is drained so the pty never blocks.
	master, slave := testutil.OpenPTY(t)
	go func() { _, _ = io.Copy(io.Discard, master) }()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tokenFile, []byte(dashToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mqttAddr := testutil.FreeAddr(t)
	deadAddr := testutil.FreeAddr(t) // the "cloud" connector's uplink is down: its outbox fills
	cfg := fmt.Sprintf(`data_dir: {data_dir}
gateway_id: gw-dash
admin: {address: "{admin}", token_file: %q}
broker:
  listeners: [{type: tcp, address: %q}]
bridge:
  connectors:
    - name: im
      type: http
      url: http://%s/v1/messages
      format: json
      batch: {max_messages: 1}
      backoff: {min: 50ms, max: 200ms}
      forward: [{from: "alerts/#", to: "{topic}", qos: 1}]
    - name: cloud
      type: mqtt
      url: tcp://%s
      backoff: {min: 50ms, max: 500ms}
      forward: [{from: "sensors/#", to: "gw-dash/{topic}", qos: 1}]
hardware:
  serial:
    - {name: meter1, port: %s, framing: line, format: json, topic: sensors/meter1, qos: 1}
  modbus:
    - name: plc1
      tcp: %s
      timeout: 200ms
      poll: 500ms
      reopen: {min: 100ms, max: 500ms}
      units:
        - {name: u1, id: 1, points: [{name: level, type: holding, address: 0}]}
`, tokenFile, mqttAddr, cln.Addr(), deadAddr, slave.Name(), testutil.FreeAddr(t))
	e := testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: cfg})
	base := "http://" + e.Admin

	// Traffic: two clients, one dead letter, three accepted alerts, three serial readings.
	sensor := mqttClient(t, mqttAddr, "sensor-1", nil)
	wait(t, sensor.Subscribe("cmd/sensor-1/#", 1, nil))
	wait(t, sensor.Subscribe("cmd/all", 0, nil))
	lost := make(chan error, 1)
	mqttClient(t, mqttAddr, "doomed", func(err error) { lost <- err })
	wait(t, sensor.Publish("alerts/bad", 1, false, `{"level": "bogus"}`))
	for i := 0; i < 3; i++ {
		wait(t, sensor.Publish("alerts/ok", 1, false, fmt.Sprintf(`{"n": %d}`, i)))
	}
	for i := 0; i < 3; i++ {
		if _, err := master.Write([]byte(fmt.Sprintf("{\"kwh\": %d.5}\n", 1200+i))); err != nil {
			t.Fatal(err)
		}
	}
	status := func() map[string]any {
		t.Helper()
		b, err := admin.Get(base+"/api/v1/status", dashToken)
		if err != nil {
			t.Fatal(err)
		}
		return testutil.ParseJSON(t, b)
	}
	testutil.WaitFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		s := status()
		c := find(s["connectors"], "name", "im")
		p := find(s["serial"], "name", "meter1")
		up := find(s["connectors"], "name", "cloud")
		if c["dead_letter_depth"] != 1.0 || c["sent"] != 3.0 || p["frames_in"] != 3.0 || len(list(s["clients"])) != 2 || up["depth"] != 3.0 {
			return fmt.Errorf("connector %v cloud %v serial %v clients %v", c, up, p, s["clients"])
		}
		return nil
	})

	ctx := browser(t, chrome)
	shots := screenshotDir(t)

	// Login: the API answers 401 until the token is entered.
	run(t, ctx, chromedp.Navigate(base+"/#overview"), chromedp.WaitVisible("#login"),
		chromedp.SendKeys("#token", "wrong-token-0123456789"), chromedp.Click(`#loginform button`, chromedp.ByQuery),
		chromedp.WaitVisible(`//p[@id="loginerr"][contains(., "not accepted")]`),
		chromedp.SendKeys("#token", dashToken), chromedp.Click(`#loginform button`, chromedp.ByQuery),
		chromedp.WaitVisible(`#verdict [data-k="verdict"]`))

	// Every page shows the figures of the status document. The daemon is quiet now, so the
	// figures settle; the page polls every 2 s.
	pages := []struct {
		page string
		keys func(s map[string]any) map[string]string
	}{
		{"overview", func(s map[string]any) map[string]string {
			b := s["broker"].(map[string]any)
			return map[string]string{"version": fmt.Sprint(s["version"]), "clients_connected": num(b["clients_connected"]),
				"messages_received": num(b["messages_received"]), "verdict": "@" + fmt.Sprint(s["health"].(map[string]any)["verdict"]),
				"disk_free": "~" + num(s["storage"].(map[string]any)["disk_free"]), "queued": "3"}
		}},
		{"connectors", func(s map[string]any) map[string]string {
			c := find(s["connectors"], "name", "im")
			return map[string]string{"conn.im.state": fmt.Sprint(c["state"]), "conn.im.depth": num(c["depth"]),
				"conn.im.dead_letter_depth": num(c["dead_letter_depth"]), "conn.im.sent": num(c["sent"]),
				"conn.im.endpoint": fmt.Sprint(s["endpoints"].(map[string]any)["im"]),
				"conn.cloud.depth": num(find(s["connectors"], "name", "cloud")["depth"]), "conn.cloud.endpoint": "tcp://" + deadAddr}
		}},
		{"outboxes", func(s map[string]any) map[string]string {
			o := find(s["storage"].(map[string]any)["outboxes"], "name", "im")
			c := find(s["storage"].(map[string]any)["outboxes"], "name", "cloud")
			return map[string]string{"ob.im.depth": num(o["depth"]), "ob.im.dlq_depth": num(o["dlq_depth"]), "ob.im.bytes": "@" + num(o["bytes"]),
				"ob.cloud.depth": num(c["depth"]), "ob.cloud.bytes": "@" + num(c["bytes"])}
		}},
		{"clients", func(s map[string]any) map[string]string {
			out := map[string]string{}
			for _, c := range list(s["clients"]) {
				m := c.(map[string]any)
				k := "cl." + m["id"].(string) + "."
				out[k+"subscriptions"], out[k+"remote"] = num(m["subscriptions"]), fmt.Sprint(m["remote"])
			}
			return out
		}},
		{"ports", func(s map[string]any) map[string]string {
			p := find(s["serial"], "name", "meter1")
			b := find(s["modbus"], "name", "plc1")
			u := find(b["units"], "name", "u1")
			return map[string]string{"sp.meter1.state": "@" + fmt.Sprint(p["state"]), "sp.meter1.frames_in": num(p["frames_in"]),
				"sp.meter1.invalid": num(p["invalid"]), "mb.plc1.state": "@" + fmt.Sprint(b["state"]),
				"mb.plc1.u1.state": "@" + fmt.Sprint(u["state"]), "mb.plc1.u1.polls": num(u["polls"])}
		}},
	}
	for _, pg := range pages {
		run(t, ctx, chromedp.Navigate(base+"/#"+pg.page), chromedp.WaitVisible("#"+pg.page))
		var last string
		testutil.WaitFor(t, 20*time.Second, 200*time.Millisecond, func() error {
			want := pg.keys(status())
			shown := shownValues(t, ctx, "#"+pg.page)
			for k, w := range want {
				s, ok := shown[k]
				got := s[0]
				switch w[0] {
				case '@': // the exact number behind a formatted figure
					got = "@" + s[1]
				case '~': // a figure other processes move (free disk space): within 1 %
					var a, b float64
					fmt.Sscan(s[1], &a)
					fmt.Sscan(w[1:], &b)
					if b > 0 && a > 0.99*b && a < 1.01*b {
						got = w
					} else {
						got = "~" + s[1]
					}
				}
				if !ok || got != w {
					last = fmt.Sprintf("%s: page shows %q, /api/v1/status has %q", k, got, w)
					return fmt.Errorf("%s (page %v)", last, shown)
				}
			}
			return nil
		})
		if pg.page == "clients" && len(pg.keys(status())) != 4 {
			t.Fatalf("clients page compared %v", pg.keys(status()))
		}
		shot(t, ctx, shots, pg.page)
	}

	// Requeue the dead letter through the UI; the cloud takes it this time.
	run(t, ctx, chromedp.Navigate(base+"/#outboxes"), clickRedrawn(`[data-act="dlq:im"]`),
		chromedp.WaitVisible(`#dlq tr[data-seq]`, chromedp.ByQuery))
	shot(t, ctx, shots, "dead-letters")
	var seq string
	var ok bool
	run(t, ctx, chromedp.AttributeValue(`#dlq tr[data-seq]`, "data-seq", &seq, &ok, chromedp.ByQuery))
	run(t, ctx, clickRedrawn(`[data-act="requeue:im:`+seq+`"]`))
	testutil.WaitFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		c := find(status()["connectors"], "name", "im")
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if c["dead_letter_depth"] != 0.0 || n != 4 {
			return fmt.Errorf("after requeue: dead letters %v, cloud got %d messages", c["dead_letter_depth"], n)
		}
		return nil
	})
	mu.Lock()
	if !strings.Contains(got[3], `"alerts/bad"`) {
		t.Fatalf("the cloud's 4th message is not the requeued one: %s", got[3])
	}
	mu.Unlock()
	if !strings.Contains(e.Out.String(), "action=requeue_dead_letters outbox=im seqs=["+seq+"]") ||
		!strings.Contains(e.Out.String(), "auth=token") {
		t.Fatalf("requeue not in the audit log:\n%s", e.Out.String())
	}

	// Disconnect a client through the UI (with its confirmation step).
	run(t, ctx, chromedp.Navigate(base+"/#clients"), clickRedrawn(`[data-act="disconnect:doomed"]`),
		clickRedrawn(`[data-act="disconnect:doomed:yes"]`))
	select {
	case <-lost:
	case <-time.After(20 * time.Second):
		t.Fatal("the client was not disconnected")
	}
	testutil.WaitFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if n := len(list(status()["clients"])); n != 1 {
			return fmt.Errorf("%d clients listed", n)
		}
		return nil
	})
	if !strings.Contains(e.Out.String(), "action=disconnect_client client_id=doomed") {
		t.Fatalf("disconnect not in the audit log")
	}

	// Live view: a CBOR message and a serial reading published now appear, CBOR as diagnostic
	// notation.
	run(t, ctx, chromedp.Navigate(base+"/#live"), chromedp.SetValue("#filter", "sensors/#", chromedp.ByID),
		chromedp.Click("#livebtn", chromedp.ByID), chromedp.WaitVisible(`//p[@id="livestats"][starts-with(., "Watching")]`))
	cbor := []byte{0xa2, 0x61, 'c', 0xf9, 0x4d, 0x60, 0x61, 'u', 0x61, 'C'} // {"c": 21.5, "u": "C"}
	wait(t, sensor.Publish("sensors/room1/temp", 1, false, cbor))
	if _, err := master.Write([]byte("{\"kwh\": 1300.25}\n")); err != nil {
		t.Fatal(err)
	}
	var diag, serial string
	run(t, ctx, chromedp.WaitVisible(`#livelist li[data-topic="sensors/room1/temp"] pre[data-kind="cbor"]`, chromedp.ByQuery),
		chromedp.Text(`#livelist li[data-topic="sensors/room1/temp"] pre`, &diag, chromedp.ByQuery),
		chromedp.WaitVisible(`#livelist li[data-topic="sensors/meter1"]`, chromedp.ByQuery),
		chromedp.Text(`#livelist li[data-topic="sensors/meter1"] pre`, &serial, chromedp.ByQuery))
	if diag != `{"c": 21.5, "u": "C"}` || serial != `{"kwh": 1300.25}` {
		t.Fatalf("live view shows %q and %q", diag, serial)
	}
	shot(t, ctx, shots, "live")

	// A phone-sized overview.
	run(t, ctx, chromedp.EmulateViewport(390, 844), chromedp.Navigate(base+"/#overview"), chromedp.WaitVisible(`[data-k="verdict"]`))
	shot(t, ctx, shots, "phone")
	if strings.Contains(e.Out.String(), dashToken) {
		t.Fatal("the admin token appeared in edged's log")
	}
	if b, _ := json.Marshal(status()); strings.Contains(string(b), dashToken) {
		t.Fatal("the admin token appeared in the status document")
	}
	t.Logf("dashboard test took %v", time.Since(began).Round(100*time.Millisecond))
}

// TestAdminTokenEndToEnd: the real binary refuses a network admin address without a token
// (at check and at run), serves 401 without the token, and `edged status -c` sends it.
func TestAdminTokenEndToEnd(t *testing.T) {
	bin := testutil.EdgedBinary(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("data_dir: "+dir+"/d\nadmin:\n  address: 0.0.0.0:9100\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"check", "run"} {
		out, err := execEdged(bin, cmd, "-c", bad)
		if code := exitCode(err); code != 2 || !strings.Contains(out, bad+":3: admin.address:") || !strings.Contains(out, "token_file") {
			t.Fatalf("edged %s of a network admin without token: exit %d\n%s", cmd, code, out)
		}
	}

	tokenFile := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tokenFile, []byte(dashToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: fmt.Sprintf(
		"data_dir: {data_dir}\nadmin: {address: \"{admin}\", token_file: %q}\nbroker:\n  listeners: [{type: tcp, address: %q}]\n",
		tokenFile, testutil.FreeAddr(t))})
	if _, err := admin.Get("http://"+e.Admin+"/api/v1/status", ""); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("status without token: %v", err)
	}
	if b, err := admin.Get("http://"+e.Admin+"/api/v1/status", dashToken); err != nil || !strings.Contains(string(b), `"health"`) {
		t.Fatalf("status with token: %v", err)
	}
	out, err := execEdged(bin, "status", "-c", e.Config)
	verdict, _, _ := strings.Cut(strings.SplitN(out, "\n", 2)[0], ":") // the report opens with the daemon's verdict
	if err != nil || (verdict != admin.VerdictOK && verdict != admin.VerdictDegraded && verdict != admin.VerdictFailing) || strings.Contains(out, dashToken) {
		t.Fatalf("edged status -c: %v\n%s", err, out)
	}
	out, err = execEdged(bin, "status", "-admin", e.Admin)
	if exitCode(err) != 1 || !strings.Contains(out, "401") || !strings.Contains(out, "token") {
		t.Fatalf("edged status without the config: %v\n%s", err, out)
	}
	if strings.Contains(e.Out.String(), dashToken) {
		t.Fatal("the token appeared in edged's log")
	}
}

// --- helpers ---

func requireChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := execLookPath(name); err == nil {
			return p
		}
	}
	if testutil.InCI() {
		t.Fatal("chromium not found: CI must install it (apt-get install chromium; see .ci/run)")
	}
	t.Skip("chromium not installed (apt-get install chromium); skipping outside CI")
	return ""
}

func browser(t *testing.T, path string) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1100, 760),
	}
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelB(); cancelA() })
	// The first Run starts the browser, which lives as long as the context of that call:
	// it must not carry a timeout (later runs do).
	if err := chromedp.Run(ctx, chromedp.EmulateViewport(1100, 760)); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// run executes actions with a bound: a selector that never appears fails the test.
func run(t *testing.T, ctx context.Context, actions ...chromedp.Action) {
	t.Helper()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Run(rctx, actions...); err != nil {
		var html string
		_ = chromedp.Run(ctx, chromedp.OuterHTML("main", &html, chromedp.ByQuery))
		t.Fatalf("browser: %v\npage: %.3000s", err, html)
	}
}

// clickRedrawn clicks sel in a table the dashboard redraws on every poll. A redraw between
// finding the node and clicking it fails the click with "Could not find node with given id"
// before any mouse event is sent, so that error only means: find it again.
func clickRedrawn(sel string) chromedp.Action {
	return chromedp.ActionFunc(func(ctx context.Context) error {
		for {
			err := chromedp.Click(sel, chromedp.ByQuery).Do(ctx)
			if err == nil || !strings.Contains(err.Error(), "Could not find node with given id") {
				return err
			}
			select {
			case <-ctx.Done():
				return err
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
}

// shownValues reads every [data-k] figure of a page: text and data-v.
func shownValues(t *testing.T, ctx context.Context, scope string) map[string][2]string {
	t.Helper()
	var m map[string][2]string
	js := `Object.fromEntries([...document.querySelectorAll(` + fmt.Sprintf("%q", scope+" [data-k]") +
		`)].map(e => [e.dataset.k, [e.textContent, e.dataset.v ?? ""]]))`
	run(t, ctx, chromedp.Evaluate(js, &m))
	return m
}

func screenshotDir(t *testing.T) string {
	if *updateScreenshots {
		return filepath.Join(testutil.RepoRoot(t), "docs", "screenshots")
	}
	return t.TempDir()
}

func shot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	var png []byte
	run(t, ctx, chromedp.Sleep(100*time.Millisecond), chromedp.CaptureScreenshot(&png))
	if len(png) < 1000 {
		t.Fatalf("screenshot %s: %d bytes", name, len(png))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

func list(v any) []any { l, _ := v.([]any); return l }

func find(v any, key, val string) map[string]any {
	for _, e := range list(v) {
		if m, ok := e.(map[string]any); ok && m[key] == val {
			return m
		}
	}
	return map[string]any{}
}

// num renders a JSON number as the page does (integers without exponent).
func num(v any) string {
	if f, ok := v.(float64); ok {
		return fmt.Sprintf("%.0f", f)
	}
	return fmt.Sprint(v)
}

func mqttClient(t *testing.T, addr, id string, onLost func(error)) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(10 * time.Second)
	if onLost != nil {
		o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { onLost(err) })
	}
	c := mqtt.NewClient(o)
	wait(t, c.Connect())
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

func wait(t *testing.T, tok mqtt.Token) {
	t.Helper()
	if !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtt: %v", tok.Error())
	}
}
