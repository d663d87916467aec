// Package storage owns everything edged keeps on disk: the one badger database under data_dir.
//
// What it owns:
//   - the outboxes: one durable, bounded FIFO per connector (Outbox), with its dead-letter
//     queue; Append returns only once the envelope is fsynced, through a group commit that
//     every concurrent writer of the DB shares (one transaction, one fsync per group);
//   - the keep-latest stores (Latest, latest.go): one message per envelope topic, replaced by
//     a newer one in the same group commit (counted as reason "superseded"); the bridge
//     uses them for keep_latest rules. The topic is only the key: never parsed;
//   - the limits (Config: max_bytes, max_messages, ttl, when_full) and every drop they cause,
//     counted by reason in edged_outbox_dropped_total and logged at a rate limit;
//   - the broker's persistence (StateStore: sessions, subscriptions, inflight, retained),
//     written through the same group commit;
//   - the badger tuning for 512 MB / SD-card gateways (tuneBadger), the data-dir lock, disk
//     space reserve, value-log GC and space reclaim, and recovery from a corrupt store (moved
//     aside, never deleted, salvaged);
//   - integrity (integrity.go, witness.go, badgerlog.go, salvage.go): every record carries a
//     CRC-32C of its envelope, checked on every Read, and badger verifies each table block's
//     checksum when it reads it (OnBlockRead). Nothing damaged is ever returned as data: a
//     record that fails goes to the dead letters with reason "corrupt" as it is; records a
//     damaged block hid are found by their sequence gap (Read skips past the block and still
//     delivers what follows), taken out of the count, and marked in the dead letters. At Open
//     each outbox's tails are compared with the witness (OUTBOX-TAILS, rewritten after every
//     fsync) to count acked records a damaged write-ahead log lost; then, in the background,
//     each outbox is recounted against its records. badger's own log lines about damage go out at ERROR and are
//     counted. A store badger refuses is salvaged file by file into the fresh one before
//     anything is served. Every such loss is counted (edged_storage_corrupt_records_total by
//     cause, edged_outbox_dropped_total{reason="corrupt"}) and logged at ERROR with its size;
//     every dead letter is counted in edged_outbox_dead_letters_total{reason};
//   - a full disk as a state (diskfull.go): badger writes through mmap'ed files, where a full
//     file system is a SIGBUS, so the space guard preallocates the WAL badger writes and the
//     one it rotates to, allocates a value log before values go to it, starts a commit only
//     with room for a memtable flush, keeps an emergency reserve file (RESERVE) for acks and
//     flushes on a disk filled by someone else, and refuses what it cannot make safe with
//     ErrDiskFull (Stats.Space says disk full / writes blocked; edged_storage_reserve_released_total,
//     edged_storage_writes_blocked_total);
//   - repair before quarantine (repair.go): WAL and value-log files that a power cut left
//     empty or shorter than their header are removed before badger opens (WARN, counted in
//     edged_storage_repairs_total{kind}); what badger creates at Open and at every WAL or
//     value-log rotation is fsynced with the directory before the commit is answered;
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
//   - delete user data on its own: a store that fails to open is renamed, not removed (and
//     only read by the salvage);
//   - lose a record silently: a loss it cannot prevent it counts and reports with its size.
package storage
