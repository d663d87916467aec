// Command edged is the gateway daemon and its operator CLI. It only wires packages together
// from the config; behaviour lives in broker, storage, bridge, hardware and wire.
//
// Exit codes (systemd's RestartPreventExitStatus=2 relies on them):
//
//	0 clean stop / success
//	1 runtime failure (storage cannot open, a listener cannot bind, ...)
//	2 usage or configuration error: restarting will not help
//	3 forced stop by a second signal or a shutdown that overran its deadline
package main

import (
	"fmt"
	"io"
	"os"
)

// version is set by the build: -ldflags "-X main.version=...".
var version = "dev"

const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	exitForced  = 3
)

func main() {
	os.Exit(mainArgs(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

const usage = `edged — MQTT broker, offline store and cloud bridge for edge gateways

usage:
  edged run [-c FILE]               run the daemon (no -c: embedded defaults)
  edged check -c FILE               validate a config; exit 2 listing every problem
  edged version                     print the version
  edged passwd [-cost N]            read a password, print its bcrypt hash for broker.users
  edged ports                       list serial ports with USB VID/PID/serial number
  edged status [-c FILE | -admin ADDR]   show a running daemon's status
  edged outbox [-c FILE | -data-dir DIR] stats|dlq list|dlq requeue|dlq purge ...
  edged connectors                  list the connector types this build knows
  edged cbor decode [HEX | -f FILE] print CBOR in diagnostic notation
`

func mainArgs(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "edged %s\n", version)
		return exitOK
	case "passwd":
		return cmdPasswd(args[1:], stdin, stdout, stderr)
	case "ports":
		return cmdPorts(stdout, stderr)
	case "status":
		return cmdStatus(args[1:], stdout, stderr)
	case "outbox":
		return cmdOutbox(args[1:], stdout, stderr)
	case "connectors":
		return cmdConnectors(stdout)
	case "cbor":
		return cmdCBOR(args[1:], stdin, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "edged: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
}
