package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edged-dev/edged/storage"
	"github.com/edged-dev/edged/wire"
)

const outboxUsage = `usage: edged outbox <command>   (works on a stopped edged's data dir)
  stats                               per outbox: depth, bytes, oldest age, drops, dead letters;
                                      per keep-latest store: topics, bytes, superseded
  dlq list [outbox]                   dead letters (all outboxes, or one)
  dlq requeue <outbox> --all | SEQ... move dead letters back to the end of the outbox
  dlq purge <outbox>                  delete the outbox's dead letters
`

// offlineWire reads whatever any configuration could have stored: the offline commands do not
// know the daemon's broker.max_packet_size, so they allow its largest (8MiB).
var offlineWire = wire.Limits{MaxPayload: 8 << 20}

// outboxCLI implements the dead-letter commands of `edged outbox` on dataDir (setupOutbox
// prints `stats` itself). It refuses (exit 1) while a daemon holds the data dir, never moves a
// corrupt store aside, and returns the exit code: 0 ok, 1 failure, 2 usage.
func outboxCLI(args []string, dataDir string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stderr, outboxUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	usage := func(msg string) int {
		fmt.Fprintf(stderr, "edged outbox: %s\n%s", msg, outboxUsage)
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "edged outbox: %v\n", err)
		return 1
	}
	switch {
	case args[0] == "dlq" && len(args) >= 2 && args[1] == "list" && len(args) <= 3:
	case args[0] == "dlq" && len(args) >= 3 && args[1] == "requeue":
	case args[0] == "dlq" && len(args) == 3 && args[1] == "purge":
	default:
		return usage(fmt.Sprintf("unknown or incomplete command %q", strings.Join(args, " ")))
	}
	var seqs []uint64
	if args[0] == "dlq" && args[1] == "requeue" {
		rest := args[3:]
		switch {
		case len(rest) == 1 && rest[0] == "--all":
		case len(rest) == 0:
			return usage("dlq requeue needs --all or sequence numbers")
		default:
			for _, a := range rest {
				n, err := strconv.ParseUint(a, 10, 64)
				if err != nil || n == 0 {
					return usage(fmt.Sprintf("bad sequence number %q", a))
				}
				seqs = append(seqs, n)
			}
		}
	}

	db, err := storage.Open(storage.Options{Dir: dataDir, NoRecover: true, Wire: offlineWire,
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if errors.Is(err, storage.ErrLocked) {
		return fail(fmt.Errorf("%w\n(the outbox commands work on a stopped edged; while it runs, use `edged status` or the admin API)", err))
	}
	if err != nil {
		return fail(err)
	}
	defer db.Close()

	find := func(name string) (*storage.Outbox, error) {
		for _, ob := range db.Outboxes() {
			if ob.Name() == name {
				return ob, nil
			}
		}
		var names []string
		for _, ob := range db.Outboxes() {
			names = append(names, ob.Name())
		}
		return nil, fmt.Errorf("no outbox %q in %s (outboxes: %s)", name, dataDir, strings.Join(names, ", "))
	}
	ctx := context.Background()

	switch {
	case args[1] == "list":
		obs := db.Outboxes()
		if len(args) == 3 {
			ob, err := find(args[2])
			if err != nil {
				return fail(err)
			}
			obs = []*storage.Outbox{ob}
		}
		tw := tabwriter.NewWriter(stdout, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "OUTBOX\tSEQ\tDEAD SINCE\tREASON\tTOPIC\tSIZE\tID")
		for _, ob := range obs {
			var after uint64
			for {
				dl, err := ob.DeadLetters(after, 1000)
				if err != nil {
					return fail(err)
				}
				if len(dl) == 0 {
					break
				}
				for _, d := range dl {
					topic, id := "?", "?"
					if d.Env != nil {
						topic, id = d.Env.Topic, d.Env.ID.String()
					} else if d.Err != nil {
						topic = "(" + d.Err.Error() + ")"
					}
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\t%s\n", ob.Name(), d.Seq, d.Time.UTC().Format(time.RFC3339), d.Reason, topic, d.Size, id)
				}
				after = dl[len(dl)-1].Seq
			}
		}
		tw.Flush()
		return 0
	case args[1] == "requeue":
		ob, err := find(args[2])
		if err != nil {
			return fail(err)
		}
		n, err := ob.Requeue(ctx, seqs...)
		fmt.Fprintf(stdout, "requeued %d dead letters of %s\n", n, ob.Name())
		if err != nil {
			return fail(err)
		}
		return 0
	default: // purge
		ob, err := find(args[2])
		if err != nil {
			return fail(err)
		}
		n, err := ob.PurgeDeadLetters(ctx)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(stdout, "purged %d dead letters of %s\n", n, ob.Name())
		return 0
	}
}
