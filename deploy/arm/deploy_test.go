// Tests of what deploy/arm ships: the cross-built binaries (run under qemu), the .deb
// packages, the systemd unit, the example config and install.sh.
//
// The artefact tests need `make test-cross` (or `make test-deploy`), which builds dist/ and
// sets EDGED_DIST; a bare `go test ./deploy/arm/` runs only the rest.
package arm_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edged-dev/edged/internal/testutil"
)

const maxBinarySize = 25 << 20 // the static ARM binary must fit small gateways' flash: <= 25 MiB

// dist returns the directory of the binaries built by arm.mk, skipping without it.
func dist(t *testing.T) string {
	t.Helper()
	d := os.Getenv("EDGED_DIST")
	if d == "" {
		t.Skip("EDGED_DIST unset: run `make test-cross` (builds dist/ and the .debs first)")
	}
	return d
}

func repo(t *testing.T) string { return testutil.RepoRoot(t) }

func TestBinarySizes(t *testing.T) {
	d := dist(t)
	bins, _ := filepath.Glob(filepath.Join(d, "edged-linux-*"))
	if len(bins) == 0 {
		t.Fatalf("no edged-linux-* in %s", d)
	}
	for _, b := range bins {
		st, err := os.Stat(b)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%-22s %6.1f MB", filepath.Base(b), float64(st.Size())/(1<<20))
		if st.Size() > maxBinarySize {
			t.Errorf("%s is %d bytes, over the %d budget", b, st.Size(), maxBinarySize)
		}
		out, err := exec.Command("file", b).CombinedOutput()
		if err == nil && !strings.Contains(string(out), "statically linked") {
			t.Errorf("%s is not static: %s", b, out)
		}
	}
}

// gatewayConfig is a minimal gateway: one loopback listener, a forward rule to "the cloud".
const gatewayConfig = `data_dir: {data_dir}
gateway_id: qemu
admin: {address: {admin}}
broker:
  listeners:
    - {type: tcp, address: {listen}}
bridge:
  connectors:
    - name: cloud
      type: mqtt
      url: tcp://{cloud}
      client_id: edged-qemu
      format: raw
      forward:
        - {from: "sensors/#", to: "{gateway_id}/{topic}", qos: 1}
`

// memory reads VmRSS, VmHWM and RssAnon (kB) of pid.
func memory(pid int) (map[string]int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch k {
		case "VmRSS", "VmHWM", "RssAnon":
			f := strings.Fields(v)
			if len(f) > 0 {
				m[k], _ = strconv.Atoi(f[0])
			}
		}
	}
	return m, sc.Err()
}

func newClient(t *testing.T, addr, id string) mqtt.Client {
	t.Helper()
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).
		SetConnectTimeout(10 * time.Second).SetAutoReconnect(false).SetOrderMatters(false)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
		t.Fatalf("connect %s to %s: %v", id, addr, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c
}

// runGateway starts the binary (argv, e.g. qemu + binary) with a cloud mosquitto, does a local
// publish/subscribe round trip and a forward to the cloud, reports idle memory, and stops it.
func runGateway(t *testing.T, argv []string) {
	cloud := testutil.StartMosquitto(t, 0, "")
	listen := testutil.FreeAddr(t)
	cfg := strings.NewReplacer("{listen}", listen, "{cloud}", cloud.Addr).Replace(gatewayConfig)
	d := testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: cfg, Argv: argv, NoWait: true})
	start := time.Now()
	d.WaitHealthy(90 * time.Second)
	t.Logf("%s healthy after %v", filepath.Base(argv[len(argv)-1]), time.Since(start).Round(time.Millisecond))

	cloudSub := testutil.Subscribe(t, newClient(t, cloud.Addr, "cloud-sub"), "qemu/#")
	local := newClient(t, listen, "host-client")
	localSub := testutil.Subscribe(t, local, "sensors/#")
	for i := 0; i < 3; i++ {
		payload := fmt.Sprintf(`{"seq":%d,"t":21.5}`, i)
		if tok := local.Publish("sensors/meter1", 1, false, payload); !tok.WaitTimeout(20*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
		testutil.Expect(t, localSub, "sensors/meter1", payload, 20*time.Second)
		testutil.Expect(t, cloudSub, "qemu/sensors/meter1", payload, 30*time.Second)
	}
	time.Sleep(2 * time.Second) // let start-up garbage settle before sampling idle memory
	if m, err := memory(d.Cmd.Process.Pid); err == nil {
		t.Logf("idle memory of %v: VmRSS %d kB, VmHWM %d kB, RssAnon %d kB", argv, m["VmRSS"], m["VmHWM"], m["RssAnon"])
	}
	if err := d.Stop(30 * time.Second); err != nil {
		t.Errorf("edged did not exit 0 on SIGTERM: %v", err)
	}
}

func requireQemu(t *testing.T, name string) string {
	t.Helper()
	return testutil.RequireCommand(t, name)
}

func TestArm64UnderQemu(t *testing.T) {
	d := dist(t)
	qemu := requireQemu(t, "qemu-aarch64-static")
	runGateway(t, []string{qemu, filepath.Join(d, "edged-linux-arm64")})
}

func TestAmd64Native(t *testing.T) {
	d := dist(t)
	runGateway(t, []string{filepath.Join(d, "edged-linux-amd64")})
}

// edgedBin is the native binary: dist's when built, else testutil's.
func edgedBin(t *testing.T) string {
	if d := os.Getenv("EDGED_DIST"); d != "" {
		return filepath.Join(d, "edged-linux-amd64")
	}
	return testutil.EdgedBinary(t)
}

func TestExampleConfigChecks(t *testing.T) {
	bin := edgedBin(t)
	example := filepath.Join(repo(t), "deploy", "arm", "edged.yaml")
	for _, f := range []string{example, filepath.Join(repo(t), "deploy", "arm", "edged.example.yaml")} {
		out, err := exec.Command(bin, "check", "-c", f).CombinedOutput()
		if err != nil {
			t.Fatalf("edged check rejects the shipped %s: %v\n%s", filepath.Base(f), err, out)
		}
	}
	var out []byte
	var err error

	// And check really checks: a typo in the example is reported with its line, exit 2.
	b, _ := os.ReadFile(example)
	bad := strings.Replace(string(b), "  when_full: drop_oldest", "  when_ful: drop_oldest", 1)
	badPath := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(badPath, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	line := 0
	for i, l := range strings.Split(bad, "\n") {
		if strings.Contains(l, "when_ful:") {
			line = i + 1
		}
	}
	out, err = exec.Command(bin, "check", "-c", badPath).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("a typo must exit 2, got %v\n%s", err, out)
	}
	if want := fmt.Sprintf("%s:%d:", badPath, line); !strings.Contains(string(out), want) {
		t.Errorf("want %q in:\n%s", want, out)
	}
}

// The installed config is safe to start unedited (postinst starts the service when it passes
// edged check): loopback listeners only, no connectors, no serial ports.
func TestInstalledConfigIsSafe(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repo(t), "deploy", "arm", "edged.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var live []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			live = append(live, l)
		}
	}
	cfg := strings.Join(live, "\n")
	for _, bad := range []string{"0.0.0.0", "connectors:", "serial:", "password", "[::]"} {
		if strings.Contains(cfg, bad) {
			t.Errorf("installed config contains %q outside comments:\n%s", bad, cfg)
		}
	}
	for _, addr := range regexp.MustCompile(`address: *"?([^,}"]+)`).FindAllStringSubmatch(cfg, -1) {
		if !strings.HasPrefix(addr[1], "127.0.0.1:") {
			t.Errorf("non-loopback address %q in the installed config", addr[1])
		}
	}
}

func TestDebPackages(t *testing.T) {
	d := dist(t)
	dpkg := testutil.RequireCommand(t, "dpkg-deb")
	version := os.Getenv("EDGED_DEB_VERSION")
	for _, arch := range []string{"arm64", "armhf", "amd64"} {
		t.Run(arch, func(t *testing.T) {
			pkg := filepath.Join(d, fmt.Sprintf("edged_%s_%s.deb", version, arch))
			info, err := exec.Command(dpkg, "--info", pkg).CombinedOutput()
			if err != nil {
				t.Fatalf("dpkg-deb --info %s: %v\n%s", pkg, err, info)
			}
			for _, want := range []string{"Package: edged", "Architecture: " + arch, "Version: " + version, "postinst", "prerm", "postrm", "conffiles"} {
				if !strings.Contains(string(info), want) {
					t.Errorf("--info lacks %q:\n%s", want, info)
				}
			}
			contents, err := exec.Command(dpkg, "--contents", pkg).CombinedOutput()
			if err != nil {
				t.Fatalf("dpkg-deb --contents: %v\n%s", err, contents)
			}
			for _, want := range []string{"-rwxr-xr-x root/root", "./usr/bin/edged", "./lib/systemd/system/edged.service", "./etc/edged/edged.yaml",
				"./usr/share/man/man8/edged.8.gz", "./usr/share/bash-completion/completions/edged", "./usr/share/zsh/vendor-completions/_edged",
				"./usr/share/doc/edged/copyright", "./usr/share/doc/edged/changelog", "./usr/share/doc/edged/examples/edged.yaml"} {
				if !strings.Contains(string(contents), want) {
					t.Errorf("--contents lacks %q:\n%s", want, contents)
				}
			}
			ctl := t.TempDir()
			if out, err := exec.Command(dpkg, "--control", pkg, ctl).CombinedOutput(); err != nil {
				t.Fatalf("dpkg-deb --control: %v\n%s", err, out)
			}
			conf, _ := os.ReadFile(filepath.Join(ctl, "conffiles"))
			if strings.TrimSpace(string(conf)) != "/etc/edged/edged.yaml" {
				t.Errorf("conffiles = %q, want /etc/edged/edged.yaml", conf)
			}
			post, _ := os.ReadFile(filepath.Join(ctl, "postinst"))
			for _, want := range []string{"useradd --system", "edged", "dialout", "dpkg-statoverride", "edged check -c /etc/edged/edged.yaml"} {
				if !strings.Contains(string(post), want) {
					t.Errorf("postinst lacks %q", want)
				}
			}
			// The packaged binary is the one for this architecture.
			x := t.TempDir()
			if out, err := exec.Command(dpkg, "-x", pkg, x).CombinedOutput(); err != nil {
				t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
			}
			wantArch := map[string]string{"arm64": "ARM aarch64", "armhf": "ARM, EABI5", "amd64": "x86-64"}[arch]
			if out, err := exec.Command("file", filepath.Join(x, "usr/bin/edged")).CombinedOutput(); err == nil && !strings.Contains(string(out), wantArch) {
				t.Errorf("packaged binary is not %s: %s", wantArch, out)
			}
		})
	}
}

// The amd64 package passes lintian (tags that do not apply are overridden in
// deploy/arm/lintian-overrides, each with its reason). Under CI a missing lintian fails.
func TestDebLintian(t *testing.T) {
	d := dist(t)
	lintian := testutil.RequireCommand(t, "lintian")
	pkg := filepath.Join(d, fmt.Sprintf("edged_%s_amd64.deb", os.Getenv("EDGED_DEB_VERSION")))
	out, err := exec.Command(lintian, "--info", "--display-info", "--pedantic", "--fail-on", "error,warning,info,pedantic", pkg).CombinedOutput()
	t.Logf("lintian %s:\n%s", filepath.Base(pkg), out)
	if err != nil {
		t.Fatalf("lintian: %v", err)
	}
}

// The packaged man page and completions are what the packaged binary generates, and the
// copyright file names every Go module linked into it.
func TestDebDocsMatchBinary(t *testing.T) {
	d := dist(t)
	dpkg := testutil.RequireCommand(t, "dpkg-deb")
	pkg := filepath.Join(d, fmt.Sprintf("edged_%s_amd64.deb", os.Getenv("EDGED_DEB_VERSION")))
	x := t.TempDir()
	if out, err := exec.Command(dpkg, "-x", pkg, x).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -x: %v\n%s", err, out)
	}
	bin := filepath.Join(x, "usr/bin/edged")
	gen := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, args...).Output()
		if err != nil {
			t.Fatalf("edged %v: %v", args, err)
		}
		return string(out)
	}
	gunzip := func(path string) string {
		t.Helper()
		out, err := exec.Command("gzip", "-dc", path).Output()
		if err != nil {
			t.Fatalf("gunzip %s: %v", path, err)
		}
		return string(out)
	}
	if got := gunzip(filepath.Join(x, "usr/share/man/man8/edged.8.gz")); got != gen("man") {
		t.Error("packaged man page differs from `edged man` of the packaged binary")
	}
	for path, shell := range map[string]string{"usr/share/bash-completion/completions/edged": "bash", "usr/share/zsh/vendor-completions/_edged": "zsh"} {
		b, err := os.ReadFile(filepath.Join(x, path))
		if err != nil || string(b) != gen("completion", shell) {
			t.Errorf("%s differs from `edged completion %s` (%v)", path, shell, err)
		}
	}
	copyright, err := os.ReadFile(filepath.Join(x, "usr/share/doc/edged/copyright"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(copyright), "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/") {
		t.Error("copyright is not machine-readable (DEP-5)")
	}
	var patterns []string
	for _, l := range strings.Split(string(copyright), "\n") {
		if f, ok := strings.CutPrefix(l, "Files: "); ok {
			patterns = append(patterns, strings.Fields(f)...)
		}
	}
	mods, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatalf("go version -m: %v", err)
	}
	for _, l := range strings.Split(string(mods), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "dep" {
			continue
		}
		covered := false
		for _, p := range patterns {
			if p != "*" && strings.HasPrefix(f[1]+"/", strings.TrimSuffix(p, "*")) {
				covered = true
			}
		}
		if !covered {
			t.Errorf("module %s is linked into edged but has no Files: stanza in deploy/arm/copyright", f[1])
		}
	}
}

// unit parses a systemd unit into section -> key -> values (keys may repeat).
func unit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := map[string]map[string][]string{}
	sec := ""
	for i, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || l[0] == '#' || l[0] == ';':
		case l[0] == '[' && l[len(l)-1] == ']':
			sec = l[1 : len(l)-1]
			u[sec] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok || sec == "" {
				t.Fatalf("%s:%d: not key=value in a section: %q", path, i+1, l)
			}
			u[sec][k] = append(u[sec][k], v)
		}
	}
	return u
}

func TestSystemdUnit(t *testing.T) {
	path := filepath.Join(repo(t), "deploy", "arm", "edged.service")
	u := unit(t, path)
	want := map[string]string{
		"Type": "notify", "User": "edged", "SupplementaryGroups": "dialout", "StateDirectory": "edged",
		"ConfigurationDirectory": "edged", "Restart": "on-failure", "RestartPreventExitStatus": "2",
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"ReadWritePaths": "/var/lib/edged", "WatchdogSec": "30s",
		"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX AF_NETLINK", "DevicePolicy": "closed",
		"ExecStart": "/usr/bin/edged run -c /etc/edged/edged.yaml", "LimitNOFILE": "65536",
		"ExecReload": "/bin/kill -HUP $MAINPID",
	}
	for k, v := range want {
		if got := u["Service"][k]; len(got) != 1 || got[0] != v {
			t.Errorf("[Service] %s = %q, want %q", k, got, v)
		}
	}
	// The memory limit is the config's memory_limit: a GOMEMLIMIT here would silently win over it.
	for _, e := range u["Service"]["Environment"] {
		if strings.Contains(e, "GOMEMLIMIT") {
			t.Errorf("[Service] Environment=%s overrides memory_limit: in the config", e)
		}
	}
	devs := strings.Join(u["Service"]["DeviceAllow"], ",")
	for _, d := range []string{"char-ttyUSB rw", "char-ttyACM rw"} {
		if !strings.Contains(devs, d) {
			t.Errorf("DeviceAllow lacks %q (has %s)", d, devs)
		}
	}
	if got := u["Install"]["WantedBy"]; len(got) != 1 || got[0] != "multi-user.target" {
		t.Errorf("[Install] WantedBy = %q", got)
	}

	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: checked by parsing only")
		return
	}
	// verify insists the executables exist: point them at a real one, keep everything else.
	b, _ := os.ReadFile(path)
	tmp := filepath.Join(t.TempDir(), "edged.service")
	if err := os.WriteFile(tmp, []byte(strings.ReplaceAll(string(b), "/usr/bin/edged", "/bin/true")), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, sa, "verify", "--man=no", tmp).CombinedOutput()
	// Unknown or misspelt directives are only warnings to systemd: treat any output as failure.
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

func TestShellScripts(t *testing.T) {
	sc := testutil.RequireCommand(t, "shellcheck")
	dir := filepath.Join(repo(t), "deploy", "arm")
	out, err := exec.Command(sc, "-s", "sh", filepath.Join(dir, "install.sh"), filepath.Join(dir, "postinst.sh"),
		filepath.Join(dir, "prerm.sh"), filepath.Join(dir, "postrm.sh")).CombinedOutput()
	if err != nil {
		t.Fatalf("shellcheck: %v\n%s", err, out)
	}
}

func TestInstallScriptIsIdempotent(t *testing.T) {
	script := filepath.Join(repo(t), "deploy", "arm", "install.sh")
	root := t.TempDir()
	fake := filepath.Join(t.TempDir(), "edged")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho edged fake\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func() string {
		t.Helper()
		cmd := exec.Command("sh", script, fake)
		cmd.Env = append(os.Environ(), "DESTDIR="+root)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("install.sh: %v\n%s", err, out)
		}
		return string(out)
	}
	run()
	for _, f := range []string{"usr/bin/edged", "etc/systemd/system/edged.service", "etc/edged/edged.yaml"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("install.sh did not install %s: %v", f, err)
		}
	}
	cfg := filepath.Join(root, "etc/edged/edged.yaml")
	if st, _ := os.Stat(cfg); st != nil && st.Mode().Perm() != 0o640 {
		t.Errorf("config mode %v, want 0640", st.Mode().Perm())
	}
	if err := os.WriteFile(cfg, []byte("# edited by the user\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if out := run(); !strings.Contains(out, "keeping the existing") {
		t.Errorf("second run did not report keeping the config:\n%s", out)
	}
	if b, _ := os.ReadFile(cfg); string(b) != "# edited by the user\n" {
		t.Errorf("install.sh overwrote the user's config: %q", b)
	}
}

// TestSystemdNotify runs edged as systemd would run the Type=notify unit: READY=1 after
// start-up, WATCHDOG=1 at half of WATCHDOG_USEC, STOPPING=1 on SIGTERM, then exit 0.
func TestSystemdNotify(t *testing.T) {
	bin := edgedBin(t)
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 256)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	cfg := fmt.Sprintf("data_dir: {data_dir}\nadmin: {address: {admin}}\nbroker:\n  listeners:\n    - {type: tcp, address: %s}\n", testutil.FreeAddr(t))
	d := testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: cfg, Argv: []string{bin}, Env: []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=200000"}, NoWait: true})
	next := func(want string) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case m, ok := <-msgs:
				if !ok {
					t.Fatalf("socket closed waiting for %s", want)
				}
				if strings.HasPrefix(m, want) {
					t.Logf("got %q", m)
					return
				}
			case <-deadline:
				t.Fatalf("no %s from edged", want)
			}
		}
	}
	next("READY=1")
	if err := testutil.HTTPGetOK("http://" + d.Admin + "/healthz"); err != nil {
		t.Errorf("READY=1 sent before /healthz answers: %v", err)
	}
	next("WATCHDOG=1")
	next("WATCHDOG=1")
	// Stop sends SIGTERM and waits for the exit; STOPPING=1 has been sent by then.
	if err := d.Stop(30 * time.Second); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	next("STOPPING=1")
}
