package main_test

// Reload end to end: the real edged binary, real paho clients, a real mosquitto as the cloud.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/crypto/bcrypt"

	"github.com/edged-dev/edged/internal/testutil"
)

// reloadReport is the part of the reload answer the tests read.
type reloadReport struct {
	Result     string   `json:"result"`
	Problems   []string `json:"problems"`
	Errors     []string `json:"errors"`
	Connectors struct {
		Added, Removed, Changed []string
	} `json:"connectors"`
	Broker struct {
		Disconnected []string `json:"disconnected"`
	} `json:"broker"`
}

// postReload asks for a reload through the admin API and returns the HTTP status and report.
func postReload(t *testing.T, admin string) (int, reloadReport, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+admin+"/api/v1/reload", nil)
	req.Header.Set("X-Edged-Action", "1")
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("POST reload: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var rep reloadReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("reload answer %d: %v: %s", resp.StatusCode, err, b)
	}
	return resp.StatusCode, rep, string(b)
}

// writeConfig replaces the config file atomically (a reload never reads half a file).
func writeConfig(t *testing.T, e *testutil.Edged, body string) {
	t.Helper()
	body = strings.NewReplacer("{data_dir}", e.DataDir, "{admin}", e.Admin).Replace(body)
	tmp := e.Config + ".new"
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, e.Config); err != nil {
		t.Fatal(err)
	}
}

func clientsConnected(t *testing.T, admin string) int {
	t.Helper()
	b, err := testutil.HTTPGet("http://" + admin + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	m := regexp.MustCompile(`(?m)^edged_clients_connected (\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no edged_clients_connected in /metrics")
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

func hashOf(t *testing.T, pw string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// The done-when test of reload: persistent QoS 1 clients publish without pause while the
// config is reloaded again and again (a connector added and removed, a rule changed, the
// cloud password file rotated). No client whose rights did not change is dropped, every
// PUBACKed message reaches the cloud, and each new rule is in force within 2 s.
// EDGED_TEST_RELOADS scales the number of reloads (default 100).
func TestReloadUnderLoad(t *testing.T) {
	testutil.RequireCommand(t, "mosquitto")
	reloads := 100
	if s := os.Getenv("EDGED_TEST_RELOADS"); s != "" {
		reloads, _ = strconv.Atoi(s)
	}
	const clients = 50
	cloud := testutil.StartMosquitto(t, 0, "")
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "cloud.password")
	if err := os.WriteFile(pwFile, []byte("secret-0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := testutil.FreeAddr(t)
	dead := testutil.FreeAddr(t) // connector extra's cloud: nobody listens, so its outbox fills
	hash := hashOf(t, "devpass")
	config := func(n int) string {
		extra := ""
		if n%2 == 1 {
			extra = fmt.Sprintf(`    - name: extra
      type: mqtt
      url: tcp://%s
      client_id: gw-extra
      forward: [{from: "sensors/#", to: "extra/{topic}", qos: 1}]
`, dead)
		}
		return fmt.Sprintf(`data_dir: {data_dir}
gateway_id: gw-test
log: {level: info}
admin: {address: "{admin}"}
broker:
  listeners:
%s
  users:
    - {username: dev, password_hash: %q, role: device}
  roles:
    device: {publish: ["sensors/#", "probe/#"], subscribe: ["cmd/#"]}
bridge:
  connectors:
    - name: cloud
      type: mqtt
      url: tcp://%s
      client_id: gw-cloud
      username: gw
      password_file: %s
      forward:
        - {from: "sensors/#", to: "gw/{topic}", qos: 1}
        - {from: "probe/#", to: "r%d/{topic}", qos: 1}
%s`, tcpListener(addr), hash, cloud.Addr, pwFile, n, extra)
	}
	e := testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: config(0)})

	// The cloud side: everything that arrives, by topic prefix.
	var (
		mu       sync.Mutex
		received = map[string]bool{} // payloads under gw/
		probes   = map[string]time.Time{}
	)
	sub := v3Client(t, "tcp://"+cloud.Addr, "cloud-sub", true, "", "")
	wait(t, sub.Subscribe("#", 1, func(_ mqtt.Client, m mqtt.Message) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case strings.HasPrefix(m.Topic(), "gw/sensors/"):
			received[string(m.Payload())] = true
		case strings.HasPrefix(m.Topic(), "r"):
			if _, ok := probes[m.Topic()]; !ok {
				probes[m.Topic()] = time.Now()
			}
		}
	}), "cloud subscribe")

	// 50 persistent QoS 1 publishers; a lost connection is a failure.
	var (
		lost   atomic.Int64
		acked  sync.Map // payload -> true
		nAcked atomic.Int64
		stop   = make(chan struct{})
		wg     sync.WaitGroup
	)
	for i := 0; i < clients; i++ {
		id := fmt.Sprintf("c%02d", i)
		o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetCleanSession(false).
			SetUsername("dev").SetPassword("devpass").SetAutoReconnect(false).SetConnectTimeout(10 * time.Second).
			SetKeepAlive(30 * time.Second).SetOrderMatters(true).
			SetConnectionLostHandler(func(_ mqtt.Client, err error) {
				lost.Add(1)
				t.Errorf("client %s lost its connection: %v", id, err)
			})
		c := mqtt.NewClient(o)
		wait(t, c.Connect(), "connect "+id)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Disconnect(250)
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				p := fmt.Sprintf("%s-%d", id, seq)
				tok := c.Publish("sensors/"+id+"/v", 1, false, p)
				if tok.WaitTimeout(30*time.Second) && tok.Error() == nil {
					acked.Store(p, true)
					nAcked.Add(1)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	prober := v3Client(t, "tcp://"+addr, "prober", true, "dev", "devpass")

	t0 := time.Now()
	var worstRule time.Duration
	for n := 1; n <= reloads; n++ {
		if n%10 == 0 { // rotate the cloud password file every tenth reload
			if err := os.WriteFile(pwFile, []byte(fmt.Sprintf("secret-%d\n", n)), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		writeConfig(t, e, config(n))
		var applied time.Time
		if n%5 == 0 { // every fifth through SIGHUP, the rest through the API
			before := reloadsApplied(t, e.Admin)
			if err := e.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			testutil.WaitFor(t, 30*time.Second, 5*time.Millisecond, func() error {
				if reloadsApplied(t, e.Admin) <= before {
					return fmt.Errorf("SIGHUP reload %d not applied yet", n)
				}
				return nil
			})
			applied = time.Now()
		} else {
			code, rep, raw := postReload(t, e.Admin)
			applied = time.Now()
			if code != 200 || rep.Result != "applied" {
				t.Fatalf("reload %d: HTTP %d: %s", n, code, raw)
			}
			if !contains(rep.Connectors.Changed, "cloud") {
				t.Fatalf("reload %d: the cloud connector's rule changed but it was not restarted: %s", n, raw)
			}
			if n%2 == 1 && !contains(rep.Connectors.Added, "extra") || n%2 == 0 && !contains(rep.Connectors.Removed, "extra") {
				t.Fatalf("reload %d: connector extra not added/removed: %s", n, raw)
			}
		}
		if got := clientsConnected(t, e.Admin); got < clients+1 {
			t.Fatalf("reload %d: edged_clients_connected %d, want %d", n, got, clients+1)
		}
		// The new rule: a probe published now must reach the cloud under r<n>/ within 2 s.
		topic := fmt.Sprintf("r%d/probe/x", n)
		wait(t, prober.Publish("probe/x", 1, false, strconv.Itoa(n)), "probe")
		testutil.WaitFor(t, 30*time.Second, 5*time.Millisecond, func() error {
			mu.Lock()
			defer mu.Unlock()
			if _, ok := probes[topic]; !ok {
				return fmt.Errorf("probe of reload %d not at the cloud under %s", n, topic)
			}
			return nil
		})
		mu.Lock()
		d := probes[topic].Sub(applied)
		mu.Unlock()
		worstRule = max(worstRule, d)
		if d > 2*time.Second {
			t.Errorf("reload %d: new rule in force after %v, want within 2s", n, d)
		}
		if lost.Load() > 0 {
			t.Fatalf("reload %d: %d clients lost their connection", n, lost.Load())
		}
	}
	took := time.Since(t0)
	close(stop)
	wg.Wait()

	// Every PUBACKed message reaches the cloud.
	testutil.WaitFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		missing := 0
		acked.Range(func(k, _ any) bool {
			if !received[k.(string)] {
				missing++
			}
			return true
		})
		if missing > 0 {
			return fmt.Errorf("%d of %d acked messages not at the cloud", missing, nAcked.Load())
		}
		return nil
	})
	if reloads%2 == 0 {
		// extra is removed now, its backlog kept and reported until purged on purpose.
		st := statusDoc(t, e.Admin)
		if !strings.Contains(fmt.Sprint(st["orphaned_outboxes"]), "extra") {
			t.Errorf("removed connector's outbox not reported orphaned: %v", st["orphaned_outboxes"])
		}
		if code, body := postAction(t, e.Admin, "/api/v1/outboxes/cloud/purge"); code != http.StatusConflict {
			t.Errorf("purge of a configured connector's outbox: HTTP %d %s, want 409", code, body)
		}
		if code, body := postAction(t, e.Admin, "/api/v1/outboxes/extra/purge"); code != http.StatusOK {
			t.Errorf("purge of the removed connector's outbox: HTTP %d %s", code, body)
		}
		if st := statusDoc(t, e.Admin); strings.Contains(fmt.Sprint(st["orphaned_outboxes"]), "extra") {
			t.Errorf("purged outbox still reported orphaned: %v", st["orphaned_outboxes"])
		}
	}
	stopClean(t, e)
	t.Logf("%d reloads in %v (%.0f ms each incl. probe), %d messages acked and delivered, %d clients never dropped, worst rule latency %v",
		reloads, took.Round(time.Millisecond), float64(took.Milliseconds())/float64(reloads), nAcked.Load(), clients, worstRule)
}

// stopClean stops edged with SIGTERM and fails on a dirty exit or a data race the daemon's
// race detector reported (the test binary builds edged with -race when run with it).
func stopClean(t *testing.T, e *testutil.Edged) {
	t.Helper()
	if err := e.Stop(30 * time.Second); err != nil {
		t.Errorf("edged stop: %v", err)
	}
	if strings.Contains(e.Out.String(), "DATA RACE") {
		t.Errorf("edged reported a data race:\n%s", e.Out.String())
	}
}

func postAction(t *testing.T, admin, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+admin+path, nil)
	req.Header.Set("X-Edged-Action", "1")
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func statusDoc(t *testing.T, admin string) map[string]any {
	t.Helper()
	return testutil.GetJSON(t, "http://"+admin+"/api/v1/status")
}

func reloadsApplied(t *testing.T, admin string) int {
	t.Helper()
	b, err := testutil.HTTPGet("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^edged_reloads_total\{result="applied"\} (\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no edged_reloads_total in /metrics")
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// A config with problems is refused with every FILE:LINE problem (API, CLI and log), and the
// old config keeps serving.
func TestReloadRefusesBadConfig(t *testing.T) {
	addr := testutil.FreeAddr(t)
	good := baseConfig(tcpListener(addr), "")
	e := testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: good})
	c := v3Client(t, "tcp://"+addr, "keeper", false, "", "")
	in := &inbox{}
	wait(t, c.Subscribe("k/#", 1, in.handler), "subscribe")

	bad := strings.Replace(good, "gateway_id: gw-test", "gateway_id: gw-test\nbogus_key: 1", 1)
	bad = strings.Replace(bad, "log: {level: debug}", "log: {level: loud}", 1)
	writeConfig(t, e, bad)
	code, rep, raw := postReload(t, e.Admin)
	if code != http.StatusUnprocessableEntity || rep.Result != "refused" {
		t.Fatalf("bad config: HTTP %d: %s", code, raw)
	}
	loc := regexp.QuoteMeta(filepath.Base(e.Config)) + `:\d+: `
	for _, want := range []string{loc + "bogus_key", loc + "log.level"} {
		found := false
		for _, p := range rep.Problems {
			found = found || regexp.MustCompile(want).MatchString(p)
		}
		if !found {
			t.Errorf("problems lack %q: %v", want, rep.Problems)
		}
	}
	out, _, exit := runEdged(t, "reload", "-admin", e.Admin)
	if exit != 1 || !strings.Contains(out, "bogus_key") || !strings.Contains(out, `"refused"`) {
		t.Errorf("edged reload of a bad file: exit %d:\n%s", exit, out)
	}
	if !strings.Contains(e.Out.String(), "reload refused") {
		t.Errorf("refusal not logged")
	}
	// The old config still serves the connected client.
	wait(t, c.Publish("k/1", 1, false, "still here"), "publish after refused reload")
	in.waitN(t, 1)
	if !c.IsConnectionOpen() {
		t.Fatal("client dropped by a refused reload")
	}
	st := statusDoc(t, e.Admin)
	if r, _ := st["reload"].(map[string]any); r == nil || r["result"] != "refused" {
		t.Errorf("status reload: %v", st["reload"])
	}
	if out, _, _ := runEdged(t, "status", "-admin", e.Admin); !regexp.MustCompile(`(?m)^last reload .* ago \(api 127\.0\.0\.1:\d+\): refused\n  .*bogus_key`).MatchString(out) {
		t.Errorf("edged status does not show the refused reload:\n%s", out)
	}
	// And a good file is applied afterwards, through SIGHUP; what only takes effect at start
	// is reported, the rest applied.
	next := strings.Replace(baseConfig(tcpListener(addr), "  max_clients: 500"), "gateway_id: gw-test", "gateway_id: gw-other", 1)
	writeConfig(t, e, next)
	before := reloadsApplied(t, e.Admin)
	_ = e.Cmd.Process.Signal(syscall.SIGHUP)
	testutil.WaitFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if reloadsApplied(t, e.Admin) <= before {
			return fmt.Errorf("SIGHUP reload not applied")
		}
		return nil
	})
	st = statusDoc(t, e.Admin)
	r, _ := st["reload"].(map[string]any)
	if r == nil || r["by"] != "signal" || fmt.Sprint(r["needs_restart"]) != "[gateway_id broker.max_clients]" || st["gateway_id"] != "gw-test" {
		t.Errorf("status after a reload needing a restart: gateway_id %v, reload %v", st["gateway_id"], r)
	}
	if !c.IsConnectionOpen() {
		t.Fatal("client dropped by the reload")
	}
	stopClean(t, e)
}

// Clients whose rights a reload revokes are disconnected (user removed, password changed, a
// role that no longer allows their subscription); the others stay connected.
func TestReloadRevokesClients(t *testing.T) {
	addr := testutil.FreeAddr(t)
	h := hashOf(t, "pw")
	users := func(removeAlice, newDavePW, narrowCarol bool) string {
		u := "  users:\n"
		if !removeAlice {
			u += fmt.Sprintf("    - {username: alice, password_hash: %q, role: dev}\n", h)
		}
		u += fmt.Sprintf("    - {username: bob, password_hash: %q, role: dev}\n", h)
		carolRole := "dev"
		if narrowCarol {
			carolRole = "narrow"
		}
		u += fmt.Sprintf("    - {username: carol, password_hash: %q, role: %s}\n", h, carolRole)
		dh := h
		if newDavePW {
			dh = hashOf(t, "pw2")
		}
		u += fmt.Sprintf("    - {username: dave, password_hash: %q, role: dev}\n", dh)
		u += "  roles:\n    dev: {publish: [\"d/#\"], subscribe: [\"cmd/#\"]}\n    narrow: {publish: [\"d/#\"], subscribe: [\"cmd/narrow/#\"]}\n"
		return u
	}
	e := testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: baseConfig(tcpListener(addr), users(false, false, false))})
	lostBy := map[string]chan struct{}{}
	conn := map[string]mqtt.Client{}
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		ch := make(chan struct{})
		lostBy[u] = ch
		o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("id-" + u).SetCleanSession(false).
			SetUsername(u).SetPassword("pw").SetAutoReconnect(false).
			SetConnectionLostHandler(func(mqtt.Client, error) { close(ch) })
		c := mqtt.NewClient(o)
		wait(t, c.Connect(), "connect "+u)
		wait(t, c.Subscribe("cmd/all", 1, func(mqtt.Client, mqtt.Message) {}), "subscribe "+u)
		conn[u] = c
		t.Cleanup(func() { c.Disconnect(100) })
	}
	writeConfig(t, e, baseConfig(tcpListener(addr), users(true, true, true)))
	code, rep, raw := postReload(t, e.Admin)
	if code != 200 {
		t.Fatalf("reload: HTTP %d: %s", code, raw)
	}
	for _, u := range []string{"alice", "carol", "dave"} {
		select {
		case <-lostBy[u]:
		case <-time.After(20 * time.Second):
			t.Errorf("%s not disconnected after its rights were revoked (%s)", u, raw)
		}
		if !contains(rep.Broker.Disconnected, "id-"+u) {
			t.Errorf("report lacks %s: %s", u, raw)
		}
	}
	select {
	case <-lostBy["bob"]:
		t.Fatal("bob, whose rights did not change, was disconnected")
	default:
	}
	wait(t, conn["bob"].Publish("d/1", 1, false, "x"), "bob publishes after the reload")
	// alice cannot come back; carol can, without her old subscription.
	if err := connectErr("tcp://"+addr, "id-alice", "alice", "pw"); err == nil {
		t.Error("removed user alice could connect again")
	}
	if err := connectErr("tcp://"+addr, "id-dave", "dave", "pw"); err == nil {
		t.Error("dave's old password still works")
	}
	if !strings.Contains(e.Out.String(), "access revoked by reload") {
		t.Error("revocation not logged")
	}

	// Listeners: one added, then removed again. bob, on the unchanged listener, stays; the
	// client of the removed listener is disconnected.
	addr2 := testutil.FreeAddr(t)
	writeConfig(t, e, baseConfig(tcpListener(addr)+"\n"+tcpListener(addr2), users(true, true, true)))
	if code, _, raw := postReload(t, e.Admin); code != 200 || !strings.Contains(raw, "tcp://"+addr2) {
		t.Fatalf("reload adding a listener: HTTP %d: %s", code, raw)
	}
	lost2 := make(chan struct{})
	c2 := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr2).SetClientID("id-bob2").SetUsername("bob").SetPassword("pw").
		SetAutoReconnect(false).SetConnectionLostHandler(func(mqtt.Client, error) { close(lost2) }))
	wait(t, c2.Connect(), "connect to the added listener")
	writeConfig(t, e, baseConfig(tcpListener(addr), users(true, true, true)))
	if code, _, raw := postReload(t, e.Admin); code != 200 || !strings.Contains(raw, "listeners_removed") {
		t.Fatalf("reload removing a listener: HTTP %d: %s", code, raw)
	}
	select {
	case <-lost2:
	case <-time.After(20 * time.Second):
		t.Error("client of the removed listener still connected")
	}
	select {
	case <-lostBy["bob"]:
		t.Fatal("bob was disconnected by a change of another listener")
	default:
	}
	wait(t, conn["bob"].Publish("d/2", 1, false, "x"), "bob publishes after the listener changes")
	stopClean(t, e)
}

func connectErr(broker, id, user, pass string) error {
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(broker).SetClientID(id).SetUsername(user).SetPassword(pass).
		SetAutoReconnect(false).SetConnectTimeout(10 * time.Second))
	tok := c.Connect()
	tok.WaitTimeout(10 * time.Second)
	if tok.Error() == nil {
		c.Disconnect(100)
	}
	return tok.Error()
}
