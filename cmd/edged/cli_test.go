package main_test

// The operator's side of the real binary: every subcommand's -h and flag errors, version,
// completions, the man page, the human status and outbox reports.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edged-dev/edged/internal/testutil"
)

// runEdged runs the binary and returns stdout, stderr and the exit code.
func runEdged(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(testutil.EdgedBinary(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = strings.NewReader("")
	err := cmd.Run()
	if ee := (*exec.ExitError)(nil); err != nil && !errors.As(err, &ee) {
		t.Fatalf("edged %v: %v", args, err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// subcommands reads the command names from the top-level usage, so a new command is covered
// without editing this test.
func subcommands(t *testing.T) []string {
	t.Helper()
	out, _, code := runEdged(t, "-h")
	if code != 0 {
		t.Fatalf("edged -h: exit %d", code)
	}
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^  edged ([a-z]+)`).FindAllStringSubmatch(out, -1) {
		names = append(names, m[1])
	}
	if len(names) < 10 {
		t.Fatalf("usage lists %d commands:\n%s", len(names), out)
	}
	return names
}

func TestEverySubcommandHasHelpAndRejectsUnknownFlags(t *testing.T) {
	for _, name := range subcommands(t) {
		out, errOut, code := runEdged(t, name, "-h")
		if code != 0 || !strings.HasPrefix(out, "usage: edged "+name) {
			t.Errorf("edged %s -h: exit %d, stdout %q, stderr %q; want usage on stdout, exit 0", name, code, out, errOut)
		}
		out, errOut, code = runEdged(t, name, "-no-such-flag")
		if code != 2 || !strings.Contains(errOut, "flag provided but not defined: -no-such-flag") || out != "" {
			t.Errorf("edged %s -no-such-flag: exit %d, stdout %q, stderr %q; want exit 2 naming the flag", name, code, out, errOut)
		}
	}
}

// `ports -h` used to list the ports and `connectors -h` the types: -h ran the command.
func TestHelpDoesNotRunTheCommand(t *testing.T) {
	out, _, _ := runEdged(t, "connectors")
	if !strings.Contains(out, "mqtt") {
		t.Fatalf("edged connectors does not list mqtt: %q", out)
	}
	out, _, _ = runEdged(t, "connectors", "-h")
	if strings.Contains(out, "\nmqtt") {
		t.Fatalf("edged connectors -h listed the connectors:\n%s", out)
	}
	out, _, _ = runEdged(t, "ports", "-h")
	if strings.Count(out, "\n") > 3 {
		t.Fatalf("edged ports -h printed more than its usage:\n%s", out)
	}
}

func TestUsageListsStatusJSON(t *testing.T) {
	out, _, _ := runEdged(t, "help")
	if !regexp.MustCompile(`(?m)^  edged status .*-json`).MatchString(out) {
		t.Fatalf("usage lacks status -json:\n%s", out)
	}
	_, errOut, code := runEdged(t)
	if code != 2 || !strings.Contains(errOut, "edged status") {
		t.Fatalf("edged without arguments: exit %d, want 2 with usage on stderr: %q", code, errOut)
	}
}

func TestVersion(t *testing.T) {
	out, _, code := runEdged(t, "version")
	for _, want := range []string{"edged ", "commit", "built", "go1.", "linux/"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("edged version: exit %d, lacks %q:\n%s", code, want, out)
		}
	}
	out, _, code = runEdged(t, "version", "-json")
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil || code != 0 {
		t.Fatalf("version -json: exit %d, %v: %s", code, err, out)
	}
	for _, k := range []string{"version", "commit", "build_date", "go_version", "platform"} {
		if s, _ := v[k].(string); s == "" {
			t.Errorf("version -json: %s missing or empty: %s", k, out)
		}
	}
}

func TestCBORDecodeSaysNotHex(t *testing.T) {
	_, errOut, code := runEdged(t, "cbor", "decode", "zz")
	if code != 2 || !strings.Contains(errOut, "not hex") {
		t.Fatalf("cbor decode zz: exit %d, %q; want exit 2 saying not hex", code, errOut)
	}
	out, _, code := runEdged(t, "cbor", "decode", "0xa1 01 02")
	if code != 0 || strings.TrimSpace(out) != "{1: 2}" {
		t.Fatalf("cbor decode a10102: exit %d, %q", code, out)
	}
}

// The bash completion is run by bash itself: a syntax error or a wrong table shows here.
func TestBashCompletion(t *testing.T) {
	bash := testutil.RequireCommand(t, "bash")
	script, _, code := runEdged(t, "completion", "bash")
	if code != 0 {
		t.Fatalf("completion bash: exit %d", code)
	}
	f := filepath.Join(t.TempDir(), "edged.bash")
	if err := os.WriteFile(f, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	complete := func(words ...string) string {
		t.Helper()
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = fmt.Sprintf("%q", w)
		}
		prog := fmt.Sprintf(`source %q; COMP_WORDS=(%s); COMP_CWORD=%d; _edged; printf '%%s\n' "${COMPREPLY[@]}"`,
			f, strings.Join(quoted, " "), len(words)-1)
		out, err := exec.Command(bash, "--norc", "-c", prog).CombinedOutput()
		if err != nil {
			t.Fatalf("bash completion of %v: %v\n%s", words, err, out)
		}
		return string(out)
	}
	if got := complete("edged", "st"); got != "status\n" {
		t.Errorf("edged st<TAB> = %q, want status", got)
	}
	if got := complete("edged", "status", "-"); !strings.Contains(got, "-json\n") || !strings.Contains(got, "-admin\n") {
		t.Errorf("edged status -<TAB> = %q, want -admin and -json", got)
	}
	if got := complete("edged", "outbox", "s"); got != "stats\n" {
		t.Errorf("edged outbox s<TAB> = %q, want stats", got)
	}
	dir := t.TempDir()
	_ = os.WriteFile(filepath.Join(dir, "gw.yaml"), nil, 0o600)
	if got := complete("edged", "check", "-c", dir+"/g"); got != dir+"/gw.yaml\n" {
		t.Errorf("edged check -c <TAB> = %q, want the file", got)
	}
}

func TestZshCompletion(t *testing.T) {
	script, _, code := runEdged(t, "completion", "zsh")
	if code != 0 || !strings.HasPrefix(script, "#compdef edged\n") || !strings.Contains(script, "'-json[print the raw JSON status document]'") {
		t.Fatalf("completion zsh: exit %d:\n%s", code, script)
	}
	zsh := testutil.RequireCommand(t, "zsh")
	f := filepath.Join(t.TempDir(), "_edged")
	_ = os.WriteFile(f, []byte(script), 0o600)
	if out, err := exec.Command(zsh, "-n", f).CombinedOutput(); err != nil {
		t.Fatalf("zsh -n: %v\n%s", err, out)
	}
}

// The man page is generated from the same table as the usage: every command is in it, and
// groff renders it without a warning.
func TestManPage(t *testing.T) {
	page, _, code := runEdged(t, "man")
	if code != 0 || !strings.Contains(page, ".TH EDGED 8") {
		t.Fatalf("edged man: exit %d:\n%s", code, page)
	}
	for _, name := range subcommands(t) {
		if !strings.Contains(page, ".B edged "+name) {
			t.Errorf("man page lacks command %s", name)
		}
	}
	groff := testutil.RequireCommand(t, "groff")
	cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
	cmd.Stdin = strings.NewReader(page)
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("groff warns: %v\n%s", err, out)
	}
}

// SIGHUP's default action killed the daemon without a clean stop; until reload exists it is
// logged and ignored.
func TestSIGHUPKeepsRunning(t *testing.T) {
	addr := testutil.FreeAddr(t)
	e := testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: baseConfig(tcpListener(addr), "")})
	if err := e.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(e.Out.String(), "msg=reloaded by=signal") {
			return fmt.Errorf("SIGHUP did not reload")
		}
		return nil
	})
	select {
	case <-e.Done():
		t.Fatalf("edged exited on SIGHUP")
	default:
	}
	c := v3Client(t, "tcp://"+addr, "after-hup", true, "", "")
	wait(t, c.Publish("h/up", 1, false, "still here"), "publish after SIGHUP")
	if err := testutil.HTTPGetOK("http://" + e.Admin + "/healthz"); err != nil {
		t.Fatalf("not healthy after SIGHUP: %v", err)
	}
	if err := e.Stop(10 * time.Second); err != nil {
		t.Fatalf("SIGTERM after SIGHUP: %v", err)
	}
}

var partLine = regexp.MustCompile(`msg=(started|stopped) part=(\w+)`)

// parts returns the "started X" / "stopped X" log lines in order.
func parts(out string) []string {
	var seq []string
	for _, m := range partLine.FindAllStringSubmatch(out, -1) {
		seq = append(seq, m[1]+" "+m[2])
	}
	return seq
}

// A listener whose port is taken fails the start after storage, broker and bridge started:
// those stop in reverse, and edged exits 1 naming the listener.
func TestFailedStartStopsWhatStartedInReverse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	e := testutil.StartEdged(t, testutil.EdgedOptions{NoWait: true,
		ConfigYAML: baseConfig(tcpListener(taken.Addr().String()), "")})
	select {
	case <-e.Done():
	case <-time.After(60 * time.Second):
		t.Fatal("edged did not exit although its listener port is taken")
	}
	out := e.Out.String()
	if code := e.Cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	if !strings.Contains(out, "address already in use") || !strings.Contains(out, "start mqtt") {
		t.Errorf("the error does not name the part and the cause:\n%s", out)
	}
	want := []string{"started storage", "started broker", "started bridge", "stopped bridge", "stopped broker", "stopped storage"}
	if got := parts(out); strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Fatalf("lifecycle:\n got  %v\n want %v\n%s", got, want, out)
	}
}

func TestSIGTERMStopsEveryPartInReverse(t *testing.T) {
	addr := testutil.FreeAddr(t)
	e := testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: baseConfig(tcpListener(addr), "")})
	if err := e.Stop(20 * time.Second); err != nil {
		t.Fatalf("SIGTERM: want exit 0, got %v", err)
	}
	got := parts(e.Out.String())
	start := []string{"storage", "broker", "bridge", "mqtt", "serial", "admin", "systemd"}
	var want []string
	for _, p := range start {
		want = append(want, "started "+p)
	}
	for i := len(start) - 1; i >= 0; i-- {
		want = append(want, "stopped "+start[i])
	}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Fatalf("lifecycle:\n got  %v\n want %v", got, want)
	}
}

// With format json every line is an object with unique keys (mochi's lines carried component
// twice: ours and the broker's), and start-up says what it is doing, with timings.
func TestJSONLogsStartupProgressUniqueKeys(t *testing.T) {
	addr := testutil.FreeAddr(t)
	cfg := strings.Replace(baseConfig(tcpListener(addr), ""), "log: {level: debug}", "log: {level: debug, format: json}", 1)
	e := testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: cfg})
	if err := e.Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	seen := map[string]map[string]any{}
	mochi := 0
	for _, line := range strings.Split(strings.TrimSpace(e.Out.String()), "\n") {
		if !strings.HasPrefix(line, "{") {
			continue // the race detector's own output, if any
		}
		if dup := duplicateKey(line); dup != "" {
			t.Errorf("key %q twice in %s", dup, line)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %v: %s", err, line)
		}
		if m["component"] == "mochi" {
			mochi++
		}
		msg, _ := m["msg"].(string)
		if _, ok := seen[msg]; !ok {
			seen[msg] = m
		}
	}
	if mochi == 0 {
		t.Error("no mochi line at debug level: the duplicate-key check saw nothing of mochi's")
	}
	if m := seen["opening store"]; m == nil || m["dir"] == nil || m["size_on_disk"] == nil {
		t.Errorf("no 'opening store' line with dir and size: %v", m)
	}
	if m := seen["broker restored"]; m == nil || m["sessions"] == nil {
		t.Errorf("no 'broker restored' line with sessions: %v", m)
	}
	for _, msg := range []string{"started", "edged ready", "mqtt listener started", "admin API"} {
		if seen[msg] == nil {
			t.Errorf("no %q line", msg)
		}
	}
	if m := seen["edged ready"]; m != nil && m["took"] == nil {
		t.Errorf("ready line without timing: %v", m)
	}
}

// duplicateKey returns a top-level key that occurs twice in a JSON object, or "".
func duplicateKey(line string) string {
	dec := json.NewDecoder(strings.NewReader(line))
	if _, err := dec.Token(); err != nil {
		return ""
	}
	keys := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		k, _ := tok.(string)
		if keys[k] {
			return k
		}
		keys[k] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return ""
		}
	}
	return ""
}

// The human status: a verdict first, tables, sizes and ages for people, empty sections in
// words. A connector whose cloud is down makes it degraded, naming the connector; the same
// gateway with its cloud up is ok.
func TestStatusHumanReport(t *testing.T) {
	testutil.RequireCommand(t, "mosquitto")
	addr := testutil.FreeAddr(t)
	cloudPort := testutil.FreePort(t)
	cfg := baseConfig(tcpListener(addr), "") + cloudBridge(fmt.Sprintf("tcp://127.0.0.1:%d", cloudPort), "sensors/#", "gw/{topic}")
	e := testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: cfg})
	c := v3Client(t, "tcp://"+addr, "s1", true, "", "")
	wait(t, c.Publish("sensors/s1/temp", 1, false, "21.5"), "publish")

	var out string
	testutil.WaitFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		out, _, _ = runEdged(t, "status", "-admin", e.Admin)
		if !strings.HasPrefix(out, "degraded: connector cloud: ") {
			return fmt.Errorf("want a degraded verdict naming connector cloud:\n%s", out)
		}
		return nil
	})
	for _, want := range []string{"gateway gw-test, up ", "NAME   TYPE", "no serial ports configured", "OUTBOX", " KiB", "disk free "} {
		if !strings.Contains(out, want) && !(want == " KiB" && strings.Contains(out, " B ")) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	for _, raw := range []string{"ttl_ns", "sent_rate", "null", "disk_free"} {
		if strings.Contains(out, raw) {
			t.Errorf("status shows the raw %q:\n%s", raw, out)
		}
	}

	testutil.StartMosquitto(t, cloudPort, "")
	testutil.WaitFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		out, _, _ = runEdged(t, "status", "-admin", e.Admin)
		if !strings.HasPrefix(out, "ok\n") {
			return fmt.Errorf("want ok once the cloud is up:\n%s", out)
		}
		return nil
	})
	t.Logf("edged status:\n%s", out)

	js, _, code := runEdged(t, "status", "-admin", e.Admin, "-json")
	var doc map[string]any
	if err := json.Unmarshal([]byte(js), &doc); err != nil || code != 0 || doc["connectors"] == nil {
		t.Fatalf("status -json: exit %d, %v:\n%s", code, err, js)
	}
}

// outbox stats on a stopped gateway's data dir: the same tables; -json the raw figures.
func TestOutboxStatsHuman(t *testing.T) {
	addr := testutil.FreeAddr(t)
	dead := testutil.FreeAddr(t)
	cfg := baseConfig(tcpListener(addr), "") + cloudBridge("tcp://"+dead, "sensors/#", "{topic}")
	e := testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: cfg})
	c := v3Client(t, "tcp://"+addr, "s1", true, "", "")
	for i := 0; i < 3; i++ {
		wait(t, c.Publish("sensors/s1/x", 1, false, "v"), "publish")
	}
	if err := e.Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runEdged(t, "outbox", "-data-dir", e.DataDir, "stats")
	if code != 0 || !strings.HasPrefix(out, "ok\n") || !regexp.MustCompile(`(?m)^  cloud +3 +\d+ B +\d+[sm]`).MatchString(out) {
		t.Fatalf("outbox stats: exit %d:\n%s%s", code, out, errOut)
	}
	out, _, code = runEdged(t, "outbox", "-data-dir", e.DataDir, "stats", "-json")
	var s struct {
		Outboxes []struct {
			Name  string `json:"name"`
			Depth int64  `json:"depth"`
		} `json:"outboxes"`
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil || code != 0 || len(s.Outboxes) != 1 || s.Outboxes[0].Depth != 3 {
		t.Fatalf("outbox stats -json: exit %d, %v:\n%s", code, err, out)
	}
}
