package hardware

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.bug.st/serial"
	"go.bug.st/serial/enumerator"
)

// PortInfo is one serial port found on this machine.
type PortInfo struct {
	Name         string   `json:"name"`                    // device path, e.g. /dev/ttyUSB0
	IsUSB        bool     `json:"is_usb"`                  // a USB adapter; VID/PID are set
	VID          string   `json:"vid,omitempty"`           // USB vendor id, 4 hex digits, upper case
	PID          string   `json:"pid,omitempty"`           // USB product id
	SerialNumber string   `json:"serial_number,omitempty"` // USB serial number, if the device has one
	Manufacturer string   `json:"manufacturer,omitempty"`
	Product      string   `json:"product,omitempty"`
	Links        []string `json:"links,omitempty"` // /dev/serial/by-id links to this device
}

// enumerate is the port enumeration used by ListPorts and USB match resolution; tests replace it.
var enumerate = enumerator.GetDetailedPortsList

// ListPorts lists the serial ports of this machine with their USB identity (`edged ports`).
// Like go.bug.st/serial, it does not list ptys; /dev/serial/by-id links are shown as Links.
func ListPorts() ([]PortInfo, error) {
	details, err := enumerate()
	if err != nil {
		return nil, fmt.Errorf("list serial ports: %w", err)
	}
	// enumerator leaves Name empty for ports without a sysfs device; recover the names from
	// the plain list, which it walks in the same order.
	var names []string
	for _, d := range details {
		if d.Name == "" {
			names, _ = serial.GetPortsList()
			if len(names) != len(details) {
				names = nil
			}
			break
		}
	}
	links := byIDLinks()
	out := make([]PortInfo, 0, len(details))
	for i, d := range details {
		name := d.Name
		if name == "" && names != nil {
			name = names[i]
		}
		if name == "" {
			continue
		}
		out = append(out, PortInfo{
			Name: name, IsUSB: d.IsUSB, VID: strings.ToUpper(d.VID), PID: strings.ToUpper(d.PID),
			SerialNumber: d.SerialNumber, Manufacturer: d.Manufacturer, Product: d.Product,
			Links: links[name],
		})
	}
	slices.SortFunc(out, func(a, b PortInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// byIDLinks maps device paths to their /dev/serial/by-id links (stable names for `port:`).
func byIDLinks() map[string][]string {
	m := map[string][]string{}
	ents, _ := os.ReadDir("/dev/serial/by-id")
	for _, e := range ents {
		l := filepath.Join("/dev/serial/by-id", e.Name())
		if t, err := filepath.EvalSymlinks(l); err == nil {
			m[t] = append(m[t], l)
		}
	}
	return m
}

// errNoDevice: no USB device matches (yet); the port waits for it.
var errNoDevice = errors.New("no USB device matches")

// resolveMatch finds the device path of the single USB port matching m.
func resolveMatch(m *USBMatch) (string, error) {
	details, err := enumerate()
	if err != nil {
		return "", fmt.Errorf("resolve usb %s:%s: %w", m.VID, m.PID, err)
	}
	var found []string
	for _, d := range details {
		if !d.IsUSB || d.Name == "" || !strings.EqualFold(d.VID, m.VID) || !strings.EqualFold(d.PID, m.PID) {
			continue
		}
		if m.SerialNumber != "" && d.SerialNumber != m.SerialNumber {
			continue
		}
		found = append(found, d.Name)
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("resolve usb %s:%s serial %q: %w", m.VID, m.PID, m.SerialNumber, errNoDevice)
	case 1:
		return found[0], nil
	default:
		slices.Sort(found)
		return "", fmt.Errorf("resolve usb %s:%s: ambiguous, %d devices match (%s); set match.serial_number",
			m.VID, m.PID, len(found), strings.Join(found, ", "))
	}
}
