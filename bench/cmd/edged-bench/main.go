// Command edged-bench runs edged and mosquitto side by side on loopback ports, drives both
// with the same load generator and prints a Markdown table (`make bench`, bench/RESULTS.md).
//
// Figures: local fan-in throughput and latency (QoS 0 and 1), durable QoS 1 ingest with the
// uplink down, drain of the backlog once the uplink returns, memory at a backlog of 0 / 100k
// / 1M, and CBOR vs JSON envelope bytes on the wire corpus. Each figure is the median of
// several runs; BENCH_QUICK=1 does one short run of each (under a minute).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// Markers of the fleet soak's section in the results file.
const (
	fleetStart = "<!-- fleet:start -->"
	fleetEnd   = "<!-- fleet:end -->"
)

type settings struct {
	quick      bool
	runs       int // runs of each fan-in figure
	bruns      int // runs of the backlog figures
	pubs       int
	perPub0    int // QoS 0 messages per publisher
	perPub1    int // QoS 1 messages per publisher
	size       int // fan-in payload bytes
	ingestPubs int
	backlog    int
	bigBacklog int   // memory at a large backlog (full run only; 0 skips)
	piBacklog  int   // messages through the Pi-class box
	bsize      int   // backlog payload bytes
	pacedRates []int // msgs/s, all publishers together, of the latency-at-load rows
	pacedN     int   // messages of a paced run at the first rate; other rates run as long
}

func main() {
	edged := flag.String("edged", "bin/edged", "edged binary (\"\" runs mosquitto alone)")
	mosq := flag.String("mosquitto", "", "mosquitto binary (default: from PATH or /usr/sbin)")
	out := flag.String("o", "", "also write the table to this file")
	corpus := flag.String("corpus", "wire/testdata/corpus", "wire corpus for the CBOR/JSON figure")
	only := flag.String("only", "", "comma-separated subset: fanin (includes gap),gap,backlog,pi,wire")
	relayAddr := flag.String("relay", "", "internal: serve as the latency-floor relay on this address")
	relayMode := flag.String("relay-mode", relayDirect, "internal: relay mode, direct or queue")
	mochiAddr := flag.String("mochi", "", "internal: serve as the bare mochi-mqtt latency floor on this address")
	flag.Parse()
	if *mochiAddr != "" {
		err := runBareMochi(*mochiAddr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "edged-bench mochi:", err)
			os.Exit(1)
		}
		return
	}
	if *relayAddr != "" {
		fmt.Fprintln(os.Stderr, "edged-bench relay:", runRelay(*relayAddr, *relayMode))
		os.Exit(1)
	}

	s := settings{runs: 3, bruns: 3, pubs: 4, perPub0: 250_000, perPub1: 50_000, size: 100,
		ingestPubs: 8, backlog: 100_000, bigBacklog: 1_000_000, piBacklog: 1_000_000, bsize: 200, pacedRates: []int{10_000, 50_000}, pacedN: 50_000}
	if q := os.Getenv("BENCH_QUICK"); q != "" && q != "0" {
		s = settings{quick: true, runs: 1, bruns: 1, pubs: 4, perPub0: 25_000, perPub1: 10_000, size: 100,
			ingestPubs: 8, backlog: 100_000, piBacklog: 100_000, bsize: 200, pacedRates: []int{10_000, 50_000}, pacedN: 10_000}
	}
	if *mosq == "" {
		*mosq = lookMosquitto()
	}
	if *edged != "" {
		if _, err := os.Stat(*edged); err != nil {
			fmt.Fprintf(os.Stderr, "edged-bench: %v (build it with `make build`, or -edged \"\")\n", err)
			os.Exit(1)
		}
	}
	want := func(name string) bool { return *only == "" || strings.Contains(","+*only+",", ","+name+",") }

	b := &bench{s: s, edged: *edged, mosq: *mosq}
	var sections []string
	if want("fanin") {
		sections = append(sections, b.fanInSection())
	}
	if want("fanin") || want("gap") {
		sections = append(sections, b.gapSection())
	}
	if want("backlog") {
		sections = append(sections, b.backlogSection())
	}
	if want("pi") {
		sections = append(sections, b.piSection())
	}
	if want("wire") {
		sections = append(sections, wireSection(*corpus))
	}
	var doc bytes.Buffer
	doc.WriteString(header(s, *edged, *mosq))
	for _, sec := range sections {
		doc.WriteString("\n" + sec)
	}
	if len(b.notes) > 0 {
		doc.WriteString("\nNotes:\n")
		for _, n := range b.notes {
			doc.WriteString("- " + n + "\n")
		}
	}
	os.Stdout.Write(doc.Bytes())
	if *out != "" {
		// The fleet soak (`make soak-fleet`) writes its own section; a bench run keeps it.
		if old, err := os.ReadFile(*out); err == nil {
			if i := bytes.Index(old, []byte(fleetStart)); i >= 0 {
				if j := bytes.Index(old[i:], []byte(fleetEnd)); j >= 0 {
					doc.WriteString("\n")
					doc.Write(old[i : i+j+len(fleetEnd)])
					doc.WriteString("\n")
				}
			}
		}
		if err := os.WriteFile(*out, doc.Bytes(), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "edged-bench:", err)
			os.Exit(1)
		}
	}
	if b.failed {
		os.Exit(1)
	}
}

func lookMosquitto() string {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	fmt.Fprintln(os.Stderr, "edged-bench: mosquitto not found: apt-get install mosquitto")
	os.Exit(1)
	return ""
}

type bench struct {
	s      settings
	edged  string
	mosq   string
	notes  []string
	failed bool
}

func (b *bench) note(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	b.notes = append(b.notes, msg)
	fmt.Fprintln(os.Stderr, "edged-bench:", msg)
}

func (b *bench) fail(format string, a ...any) {
	b.failed = true
	b.note("FAILED: "+format, a...)
}

func progress(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "edged-bench: "+format+"\n", a...)
}

func header(s settings, edged, mosq string) string {
	var w bytes.Buffer
	mode := "full run"
	if s.quick {
		mode = "quick run (BENCH_QUICK=1)"
	}
	fmt.Fprintf(&w, "## edged vs mosquitto (`make bench`, %s)\n\n", mode)
	fmt.Fprintf(&w, "| | |\n| --- | --- |\n")
	fmt.Fprintf(&w, "| machine | %d cores, %s, %s/%s |\n", runtime.NumCPU(), cpuModel(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(&w, "| edged | %s |\n", edgedVersion(edged))
	fmt.Fprintf(&w, "| mosquitto | %s |\n", mosquittoVersion(mosq))
	fmt.Fprintf(&w, "| Go | %s |\n", runtime.Version())
	fmt.Fprintf(&w, "| date | %s |\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	return w.String()
}

// figureHeader writes the head of a results table: a "figure" column, then one right-aligned
// column for each name.
func figureHeader(w *bytes.Buffer, cols []string) {
	fmt.Fprintf(w, "| figure |")
	for _, c := range cols {
		fmt.Fprintf(w, " %s |", c)
	}
	fmt.Fprintf(w, "\n| --- |")
	for range cols {
		fmt.Fprintf(w, " ---: |")
	}
	fmt.Fprintf(w, "\n")
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func edgedVersion(bin string) string {
	git, _ := exec.Command("git", "describe", "--tags", "--always", "--dirty").Output()
	checkout := "checkout " + strings.TrimSpace(string(git))
	if bin == "" {
		return "not run (" + checkout + ")"
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		return fmt.Sprintf("%s: `edged version` failed: %v (%s)", bin, err, checkout)
	}
	return strings.TrimSpace(firstLine(string(out))) + " (" + checkout + ")"
}

func mosquittoVersion(bin string) string {
	out, _ := exec.Command(bin, "-h").CombinedOutput()
	return strings.TrimSpace(firstLine(string(out)))
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
