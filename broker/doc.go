// Package broker owns the embedded MQTT broker (mochi-mqtt/server/v2): its listeners (tcp,
// tls, websocket), authentication (bcrypt users, client certificates, anonymous on loopback),
// topic ACLs (roles with %c/%u patterns), persistence of sessions, subscriptions, inflight and
// retained messages (through the StateStore interface, implemented by storage), the capture
// pipeline that hands every accepted PUBLISH to a Capturer (the bridge) and acks it only once
// it is durable, and in-process Publish/Subscribe for serial input and cloud downlink.
//
// It must not: open files or databases of its own (state goes through StateStore; nothing
// else touches badger), know about connectors, rules, outboxes or envelopes (the Capturer
// decides what to keep), register metrics on the global registry, or let a mochi type leak
// into its API (Message, Status and Config are its own).
//
// Lifecycle: New (validate, build) -> SetCapturer -> Start (restore state, bind) -> Close
// (stop listeners, disconnect clients, finish pending captures). Close must run before the
// capturer and the StateStore are closed.
//
// Delivery semantics: see the pipeline comment in capture.go. In short, QoS 1/2 PUBLISHes are
// acked (PUBACK/PUBREC) in order per client, only after the Capturer returned nil; MQTT 5
// clients get reason 0x97 when it returned ErrQuotaExceeded and 0x80 for other errors;
// MQTT 3.1.1 clients are disconnected without an ack so they resend. Local subscribers only
// see a message once it was captured.
package broker
