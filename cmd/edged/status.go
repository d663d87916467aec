package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/hardware"
	"github.com/edged-dev/edged/hardware/modbus"
	"github.com/edged-dev/edged/internal/admin"
	"github.com/edged-dev/edged/storage"
)

// statusDoc is the part of /api/v1/status the human report reads; -json passes the whole
// document through, so fields added to it reach scripts without a change here.
type statusDoc struct {
	Version       string                   `json:"version"`
	GatewayID     string                   `json:"gateway_id"`
	StartedAt     time.Time                `json:"started_at"`
	UptimeSeconds int64                    `json:"uptime_seconds"`
	DataDirBytes  *int64                   `json:"data_dir_bytes"`
	Broker        *broker.Status           `json:"broker"`
	Storage       *storageDoc              `json:"storage"`
	Connectors    []bridge.ConnectorStatus `json:"connectors"`
	Serial        []hardware.PortStatus    `json:"serial"`
	Health        *admin.Health            `json:"health"`
	Modbus        []modbus.BusStatus       `json:"modbus"`
	Reload        *reloadReport            `json:"reload"`            // reload.go
	Orphaned      []string                 `json:"orphaned_outboxes"` // reload.go
}

// storageDoc is storage.Stats as it travels in JSON (the outboxes' age in seconds).
type storageDoc struct {
	storage.Stats
	Outboxes []outboxDoc `json:"outboxes"`
}

type outboxDoc struct {
	storage.OutboxStats
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
}

func (o outboxDoc) age() time.Duration {
	return time.Duration(o.OldestAgeSeconds * float64(time.Second))
}

func setupStatus(fs *flag.FlagSet, e *env) func([]string) error {
	cfgPath := fs.String("c", "", "config file (to find the admin address)")
	addr := fs.String("admin", "", "admin address (default from config, else 127.0.0.1:9100)")
	raw := fs.Bool("json", false, "print the raw JSON status document")
	return func(args []string) error {
		if err := noArgs("status", args); err != nil {
			return err
		}
		a, token := *addr, ""
		if a == "" || *cfgPath != "" {
			cfg, err := loadConfig(*cfgPath)
			if err != nil {
				return err
			}
			if a == "" {
				a = cfg.Admin.Address
			}
			if a == "" {
				return errNoAdmin
			}
			// With a token file the admin API wants the token; edged status reads it the
			// same way the daemon does and never prints it.
			if cfg.Admin.TokenFile != "" {
				if token, err = admin.LoadToken(cfg.Admin.TokenFile); err != nil {
					return err
				}
			}
		}
		body, err := admin.Get("http://"+a+"/api/v1/status", token)
		if err != nil {
			return fmt.Errorf("is edged running? %w", err)
		}
		if *raw {
			_, err = e.stdout.Write(body)
			return err
		}
		var doc statusDoc
		if err := json.Unmarshal(body, &doc); err != nil {
			return fmt.Errorf("bad answer from %s: %w", a, err)
		}
		printStatus(e.stdout, &doc, time.Now())
		return nil
	}
}

func printStatus(w io.Writer, d *statusDoc, now time.Time) {
	// The verdict is the daemon's own (admin.Verdict), the same one the dashboard shows.
	switch h := d.Health; {
	case h == nil:
		fmt.Fprintln(w, "health: not reported by this edged")
	case len(h.Reasons) == 0:
		fmt.Fprintln(w, h.Verdict)
	default:
		fmt.Fprintf(w, "%s: %s\n", h.Verdict, strings.Join(h.Reasons, "; "))
	}
	up := time.Duration(d.UptimeSeconds) * time.Second
	fmt.Fprintf(w, "edged %s, gateway %s, up %s", d.Version, d.GatewayID, age(up))
	if !d.StartedAt.IsZero() {
		fmt.Fprintf(w, " (since %s)", d.StartedAt.UTC().Format("2006-01-02 15:04:05 UTC"))
	}
	fmt.Fprintln(w)

	if b := d.Broker; b != nil {
		fmt.Fprintln(w, "\nbroker")
		tw := newTable(w)
		fmt.Fprintln(tw, "  LISTENER\tCONFIGURED\tBOUND")
		for _, l := range b.Listeners {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", l.Type, l.Address, orDash(l.Bound))
		}
		tw.Flush()
		if len(b.Listeners) == 0 {
			fmt.Fprintln(w, "  no listeners configured")
		}
		fmt.Fprintf(w, "  clients %s connected, %s sessions, %s subscriptions, %s retained, %s in flight\n",
			humanize.Comma(b.ClientsConnected), humanize.Comma(b.Sessions), humanize.Comma(b.Subscriptions), humanize.Comma(b.Retained), humanize.Comma(b.Inflight))
		fmt.Fprintf(w, "  messages %s received (%s), %s sent (%s), %s dropped, %s capture failures\n",
			humanize.Comma(b.MessagesReceived), humanize.IBytes(uint64(max(b.BytesReceived, 0))), humanize.Comma(b.MessagesSent),
			humanize.IBytes(uint64(max(b.BytesSent, 0))), humanize.Comma(b.MessagesDropped), humanize.Comma(b.CaptureFailures))
		if b.BackpressureWaits > 0 || b.BackpressureTimeouts > 0 {
			fmt.Fprintf(w, "  backpressure %s waits, %s timed out\n", humanize.Comma(b.BackpressureWaits), humanize.Comma(b.BackpressureTimeouts))
		}
	}

	if printSection(w, "connectors", "connectors", "  NAME\tTYPE\tSTATE\tFOR\tBACKLOG\tSIZE\tOLDEST\tDEAD\tSENT/S\tSENT\tFAILED\tRECONNECTS\tDOWNLINK",
		len(d.Connectors), func(tw io.Writer, i int) {
			c := d.Connectors[i]
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, c.Type, c.State, since(c.Since, now),
				humanize.Comma(c.Depth), humanize.IBytes(uint64(max(c.Bytes, 0))), oldest(c.Depth, time.Duration(c.OldestAgeSeconds*float64(time.Second))),
				humanize.Comma(c.DeadLetterDepth), rate(c.SentRate), humanize.Comma(int64(c.Sent)), humanize.Comma(int64(c.Failed)),
				humanize.Comma(int64(c.Reconnects)), humanize.Comma(int64(c.Downlink)))
		}) {
		printDelivery(w, d.Connectors)
		for _, c := range d.Connectors {
			printTraffic(w, c)
		}
		for _, c := range d.Connectors {
			if c.LastError != "" {
				fmt.Fprintf(w, "  %s: last error %s: %s\n", c.Name, since(c.LastErrorAt, now)+" ago", c.LastError)
			}
		}
	}

	if s := d.Storage; s != nil {
		fmt.Fprintln(w, "\nstorage")
		printOutboxes(w, s.Outboxes, true)
		printStore(w, &s.Stats, d.DataDirBytes, true)
	}
	printReload(w, d, now) // reload.go

	if printSection(w, "serial", "serial ports", "  NAME\tPATH\tSTATE\tFOR\tFRAMES IN\tFRAMES OUT\tIN\tOUT\tINVALID\tDROPPED\tQUEUED\tREOPENS",
		len(d.Serial), func(tw io.Writer, i int) {
			p := d.Serial[i]
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", p.Name, p.Path, p.State, since(p.Since, now),
				humanize.Comma(int64(p.FramesIn)), humanize.Comma(int64(p.FramesOut)), humanize.IBytes(p.BytesIn), humanize.IBytes(p.BytesOut),
				humanize.Comma(int64(p.Invalid)), humanize.Comma(int64(p.Dropped)), p.Queued, humanize.Comma(int64(p.Reopens)))
		}) {
		for _, p := range d.Serial {
			if p.LastError != "" {
				fmt.Fprintf(w, "  %s: last error: %s\n", p.Name, p.LastError)
			}
		}
	}
	printModbus(w, d.Modbus, now)
}

// printSection writes a section of the status: its title, then a table of the header and n
// rows, or "no WHAT configured" when there are none. It reports whether it wrote a table.
func printSection(w io.Writer, title, what, header string, n int, row func(tw io.Writer, i int)) bool {
	fmt.Fprintln(w, "\n"+title)
	if n == 0 {
		fmt.Fprintf(w, "  no %s configured\n", what)
		return false
	}
	tw := newTable(w)
	fmt.Fprintln(tw, header)
	for i := range n {
		row(tw, i)
	}
	tw.Flush()
	return true
}

// printModbus prints one line a bus and one a unit; nothing when no bus is configured.
func printModbus(w io.Writer, buses []modbus.BusStatus, now time.Time) {
	if len(buses) == 0 {
		return
	}
	fmt.Fprintln(w, "\nmodbus")
	tw := newTable(w)
	fmt.Fprintln(tw, "  BUS/UNIT\tPATH\tSTATE\tFOR\tPOLLS\tPUBLISHED\tTIMEOUTS\tCRC ERRORS\tEXCEPTIONS\tQUEUED")
	for _, b := range buses {
		fmt.Fprintf(tw, "  %s (%s)\t%s\t%s\t%s\t%s\t%s\t\t\t\t%d\n", b.Name, b.Kind, b.Path, b.State, since(b.Since, now),
			humanize.Comma(int64(b.Requests)), humanize.Comma(int64(b.Published)), b.Queued)
		for _, u := range b.Units {
			var exc uint64
			for _, n := range u.Exceptions {
				exc += n
			}
			fmt.Fprintf(tw, "    %s (id %d)\t\t%s\t\t%s\t%s\t%s\t%s\t%s\t\n", u.Name, u.ID, u.State,
				humanize.Comma(int64(u.Polls)), humanize.Comma(int64(u.Published)), humanize.Comma(int64(u.Timeouts)),
				humanize.Comma(int64(u.CRCErrors)), humanize.Comma(int64(exc)))
		}
	}
	tw.Flush()
	for _, b := range buses {
		if b.LastError != "" {
			fmt.Fprintf(w, "  %s: last error: %s\n", b.Name, b.LastError)
		}
	}
}

// printOutboxes prints the outbox table; limits only from a running daemon (a stopped one's
// store does not know which connectors are configured, nor their limits).
func printOutboxes(w io.Writer, obs []outboxDoc, live bool) {
	if len(obs) == 0 {
		fmt.Fprintln(w, "  no outboxes (no connector has stored anything)")
		return
	}
	tw := newTable(w)
	header := "  OUTBOX\tDEPTH\tSIZE\tOLDEST\tDEAD LETTERS\tDROPPED max_bytes/max_messages/ttl\tREJECTED"
	if live {
		header += "\tLIMITS"
	}
	fmt.Fprintln(tw, header)
	for _, o := range obs {
		limits := ""
		if live {
			limits = fmt.Sprintf("\t%s, %s msgs, %s, %s", humanize.IBytes(uint64(o.Limits.MaxBytes)), humanize.Comma(o.Limits.MaxMessages), age(o.Limits.TTL), o.Limits.WhenFull)
			if !o.Configured {
				limits = "\tnot configured (left from an old config)"
			}
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s (%s)\t%s/%s/%s\t%s%s\n", o.Name, humanize.Comma(o.Depth), humanize.IBytes(uint64(max(o.Bytes, 0))),
			oldest(o.Depth, o.age()), humanize.Comma(o.DLQDepth), humanize.IBytes(uint64(max(o.DLQBytes, 0))),
			humanize.Comma(int64(o.Drops[storage.ReasonMaxBytes])), humanize.Comma(int64(o.Drops[storage.ReasonMaxMessages])), humanize.Comma(int64(o.Drops[storage.ReasonTTL])),
			humanize.Comma(int64(o.Rejected)), limits)
	}
	tw.Flush()
}

// printKeepLatest lists keep-latest stores: one message per topic waits, so DEPTH counts
// topics, and a newer message of a topic drops the waiting one (superseded).
func printKeepLatest(w io.Writer, ls []storage.OutboxStats) {
	if len(ls) == 0 {
		return
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "  KEEP-LATEST STORE\tTOPICS\tSIZE\tDEAD LETTERS\tSUPERSEDED\tEXPIRED (ttl)")
	for _, l := range ls {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", l.Name, humanize.Comma(l.Depth), humanize.IBytes(uint64(max(l.Bytes, 0))),
			humanize.Comma(l.DLQDepth), humanize.Comma(int64(l.Drops[storage.ReasonSuperseded])), humanize.Comma(int64(l.Drops[storage.ReasonTTL])))
	}
	tw.Flush()
}

// printStore: onDisk is the data dir's size when known (nil: badger's estimate alone); live
// says the figures are the daemon's (bytes written since it started).
func printStore(w io.Writer, s *storage.Stats, onDisk *int64, live bool) {
	free := "unknown"
	if s.DiskFree >= 0 {
		free = humanize.IBytes(uint64(s.DiskFree))
	}
	if onDisk != nil {
		fmt.Fprintf(w, "  store %s on disk", humanize.IBytes(uint64(max(*onDisk, 0))))
	} else {
		fmt.Fprintf(w, "  store %s on disk (badger's estimate)", humanize.IBytes(uint64(max(s.LSMBytes+s.VlogBytes, 0))))
	}
	fmt.Fprintf(w, ", disk free %s", free)
	if live && s.BytesWritten > 0 {
		fmt.Fprintf(w, ", %s written since start", humanize.IBytes(s.BytesWritten))
	}
	fmt.Fprintln(w)
	if s.Commits > 0 {
		fmt.Fprintf(w, "  %s commits carrying %s operations\n", humanize.Comma(int64(s.Commits)), humanize.Comma(int64(s.CommittedOps)))
	}
	if s.MovedAside != "" {
		fmt.Fprintf(w, "  a corrupt store was moved aside to %s\n", s.MovedAside)
	}
	if s.Salvage != nil {
		fmt.Fprintf(w, "  salvaged from %s: %s records copied, %s lost, %s corrupt (in the dead letters)\n", s.Salvage.From,
			humanize.Comma(s.Salvage.Copied), humanize.Comma(s.Salvage.Lost), humanize.Comma(s.Salvage.Corrupt))
	}
	if sp := s.Space; sp.Health != "" && sp.Health != "ok" {
		fmt.Fprintf(w, "  space: %s\n", sp.Health)
	}
	for kind, n := range s.Space.Repairs {
		fmt.Fprintf(w, "  repaired at start: %d %s\n", n, strings.ReplaceAll(kind, "_", " "))
	}
}

func newTable(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 2, 8, 2, ' ', 0) }

// age renders a duration the way a person reads it: 850ms, 42s, 3m12s, 5h4m, 2d3h.
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "-"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
	}
}

func since(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return age(now.Sub(t))
}

func oldest(depth int64, d time.Duration) string {
	if depth == 0 {
		return "-"
	}
	return age(d)
}

// rate rounds a messages-per-second figure to what the eye needs.
func rate(r float64) string {
	switch {
	case r <= 0 || math.IsNaN(r):
		return "0"
	case r < 10:
		return fmt.Sprintf("%.1f", r)
	default:
		return humanize.Comma(int64(math.Round(r)))
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// setupOutbox: `outbox stats` is printed here from storage's data (DB.Stats); the dead-letter
// commands are outboxCLI's (outbox.go).
func setupOutbox(fs *flag.FlagSet, e *env) func([]string) error {
	cfgPath := fs.String("c", "", "config file (to find data_dir)")
	dataDir := fs.String("data-dir", "", "data directory (default from config, else ./data)")
	return func(args []string) error {
		dir := *dataDir
		if dir == "" {
			cfg, err := loadConfig(*cfgPath)
			if err != nil {
				return err
			}
			dir = cfg.DataDir
		}
		if len(args) > 0 && args[0] == "stats" {
			sfs := flag.NewFlagSet("edged outbox stats", flag.ContinueOnError)
			sfs.SetOutput(e.stderr)
			raw := sfs.Bool("json", false, "print the raw JSON statistics")
			if err := sfs.Parse(args[1:]); err != nil {
				if errors.Is(err, flag.ErrHelp) {
					sfs.SetOutput(e.stdout)
					fmt.Fprintln(e.stdout, "usage: edged outbox [-c FILE | -data-dir DIR] stats [-json]")
					sfs.PrintDefaults()
					return nil
				}
				return &exitError{code: exitUsage, err: err, reported: true}
			}
			if err := noArgs("outbox stats", sfs.Args()); err != nil {
				return err
			}
			return outboxStats(dir, *raw, e)
		}
		return reported(outboxCLI(args, dir, e.stdout, e.stderr))
	}
}

func outboxStats(dir string, raw bool, e *env) error {
	db, err := storage.Open(storage.Options{Dir: dir, NoRecover: true, Wire: offlineWire,
		Logger: slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if errors.Is(err, storage.ErrLocked) {
		return fmt.Errorf("%w\n(the outbox commands work on a stopped edged; while it runs, use `edged status`)", err)
	}
	if err != nil {
		return err
	}
	defer db.Close()
	s := db.Stats()
	// Keep-latest lanes (rules with keep_latest) are stores of their own, one message per
	// topic: the daemon shows them among a connector's lanes; offline they are listed here.
	var latest []storage.OutboxStats
	names, err := db.LatestNames()
	if err != nil {
		return fmt.Errorf("list keep-latest stores: %w", err)
	}
	for _, name := range names {
		lt, err := db.Latest(name, 0) // ttl only matters to a daemon expiring messages
		if err != nil {
			return err
		}
		latest = append(latest, lt.Stats())
	}
	if raw {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			storage.Stats
			KeepLatest []storage.OutboxStats `json:"keep_latest"`
		}{s, latest})
	}
	// Through JSON, as the status report gets it, so both print the same figures.
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	var doc storageDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return err
	}
	// The daemon's verdict rules, on the store alone.
	if h := admin.Verdict(nil, nil, s); len(h.Reasons) == 0 {
		fmt.Fprintln(e.stdout, h.Verdict)
	} else {
		fmt.Fprintf(e.stdout, "%s: %s\n", h.Verdict, strings.Join(h.Reasons, "; "))
	}
	fmt.Fprintf(e.stdout, "store %s\n", dir)
	printOutboxes(e.stdout, doc.Outboxes, false)
	printKeepLatest(e.stdout, latest)
	size := dirSize(dir)
	printStore(e.stdout, &doc.Stats, &size, false)
	return nil
}

// printDelivery prints each connector's endpoint and delivery figures (quantiles over the
// daemon's last five minutes).
func printDelivery(w io.Writer, cs []bridge.ConnectorStatus) {
	tw := newTable(w)
	fmt.Fprintln(tw, "  NAME\tENDPOINT\tLATENCY p50/p99\tROUND TRIP p50/p99\tOVER\tBYTES OUT\tFAILURES")
	for _, c := range cs {
		ep := orDash(c.Endpoint)
		if c.Endpoints > 1 {
			ep = fmt.Sprintf("%s [%d/%d, %s failovers]", ep, c.EndpointIndex+1, c.Endpoints, humanize.Comma(int64(c.Failovers)))
		}
		d := c.Delivery
		lat, rtt := "-", "-"
		if d.WindowMessages > 0 {
			lat = fmt.Sprintf("%s / %s", msDur(d.LatencyP50Ms), msDur(d.LatencyP99Ms))
			rtt = fmt.Sprintf("%s / %s", msDur(d.RoundTripP50Ms), msDur(d.RoundTripP99Ms))
		}
		var fails []string
		for _, k := range []string{bridge.ClassNetwork, bridge.ClassAuth, bridge.ClassThrottled, bridge.ClassRejected, bridge.ClassRedirect} {
			if n := d.FailuresByClass[k]; n > 0 {
				fails = append(fails, fmt.Sprintf("%s %s", k, humanize.Comma(int64(n))))
			}
		}
		if len(fails) == 0 {
			fails = []string{"none"}
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s msgs/5m\t%s\t%s\n", c.Name, ep, lat, rtt, humanize.Comma(int64(d.WindowMessages)),
			humanize.IBytes(d.BytesSent), strings.Join(fails, ", "))
	}
	tw.Flush()
}

// msDur renders milliseconds like age does, with sub-millisecond precision kept.
func msDur(v float64) string {
	d := time.Duration(v * float64(time.Millisecond))
	if d < time.Millisecond {
		return d.Round(time.Microsecond).String()
	}
	return age(d)
}

// printTraffic shows a connector's lanes and uplink rate when traffic control is in use (more
// than one lane, or a bandwidth cap): one line, the lanes in drain order.
func printTraffic(w io.Writer, c bridge.ConnectorStatus) {
	t := c.Traffic
	if len(t.Lanes) <= 1 && t.RateLimit == 0 {
		return
	}
	fmt.Fprintf(w, "  %s: uplink %s/s", c.Name, humanize.IBytes(uint64(t.UplinkRate)))
	if t.RateLimit > 0 {
		fmt.Fprintf(w, " of %s/s cap", humanize.IBytes(uint64(t.RateLimit)))
	}
	if t.DrainSeconds > 0 {
		fmt.Fprintf(w, ", backlog drains in ~%s", time.Duration(t.DrainSeconds*float64(time.Second)).Round(time.Second))
	}
	fmt.Fprint(w, "; lanes")
	for _, l := range t.Lanes {
		fmt.Fprintf(w, " %s %s", l.Name, humanize.Comma(l.Depth))
		if l.Depth > 0 && l.OldestAgeSeconds > 0 {
			fmt.Fprintf(w, " (oldest %s)", oldest(l.Depth, time.Duration(l.OldestAgeSeconds*float64(time.Second))))
		}
	}
	fmt.Fprintln(w)
}
