package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// box is a Raspberry Pi-class budget for one process: a memory cgroup with a hard limit and a
// cpuset of one CPU. cgroup v2 is used when its memory and cpuset controllers are available,
// else cgroup v1's memory and cpuset hierarchies.
type box struct {
	v2       bool
	memDir   string // v1 memory cgroup, or the v2 cgroup
	cpuDir   string // v1 cpuset cgroup ("" on v2)
	limit    int64
	cpu      string
	describe string
}

const cgRoot = "/sys/fs/cgroup"

func writeFile(path, v string) error {
	if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// newBox creates the cgroup(s). It fails (and the section says why) where neither v1 nor v2
// can be created: not root, or the controllers are not mounted.
func newBox(name string, limit int64, cpu string) (*box, error) {
	b := &box{limit: limit, cpu: cpu}
	if ctl, err := os.ReadFile(filepath.Join(cgRoot, "cgroup.controllers")); err == nil &&
		strings.Contains(string(ctl), "memory") && strings.Contains(string(ctl), "cpuset") {
		b.v2, b.memDir = true, filepath.Join(cgRoot, name)
		_ = writeFile(filepath.Join(cgRoot, "cgroup.subtree_control"), "+memory +cpuset")
		if err := os.Mkdir(b.memDir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, err
		}
		for k, v := range map[string]string{"memory.max": strconv.FormatInt(limit, 10), "memory.swap.max": "0", "cpuset.cpus": cpu} {
			if err := writeFile(filepath.Join(b.memDir, k), v); err != nil && k != "memory.swap.max" {
				return nil, err
			}
		}
		b.describe = fmt.Sprintf("cgroup v2 %s: memory.max %d MiB, cpuset.cpus %s", b.memDir, limit>>20, cpu)
		return b, nil
	}
	mem, cs := filepath.Join(cgRoot, "memory"), filepath.Join(cgRoot, "cpuset")
	if _, err := os.Stat(filepath.Join(mem, "memory.limit_in_bytes")); err != nil {
		return nil, fmt.Errorf("no cgroup v1 memory controller at %s and no v2 memory+cpuset controllers", mem)
	}
	b.memDir, b.cpuDir = filepath.Join(mem, name), filepath.Join(cs, name)
	for _, d := range []string{b.memDir, b.cpuDir} {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, err
		}
	}
	// Reset the peak and failure counters of a cgroup left by an earlier run.
	_ = writeFile(filepath.Join(b.memDir, "memory.max_usage_in_bytes"), "0")
	if err := writeFile(filepath.Join(b.memDir, "memory.limit_in_bytes"), strconv.FormatInt(limit, 10)); err != nil {
		return nil, err
	}
	// No swap: a Pi's SD card is no place for it, and swap would hide the memory figure.
	_ = writeFile(filepath.Join(b.memDir, "memory.swappiness"), "0")
	mems, _ := os.ReadFile(filepath.Join(cs, "cpuset.mems"))
	if err := writeFile(filepath.Join(b.cpuDir, "cpuset.mems"), strings.TrimSpace(string(mems))); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(b.cpuDir, "cpuset.cpus"), cpu); err != nil {
		return nil, err
	}
	b.describe = fmt.Sprintf("cgroup v1: memory.limit_in_bytes %d MiB (swappiness 0), cpuset.cpus %s", limit>>20, cpu)
	return b, nil
}

// boxed wraps argv so the process enters the box before it execs (its pid is the shell's).
func boxed(in []*box, argv []string) []string {
	if len(in) == 0 || in[0] == nil {
		return argv
	}
	b := in[0]
	script := `echo $$ > "$1" && { [ -z "$2" ] || echo $$ > "$2"; } && shift 2 && exec "$@"`
	procs := filepath.Join(b.memDir, "cgroup.procs")
	cpus := ""
	if b.cpuDir != "" {
		cpus = filepath.Join(b.cpuDir, "cgroup.procs")
	}
	return append([]string{"/bin/sh", "-c", script, "sh", procs, cpus}, argv...)
}

func readInt(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	v, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return v
}

// peak is the cgroup's peak memory (page cache included: it is what the limit applies to).
func (b *box) peak() int64 {
	if b.v2 {
		return readInt(filepath.Join(b.memDir, "memory.peak"))
	}
	return readInt(filepath.Join(b.memDir, "memory.max_usage_in_bytes"))
}

// oomKills counts processes the kernel OOM-killed in the box.
func (b *box) oomKills() int64 {
	f := "memory.oom_control"
	if b.v2 {
		f = "memory.events"
	}
	raw, _ := os.ReadFile(filepath.Join(b.memDir, f))
	for _, l := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(l, " "); ok && k == "oom_kill" {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

func (b *box) remove() {
	for _, d := range []string{b.memDir, b.cpuDir} {
		if d != "" {
			_ = os.Remove(d)
		}
	}
}

type piResult struct {
	ingest, drainRate float64
	peakMB            float64
	ooms              int64
	lost              int
	err               error
}

// piRun is backlogRun inside a box: n messages in with the uplink down, then drained to a
// loopback mosquitto cloud (outside the box). A process killed in the box is reported as such.
func (b *bench) piRun(name string, n int) piResult {
	var r piResult
	bx, err := newBox("edged-bench-pi", 64<<20, "0")
	if err != nil {
		r.err = err
		return r
	}
	defer bx.remove()
	uplink := fmt.Sprintf("127.0.0.1:%d", freePort())
	rep := func(s string) string { return strings.ReplaceAll(s, "{uplink}", uplink) }
	var p *proc
	if name == "edged" {
		p, err = startEdged(b.edged, "edged", rep(edgedWithUplink), bx)
	} else {
		p, err = startMosquitto(b.mosq, "mosquitto", rep(mosqBridge), bx)
	}
	if err != nil {
		r.err = fmt.Errorf("start in the box: %w", err)
		return r
	}
	defer p.cleanup()
	r.ingest, err = ingest(p.addr, b.s.ingestPubs, n, 0, b.s.bsize)
	r.ooms = bx.oomKills()
	select {
	case <-p.done:
		r.err = fmt.Errorf("killed during ingest (%d OOM kill(s) in the box)", r.ooms)
		r.peakMB = float64(bx.peak()) / (1 << 20)
		return r
	default:
	}
	if err != nil {
		r.err = fmt.Errorf("ingest: %w", err)
		return r
	}
	cloud, err := startMosquitto(b.mosq, "cloud", mosqNoDelay)
	if err != nil {
		r.err = err
		return r
	}
	defer cloud.cleanup()
	sub, err := newSubscriber(cloud.addr, "cloud-sub", "bench/#", 1, n, false)
	if err != nil {
		r.err = err
		return r
	}
	defer sub.close()
	g, err := openGate(uplink, cloud.addr)
	if err != nil {
		r.err = err
		return r
	}
	defer g.close()
	sub.wait(60*time.Second, 20*time.Minute)
	sub.mu.Lock()
	got, first, last := sub.distinct, sub.first, sub.last
	sub.mu.Unlock()
	r.lost = n - got
	if got > 1 {
		r.drainRate = float64(got) / last.Sub(first).Seconds()
	}
	r.peakMB = float64(bx.peak()) / (1 << 20)
	r.ooms = bx.oomKills()
	return r
}

func (b *bench) piSection() string {
	n := b.s.piBacklog
	var w bytes.Buffer
	fmt.Fprintf(&w, "### Pi-class box: 1 CPU, 64 MiB memory cgroup, %d messages of %d B in (uplink down), then drained\n\n", n, b.s.bsize)
	if os.Geteuid() != 0 {
		fmt.Fprintf(&w, "Skipped: creating a cgroup needs root.\n")
		return w.String()
	}
	names := []string{}
	if b.edged != "" {
		names = append(names, "edged")
	}
	names = append(names, "mosquitto bridge")
	res := map[string]piResult{}
	for _, nm := range names {
		progress("pi box: %s, %d messages", nm, n)
		res[nm] = b.piRun(nm, n)
		if r := res[nm]; r.err != nil && nm == "edged" {
			b.fail("pi box on edged: %v", r.err)
		}
	}
	figureHeader(&w, names)
	// A broker that died in the box gets one row saying so (OOM kills counted), not its
	// error repeated in every cell.
	first := true
	row := func(label string, f func(r piResult) string) {
		fmt.Fprintf(&w, "| %s |", label)
		for _, nm := range names {
			r := res[nm]
			switch {
			case r.err != nil && first:
				fmt.Fprintf(&w, " failed (%d OOM kill(s) in the box): %s |", r.ooms, r.err)
			case r.err != nil:
				fmt.Fprintf(&w, " — |")
			default:
				fmt.Fprintf(&w, " %s |", f(r))
			}
		}
		fmt.Fprintf(&w, "\n")
		first = false
	}
	row("durable ingest, uplink down (msgs/s)", func(r piResult) string { return fmt.Sprintf("%.0f", r.ingest) })
	row("drain to the cloud (msgs/s)", func(r piResult) string { return fmt.Sprintf("%.0f", r.drainRate) })
	row("acked messages lost", func(r piResult) string { return fmt.Sprint(r.lost) })
	row("peak memory of the cgroup, page cache included (MB)", func(r piResult) string { return fmt.Sprintf("%.1f", r.peakMB) })
	row("OOM kills in the box", func(r piResult) string { return fmt.Sprint(r.ooms) })
	var desc string
	if bx, err := newBox("edged-bench-pi", 64<<20, "0"); err == nil {
		desc = bx.describe
		bx.remove()
	}
	fmt.Fprintf(&w, "\nThe broker process runs in %s; the load generator and the cloud run outside it. Same configurations as the table above.\n", desc)
	return w.String()
}
