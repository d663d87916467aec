package powercut_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edged-dev/edged/internal/faultfs"
	"github.com/edged-dev/edged/internal/testutil"
)

func requireFUSE(t *testing.T) {
	t.Helper()
	if err := faultfs.Supported(); err != nil {
		if testutil.InCI() {
			t.Fatalf("%v: CI must provide /dev/fuse and root (see .ci/run)", err)
		}
		t.Skipf("%v; skipping outside CI", err)
	}
}

// cloud records every message id that reaches mosquitto under gw/#.
type cloud struct {
	mu   sync.Mutex
	seen map[int]int
	dups int
}

func (c *cloud) handler(_ mqtt.Client, m mqtt.Message) {
	id, ok := parseID(m.Payload())
	if !ok {
		return
	}
	c.mu.Lock()
	c.seen[id]++
	if c.seen[id] > 1 {
		c.dups++
	}
	c.mu.Unlock()
}

func (c *cloud) count() (distinct, dups int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.seen), c.dups
}

func (c *cloud) has(id int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[id] > 0
}

const idLen = 12 // "pc-" + 9 digits

func payload(id, size int) []byte {
	b := []byte(fmt.Sprintf("pc-%09d", id))
	for len(b) < size {
		b = append(b, byte('a'+len(b)%26))
	}
	return b
}

func parseID(p []byte) (int, bool) {
	if len(p) < idLen || string(p[:3]) != "pc-" {
		return 0, false
	}
	id, err := strconv.Atoi(string(p[3:idLen]))
	return id, err == nil
}

// acks is every message id edged PUBACKed.
type acks struct {
	mu  sync.Mutex
	ids map[int]bool
}

func (a *acks) add(id int) {
	a.mu.Lock()
	a.ids[id] = true
	a.mu.Unlock()
}

func (a *acks) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.ids)
}

func (a *acks) list() []int {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]int, 0, len(a.ids))
	for id := range a.ids {
		out = append(out, id)
	}
	return out
}

// publisher publishes QoS 1 to edged with a window of unacknowledged messages and records
// every PUBACK. It runs until stop is closed, maxBytes are acknowledged (if > 0), or the
// connection dies (as it does when edged is killed).
type publisher struct {
	next   *int
	mu     *sync.Mutex
	acked  *acks
	size   int
	window int
}

// run returns the number of bytes acknowledged and why it stopped.
func (p publisher) run(broker string, stop <-chan struct{}, maxBytes int) (int, error) {
	o := mqtt.NewClientOptions().AddBroker("tcp://" + broker).SetClientID(fmt.Sprintf("pc-pub-%d", time.Now().UnixNano())).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(5 * time.Second).
		SetOrderMatters(false).SetWriteTimeout(10 * time.Second)
	c := mqtt.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return 0, fmt.Errorf("connect publisher: %v", tok.Error()) //nolint:errorlint // nil on a timeout
	}
	defer c.Disconnect(0)
	type inflight struct {
		id  int
		tok mqtt.Token
	}
	var (
		q     []inflight
		bytes int
		err   error
	)
	settle := func(f inflight) {
		if !f.tok.WaitTimeout(30 * time.Second) {
			if err == nil {
				err = fmt.Errorf("message %d: no PUBACK within 30s", f.id)
			}
			return
		}
		if e := f.tok.Error(); e != nil {
			if err == nil {
				err = e
			}
			return
		}
		p.acked.add(f.id)
		bytes += p.size
	}
	for err == nil && (maxBytes <= 0 || bytes < maxBytes) {
		select {
		case <-stop:
			for _, f := range q {
				settle(f)
			}
			return bytes, err
		default:
		}
		p.mu.Lock()
		id := *p.next
		*p.next++
		p.mu.Unlock()
		q = append(q, inflight{id, c.Publish("sensors/pc", 1, false, payload(id, p.size))})
		if len(q) >= p.window {
			settle(q[0])
			q = q[1:]
		}
	}
	for _, f := range q {
		settle(f)
	}
	return bytes, err
}

// statusDepth reads the cloud connector's outbox depth from the admin API.
func statusDepth(admin string) (int64, error) {
	b, err := testutil.HTTPGet("http://" + admin + "/api/v1/status")
	if err != nil {
		return 0, err
	}
	var doc struct {
		Connectors []struct {
			Depth int64 `json:"depth"`
		} `json:"connectors"`
	}
	if err := json.Unmarshal(b, &doc); err != nil || len(doc.Connectors) != 1 {
		return 0, fmt.Errorf("status document: %w: %s", err, b)
	}
	return doc.Connectors[0].Depth, nil
}

// movedAside lists stores edged gave up as corrupt (moved to data.corrupt-*).
func movedAside(mnt string) []string {
	m, _ := filepath.Glob(filepath.Join(mnt, "data.corrupt-*"))
	return m
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func pick(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
}

func joinInts(ids []int, max int) string {
	var b strings.Builder
	for i, id := range ids {
		if i == max {
			fmt.Fprintf(&b, " ... (%d more)", len(ids)-max)
			break
		}
		fmt.Fprintf(&b, " %d", id)
	}
	return b.String()
}
