// Package storage owns everything edged keeps on disk: the one badger database under data_dir.
//
// What it owns:
//   - the outboxes: one durable, bounded FIFO per connector (Outbox), with its dead-letter
//     queue; Append returns only once the envelope is fsynced, through a group commit that
//     every concurrent writer of the DB shares (one transaction, one fsync per group);
//   - the limits (Config: max_bytes, max_messages, ttl, when_full) and every drop they cause,
//     counted by reason in edged_outbox_dropped_total and logged at a rate limit;
//   - the broker's persistence (StateStore: sessions, subscriptions, inflight, retained),
//     written through the same group commit;
//   - the badger tuning for 512 MB / SD-card gateways (tuneBadger), the data-dir lock, disk
//     space reserve, value-log GC and space reclaim, and recovery from a corrupt store (moved
//     aside, never deleted);
//   - the `edged outbox` CLI (OutboxCLI), which works on a stopped daemon's data dir.
//
// What it must not do:
//   - know about MQTT, HTTP, connectors or rules: it stores wire.Envelopes by outbox name and
//     never interprets topics or payloads (bridge and broker do);
//   - retry, back off or deliver: the forwarder in bridge drains an outbox with Read, then Ack
//     or DeadLetter;
//   - let any other package open badger or see badger types: the API is Outbox, StateStore and
//     plain values;
//   - grow memory with the backlog: nothing is indexed in memory per message; a queue is a
//     persisted head/tail and a key range found with one Seek;
//   - write when nothing changes: housekeeping only writes when something expired or was
//     deleted, so an idle gateway does not wear its SD card;
//   - delete user data on its own: a store that fails to open is renamed, not removed.
package storage
