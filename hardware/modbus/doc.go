// Package modbus owns edged's Modbus masters (hardware.modbus): one goroutine per bus, RTU over a
// serial line or TCP, polling the configured units, decoding their registers into point values
// and publishing them into the embedded broker through the in-process client (Local), with
// report by exception; and writing coils and holding registers on MQTT commands. The protocol
// itself is github.com/simonvetter/modbus.
//
// What it must not do: touch disk state, know about outboxes or connectors, or open serial
// devices outside the serial layer's guard (SerialLayer, provided by package hardware).
//
// # Scheduling
//
// A bus is one request at a time (RTU is half duplex; TCP gateways usually are too). Points of
// a unit with the same register type and poll interval whose addresses touch are merged into
// one read request (up to 125 registers or 2000 bits). The bus goroutine always runs the request
// that is due first; a request keeps its phase (next = previous slot + interval), and slots
// missed because the bus was busy are skipped and counted (edged_modbus_polls_skipped_total),
// never bunched up. Queued writes go before reads.
//
// A request that times out is retried (retries) while its unit has been answering. A unit whose
// poll failed gets a single try per request from then on, and its other requests due in that
// round are skipped; after offline_after failed polls in a row it is marked offline, its points
// are published once with quality stale, and it is probed with one request per offline_backoff
// period instead of at its poll rate. So a unit that goes silent costs the bus (retries+1)
// timeouts once, then one timeout per poll for a few polls, then one per backoff period, and the
// other units keep their rate. On RTU each timeout is followed by a resync (one more timeout of
// quiet, then the device is reopened), because RTU answers carry no request id and a late
// answer would otherwise be read as the next request's.
//
// # Published values
//
// {"v": value, "t": capture ms, "q": "good|bad|stale"} as JSON or CBOR (format). The capture
// time is when the response arrived; it is also the message's capture time (user property
// edged-time), so values buffered in an outbox keep their true time. Without deadband and
// on_change every read is published; with them a value is published when it moved beyond the
// deadband or changed, when max_interval passed, and always when the quality changes.
// "bad": the unit answered with an exception, or a float read as NaN/Inf (v null). "stale": the
// unit went offline or the bus went away; v is the last good value and t when that was noticed.
//
// # Serial devices and the fd >= 1024 trap
//
// The library opens RTU devices itself through github.com/goburrow/serial, which, like
// go.bug.st/serial, reads with select(2) and panics on an fd >= 1024. So an RTU bus opens its
// device only inside SerialLayer.Open, which package hardware implements with the serial
// ports' fd reserve (one low fd per bus, released right before the open, under the same lock as
// every serial open), then checks the fd it got (by reflection into the client; refused and
// retried if >= 1024), and recovers a panic in the session as a last resort. The USB match is
// resolved by the serial layer too, before every open, so a replugged adapter is found again.
package modbus
