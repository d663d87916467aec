package modbus

import (
	"encoding/binary"
	"log/slog"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// FuzzBusConfig: any hardware.modbus section either fails validation with key errors or yields
// a bus whose plan and codecs work; nothing panics.
func FuzzBusConfig(f *testing.F) {
	f.Add([]byte(`- {name: b, tcp: "127.0.0.1:502", units: [{name: u, id: 1, points: [{name: p, type: holding, address: 0}]}]}`))
	f.Add([]byte(`- name: b
  rtu: {port: /dev/ttyUSB0, baud: 9600, parity: none}
  units:
    - name: u
      id: 247
      command_topic: "c/{bus}/{unit}"
      points:
        - {name: s, type: input, address: 65530, data_type: string, count: 6}
        - {name: f, type: holding, address: 0, data_type: float64, word_order: low_first, deadband: "5%", max_interval: 1m, writable: true}
        - {name: c, type: coil, address: 65535, on_change: true, command_topic: "x/{point}"}
`))
	f.Add([]byte(`- {name: b, tcp: ":1", poll: 1ns, units: [{name: u, id: 0, points: [{name: p, type: input, address: -1, count: 200, scale: 0}]}]}`))
	f.Add([]byte(`- {name: b, tcp: "h:502", units: [{name: u, id: 1, points: [{name: p, type: coil, address: 0, deadband: [1]}]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var buses []BusConfig
		if err := yaml.Unmarshal(b, &buses); err != nil {
			return
		}
		ApplyDefaults(buses)
		if err := Validate(buses); err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		for _, bc := range buses {
			bus := newBus(bc, newFakeLocal(), slog.New(slog.DiscardHandler), mustMetrics(t), plainSerial{})
			for _, r := range bus.reqs {
				limit := maxReadRegisters
				if r.kind == Coil || r.kind == DiscreteInput {
					limit = maxReadBits
				}
				if r.qty == 0 || int(r.qty) > limit || int(r.addr)+int(r.qty) > 65536 {
					t.Fatalf("request %s %d+%d", r.kind, r.addr, r.qty)
				}
				for _, p := range r.points {
					if p.addr < r.addr || int(p.addr)+p.cfg.Count > int(r.addr)+int(r.qty) {
						t.Fatalf("point %s at %d outside request %d+%d", p.cfg.Name, p.addr, r.addr, r.qty)
					}
				}
			}
		}
	})
}

// FuzzCommand: write payloads from MQTT are outside bytes.
func FuzzCommand(f *testing.F) {
	for _, s := range []string{`21.5`, `true`, `{"v": -3}`, `{"point": "speed", "v": 1e308}`, `[1]`, `"x"`, "\xf5", "\xa2\x65point\x61p\x61v\x01", `{"v": {"v": 1}}`} {
		f.Add([]byte(s))
	}
	codecs := []codec{}
	for _, dt := range []string{"bool", "int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64"} {
		for _, wo := range []string{"high_first", "low_first"} {
			codecs = append(codecs, newCodec(pc(dt, wo, width(dt), 0.1, -5)), newCodec(pc(dt, wo, width(dt), 1, 0)))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if v, err := parsePointCommand(b); err == nil {
			for _, c := range codecs {
				if regs, err := c.encodeRegisters(v); err == nil {
					if len(regs) != c.count {
						t.Fatalf("%s: %d registers", c.dataType, len(regs))
					}
					if _, err := c.decodeRegisters(regs); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		// A unit command names a point and carries a writable scalar, or is refused.
		if name, v, err := parseUnitCommand(b); err == nil {
			if name == "" {
				t.Fatalf("unit command %q without a point", b)
			}
			if _, err := checkScalar(v); err != nil {
				t.Fatalf("unit command %q: %v", b, err)
			}
		}
	})
}

// FuzzDecode: registers are outside bytes too; every data type decodes any of them and the
// result always encodes into a sample.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{0x7f, 0xc0, 0, 0, 0, 0, 0, 0}) // NaN as float32
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte("EDGE01\x00\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		regs := make([]uint16, len(b)/2)
		for i := range regs {
			regs[i] = binary.BigEndian.Uint16(b[2*i:])
		}
		for _, dt := range []string{"bool", "int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64", "string"} {
			n := width(dt)
			if dt == "string" {
				n = len(regs)
			}
			if n == 0 || n > len(regs) {
				continue
			}
			for _, scale := range []float64{1, 0.001} {
				c := newCodec(pc(dt, "low_first", n, scale, 0))
				v, err := c.decodeRegisters(regs[:n])
				if err != nil {
					t.Fatal(err)
				}
				for _, format := range []string{"json", "cbor"} {
					if p, _ := encodeSample(format, v, time.UnixMilli(1), QualityGood); len(p) == 0 {
						t.Fatalf("%s %s: empty sample", dt, format)
					}
				}
			}
		}
	})
}
