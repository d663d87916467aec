package hardware

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzCommandFrame: a command payload comes from any MQTT client allowed on command_topic and
// is framed for the device. Whatever it holds, the framing either refuses it (a line command
// holding the delimiter) or produces bytes that the same framing decodes back, in one frame,
// to the command: a device never sees a command split in two or merged with the next one.
func FuzzCommandFrame(f *testing.F) {
	f.Add([]byte("reboot"), uint8(0))
	f.Add([]byte("reboot\n"), uint8(0))
	f.Add([]byte("a\nb"), uint8(0))
	f.Add([]byte("set;1"), uint8(1))
	f.Add([]byte{0, 1, 0, 0xff}, uint8(2))
	f.Add([]byte{0xc0, 0xdb, 0xdc, 0xdd}, uint8(3))
	modes := []SerialConfig{{Framing: "line"}, {Framing: "line", Delimiter: ";"}, {Framing: "cobs"}, {Framing: "slip"}}
	f.Fuzz(func(t *testing.T, cmd []byte, mode uint8) {
		cfg := modes[int(mode)%len(modes)]
		cfg.MaxFrame = 1 << 20
		c := newCodec(&cfg)
		frame, err := c.encode(cmd)
		if err != nil {
			if !errors.Is(err, errUnframeable) {
				t.Fatalf("%s: %v", cfg.Framing, err)
			}
			return
		}
		want := cmd
		if cfg.Framing == "line" {
			want = bytes.TrimSuffix(cmd, []byte{c.delim})
			if c.delim == '\n' {
				want = bytes.TrimSuffix(want, []byte{'\r'}) // "\r\n" devices: CR stripped by design
			}
		}
		var got [][]byte
		d := c.newDecoder()
		d.Feed(frame, func(fr []byte) { got = append(got, bytes.Clone(fr)) })
		if len(want) == 0 {
			if len(got) != 0 {
				t.Fatalf("%s: empty command decodes to %q", cfg.Framing, got)
			}
			return
		}
		if len(got) != 1 || !bytes.Equal(got[0], want) {
			t.Fatalf("%s: command %q framed as %q decodes to %q", cfg.Framing, cmd, frame, got)
		}
	})
}
