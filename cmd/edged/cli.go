package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/term"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/hardware"
	"github.com/edged-dev/edged/internal/admin"
	"github.com/edged-dev/edged/internal/config"
	"github.com/edged-dev/edged/storage"
	"github.com/edged-dev/edged/wire"
)

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("c", "", "config file to validate")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *cfgPath == "" {
		fmt.Fprintln(stderr, "edged check: -c FILE is required")
		return exitUsage
	}
	if _, err := config.Load(*cfgPath); err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	fmt.Fprintf(stdout, "%s: ok\n", *cfgPath)
	return exitOK
}

func cmdPasswd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("passwd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cost := fs.Int("cost", bcrypt.DefaultCost, "bcrypt cost (10 costs ~60 ms per login on a Pi 4)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	var pw []byte
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(stderr, "password: ")
		p1, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			fmt.Fprintf(stderr, "edged passwd: read password: %v\n", err)
			return exitFailure
		}
		fmt.Fprint(stderr, "again: ")
		p2, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil || string(p1) != string(p2) {
			fmt.Fprintln(stderr, "edged passwd: passwords do not match")
			return exitFailure
		}
		pw = p1
	} else {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			fmt.Fprintf(stderr, "edged passwd: read password: %v\n", err)
			return exitFailure
		}
		pw = []byte(strings.TrimRight(line, "\r\n"))
	}
	if len(pw) == 0 {
		fmt.Fprintln(stderr, "edged passwd: empty password")
		return exitUsage
	}
	h, err := bcrypt.GenerateFromPassword(pw, *cost)
	if err != nil {
		fmt.Fprintf(stderr, "edged passwd: %v\n", err)
		return exitUsage
	}
	fmt.Fprintln(stdout, string(h))
	return exitOK
}

func cmdPorts(stdout, stderr io.Writer) int {
	if err := hardware.PrintPorts(stdout); err != nil {
		fmt.Fprintf(stderr, "edged ports: %v\n", err)
		return exitFailure
	}
	return exitOK
}

func cmdConnectors(stdout io.Writer) int {
	for _, t := range bridge.Types() {
		fmt.Fprintf(stdout, "%-12s %s\n", t.Name, t.Description)
	}
	return exitOK
}

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("c", "", "config file (to find the admin address)")
	addr := fs.String("admin", "", "admin address (default from config, else 127.0.0.1:9100)")
	raw := fs.Bool("json", false, "print the raw JSON document")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	a, token := *addr, ""
	if a == "" || *cfgPath != "" {
		cfg, code := loadConfig(*cfgPath, stderr)
		if cfg == nil {
			return code
		}
		if a == "" {
			a = cfg.Admin.Address
		}
		if a == "" {
			fmt.Fprintf(stderr, "edged status: %v\n", errNoAdmin)
			return exitFailure
		}
		if cfg.Admin.TokenFile != "" {
			t, err := admin.LoadToken(cfg.Admin.TokenFile)
			if err != nil {
				fmt.Fprintf(stderr, "edged status: %v\n", err)
				return exitFailure
			}
			token = t
		}
	}
	body, err := admin.Get("http://"+a+"/api/v1/status", token)
	if err != nil {
		fmt.Fprintf(stderr, "edged status: is edged running? %v\n", err)
		return exitFailure
	}
	if *raw {
		_, _ = stdout.Write(body)
		return exitOK
	}
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		fmt.Fprintf(stderr, "edged status: bad answer from %s: %v\n", a, err)
		return exitFailure
	}
	printStatus(stdout, doc)
	return exitOK
}

// printStatus renders the status document for a person: one section a part, key: value.
func printStatus(w io.Writer, doc map[string]any) {
	fmt.Fprintf(w, "edged %v  gateway %v  up %vs\n", doc["version"], doc["gateway_id"], doc["uptime_seconds"])
	for _, sec := range []string{"health", "broker", "storage", "connectors", "serial", "clients"} {
		v, ok := doc[sec]
		if !ok || v == nil {
			continue
		}
		b, _ := json.MarshalIndent(v, "  ", "  ")
		fmt.Fprintf(w, "%s:\n  %s\n", sec, b)
	}
}

func cmdOutbox(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("outbox", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("c", "", "config file (to find data_dir)")
	dataDir := fs.String("data-dir", "", "data directory (default from config, else ./data)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	dir := *dataDir
	if dir == "" {
		cfg, code := loadConfig(*cfgPath, stderr)
		if cfg == nil {
			return code
		}
		dir = cfg.DataDir
	}
	wire.MaxPayload = 8 << 20 // read whatever any configuration could have stored
	return storage.OutboxCLI(fs.Args(), dir, stdout, stderr)
}

func cmdCBOR(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "decode" {
		fmt.Fprintln(stderr, "usage: edged cbor decode [HEX | -f FILE | - (stdin)]")
		return exitUsage
	}
	fs := flag.NewFlagSet("cbor decode", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "read CBOR (raw or hex text) from FILE")
	if err := fs.Parse(args[1:]); err != nil {
		return exitUsage
	}
	var in []byte
	var err error
	switch {
	case *file != "":
		in, err = os.ReadFile(*file)
	case fs.NArg() > 0 && fs.Arg(0) != "-":
		in = []byte(strings.Join(fs.Args(), ""))
	default:
		in, err = io.ReadAll(io.LimitReader(stdin, 16<<20))
	}
	if err != nil {
		fmt.Fprintf(stderr, "edged cbor decode: %v\n", err)
		return exitFailure
	}
	out, err := wire.Diagnose(wire.ParseHexOrRaw(in))
	if err != nil {
		fmt.Fprintf(stderr, "edged cbor decode: %v\n", err)
		return exitFailure
	}
	fmt.Fprintln(stdout, out)
	return exitOK
}
