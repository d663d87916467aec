// Package hwkit holds what the serial ports (package hardware) and the Modbus buses (package
// hardware/modbus) share, so that both say the same thing the same way: the serial line keys
// (port or USB match, baud, data bits, parity, stop bits), what happens while a device is away
// (reopen backoff, command queue), names and topics, each with its defaults and its
// validation (the same keys and texts in both sections), and the bounded queue of commands
// waiting for a device.
//
// It is a leaf below both: package hardware imports hardware/modbus, so what they share cannot
// live in either. It knows nothing of devices, the broker or YAML decoding; what differs
// between the two kinds of device (defaults, accepted values) is passed in (LineRules).
package hwkit
