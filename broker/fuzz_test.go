package broker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"
)

// FuzzClientBytes: whatever bytes a client sends, after a valid CONNECT of any version or
// with none, the broker answers or drops the connection without panicking (a panic in any of
// its goroutines ends the fuzzing process), closes the connection once the client has closed
// its side, and still accepts a well-behaved client afterwards. The mutation-based
// TestHostileClients covers the same surface under load and with memory bounds; this target
// lets the fuzzer's coverage guidance find the inputs mutation does not.
func FuzzClientBytes(f *testing.F) {
	c := hostileCorpus(f)
	r := rand.New(rand.NewPCG(1, 2))
	for mode := byte(0); mode < 6; mode++ {
		f.Add(mode, bytes.Join(c.rest, nil))
		for _, p := range c.rest {
			f.Add(mode, p)
			f.Add(mode, mutate(r, p, c.rest[r.IntN(len(c.rest))]))
		}
	}
	for _, v := range []byte{3, 4, 5} {
		f.Add(byte(1), bytes.Join(attackPackets(f, r, v), nil))
	}
	// One broker for every input (one per input would spend the fuzzer's time starting
	// brokers): the device config with its ACLs, limits and capture, as in TestHostileClients.
	a := addr(startBroker(f, Options{Config: deviceConfig(f)}, &countCapturer{}), 0)
	f.Fuzz(func(t *testing.T, mode byte, in []byte) {
		v := 3 + (mode>>1)%3
		conn, err := net.DialTimeout("tcp", a, 10*time.Second)
		must(t, err)
		defer conn.Close()
		if mode&1 == 0 {
			_, _ = conn.Write(connectPacket(t, rand.New(rand.NewPCG(uint64(mode), 3)), v, "fz"))
		}
		// The broker may close at any point (a reset or a broken pipe then); it must not stop
		// reading while the connection stays open.
		_ = conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
		if _, err := conn.Write(in); err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("broker stopped reading an open connection: %v", err)
		}
		_ = conn.(*net.TCPConn).CloseWrite()
		// The broker must close the connection once the client has closed its side (an EOF is
		// a disconnect): a read that neither ends nor fails is a connection the broker forgot.
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.Copy(io.Discard, conn); err != nil && !isReset(err) {
			t.Fatalf("broker did not close the connection after the client's EOF: %v", err)
		}
		probe, err := net.DialTimeout("tcp", a, 10*time.Second)
		must(t, err)
		defer probe.Close()
		_, err = probe.Write(encode(t, packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
			Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: "fuzz-probe", Keepalive: 10, Clean: true}}, 4))
		must(t, err)
		ack := make([]byte, 4)
		_ = probe.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.ReadFull(probe, ack); err != nil || ack[0]>>4 != packets.Connack || ack[3] != 0 {
			t.Fatalf("broker no longer accepts a client: %x %v", ack, err)
		}
	})
}

// isReset: the broker closed with bytes of ours unread, which the kernel reports as a reset.
func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

// TestMalformedSubscribeRefused: an MQTT 5 SUBSCRIBE whose last filter lacks its options byte
// made mochi's decoder index past the packet (mochi-mqtt/server#501) on the client's
// connection goroutine: one packet from any client that may connect ended the gateway. The
// guard refuses it: the client is disconnected, the refusal counted and visible in status, and
// the broker goes on serving.
func TestMalformedSubscribeRefused(t *testing.T) {
	for _, typ := range []string{ListenerTCP, ListenerWebsocket} {
		t.Run(typ, func(t *testing.T) {
			cfg := localConfig()
			cfg.Listeners = []Listener{{Type: ListenerTCP, Address: "127.0.0.1:0"}, {Type: typ, Address: "127.0.0.1:0"}}
			b := startBroker(t, Options{Config: cfg}, nil)
			obs := mustV5(t, addr(b, 0), "observer")
			_, err := obs.Subscribe(ctx10(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "t/#", QoS: 1}}})
			must(t, err)

			var rc *rawClient
			if typ == ListenerWebsocket {
				ws, _, err := websocket.Dial(ctx10(t), "ws://"+addr(b, 1), &websocket.DialOptions{Subprotocols: []string{"mqtt"}})
				must(t, err)
				conn := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
				t.Cleanup(func() { _ = conn.Close() })
				rc = &rawClient{t: t, conn: conn, r: bufio.NewReader(conn), v: 5}
				rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
					Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: "attacker", Keepalive: 30, Clean: true}})
				rc.expect(packets.Connack)
			} else {
				rc = dialRaw(t, addr(b, 1), 5, "attacker", noProps)
			}
			// SUBSCRIBE, packet id 7, no properties, filter "a/b" and then nothing: the options
			// byte of the filter is missing.
			_, err = rc.conn.Write([]byte{0x82, 8, 0, 7, 0, 0, 3, 'a', '/', 'b'})
			must(t, err)
			if _, err := rc.read(10 * time.Second); err == nil {
				t.Fatal("the broker answered the malformed SUBSCRIBE instead of closing the connection")
			} else if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("the connection stayed open after the malformed SUBSCRIBE")
			}
			if n := b.Status().Refusals[refuseMalformed]; n != 1 {
				t.Fatalf("refusals[%s] = %d, want 1", refuseMalformed, n)
			}
			// Still serving: the observer's subscription delivers.
			_, err = obs.Publish(ctx10(t), &paho.Publish{Topic: "t/1", QoS: 1, Payload: []byte("alive")})
			must(t, err)
			select {
			case m := <-obs.msgs:
				if string(m.Payload) != "alive" {
					t.Fatalf("got %q", m.Payload)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("broker stopped delivering after the malformed packet")
			}
		})
	}
}
