package testutil

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// NATSNode is one nats-server process of a test cluster, on loopback ports.
type NATSNode struct {
	peer
	Name    string
	URL     string // nats://127.0.0.1:PORT
	Port    int
	monPort int
}

// natsStartTimeout bounds one node's start-up (JetStream recovers its store first).
const natsStartTimeout = 20 * time.Second

// NATSCluster is a JetStream cluster of real nats-server processes (the Debian binary).
type NATSCluster struct {
	Nodes []*NATSNode
}

// URLs lists every node's client URL.
func (c *NATSCluster) URLs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.URL
	}
	return out
}

// StartNATSCluster starts n nats-server nodes with JetStream, clustered over loopback routes,
// each with its own store under a temporary directory, and waits until JetStream has a meta
// leader (every node answers /jsz with a meta leader set). n == 1 starts a single server.
func StartNATSCluster(t testing.TB, n int) *NATSCluster {
	t.Helper()
	bin := RequireCommand(t, "nats-server")
	dir := t.TempDir()
	ports := make([]int, n)
	cports := make([]int, n)
	mports := make([]int, n)
	for i := range ports {
		ports[i], cports[i], mports[i] = FreePort(t), FreePort(t), FreePort(t)
	}
	c := &NATSCluster{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("n%d", i+1)
		var routes []string
		for j := 0; j < n; j++ {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", cports[j]))
			}
		}
		conf := filepath.Join(dir, name+".conf")
		body := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream { store_dir: %q, max_memory_store: 64MB, max_file_store: 1GB }
`, name, ports[i], mports[i], filepath.Join(dir, name))
		if n > 1 {
			body += fmt.Sprintf("cluster { name: edgedtest, listen: 127.0.0.1:%d, routes: [%s] }\n", cports[i], strings.Join(routes, ", "))
		}
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		node := &NATSNode{peer: peer{t: t, name: "nats-server " + name, addr: fmt.Sprintf("127.0.0.1:%d", ports[i]), conf: conf},
			Name: name, Port: ports[i], URL: fmt.Sprintf("nats://127.0.0.1:%d", ports[i]), monPort: mports[i]}
		node.start(bin, natsStartTimeout)
		t.Cleanup(node.Stop)
		c.Nodes = append(c.Nodes, node)
	}
	// JetStream in a cluster is usable once a meta leader is elected; on a loaded machine that
	// takes a few seconds, so poll on it instead of sleeping.
	WaitFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		for _, nd := range c.Nodes {
			b, err := HTTPGet(fmt.Sprintf("http://127.0.0.1:%d/jsz", nd.monPort))
			if err != nil {
				return err
			}
			if n > 1 && !strings.Contains(string(b), `"leader"`) {
				return fmt.Errorf("%s: no JetStream meta leader yet", nd.Name)
			}
		}
		return nil
	})
	return c
}

// Kill sends SIGKILL (a crash, not a clean shutdown) and waits for the process to exit.
func (n *NATSNode) Kill() { n.kill() }

// Stop is Kill; idempotent, used in cleanup.
func (n *NATSNode) Stop() { n.Kill() }

// Restart starts a killed node again with the same config and store.
func (n *NATSNode) Restart() {
	n.t.Helper()
	n.Kill()
	n.start(RequireCommand(n.t, "nats-server"), natsStartTimeout)
}

// RaceEnabled reports whether the test binary was built with -race (tests scale their load
// down: the race detector slows the code under test 5-10x).
const RaceEnabled = raceEnabled
