// Package hardware owns edged's serial ports: discovery (ListPorts, `edged ports`), resolving a
// configured port by path or by USB identity, opening it with the configured line settings,
// splitting the byte stream into frames, validating and stamping each frame and publishing it
// into the embedded broker through the in-process client (Local), writing command messages back
// to the device, and reopening a port that disappeared (hot-plug) with exponential backoff.
//
// What it must not do: it opens no network sockets (publishes go through Local, never a TCP
// loopback), touches no disk state, knows nothing of outboxes, connectors or rules (a frame is
// durable once Local.Publish returned, because the broker's capturer made it so), and does not
// implement frame codecs or CBOR/JSON transcoding itself: those are pure functions in package
// wire.
//
// Modbus buses (hardware.modbus) are run by package hardware/modbus; the Manager starts them with
// the ports and lends each RTU bus this package's serial layer (path or USB match resolution and
// the fd reserve below, see modbus.go), because the Modbus library opens its devices itself.
//
// # Data path
//
// Each configured port has one goroutine (started by Manager.Run) that owns the port for its
// whole life: resolve -> open -> session -> close -> backoff -> resolve ... A session runs one
// reader goroutine that loops on Port.Read (a read timeout returns (0, nil) in go.bug.st/serial,
// so there is no bufio.Scanner here) and feeds the decoder; every decoded frame is validated
// against the configured format, optionally transcoded, stamped with its capture time
// (Message.Time and the MQTT 5 user property "edged-time", Unix milliseconds) and the user
// property "port" (the configured port name), then published with Local.Publish. Invalid and
// oversize frames are counted by reason and dropped, or published to error_topic when one is
// configured; the decoder resynchronises on the next delimiter.
//
// # Commands
//
// Messages on command_topic are framed with the port's framing and written to the device. While
// the port is away they are held in a small bounded queue (command_queue, default 16) and written
// on reopen unless older than command_max_age (default 30s); stale commands to actuators are worse
// than lost ones. Writes block while the device does not drain its input (a real UART always
// drains at the baud rate; a pty nobody reads does not). Everything not written is counted (edged_serial_dropped_total{reason}), logged at
// a rate limit and shown as last_error in the status: never silently lost.
//
// # The fd >= 1024 trap
//
// go.bug.st/serial v1.8.0 reads with select(2) and panics (index out of range) when the port's
// fd, or its internal close-signal pipe, is >= 1024. A busy broker can push new fds past that.
// The Manager therefore (1) reserves three low fds per port when it is created (edged starts
// hardware early enough for these to be low) and releases them right before each open so the
// kernel hands them to the port, (2) checks the fds of every opened port and refuses one that
// would panic, reporting an error and retrying later instead, and (3) recovers a panic inside the
// read goroutine as a last resort, turning it into a session error. The reserve is released when
// Run returns (a Manager that never runs keeps 3 fds per port).
package hardware
