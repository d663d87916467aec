package main

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/term"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/hardware"
	"github.com/edged-dev/edged/internal/config"
	"github.com/edged-dev/edged/wire"
)

// noArgs refuses positional arguments of a command that takes none.
func noArgs(name string, args []string) error {
	if len(args) > 0 {
		return usageError("unexpected argument %q (see edged %s -h)", args[0], name)
	}
	return nil
}

func setupCheck(fs *flag.FlagSet, e *env) func([]string) error {
	cfgPath := fs.String("c", "", "config file to validate")
	return func(args []string) error {
		if err := noArgs("check", args); err != nil {
			return err
		}
		if *cfgPath == "" {
			return usageError("-c FILE is required")
		}
		if _, err := config.Load(*cfgPath); err != nil {
			// config errors are FILE:LINE: key: problem lines, printed as they are.
			fmt.Fprintln(e.stderr, err)
			return reported(exitUsage)
		}
		fmt.Fprintf(e.stdout, "%s: ok\n", *cfgPath)
		return nil
	}
}

func setupPasswd(fs *flag.FlagSet, e *env) func([]string) error {
	cost := fs.Int("cost", bcrypt.DefaultCost, "bcrypt cost (10 costs ~60 ms per login on a Pi 4)")
	return func(args []string) error {
		if err := noArgs("passwd", args); err != nil {
			return err
		}
		var pw []byte
		if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			fmt.Fprint(e.stderr, "password: ")
			p1, err := term.ReadPassword(int(f.Fd()))
			fmt.Fprintln(e.stderr)
			if err != nil {
				return fmt.Errorf("read password: %w", err)
			}
			fmt.Fprint(e.stderr, "again: ")
			p2, err := term.ReadPassword(int(f.Fd()))
			fmt.Fprintln(e.stderr)
			if err != nil || string(p1) != string(p2) {
				return errors.New("passwords do not match")
			}
			pw = p1
		} else {
			line, err := bufio.NewReader(e.stdin).ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read password: %w", err)
			}
			pw = []byte(strings.TrimRight(line, "\r\n"))
		}
		if len(pw) == 0 {
			return usageError("empty password")
		}
		h, err := bcrypt.GenerateFromPassword(pw, *cost)
		if err != nil {
			return withCode(exitUsage, err)
		}
		fmt.Fprintln(e.stdout, string(h))
		return nil
	}
}

func setupPorts(_ *flag.FlagSet, e *env) func([]string) error {
	return func(args []string) error {
		if err := noArgs("ports", args); err != nil {
			return err
		}
		ports, err := hardware.ListPorts()
		if err != nil {
			return err
		}
		return printPorts(e.stdout, ports)
	}
}

func setupConnectors(_ *flag.FlagSet, e *env) func([]string) error {
	return func(args []string) error {
		if err := noArgs("connectors", args); err != nil {
			return err
		}
		for _, t := range bridge.Types() {
			fmt.Fprintf(e.stdout, "%-12s %s\n", t.Name, t.Description)
		}
		return nil
	}
}

func setupCBOR(fs *flag.FlagSet, e *env) func([]string) error {
	file := fs.String("f", "", "read CBOR (raw or hex text) from FILE")
	return func(args []string) error {
		if len(args) == 0 || args[0] != "decode" {
			return usageError("usage: edged cbor decode [HEX | -f FILE | - (stdin)]")
		}
		// Flags may also follow the word decode: `edged cbor decode -f FILE`.
		sub := flag.NewFlagSet("edged cbor decode", flag.ContinueOnError)
		sub.SetOutput(e.stderr)
		sub.StringVar(file, "f", *file, "read CBOR (raw or hex text) from FILE")
		if err := sub.Parse(args[1:]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintln(e.stdout, "usage: edged cbor decode [HEX | -f FILE | - (stdin)]")
				return nil
			}
			return &exitError{code: exitUsage, err: err, reported: true}
		}
		var in []byte
		var err error
		switch {
		case *file != "":
			in, err = os.ReadFile(*file)
			in = wire.ParseHexOrRaw(in)
		case sub.NArg() > 0 && sub.Arg(0) != "-":
			// An argument can only be hex text: say so rather than decode the text as CBOR.
			in, err = parseHexArg(strings.Join(sub.Args(), " "))
			if err != nil {
				return withCode(exitUsage, err)
			}
		default:
			in, err = io.ReadAll(io.LimitReader(e.stdin, 16<<20))
			in = wire.ParseHexOrRaw(in)
		}
		if err != nil {
			return err
		}
		out, err := wire.Diagnose(in)
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stdout, out)
		return nil
	}
}

// parseHexArg reads hex text as ParseHexOrRaw accepts it (whitespace, 0x prefixes) but fails
// on anything else instead of falling back to raw bytes.
func parseHexArg(s string) ([]byte, error) {
	var digits strings.Builder
	for _, f := range strings.Fields(s) {
		f = strings.TrimPrefix(strings.TrimPrefix(f, "0x"), "0X")
		digits.WriteString(f)
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil || len(b) == 0 {
		if err == nil {
			err = errors.New("empty")
		}
		return nil, fmt.Errorf("not hex: %q: %w", s, err)
	}
	return b, nil
}

// versionInfo is what `edged version` prints.
type versionInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	Date      string `json:"build_date"`
	Modified  bool   `json:"modified,omitempty"` // built from a tree with uncommitted changes
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"` // GOOS/GOARCH[/GOARM]
}

// buildInfo takes commit and date from -ldflags when set, else from the VCS stamp that
// `go build` embeds in a git checkout.
func buildInfo() versionInfo {
	v := versionInfo{Version: version, Commit: commit, Date: date, GoVersion: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if v.Commit == "" {
					v.Commit = s.Value
				}
			case "vcs.time":
				if v.Date == "" {
					v.Date = s.Value
				}
			case "vcs.modified":
				v.Modified = s.Value == "true"
			case "GOARM":
				v.Platform += "/v" + s.Value
			}
		}
	}
	if v.Commit == "" {
		v.Commit = "unknown"
	}
	if v.Date == "" {
		v.Date = "unknown"
	}
	return v
}

func setupVersion(fs *flag.FlagSet, e *env) func([]string) error {
	asJSON := fs.Bool("json", false, "print a JSON object")
	return func(args []string) error {
		if err := noArgs("version", args); err != nil {
			return err
		}
		v := buildInfo()
		if *asJSON {
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(v)
		}
		mod := ""
		if v.Modified {
			mod = " (modified)"
		}
		fmt.Fprintf(e.stdout, "edged %s\n", v.Version)
		for _, kv := range [][2]string{{"commit", v.Commit + mod}, {"built", v.Date}, {"go", v.GoVersion}, {"platform", v.Platform}} {
			fmt.Fprintf(e.stdout, "  %-9s %s\n", kv[0], kv[1])
		}
		return nil
	}
}
