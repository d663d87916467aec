//go:build linux

package hardware

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edged-dev/edged/hardware/modbus"
	"github.com/edged-dev/edged/internal/testutil"
	"gopkg.in/yaml.v3"
)

// A Modbus RTU bus configured under hardware.modbus is run by the hardware Manager through the
// serial layer's fd reserve: with every low fd taken after New, its device still opens (below
// 1024, or the bus would refuse it) and is polled; its status is in ModbusStatus.
func TestModbusRTUUsesTheSerialFDReserve(t *testing.T) {
	testutil.RequireCommand(t, "socat")
	if err := exec.Command("/usr/bin/python3", "-c", "import pymodbus.server, serial_asyncio").Run(); err != nil {
		if testutil.InCI() {
			t.Fatalf("pymodbus missing: CI must install it (see .ci/run): %v", err)
		}
		t.Skip("pymodbus missing (apt-get install python3-pymodbus python3-serial python3-serial-asyncio socat); skipping outside CI")
	}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "A"), filepath.Join(dir, "B")
	socat := exec.Command("socat", "pty,raw,echo=0,link="+a, "pty,raw,echo=0,link="+b)
	if err := socat.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { socat.Process.Kill(); socat.Wait() })
	waitFor(t, "pty pair", func() error { _, err := os.Stat(b); return err })
	slave := exec.Command("/usr/bin/python3", filepath.Join("modbus", "testdata", "slave.py"), "rtu", b, "19200", `{"1": {"hr": [4711]}}`)
	out, _ := slave.StdoutPipe()
	slave.Stdin = strings.NewReader("")
	if err := slave.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slave.Process.Kill(); slave.Wait() })
	if sc := bufio.NewScanner(out); !sc.Scan() || sc.Text() != "ready" {
		t.Fatal("slave.py did not start")
	}

	var cfg Config
	if err := yaml.Unmarshal([]byte(fmt.Sprintf(`
modbus:
  - name: line
    rtu: {port: %s}
    units: [{name: u, id: 1, points: [{name: p, type: holding, address: 0}]}]
`, a)), &cfg); err != nil {
		t.Fatal(err)
	}
	local := newFakeLocal()
	m, err := New(cfg, local, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	testutil.ExhaustLowFDs(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "a good value from the RTU unit", func() error {
		for _, msg := range local.onTopic("modbus/line/u/p") {
			var s struct {
				V any    `json:"v"`
				Q string `json:"q"`
			}
			if json.Unmarshal(msg.Payload, &s) == nil && s.Q == modbus.QualityGood && fmt.Sprint(s.V) == "4711" {
				return nil
			}
		}
		st := m.ModbusStatus()
		return fmt.Errorf("no good value yet; status %+v", st)
	})
	if st := m.ModbusStatus()[0]; st.State != modbus.StateOpen || st.Units[0].State != modbus.UnitOnline {
		t.Errorf("status %+v", st)
	}
}
