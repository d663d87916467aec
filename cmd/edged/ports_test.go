package main

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/edged-dev/edged/hardware"
)

func TestPortsTable(t *testing.T) {
	var buf bytes.Buffer
	err := printPorts(&buf, []hardware.PortInfo{
		{Name: "/dev/ttyS0"},
		{Name: "/dev/ttyUSB0", IsUSB: true, VID: "0403", PID: "6001", SerialNumber: "A1", Product: "FT232R USB UART",
			Links: []string{"/dev/serial/by-id/usb-FTDI_A1-if00-port0"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%s\n%s\n%s\n",
		"PORT          USB  VID   PID   SERIAL  PRODUCT          LINK",
		"/dev/ttyS0    no   -     -     -       -                -",
		"/dev/ttyUSB0  yes  0403  6001  A1      FT232R USB UART  /dev/serial/by-id/usb-FTDI_A1-if00-port0")
	if buf.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", buf.String(), want)
	}
	buf.Reset()
	if err := printPorts(&buf, nil); err != nil || buf.String() != "no serial ports found (ptys are not listed)\n" {
		t.Errorf("no ports: %q %v", buf.String(), err)
	}
}
