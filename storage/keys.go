package storage

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Key layout. Every key starts with a one-byte kind; outbox keys then carry the outbox name
// length-prefixed (so no name is a prefix of another) and, for records, a big-endian sequence
// number, so byte order is FIFO order and a queue's head can be found with one Seek.
//
//	'o' len name seq8  -> record:      ver(1)=2 appendMs(8) crc32c(4) cbor-envelope (integrity.go;
//	                                   ver 1, written before checksums, has no crc32c)
//	'd' len name seq8  -> dead letter: ver(1) deadMs(8) reasonLen(uvarint) reason record
//	'p' len name       -> outbox meta (head, tail, count, bytes, dlq, drops); see meta
//	'h' len name       -> outbox meta of format 1, moved to 'p' at open (metakey.go)
//	's' key            -> StateStore (broker sessions, subscriptions, inflight, retained)
//	'v'                -> store format version (absent: 1; 2 once metas are under 'p')
//
// The meta is rewritten by every commit, so it sorts right after the records: a memtable
// flush then holds one short key range at the end of the records (newest records, metas)
// and overlaps only the last table of each level, instead of spanning from the meta to the
// newest record, i.e. every table of the level below (metakey.go).
const (
	kindRecord = 'o'
	kindDead   = 'd'
	kindMeta   = 'p'
	kindMetaV1 = 'h'
	kindState  = 's'
	kindFormat = 'v'

	formatVersion = 2
	recordVersion = 1 // of dead letters; records are recordV2 (integrity.go)
)

// maxNameLen bounds outbox names (connector names).
const maxNameLen = 200

func namePrefix(kind byte, name string) []byte {
	b := make([]byte, 0, 2+len(name)+8)
	b = append(b, kind, byte(len(name)))
	return append(b, name...)
}

func seqKey(prefix []byte, seq uint64) []byte {
	k := make([]byte, len(prefix)+8)
	copy(k, prefix)
	binary.BigEndian.PutUint64(k[len(prefix):], seq)
	return k
}

func keySeq(k []byte) uint64 {
	if len(k) < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(k[len(k)-8:])
}

func encodeDead(deadMs int64, reason string, rec []byte) []byte {
	v := make([]byte, 0, 9+binary.MaxVarintLen64+len(reason)+len(rec))
	v = append(v, recordVersion)
	v = binary.BigEndian.AppendUint64(v, uint64(deadMs))
	v = binary.AppendUvarint(v, uint64(len(reason)))
	v = append(v, reason...)
	return append(v, rec...)
}

func decodeDead(v []byte) (deadMs int64, reason string, rec []byte, err error) {
	if len(v) < 10 || v[0] != recordVersion {
		return 0, "", nil, errBadRecord
	}
	deadMs = int64(binary.BigEndian.Uint64(v[1:9]))
	n, k := binary.Uvarint(v[9:])
	if k <= 0 || uint64(len(v)-9-k) < n {
		return 0, "", nil, errBadRecord
	}
	reason = string(v[9+k : 9+k+int(n)])
	return deadMs, reason, v[9+k+int(n):], nil
}

// Drop reasons, the `reason` label of edged_outbox_dropped_total.
const (
	ReasonMaxBytes    = "max_bytes"
	ReasonMaxMessages = "max_messages"
	ReasonTTL         = "ttl"
)

var reasons = [...]string{ReasonMaxBytes, ReasonMaxMessages, ReasonTTL}

func reasonIndex(r string) int {
	for i, s := range reasons {
		if s == r {
			return i
		}
	}
	panic("storage: unknown drop reason " + r)
}

// meta is the persisted state of one outbox, rewritten in the same transaction as every change
// to the queue, so it is always consistent with the records (no scan at start-up).
type meta struct {
	head     uint64 // every record below head is gone
	tail     uint64 // last sequence ever assigned (never reused)
	count    int64
	bytes    int64
	headMs   int64 // append time of the record at head (0 when empty)
	dlqCount int64
	dlqBytes int64
	drops    [len(reasons)]uint64
}

const metaVersion = 1
const metaLen = 1 + 8*7 + 8*len(reasons)

func (m *meta) encode() []byte {
	b := make([]byte, 0, metaLen)
	b = append(b, metaVersion)
	for _, v := range []uint64{m.head, m.tail, uint64(m.count), uint64(m.bytes), uint64(m.headMs), uint64(m.dlqCount), uint64(m.dlqBytes)} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	for _, v := range m.drops {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}

func decodeMeta(b []byte) (meta, error) {
	var m meta
	if len(b) != metaLen || b[0] != metaVersion {
		return m, fmt.Errorf("outbox meta: bad encoding (%d bytes)", len(b))
	}
	u := func(i int) uint64 { return binary.BigEndian.Uint64(b[1+8*i:]) }
	m.head, m.tail, m.count, m.bytes = u(0), u(1), int64(u(2)), int64(u(3))
	m.headMs, m.dlqCount, m.dlqBytes = int64(u(4)), int64(u(5)), int64(u(6))
	for i := range m.drops {
		m.drops[i] = u(7 + i)
	}
	if m.head == 0 || m.head > m.tail+1 || m.count < 0 || m.bytes < 0 || uint64(m.count) > m.tail-m.head+1 {
		return m, fmt.Errorf("outbox meta: inconsistent head=%d tail=%d count=%d", m.head, m.tail, m.count)
	}
	return m, nil
}

func nowMs() int64 { return time.Now().UnixMilli() }

// getValue returns a copy of k's value in txn (badger.ErrKeyNotFound when there is none).
func getValue(txn *badger.Txn, k []byte) ([]byte, error) {
	item, err := txn.Get(k)
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}
