// Command edged is the gateway daemon and its operator CLI. It only wires packages together
// from the config; behaviour lives in broker, storage, bridge, hardware and wire.
//
// Exit codes (systemd's RestartPreventExitStatus=2 relies on them); main alone maps errors to
// them (exitError carries the code):
//
//	0 clean stop / success
//	1 runtime failure (storage cannot open, a listener cannot bind, ...)
//	2 usage or configuration error: restarting will not help
//	3 forced stop by a second signal or a shutdown that overran its deadline
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// Set by the build: -ldflags "-X main.version=... -X main.commit=... -X main.date=...".
// commit and date fall back to the VCS stamp Go embeds (see buildInfo).
var (
	version = "dev"
	commit  = ""
	date    = ""
)

const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	exitForced  = 3
)

// exitError is an error with the exit code main maps it to. reported means the message was
// already written (by the flag package or the daemon's logger), so main prints nothing more.
type exitError struct {
	code     int
	err      error
	reported bool
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

func usageError(format string, a ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, a...)}
}

// withCode returns err carrying code (nil stays nil).
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

// reported marks an exit code whose reason has already been printed.
func reported(code int) error {
	if code == exitOK {
		return nil
	}
	return &exitError{code: code, reported: true}
}

func main() {
	os.Exit(mainArgs(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// env is what a command may touch of the process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

// command is one `edged NAME` subcommand. The usage text, `edged -h`, the man page and the
// shell completions are all generated from this table, so they cannot drift from the code.
type command struct {
	name     string
	synopsis string   // what follows "edged NAME [flags]" in usage lines
	summary  string   // one line for the command list
	detail   string   // more text for -h and the man page (optional)
	words    []string // positional words offered by shell completion
	// setup declares the command's flags on fs and returns the function that runs it with the
	// positional arguments left after parsing. Generators call it only to read the flags.
	setup func(fs *flag.FlagSet, e *env) func(args []string) error
}

var commands []*command

func init() {
	// Assigned in init: the help and completion commands read the table themselves.
	commands = []*command{
		{name: "run", synopsis: "[-c FILE]", summary: "run the daemon (no -c: embedded defaults)", setup: setupRun,
			detail: "Runs in the foreground until SIGINT or SIGTERM (graceful stop; another signal more than a second later forces exit 3). SIGHUP reloads the config file (see reload)."},
		{name: "check", synopsis: "-c FILE", summary: "validate a config; exit 2 listing every problem as FILE:LINE: key: problem", setup: setupCheck},
		{name: "status", synopsis: "[-c FILE | -admin ADDR] [-json]", summary: "show a running daemon's health, connectors, outboxes and serial ports", setup: setupStatus,
			detail: "Asks the admin API of a running edged. The first line is the verdict: ok, or degraded with the reasons. -json prints the raw status document."},
		{name: "reload", synopsis: "[-c FILE | -admin ADDR]", summary: "make a running daemon re-read and apply its config file", setup: setupReload,
			detail: "POSTs /api/v1/reload and prints the report: what was applied, what needs a restart, or (exit 1) the FILE:LINE problems of a refused file, the old config still running. Same as SIGHUP."},
		{name: "outbox", synopsis: "[-c FILE | -data-dir DIR] stats [-json] | dlq list [OUTBOX] | dlq requeue OUTBOX --all|SEQ... | dlq purge OUTBOX",
			summary: "inspect outboxes and dead letters of a stopped edged", words: []string{"stats", "dlq", "list", "requeue", "purge"}, setup: setupOutbox,
			detail: "Works on the data dir of a stopped edged (the store is locked while it runs; use status then)."},
		{name: "passwd", synopsis: "[-cost N]", summary: "read a password, print its bcrypt hash for broker.users", setup: setupPasswd},
		{name: "ports", synopsis: "", summary: "list serial ports with USB VID/PID/serial number", setup: setupPorts},
		{name: "connectors", synopsis: "", summary: "list the connector types this build knows", setup: setupConnectors},
		{name: "cbor", synopsis: "decode [HEX | -f FILE | -]", summary: "print CBOR in diagnostic notation", words: []string{"decode"}, setup: setupCBOR},
		{name: "version", synopsis: "[-json]", summary: "print version, commit, build date, Go version and platform", setup: setupVersion},
		{name: "completion", synopsis: "bash|zsh", summary: "print a shell completion script", words: []string{"bash", "zsh"}, setup: setupCompletion},
		{name: "man", synopsis: "", summary: "print the edged(8) manual page (roff)", setup: setupMan},
	}
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// usageText is the top-level usage: one line per command.
func usageText() string {
	var b strings.Builder
	b.WriteString("edged — MQTT broker, offline store and cloud bridge for edge gateways\n\nusage:\n")
	width := 0
	lines := make([][2]string, 0, len(commands))
	for _, c := range commands {
		l := "edged " + c.name
		if c.synopsis != "" {
			l += " " + c.synopsis
		}
		if len(l) > 48 { // a long synopsis goes on its own line
			lines = append(lines, [2]string{l, ""}, [2]string{"", c.summary})
			continue
		}
		width = max(width, len(l))
		lines = append(lines, [2]string{l, c.summary})
	}
	for _, l := range lines {
		switch {
		case l[1] == "":
			fmt.Fprintf(&b, "  %s\n", l[0])
		default:
			fmt.Fprintf(&b, "  %-*s  %s\n", width, l[0], l[1])
		}
	}
	b.WriteString("\n`edged COMMAND -h` describes a command's flags.\n")
	return b.String()
}

// newFlagSet builds c's flag set; its Usage writes to the flag set's output.
func (c *command) newFlagSet(e *env) (*flag.FlagSet, func([]string) error) {
	fs := flag.NewFlagSet("edged "+c.name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	run := c.setup(fs, e)
	fs.Usage = func() {} // exec prints it: on stdout for -h, on stderr after a bad flag
	return fs, run
}

func (c *command) printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: edged %s %s\n  %s\n", c.name, c.synopsis, c.summary)
	if c.detail != "" {
		fmt.Fprintf(w, "\n%s\n", c.detail)
	}
	if hasFlags(fs) {
		fmt.Fprintln(w, "\nflags:")
		out := fs.Output()
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(out)
	}
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// flagNames lists fs's flags, sorted, with their leading dash.
func flagNames(fs *flag.FlagSet) []string {
	var out []string
	fs.VisitAll(func(f *flag.Flag) { out = append(out, "-"+f.Name) })
	sort.Strings(out)
	return out
}

// exec parses args (-h: usage on stdout, exit 0; unknown flag: exit 2) and runs c.
func (c *command) exec(args []string, e *env) error {
	fs, run := c.newFlagSet(e)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			c.printUsage(e.stdout, fs)
			return nil
		}
		c.printUsage(e.stderr, fs) // after flag's own line naming the bad flag
		return &exitError{code: exitUsage, err: err, reported: true}
	}
	return run(fs.Args())
}

func mainArgs(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText())
		return exitUsage
	}
	var err error
	name := args[0]
	switch name {
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usageText())
		return exitOK
	case "-version", "--version":
		name = "version"
	}
	c := lookup(name)
	if c == nil {
		fmt.Fprintf(stderr, "edged: unknown command %q\n\n%s", args[0], usageText())
		return exitUsage
	}
	err = c.exec(args[1:], e)
	return exitCode(err, "edged "+c.name, stderr)
}

// exitCode is the one place an error becomes an exit code (and, unless already reported, a
// line on stderr).
func exitCode(err error, prefix string, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	code := exitFailure
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
		if ee.reported {
			return code
		}
	}
	fmt.Fprintf(stderr, "%s: %v\n", prefix, err)
	return code
}
