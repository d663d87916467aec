package broker

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// groupCommit imitates storage's group commit: callers that arrive while a commit is running
// share the next one. A commit is a real write + fsync of a temp file (0.3-0.5 ms on this VM):
// time.Sleep(500µs) was measured at 4.5 ms here (timer granularity), useless as a stand-in.
type groupCommit struct {
	mu         sync.Mutex
	pending    []chan struct{}
	kick       chan struct{}
	commits    atomic.Int64
	commitTime atomic.Int64
	done       chan struct{}
}

func newGroupCommit(tb testing.TB) *groupCommit {
	f, err := os.Create(filepath.Join(tb.TempDir(), "commit"))
	must(tb, err)
	g := &groupCommit{kick: make(chan struct{}, 1), done: make(chan struct{})}
	var block [4096]byte
	go func() {
		for {
			select {
			case <-g.done:
				_ = f.Close()
				return
			case <-g.kick:
			}
			g.mu.Lock()
			batch := g.pending
			g.pending = nil
			g.mu.Unlock()
			if len(batch) == 0 {
				continue
			}
			t0 := time.Now()
			_, _ = f.WriteAt(block[:], 0) // fixed size: the commit cost does not grow with the batch
			_ = f.Sync()
			g.commitTime.Add(int64(time.Since(t0)))
			g.commits.Add(1)
			for _, ch := range batch {
				close(ch)
			}
			select { // more arrived during the commit
			case g.kick <- struct{}{}:
			default:
			}
		}
	}()
	return g
}

func (g *groupCommit) wait() {
	ch := make(chan struct{})
	g.mu.Lock()
	g.pending = append(g.pending, ch)
	g.mu.Unlock()
	select {
	case g.kick <- struct{}{}:
	default:
	}
	<-ch
}

func (g *groupCommit) close() { close(g.done) }

// oneByOne implements only Capturer: each message waits for a commit.
type oneByOne struct{ g *groupCommit }

func (c oneByOne) Capture(context.Context, *Message) error { c.g.wait(); return nil }

// batched implements BatchCapturer: a client's pipelined messages share one commit.
type batched struct{ g *groupCommit }

func (c batched) Capture(context.Context, *Message) error { c.g.wait(); return nil }
func (c batched) CaptureBatch(_ context.Context, ms []*Message) []error {
	c.g.wait()
	return nil
}

// BenchmarkIngestQoS1 measures durable QoS 1 ingest: 8 publishers (3.1.1, raw sockets, up
// to 100 unacked each), a capturer whose commit is shared by concurrent
// callers (a write + fsync). Reports msgs/s, messages per commit and the commit time.
//
//	go test -run '^$' -bench IngestQoS1 -benchtime 100000x ./broker/
func BenchmarkIngestQoS1(b *testing.B) {
	for _, mode := range []string{"sync", "pipelined", "pipelined-batch"} {
		b.Run(mode, func(b *testing.B) {
			g := newGroupCommit(b)
			defer g.close()
			var c Capturer = oneByOne{g}
			if mode == "pipelined-batch" {
				c = batched{g}
			}
			br, err := New(Options{Config: localConfig()})
			must(b, err)
			br.SetCapturer(c)
			br.capture.syn = mode == "sync"
			must(b, br.Start(context.Background()))
			defer br.Close()
			const publishers, window = 8, 100
			per := b.N / publishers
			if per == 0 {
				per = 1
			}
			conns := make([]net.Conn, publishers)
			for i := range conns {
				conns[i] = rawConnect(b, addr(br, 0), fmt.Sprintf("bench-%d", i))
			}
			payload := bytes.Repeat([]byte("x"), 200)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for _, conn := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := pumpQoS1(conn, per, window, payload); err != nil {
						b.Error(err)
					}
				}()
			}
			wg.Wait()
			el := time.Since(start)
			b.StopTimer()
			total := per * publishers
			b.ReportMetric(float64(total)/el.Seconds(), "msgs/s")
			b.ReportMetric(float64(total)/float64(g.commits.Load()), "msgs/commit")
			b.ReportMetric(float64(g.commitTime.Load())/float64(g.commits.Load())/1e3, "µs/commit")
			for _, c := range conns {
				_ = c.Close()
			}
		})
	}
}

func rawConnect(tb testing.TB, address, id string) net.Conn {
	conn, err := net.Dial("tcp", address)
	must(tb, err)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: id, Keepalive: 60, Clean: true}}
	var buf bytes.Buffer
	must(tb, pk.ConnectEncode(&buf))
	_, err = conn.Write(buf.Bytes())
	must(tb, err)
	ack := make([]byte, 4)
	_, err = io.ReadFull(conn, ack)
	must(tb, err)
	if ack[0]>>4 != packets.Connack || ack[3] != 0 {
		tb.Fatalf("connack %x", ack)
	}
	return conn
}

// pumpQoS1 publishes n QoS 1 messages keeping up to window unacked, and waits for every PUBACK.
func pumpQoS1(conn net.Conn, n, window int, payload []byte) error {
	credit := make(chan struct{}, window)
	errc := make(chan error, 1)
	go func() {
		r := bufio.NewReader(conn)
		hdr := make([]byte, 4)
		for i := 0; i < n; i++ {
			if _, err := io.ReadFull(r, hdr); err != nil {
				errc <- fmt.Errorf("read puback %d: %w", i, err)
				return
			}
			if hdr[0]>>4 != packets.Puback {
				errc <- fmt.Errorf("got packet type %d", hdr[0]>>4)
				return
			}
			<-credit
		}
		errc <- nil
	}()
	w := bufio.NewWriterSize(conn, 64<<10)
	var buf bytes.Buffer
	for i := 0; i < n; i++ {
		select {
		case credit <- struct{}{}:
		default:
			if err := w.Flush(); err != nil {
				return err
			}
			credit <- struct{}{}
		}
		buf.Reset()
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 4,
			TopicName: "bench/t", PacketID: uint16(i%65000 + 1), Payload: payload}
		if err := pk.PublishEncode(&buf); err != nil {
			return err
		}
		if _, err := w.Write(buf.Bytes()); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return <-errc
}
