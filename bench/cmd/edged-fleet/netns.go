package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Namespace names are prefixed so a stale run can be found and removed.
const (
	nsPrefix = "edgedfleet-"
	cloudNS  = nsPrefix + "cloud"
	cloudIP  = "10.250.0.1"
	bridgeIf = "fbr0"
)

func gwNS(i int) string   { return fmt.Sprintf("%sgw%d", nsPrefix, i) }
func gwIP(i int) string   { return fmt.Sprintf("10.250.%d.%d", 1+i/250, 1+i%250) }
func vethIf(i int) string { return fmt.Sprintf("fv%d", i) }

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// inNS runs a command inside a named namespace.
func inNS(ns string, args ...string) error {
	return run("ip", append([]string{"netns", "exec", ns}, args...)...)
}

// removeStale deletes namespaces left by an earlier, interrupted run.
func removeStale() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], nsPrefix) {
			_ = run("ip", "netns", "del", f[0])
		}
	}
}

// setupNetwork creates the cloud namespace with a bridge and one namespace per gateway, joined
// to the bridge by a veth pair. Only addresses inside these namespaces are used.
func setupNetwork(n int) error {
	if err := run("ip", "netns", "add", cloudNS); err != nil {
		return err
	}
	steps := [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "add", bridgeIf, "type", "bridge"},
		{"ip", "addr", "add", cloudIP + "/16", "dev", bridgeIf},
		{"ip", "link", "set", bridgeIf, "up"},
	}
	for _, s := range steps {
		if err := inNS(cloudNS, s...); err != nil {
			return err
		}
	}
	for i := 0; i < n; i++ {
		ns := gwNS(i)
		if err := run("ip", "netns", "add", ns); err != nil {
			return err
		}
		for _, s := range [][]string{
			{"ip", "link", "add", vethIf(i), "type", "veth", "peer", "name", "eth0", "netns", ns},
			{"ip", "link", "set", vethIf(i), "master", bridgeIf},
			{"ip", "link", "set", vethIf(i), "up"},
		} {
			if err := inNS(cloudNS, s...); err != nil {
				return err
			}
		}
		for _, s := range [][]string{
			{"ip", "link", "set", "lo", "up"},
			{"ip", "addr", "add", gwIP(i) + "/16", "dev", "eth0"},
			{"ip", "link", "set", "eth0", "up"},
		} {
			if err := inNS(ns, s...); err != nil {
				return err
			}
		}
	}
	return nil
}

// netemAvailable reports whether the kernel has the netem qdisc (packet loss); many container
// kernels do not.
func netemAvailable() bool {
	return inNS(gwNS(0), "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "loss", "1%") == nil &&
		inNS(gwNS(0), "tc", "qdisc", "del", "dev", "eth0", "root") == nil
}

// launch is the entry point in the root namespace: check, set up, re-run inside the cloud
// namespace, tear down.
func launch(args []string) int {
	o, err := parseOptions("edged-fleet", args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "edged-fleet:", err)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "edged-fleet: needs root (ip netns, veth, bridge)")
		return 2
	}
	for _, c := range []string{"ip", "nats-server", "mosquitto"} {
		if _, err := exec.LookPath(c); err != nil && c != "mosquitto" {
			fmt.Fprintf(os.Stderr, "edged-fleet: %s not found (apt-get install iproute2 nats-server mosquitto)\n", c)
			return 2
		}
	}
	if o.edged, err = filepath.Abs(o.edged); err != nil {
		fmt.Fprintln(os.Stderr, "edged-fleet:", err)
		return 2
	}
	if o.out != "" {
		if o.out, err = filepath.Abs(o.out); err != nil {
			fmt.Fprintln(os.Stderr, "edged-fleet:", err)
			return 2
		}
	}
	if o.workdir == "" {
		d, err := os.MkdirTemp("", "edged-fleet-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "edged-fleet:", err)
			return 1
		}
		defer os.RemoveAll(d)
		o.workdir = d
	}
	removeStale()
	defer removeStale()
	if err := setupNetwork(o.gateways); err != nil {
		fmt.Fprintln(os.Stderr, "edged-fleet: network:", err)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "edged-fleet:", err)
		return 1
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", cloudNS, self, "orchestrate"}, o.args()...)...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "edged-fleet:", err)
		return 1
	}
	return 0
}
