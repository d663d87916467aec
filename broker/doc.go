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
// see a message once it was captured. Will messages are captured after mochi sends them
// (nothing to ack; failures only counted); a will must pass the publish ACL and the topic
// limits at CONNECT (else the CONNECT is refused) and again when sent (else dropped; acl.go). A denied QoS 1/2 PUBLISH disconnects a 3.1.1
// client (mochi: 3.1.1 has no negative PUBACK); MQTT 5 gets PUBACK/PUBREC 0x87.
//
// Limits: topic length and levels, filters per SUBSCRIBE and subscriptions per client bound
// the work and memory one packet or session can cost; refusals use MQTT reason codes and are
// counted by reason (limits.go). Every packet from a client is decoded once under recover
// before mochi decodes it, so that bytes on which mochi's decoder panics close that client
// instead of the process (guard.go). MQTT 3.1.1 clients never get a DISCONNECT packet (3.1.1 has
// none from a server); they see the connection close.
//
// Backpressure: a publisher whose message goes to a subscriber with a 3/4 full write queue
// (max_queued) is held back up to backpressure_wait until the queue drained, instead of the
// message being dropped; a subscriber that does not drain in time is marked slow and no longer
// waited for (see backpressure.go).
//
// Throughput: a client's pipelined messages reach the Capturer in arrival order on one
// goroutine per client, so a plain Capturer costs one commit per message and client
// (BenchmarkIngestQoS1, 8 publishers, 200 B, 0.56 ms fsync commit shared by concurrent
// callers: ~6k msgs/s). A Capturer that also implements BatchCapturer gets all of a client's
// queued messages in one call and one commit: ~66k msgs/s on the same box. The bridge should
// implement CaptureBatch over Outbox.Append(ctx, envs...).
package broker
