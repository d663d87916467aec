// Command edged-fleet soaks a fleet of edged gateways against a real cloud (`make soak-fleet`,
// root only): N edged processes, each in its own network namespace, uplinked over veth pairs
// and a bridge to a 3-node NATS JetStream cluster (or a mosquitto broker) in a "cloud"
// namespace. Devices inside each gateway's namespace publish QoS 1 at a steady rate and record
// every PUBACK. During the run every gateway's link is cut and restored at random and a cluster
// node is killed and restarted. At the end it reports, per gateway: acked, arrived, lost,
// duplicates after dedupe, maximum latency, and edged's memory.
//
// All traffic stays inside namespaces the tool creates (addresses 10.250.0.0/16 exist only
// there); it removes them on exit, and removes stale ones of an earlier run at start.
//
// The tool re-executes itself for the parts that must run inside a namespace:
//
//	edged-fleet [flags]            set up namespaces, then run "orchestrate" inside the cloud one
//	edged-fleet orchestrate ...    (cloud ns) start the cloud, gateways, devices, cut links, report
//	edged-fleet device ...         (gateway ns) publish QoS 1 to the local edged, record PUBACKs
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "orchestrate":
			os.Exit(orchestrate(os.Args[2:]))
		case "device":
			os.Exit(device(os.Args[2:]))
		}
	}
	os.Exit(launch(os.Args[1:]))
}

// options are shared by the launcher and the orchestrator (passed through verbatim).
type options struct {
	gateways int
	duration string
	rate     int
	cloud    string
	edged    string
	out      string
	workdir  string
}

func parseOptions(name string, args []string) (*options, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	o := &options{}
	fs.IntVar(&o.gateways, "gateways", 20, "number of edged gateways")
	fs.StringVar(&o.duration, "duration", "10m", "how long devices publish (link cuts and a node restart happen meanwhile)")
	fs.IntVar(&o.rate, "rate", 20, "QoS 1 messages per second per gateway")
	fs.StringVar(&o.cloud, "cloud", "nats", "the cloud: nats (3-node JetStream cluster, R3 stream) or mosquitto")
	fs.StringVar(&o.edged, "edged", "bin/edged", "edged binary")
	fs.StringVar(&o.out, "o", "", "also write the Markdown table to this file")
	fs.StringVar(&o.workdir, "workdir", "", "working directory (default: a new temporary one)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.gateways < 1 || o.gateways > 200 {
		return nil, fmt.Errorf("-gateways %d: want 1..200", o.gateways)
	}
	if o.cloud != "nats" && o.cloud != "mosquitto" {
		return nil, fmt.Errorf("-cloud %q: want nats or mosquitto", o.cloud)
	}
	return o, nil
}

func (o *options) args() []string {
	return []string{"-gateways", fmt.Sprint(o.gateways), "-duration", o.duration, "-rate", fmt.Sprint(o.rate),
		"-cloud", o.cloud, "-edged", o.edged, "-o", o.out, "-workdir", o.workdir}
}
