package modbus

import (
	"errors"
	"io/fs"
	"reflect"
)

// fdSetSize is FD_SETSIZE: the serial library (github.com/goburrow/serial, which
// github.com/simonvetter/modbus uses to open RTU devices) reads with select(2) and panics on an
// fd at or above it.
const fdSetSize = 1024

// SerialLayer is what an RTU bus needs from package hardware's serial layer: the same device
// resolution (port path or USB match, re-resolved before every open) and the same fd >= 1024
// guard as the serial ports. One per RTU bus.
type SerialLayer interface {
	// Resolve returns the device path to open.
	Resolve(port string, match *USBMatch) (string, error)
	// Open runs open (which opens the device) serialised with every other serial open and with
	// the bus's reserved low fd released just before, so the kernel hands that fd to the device.
	Open(open func() error) error
	// Absent tells a missing device (wait for it) from a failure.
	Absent(err error) bool
	// Release gives the reserved fd back; called once when the bus stops.
	Release()
}

// plainSerial is the SerialLayer used without package hardware (tests of this package): paths
// only, no fd reserve.
type plainSerial struct{}

func (plainSerial) Resolve(port string, m *USBMatch) (string, error) {
	if m != nil {
		return "", errors.New("usb match needs the hardware serial layer")
	}
	return port, nil
}
func (plainSerial) Open(open func() error) error { return open() }
func (plainSerial) Absent(err error) bool        { return errors.Is(err, fs.ErrNotExist) }
func (plainSerial) Release()                     {}

// clientFD digs the device fd out of a simonvetter/modbus v1.6.4 RTU client
// (ModbusClient.transport -> rtuTransport.link -> serialPortWrapper.port -> goburrow port.fd)
// by reflection; any other shape yields -1 and the check is skipped, leaving the recover in the
// session as the guard. Reading unexported fields through reflect is allowed; nothing is set.
func clientFD(c any) int {
	v := reflect.ValueOf(c)
	for _, name := range []string{"transport", "link", "port", "fd"} {
		for v.IsValid() && (v.Kind() == reflect.Pointer || v.Kind() == reflect.Interface) {
			if v.IsNil() {
				return -1
			}
			v = v.Elem()
		}
		if !v.IsValid() || v.Kind() != reflect.Struct {
			return -1
		}
		v = v.FieldByName(name)
	}
	if !v.IsValid() || !v.CanInt() {
		return -1
	}
	return int(v.Int())
}
