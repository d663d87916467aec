package bridge

import (
	"bytes"
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
