package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edged-dev/edged/wire"
)

// arrival is one message seen at the cloud.
type arrival struct {
	g, s int
	lat  time.Duration
}

// cloud is what the gateways uplink to, and how the orchestrator reads what arrived.
type cloud interface {
	connectorYAML() string
	// count returns how many messages arrived so far (with duplicates).
	count() int
	// arrivals returns every message that arrived.
	arrivals() ([]arrival, error)
	// chaos restarts part of the cloud (a cluster node) in the middle of the run.
	chaos(log func(string, ...any))
	close()
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func start(name, logFile string, args ...string) (*proc, error) {
	f, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	return p, nil
}

func (p *proc) signal(s syscall.Signal) { _ = p.cmd.Process.Signal(s) }

func (p *proc) stop(s syscall.Signal, wait time.Duration) {
	p.signal(s)
	select {
	case <-p.done:
	case <-time.After(wait):
		p.signal(syscall.SIGKILL)
		<-p.done
	}
}

func waitTCP(addr string, total time.Duration) error {
	deadline := time.Now().Add(total)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not reachable: %w", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ---- NATS JetStream cluster ----

type natsCloud struct {
	dir   string
	nodes []*proc
	confs []string
	nc    *nats.Conn
	js    jetstream.JetStream
}

func natsPort(i int) int { return 4222 + i }

func startNATS(dir string) (*natsCloud, error) {
	c := &natsCloud{dir: dir}
	for i := 0; i < 3; i++ {
		var routes []string
		for j := 0; j < 3; j++ {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://%s:%d", cloudIP, 6222+j))
			}
		}
		conf := filepath.Join(dir, fmt.Sprintf("n%d.conf", i+1))
		body := fmt.Sprintf("server_name: n%d\nlisten: %s:%d\nhttp: %s:%d\njetstream { store_dir: %q }\ncluster { name: fleet, listen: %s:%d, routes: [%s] }\n",
			i+1, cloudIP, natsPort(i), cloudIP, 8222+i, filepath.Join(dir, fmt.Sprintf("n%d", i+1)), cloudIP, 6222+i, strings.Join(routes, ", "))
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			return nil, err
		}
		c.confs = append(c.confs, conf)
		p, err := start(fmt.Sprintf("n%d", i+1), conf+".log", "nats-server", "-c", conf)
		if err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, p)
	}
	for i := 0; i < 3; i++ {
		if err := waitTCP(fmt.Sprintf("%s:%d", cloudIP, natsPort(i)), 30*time.Second); err != nil {
			return nil, err
		}
	}
	nc, err := nats.Connect(strings.Join(c.urls(), ","), nats.MaxReconnects(-1), nats.ReconnectWait(200*time.Millisecond))
	if err != nil {
		return nil, err
	}
	c.nc = nc
	if c.js, err = jetstream.New(nc); err != nil {
		return nil, err
	}
	// The duplicate window must cover the longest outage plus the drain: an envelope resent
	// after it would be stored twice. 1 h is ample for this soak.
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = c.js.CreateStream(ctx, jetstream.StreamConfig{Name: "FLEET", Subjects: []string{"fleet.>"}, Replicas: 3,
			Duplicates: time.Hour, Storage: jetstream.FileStorage})
		cancel()
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("create stream: %w", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (c *natsCloud) urls() []string {
	var u []string
	for i := 0; i < 3; i++ {
		u = append(u, fmt.Sprintf("nats://%s:%d", cloudIP, natsPort(i)))
	}
	return u
}

func (c *natsCloud) connectorYAML() string {
	return fmt.Sprintf(`    - name: up
      type: nats
      urls: [%s]
      format: json
      forward:
        - {from: "sensors/#", to: "fleet/{gateway_id}/{topic}"}
`, strings.Join(c.urls(), ", "))
}

func (c *natsCloud) info() (*jetstream.StreamInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.js.Stream(ctx, "FLEET")
	if err != nil {
		return nil, err
	}
	return st.Info(ctx)
}

func (c *natsCloud) count() int {
	in, err := c.info()
	if err != nil {
		return -1
	}
	return int(in.State.Msgs)
}

func (c *natsCloud) arrivals() ([]arrival, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cons, err := c.js.OrderedConsumer(ctx, "FLEET", jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	total := c.count()
	var out []arrival
	for len(out) < total {
		b, err := cons.Fetch(5000, jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			return nil, err
		}
		n := 0
		for m := range b.Messages() {
			n++
			e, err := wire.UnmarshalEnvelopeJSON(m.Data())
			if err != nil {
				return nil, fmt.Errorf("stream message: %w", err)
			}
			var r reading
			if err := json.Unmarshal(e.Payload, &r); err != nil {
				return nil, fmt.Errorf("reading %q: %w", e.Payload, err)
			}
			md, err := m.Metadata()
			if err != nil {
				return nil, err
			}
			out = append(out, arrival{g: r.G, s: r.S, lat: md.Timestamp.Sub(time.Unix(0, r.T))})
		}
		if b.Error() != nil {
			return nil, b.Error()
		}
		if n == 0 {
			break
		}
	}
	return out, nil
}

// chaos kills one node with SIGKILL and restarts it 15 s later with its store.
func (c *natsCloud) chaos(log func(string, ...any)) {
	i := 1
	c.nodes[i].stop(syscall.SIGKILL, time.Second)
	log("killed nats node n%d (SIGKILL)", i+1)
	time.Sleep(15 * time.Second)
	p, err := start(fmt.Sprintf("n%d", i+1), c.confs[i]+".log2", "nats-server", "-c", c.confs[i])
	if err != nil {
		log("restart n%d: %v", i+1, err)
		return
	}
	c.nodes[i] = p
	log("restarted nats node n%d", i+1)
}

func (c *natsCloud) close() {
	if c.nc != nil {
		c.nc.Close()
	}
	for _, p := range c.nodes {
		p.stop(syscall.SIGTERM, 5*time.Second)
	}
}

// ---- mosquitto ----

type mosqCloud struct {
	p   *proc
	sub paho.Client
	mu  sync.Mutex
	got []arrival
}

func startMosquitto(dir string) (*mosqCloud, error) {
	conf := filepath.Join(dir, "mosquitto.conf")
	body := fmt.Sprintf("listener 1883 %s\nallow_anonymous true\nset_tcp_nodelay true\nmax_queued_messages 0\nmax_inflight_messages 0\npersistence false\n", cloudIP)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return nil, err
	}
	bin := "mosquitto"
	if _, err := exec.LookPath(bin); err != nil {
		bin = "/usr/sbin/mosquitto"
	}
	p, err := start("mosquitto", conf+".log", bin, "-c", conf)
	if err != nil {
		return nil, err
	}
	c := &mosqCloud{p: p}
	if err := waitTCP(cloudIP+":1883", 30*time.Second); err != nil {
		return nil, err
	}
	// The subscriber is attached before any gateway starts, so a fast drain cannot beat it.
	o := paho.NewClientOptions().AddBroker("tcp://" + cloudIP + ":1883").SetClientID("fleet-collector").
		SetCleanSession(false).SetAutoReconnect(true).SetOrderMatters(false)
	c.sub = paho.NewClient(o)
	if t := c.sub.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("collector connect: %w", tokenErr(t))
	}
	t := c.sub.Subscribe("fleet/#", 1, func(_ paho.Client, m paho.Message) {
		now := time.Now()
		e, err := wire.UnmarshalEnvelopeJSON(m.Payload())
		if err != nil {
			return
		}
		var r reading
		if json.Unmarshal(e.Payload, &r) != nil {
			return
		}
		c.mu.Lock()
		c.got = append(c.got, arrival{g: r.G, s: r.S, lat: now.Sub(time.Unix(0, r.T))})
		c.mu.Unlock()
	})
	if !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		return nil, fmt.Errorf("collector subscribe: %w", tokenErr(t))
	}
	return c, nil
}

// tokenErr is a paho token's error, or a timeout when it has none (WaitTimeout gave up).
func tokenErr(t paho.Token) error {
	if err := t.Error(); err != nil {
		return err
	}
	return errors.New("timed out")
}

func (c *mosqCloud) connectorYAML() string {
	return fmt.Sprintf(`    - name: up
      type: mqtt
      url: tcp://%s:1883
      format: json
      forward:
        - {from: "sensors/#", to: "fleet/{gateway_id}/{topic}"}
`, cloudIP)
}

func (c *mosqCloud) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.got)
}

func (c *mosqCloud) arrivals() ([]arrival, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]arrival(nil), c.got...), nil
}

func (c *mosqCloud) chaos(log func(string, ...any)) {
	log("mosquitto cloud: no node restart (a single broker without persistence would lose what it holds)")
}

func (c *mosqCloud) close() {
	c.sub.Disconnect(100)
	c.p.stop(syscall.SIGTERM, 5*time.Second)
}

// ---- the run ----

type gateway struct {
	i      int
	edged  *proc
	dev    *proc
	acked  []int
	hwm    int64 // VmHWM, kB
	anon   int64 // RssAnon, kB
	cuts   int
	downMu sync.Mutex
}

func procStatus(pid int) (hwm, anon int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmHWM:":
			hwm = v
		case "RssAnon:":
			anon = v
		}
	}
	return
}

func orchestrate(args []string) int {
	o, err := parseOptions("orchestrate", args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "orchestrate:", err)
		return 2
	}
	dur, err := time.ParseDuration(o.duration)
	if err != nil {
		fmt.Fprintln(os.Stderr, "orchestrate: -duration:", err)
		return 2
	}
	t0 := time.Now()
	logf := func(f string, a ...any) {
		fmt.Fprintf(os.Stderr, "[%7.1fs] %s\n", time.Since(t0).Seconds(), fmt.Sprintf(f, a...))
	}
	self, _ := os.Executable()
	_ = run("ip", "link", "set", "lo", "up")

	var cl cloud
	switch o.cloud {
	case "nats":
		cl, err = startNATS(o.workdir)
	default:
		cl, err = startMosquitto(o.workdir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "orchestrate: cloud:", err)
		return 1
	}
	defer cl.close()
	logf("cloud %s up", o.cloud)

	gws := make([]*gateway, o.gateways)
	defer func() {
		for _, g := range gws {
			if g == nil {
				continue
			}
			if g.dev != nil {
				g.dev.stop(syscall.SIGKILL, time.Second)
			}
			if g.edged != nil {
				g.edged.stop(syscall.SIGKILL, time.Second)
			}
		}
	}()
	for i := range gws {
		g := &gateway{i: i}
		gws[i] = g
		dir := filepath.Join(o.workdir, fmt.Sprintf("gw%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		cfg := fmt.Sprintf(`data_dir: %s
gateway_id: gw%d
log: {level: warn}
admin: {address: "127.0.0.1:9100"}
broker:
  listeners:
    - {type: tcp, address: "127.0.0.1:1883"}
bridge:
  connectors:
%s`, filepath.Join(dir, "data"), i, cl.connectorYAML())
		cfgPath := filepath.Join(dir, "edged.yaml")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if g.edged, err = start(fmt.Sprintf("edged%d", i), filepath.Join(dir, "edged.log"),
			"ip", "netns", "exec", gwNS(i), o.edged, "run", "-c", cfgPath); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	for i, g := range gws {
		if g.dev, err = start(fmt.Sprintf("dev%d", i), filepath.Join(o.workdir, fmt.Sprintf("gw%d", i), "device.log"),
			"ip", "netns", "exec", gwNS(i), self, "device", "-gw", fmt.Sprint(i), "-rate", fmt.Sprint(o.rate),
			"-out", filepath.Join(o.workdir, fmt.Sprintf("gw%d", i), "acked")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	logf("%d gateways and devices started; publishing %d msgs/s each for %v", o.gateways, o.rate, dur)

	// Chaos: every gateway's link is cut once at a random moment in the middle 80 % of the run,
	// for 2-30 s, plus as many extra cuts again at random; one cloud node restart at half time.
	var wg sync.WaitGroup
	stopChaos := make(chan struct{})
	cut := func(g *gateway, at, length time.Duration) {
		defer wg.Done()
		select {
		case <-time.After(at):
		case <-stopChaos:
			return
		}
		g.downMu.Lock()
		defer g.downMu.Unlock()
		if err := run("ip", "link", "set", vethIf(g.i), "down"); err != nil {
			logf("cut gw%d: %v", g.i, err)
			return
		}
		g.cuts++
		select {
		case <-time.After(length):
		case <-stopChaos:
		}
		_ = run("ip", "link", "set", vethIf(g.i), "up")
	}
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	span := func() time.Duration { return dur/10 + time.Duration(rnd.Int64N(int64(dur*7/10))) }
	length := func() time.Duration {
		l := 2*time.Second + time.Duration(rnd.Int64N(int64(28*time.Second)))
		if l > dur/5 {
			l = dur / 5
		}
		return l
	}
	for _, g := range gws {
		wg.Add(2)
		go cut(g, span(), length())
		go cut(gws[rnd.IntN(len(gws))], span(), length())
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-time.After(dur / 2):
			cl.chaos(logf)
		case <-stopChaos:
		}
	}()
	netem := netemAvailable()

	time.Sleep(dur)
	for _, g := range gws {
		g.dev.stop(syscall.SIGTERM, 90*time.Second)
	}
	close(stopChaos)
	wg.Wait()
	for _, g := range gws {
		_ = run("ip", "link", "set", vethIf(g.i), "up")
	}
	totalAcked := 0
	for _, g := range gws {
		b, err := os.ReadFile(filepath.Join(o.workdir, fmt.Sprintf("gw%d", g.i), "acked"))
		if err != nil {
			logf("gw%d: no acked file: %v", g.i, err)
		}
		for _, l := range strings.Fields(string(b)) {
			s, _ := strconv.Atoi(l)
			g.acked = append(g.acked, s)
		}
		totalAcked += len(g.acked)
	}
	logf("devices stopped: %d messages acked in all; waiting for the drain", totalAcked)
	drainStart := time.Now()
	for time.Since(drainStart) < 10*time.Minute && cl.count() < totalAcked {
		time.Sleep(time.Second)
	}
	// A little longer, so late duplicates are counted too.
	time.Sleep(3 * time.Second)
	for _, g := range gws {
		g.hwm, g.anon = procStatus(g.edged.cmd.Process.Pid)
	}
	arr, err := cl.arrivals()
	if err != nil {
		fmt.Fprintln(os.Stderr, "orchestrate: read arrivals:", err)
		return 1
	}
	logf("drain done after %v: %d messages at the cloud", time.Since(drainStart).Round(time.Second), len(arr))
	for _, g := range gws {
		g.edged.stop(syscall.SIGTERM, 15*time.Second)
	}
	return report(o, gws, arr, netem, dur)
}

func report(o *options, gws []*gateway, arr []arrival, netem bool, dur time.Duration) int {
	type key struct{ g, s int }
	seen := map[key]int{}
	maxLat := map[int]time.Duration{}
	for _, a := range arr {
		seen[key{a.g, a.s}]++
		if a.lat > maxLat[a.g] {
			maxLat[a.g] = a.lat
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "### Fleet soak: %d gateways -> %s, %v, %d msgs/s per gateway\n\n", o.gateways, map[string]string{
		"nats":      "3-node NATS JetStream cluster (R3 stream, node n2 killed and restarted at half time)",
		"mosquitto": "one mosquitto broker"}[o.cloud], dur, o.rate)
	fmt.Fprintf(&b, "`make soak-fleet FLEET_ARGS='-gateways %d -duration %v -cloud %s'`, %s. Each gateway in its own network namespace; every link cut at random (`ip link set down/up`, %s).\n\n",
		o.gateways, dur, o.cloud, time.Now().UTC().Format("2006-01-02"), map[bool]string{true: "plus 1 % packet loss with netem", false: "netem not available in this kernel, so no packet-loss phase"}[netem])
	b.WriteString("| gateway | link cuts | acked | arrived | lost | duplicates | max latency | edged VmHWM | edged RssAnon |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	var tAck, tArr, tLost, tDup, tCuts int
	var worst time.Duration
	sort.Slice(gws, func(i, j int) bool { return gws[i].i < gws[j].i })
	lostAll := 0
	for _, g := range gws {
		lost, arrived, dups := 0, 0, 0
		for _, s := range g.acked {
			c := seen[key{g.i, s}]
			if c == 0 {
				lost++
				continue
			}
			arrived++
			dups += c - 1
		}
		lostAll += lost
		tAck += len(g.acked)
		tArr += arrived
		tLost += lost
		tDup += dups
		tCuts += g.cuts
		if maxLat[g.i] > worst {
			worst = maxLat[g.i]
		}
		fmt.Fprintf(&b, "| gw%d | %d | %d | %d | %d | %d | %.1f s | %.1f MB | %.1f MB |\n", g.i, g.cuts, len(g.acked), arrived, lost, dups,
			maxLat[g.i].Seconds(), float64(g.hwm)/1024, float64(g.anon)/1024)
	}
	fmt.Fprintf(&b, "| **all** | %d | %d | %d | **%d** | %d | %.1f s | | |\n\n", tCuts, tAck, tArr, tLost, tDup, worst.Seconds())
	fmt.Fprintf(&b, "acked = PUBACKs the devices received; arrived = of those, found at the cloud (deduplicated); duplicates = extra copies the cloud stored or delivered; latency = arrival at the cloud (%s) minus the device's publish time, so it includes every outage.\n",
		map[string]string{"nats": "the stream's timestamp", "mosquitto": "when the collector subscribed there received it"}[o.cloud])
	fmt.Print(b.String())
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(b.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if lostAll > 0 {
		fmt.Fprintf(os.Stderr, "edged-fleet: %d acked messages lost\n", lostAll)
		return 1
	}
	return 0
}
