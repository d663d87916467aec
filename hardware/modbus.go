package hardware

import (
	"errors"
	"fmt"

	"github.com/edged-dev/edged/hardware/modbus"
)

// modbusSerial is the serial layer of one Modbus RTU bus: device resolution by path or USB match
// and the fd reserve of the serial ports (see the package doc), for a device that the Modbus
// library opens itself.
type modbusSerial struct {
	reserved []int // one low fd, released for the device right before each open
}

// fdsPerModbusBus: the Modbus library's serial port is a single fd (no close-signal pipe).
const fdsPerModbusBus = 1

func newModbusSerial() modbus.SerialLayer {
	return &modbusSerial{reserved: reserveFDs(fdsPerModbusBus)}
}

func (s *modbusSerial) Resolve(port string, m *modbus.USBMatch) (string, error) {
	if m == nil {
		return port, nil
	}
	return resolveMatch(m)
}

// Open runs open under the lock every serial open takes, with the reserve released just before
// so the device gets a low fd, and refills the reserve afterwards. Unlike a serial port, the
// open device keeps its fd while open; the reserve is refilled at once (with whatever fd is
// lowest then) so the next reopen has one to hand over.
func (s *modbusSerial) Open(open func() error) error {
	openMu.Lock()
	defer openMu.Unlock()
	releaseFDs(s.reserved)
	s.reserved = nil
	err := open()
	s.reserved = reserveFDs(fdsPerModbusBus)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	return nil
}

func (s *modbusSerial) Absent(err error) bool { return isAbsent(err) || errors.Is(err, errNoDevice) }

func (s *modbusSerial) Release() {
	openMu.Lock()
	defer openMu.Unlock()
	releaseFDs(s.reserved)
	s.reserved = nil
}
