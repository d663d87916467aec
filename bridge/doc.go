// Package bridge forwards what local devices publish to remote systems and brings remote
// commands back: the connector registry, the forward/subscribe rules, one forwarder per
// connector draining that connector's outbox, retry with backoff, the circuit breaker, stall
// detection, connector status and the edged_bridge_* metrics.
//
// # What bridge owns and what it must not
//
// Bridge owns: the `bridge.connectors` config types (one per connector type, registered in
// init() like caddy modules: Register panics on an empty name, a nil constructor or a
// duplicate), the mapping of topics, the decision of what goes into which outbox (Capture), the
// draining of outboxes (forwarders), and the connectors (mqtt, http, websocket).
//
// Bridge must not: open or know about badger (it uses storage.DB / storage.Outbox only), run
// listeners or ACLs (broker), touch serial ports (hardware), buffer messages in memory beyond
// one batch per connector, or dial anything in New (a dead uplink never blocks start-up or the
// local broker; connecting happens in the forwarder goroutine started by Run).
//
// # Delivery
//
// Capture (the broker's Capturer, called before the PUBACK) matches the message against the
// forward rules of every connector and appends one envelope per matching connector (and per
// distinct remote topic) to that connector's outbox; it returns nil only once every append is
// durable. Under `when_full: reject` a full outbox makes Capture return an error wrapping
// broker.ErrQuotaExceeded (MQTT 5 reason 0x97). QoS 0 messages are stored the same way (they
// share the group commit), but a failure to store one is only counted: QoS 0 is best effort.
//
// The envelope's Topic is the remote topic, computed at capture time from the rule ("to"
// template); the envelope QoS is the rule's QoS. Envelope ids are wire.NewID() (time ordered);
// all connectors' copies of one message share the id.
//
// Downlink messages are published locally with the user property OriginProp
// ("edged-bridge" = connector name); Capture never forwards such a message back to the
// connector it came from, which breaks bridge loops.
//
// Each forwarder is a transaction over its outbox, in the style of telegraf's buffer: read a
// batch from the head, hand it to the connector, then remove the longest prefix with final
// results (confirmed, or rejected for good and moved to the dead letters) with Outbox.Ack.
// Everything else stays queued and is sent again, in order, after a reconnect: delivery is
// at-least-once and duplicates carry the same id. A retried batch contains exactly the same
// messages as the failed one, so batch idempotency keys are stable.
//
// Failures back off exponentially (backoff.min doubling to backoff.max, with jitter drawn from
// [d/2, d]); after breaker.failures consecutive failures the breaker opens for
// breaker.open_for (state "breaker_open": no attempts), then one probe decides. If messages wait and
// the remote confirms nothing for stall_timeout, the connector is marked "stalled", counted
// and reconnected.
//
// Failover (urls: [primary, secondary, ...] on mqtt, http and websocket) lives in the
// forwarder too (failover.go): a failure moves to the next endpoint; a prober brings the
// forwarder back to the primary at a batch boundary once the primary passed protocol-level
// probes for a hold time. Delivery metrics (delivery_metrics.go): per delivered message the
// capture-to-ack latency and the hand-over-to-ack round trip (Prometheus histograms and a
// five-minute quantile window for status), bytes on the wire (Env.BytesOut), failures by
// class (failureClass). Presence (presence.go, mqtt only): the retained online/offline status
// with an MQTT will, and periodic health reports built from every connector's outbox.
//
// # mqtt connector
//
// MQTT 5 (default) uses a small pipelined client (bridge/internal/mqtt5): QoS 1 publishes are
// written in outbox order with up to min(window, server Receive Maximum) awaiting PUBACK; each
// carries the envelope id as user property "id"; a PUBACK reason >= 0x80 dead-letters the
// message. MQTT 3.1.1 uses paho.mqtt.golang (no user properties: choose format cbor or json
// if the remote must deduplicate) over a socket the connector dials itself, like MQTT 5, so
// the bandwidth cap holds and a server's packet sizes are bounded (mqtt5.LimitReads). Sessions are persistent by default (clean_start false,
// session_expiry 24h) and the subscribe filters are subscribed again on every connect.
// Incoming QoS 2 is exactly once per session (packet ids held from PUBLISH to PUBREL); 3.1.1
// acknowledges a downlink message only after it was published locally (paho manual ack). A
// downlink message that a subscribe rule maps to no valid local topic (an empty wildcard
// capture: "cmd/#" -> "{1}" on the remote topic "cmd") can never be published: it is dropped,
// counted in edged_bridge_downlink_failed_total and logged, and acknowledged, so the remote
// does not redeliver it forever.
//
// # http connector
//
// Each request is a POST of one batch to url. With batch.max_messages 1 the body is one
// envelope (wire JSON or CBOR), otherwise a wire batch. Headers:
//
//	Content-Type: application/json | application/cbor
//	Idempotency-Key: <envelope id> (single) | <first envelope id>.<count> (batch)
//	X-Edged-Batch-First, X-Edged-Batch-Last, X-Edged-Batch-Count (batch only)
//	X-Edged-Gateway: <gateway_id>
//
// 2xx confirms every message of the request. 429 (honouring Retry-After in seconds or as an
// HTTP date, at most one hour), 5xx, 401 (after one token refresh), 408 and network errors are retried. Any
// other status (400, 403, 404, 413, 422, ...) moves every message of the request to the dead
// letters; use batch.max_messages 1 if one bad message must not take its batch with it.
// A 3xx is never followed (RedirectError): retried, counted as failure reason "redirect".
//
// # Secrets
//
// Connector configs declare their credentials (SecretHolder); the bridge masks them, and the
// secrets a connector reads from files, with one internal/redact Scrubber per connector in its
// logger, status (last_error, endpoint), dead-letter reasons and returned errors.
//
// # HMAC signature
//
// With `auth: {type: hmac, key_id: K, secret_file: F}` every request (and the websocket
// handshake) carries:
//
//	X-Edged-Key-Id:    K
//	X-Edged-Timestamp: Unix time in seconds, decimal
//	X-Edged-Nonce:     32 lower-case hex digits (16 random bytes), new per request
//	X-Edged-Signature: lower-case hex of HMAC-SHA256(secret, S)
//
// where the string S is (joined by single "\n", no trailing newline):
//
//	METHOD            e.g. POST (GET for the websocket handshake)
//	PATH              the request target as sent: path plus "?query" when there is one
//	TIMESTAMP         the X-Edged-Timestamp value
//	NONCE             the X-Edged-Nonce value
//	hex(sha256(BODY)) lower-case hex; the body is the exact bytes sent (empty for GET)
//
// The secret is the content of secret_file without its trailing newline. A cloud recomputes
// S, compares signatures in constant time, rejects timestamps off by more than a few minutes
// and nonces seen within that window. VerifyHMAC implements the check in Go.
//
// # Traffic control
//
// A connector's messages wait in lanes (lanes.go): one storage outbox per priority (and per
// rule ttl), a storage.Latest per keep_latest priority, and with live_first a backlog twin of
// each for what is captured while the link is down. The default lane is the outbox named after
// the connector. One forwarder drains them all, highest priority first, live before backlog;
// a lane is FIFO. Lanes left over from an earlier configuration are drained, never fed. The
// bandwidth cap is a Throttle under every socket a connector dials (Env.Dialer, ratelimit.go);
// the http request cap and body compression, and compressed websocket frames, are in
// compress.go; the keys are documented on their config types (traffic.go).
//
// # WebSocket protocol
//
// The websocket connector opens url (ws:// or wss://; auth headers on the handshake) and keeps
// it open, pinging every ping_interval. Frames are text (format json) or binary (format cbor):
//
//   - edged -> server: one batch per frame (a wire batch; a single wire envelope when
//     batch.max_messages is 1).
//   - server -> edged ack: {"ack": "<envelope id>"} confirms that envelope and every earlier
//     envelope of the frame (cumulative, so acking a frame's last id confirms the frame). In
//     CBOR the same map with text keys and the id as a text string.
//   - server -> edged reject: {"reject": "<envelope id>", "error": "why"} moves that one
//     envelope to the dead letters.
//   - server -> edged downlink: a wire envelope (JSON in a text frame, CBOR in a binary frame)
//     whose topic is mapped through the subscribe rules and published locally; edged answers
//     {"ack": "<id>"} when it was published, or {"reject": "<id>", "error": ...}.
//
// Envelopes without an ack are sent again after a reconnect (same ids).
//
// With compression: zstd, edged -> server batch frames are compressed: a binary frame whose
// first four bytes are the zstd magic number 28 b5 2f fd holds one zstd frame (RFC 8878)
// whose content is exactly the frame that would have been sent uncompressed (JSON text or
// CBOR bytes, told apart by the connector's format; a JSON batch starts with '{'). Neither a
// JSON frame nor a CBOR envelope or batch can start with those bytes, so a server can accept
// both. Acks, rejects and downlink frames are never compressed.
package bridge
