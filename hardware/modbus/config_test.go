package modbus_test

import (
	"strings"
	"testing"

	"github.com/edged-dev/edged/internal/config"
	"github.com/edged-dev/edged/internal/testutil"
)

// The README's Modbus example is a complete config that passes the same validation as
// `edged check`, with every key real (the loader rejects unknown keys).
func TestREADMEModbusExample(t *testing.T) {
	doc := testutil.READMEYAML(t, "config:modbus")
	cfg, err := config.Parse("README.md", []byte(doc))
	if err != nil {
		t.Fatalf("README Modbus example:\n%v", err)
	}
	buses := cfg.Hardware.Modbus
	if len(buses) != 1 || len(buses[0].Units) != 2 || len(buses[0].Units[0].Points) != 4 || len(buses[0].Units[1].Points) != 4 {
		t.Fatalf("example lost parts: %+v", buses)
	}
	if d := buses[0].Units[0].Points[1].Deadband; d == nil || !d.Percent || d.Value != 2 {
		t.Errorf("deadband \"2%%\" parsed as %+v", d)
	}
}

// Problems are reported as FILE:LINE: key: problem, every one of them, at the line of the key.
func TestConfigErrorsAreLocated(t *testing.T) {
	doc := `hardware:
  modbus:
    - name: b
      rtu: {port: /dev/ttyUSB0, parity: mark, stop_bits: 1.5}
      tcp: 10.0.0.1:502
      format: xml
      units:
        - name: u
          id: 300
          command_topic: "cmd/{point}"
          points:
            - name: p
              type: holding
              data_type: float16
              deadband: lots
            - name: p
              type: input
              address: 1
              writable: true
              bogus: 1
    - name: b
      tcp: nohost
      units: []
`
	_, err := config.Parse("edged.yaml", []byte(doc))
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	got := err.Error()
	for _, want := range []string{
		"edged.yaml:20: hardware.modbus[0].units[0].points[1].bogus: unknown key",
		`edged.yaml:15: hardware.modbus[0].units[0].points[0].deadband: "lots" is not a number`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	// Semantic problems need the document to decode; fix the two decode errors and look again.
	doc = strings.Replace(strings.Replace(doc, "deadband: lots", "deadband: 1", 1), "              bogus: 1\n", "", 1)
	_, err = config.Parse("edged.yaml", []byte(doc))
	if err == nil {
		t.Fatal("invalid config accepted")
	}
	got = err.Error()
	for _, want := range []string{
		"edged.yaml:4: hardware.modbus[0].rtu.parity: \"mark\" is not valid",
		"edged.yaml:4: hardware.modbus[0].rtu.stop_bits:",
		"edged.yaml:5: hardware.modbus[0].tcp: set either rtu or tcp",
		"edged.yaml:6: hardware.modbus[0].format:",
		"edged.yaml:9: hardware.modbus[0].units[0].id: 300 is not valid on RTU",
		"edged.yaml:10: hardware.modbus[0].units[0].command_topic: \"cmd/{point}\": {point} is not known here",
		"edged.yaml:12: hardware.modbus[0].units[0].points[0].address: required",
		"edged.yaml:14: hardware.modbus[0].units[0].points[0].data_type: \"float16\" is not valid",
		"edged.yaml:16: hardware.modbus[0].units[0].points[1].name: \"p\" is already used",
		"edged.yaml:19: hardware.modbus[0].units[0].points[1].writable: only coil and holding",
		"edged.yaml:20: hardware.modbus[1].name: \"b\" is already used by modbus[0]",
		"edged.yaml:21: hardware.modbus[1].tcp: \"nohost\" is not host:port",
		"edged.yaml:22: hardware.modbus[1].units: at least one unit",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
}
