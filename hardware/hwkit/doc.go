// Package hwkit holds what the serial ports (package hardware) and the Modbus buses (package
// hardware/modbus) share, so that both say and do the same thing the same way:
//
//   - config: the serial line keys (port or USB match, baud, data bits, parity, stop bits),
//     what happens while a device is away (reopen backoff, command queue), names and topics,
//     each with its defaults and its validation, the same keys and texts in both sections
//     (Line, Away, Problems, ValidateList);
//   - the life of a device (Link): its state for status, drops and rate-limited warnings, the
//     bounded queue of commands waiting for it (Queue) and the loop that opens, serves and
//     reopens it with backoff;
//   - the in-process broker client both publish into (Local) and the metric registration
//     (Registrar).
//
// It sits below both: package hardware imports hardware/modbus, so what they share cannot live
// in either. It knows nothing of frames, registers or YAML decoding; what differs between the
// two kinds of device (line defaults and accepted values, how to open and serve one) is passed
// in (LineRules, Device).
package hwkit
