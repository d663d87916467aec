package bridge

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/eclipse/paho.golang/packets"
	packets3 "github.com/eclipse/paho.mqtt.golang/packets"
)

// cloudPacketSeeds are packets a cloud broker sends an MQTT connector: CONNACK, PUBLISH of
// each QoS (with MQTT 5 properties), PUBACK, SUBACK, PINGRESP and a server DISCONNECT.
var cloudPacketSeeds = [][]byte{
	{0x20, 3, 0, 0, 0},
	{0x20, 2, 0, 0},
	{0x30, 7, 0, 3, 'a', '/', 'b', 'x', 'y'},
	{0x32, 10, 0, 3, 'c', '/', 'd', 0, 1, 0, 'h', 'i'},
	{0x34, 14, 0, 3, 'c', '/', 'd', 0, 2, 4, 0x01, 1, 0x23, 0, 'z'},
	{0x40, 2, 0, 1},
	{0x90, 4, 0, 1, 0, 1},
	{0x90, 3, 0, 1, 0x80},
	{0xd0, 0},
	{0xe0, 2, 0x8b, 0},
}

// FuzzCloudMQTT5Packets: the bytes of a cloud broker reach the MQTT 5 connector through
// paho.golang's packet reader, on the client's reader goroutine, where a panic would end
// edged. Whatever they are, reading them returns a packet or an error.
func FuzzCloudMQTT5Packets(f *testing.F) {
	for _, s := range cloudPacketSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cp, err := packets.ReadPacket(bytes.NewReader(b))
		if err == nil && cp == nil {
			t.Fatal("no packet and no error")
		}
	})
}

// FuzzCloudMQTT3Packets is FuzzCloudMQTT5Packets for the MQTT 3.1.1 connector
// (paho.mqtt.golang's packet reader).
func FuzzCloudMQTT3Packets(f *testing.F) {
	for _, s := range cloudPacketSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cp, err := packets3.ReadPacket(bytes.NewReader(b))
		if err == nil && cp == nil {
			t.Fatal("no packet and no error")
		}
	})
}

// chunkConn returns its bytes at most n at a time.
type chunkConn struct {
	net.Conn
	b []byte
	n int
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	k := min(len(p), c.n, len(c.b))
	copy(p, c.b[:k])
	c.b = c.b[k:]
	return k, nil
}

// refusalAt walks the MQTT framing of b and returns the offset of the remaining-length byte
// that completes (or overruns) a header announcing more than max bytes, -1 if none does.
func refusalAt(b []byte, max int) int {
	for i := 0; i < len(b); {
		i++ // the packet's first byte
		remaining, mult := 0, 1
		for k := 0; ; k++ {
			if i >= len(b) {
				return -1
			}
			c := b[i]
			remaining += int(c&0x7f) * mult
			mult *= 128
			if c&0x80 != 0 && k < 3 {
				i++
				continue
			}
			if c&0x80 != 0 || 1+k+1+remaining > max {
				return i
			}
			i += 1 + remaining
			break
		}
	}
	return -1
}

// FuzzLimitConn: limitConn passes a 3.1.1 server's bytes through unchanged, however the reads
// split them, up to the length byte of the first header that announces more than the limit;
// there it stops with errServerPacketTooLarge.
func FuzzLimitConn(f *testing.F) {
	for _, s := range cloudPacketSeeds {
		f.Add(bytes.Join([][]byte{s, s}, nil), uint8(3), uint16(64))
	}
	f.Add([]byte{0x20, 2, 0, 0, 0x30, 0xff, 0xff, 0xff, 0x7f}, uint8(1), uint16(1024))
	f.Add([]byte{0x30, 0x80, 0x80, 0x80, 0x80, 0x01}, uint8(7), uint16(1024))
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8, limit uint16) {
		max := int(limit) + 2
		c := &limitConn{Conn: &chunkConn{b: in, n: int(chunk)%16 + 1}, max: max}
		out, err := io.ReadAll(c)
		want := refusalAt(in, max)
		switch {
		case want < 0 && (err != nil || !bytes.Equal(out, in)):
			t.Fatalf("no refusal due: got %d of %d bytes, %v", len(out), len(in), err)
		case want >= 0 && (!errors.Is(err, errServerPacketTooLarge) || !bytes.Equal(out, in[:want])):
			t.Fatalf("refusal due at byte %d: got %d bytes, %v", want, len(out), err)
		}
	})
}
