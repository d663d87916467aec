package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/edged-dev/edged/wire"
)

// FuzzRecord: any stored bytes decode to an error or to a record that re-encodes to the same
// bytes (version 2) and whose envelope matches its checksum; never a panic.
func FuzzRecord(f *testing.F) {
	f.Add(encodeRecord(1700000000000, []byte{0xa1, 0x61, 0x74, 0x61, 0x78}))
	f.Add(append([]byte{recordV1, 0, 0, 1, 0x8b, 0xcf, 0xe5, 0x68, 0}, 0xa0))
	f.Add([]byte{recordV2, 0, 0, 0, 0, 0, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, v []byte) {
		ms, env, err := decodeRecord(v)
		if err != nil {
			return
		}
		if v[0] == recordV2 && !bytes.Equal(encodeRecord(ms, env), v) {
			t.Fatalf("version 2 record does not re-encode to its bytes")
		}
		w := bytes.Clone(v)
		setRecordTime(w, ms+1)
		if ms2, env2, err := decodeRecord(w); err != nil || ms2 != ms+1 || !bytes.Equal(env2, env) {
			t.Fatalf("setRecordTime broke the record: %v", err)
		}
	})
}

// FuzzWitness: the outbox tails file decodes to an error or to tails that re-encode to the
// same state; never a panic.
func FuzzWitness(f *testing.F) {
	f.Add(encodeWitness(nil, map[string]witnessed{"cloud": {head: 5, tail: 10, count: 4}, "b": {head: 1, tail: 0}}))
	f.Add(encodeWitness(nil, map[string]witnessed{}))
	f.Add([]byte("EDGW\x01\x00\x00\x00\x01\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeWitness(b)
		if err != nil {
			return
		}
		m2, err := decodeWitness(encodeWitness(nil, m))
		if err != nil || len(m2) != len(m) {
			t.Fatalf("re-encoded witness: %v", err)
		}
		for k, v := range m {
			if m2[k] != v {
				t.Fatalf("witness %q changed: %v -> %v", k, v, m2[k])
			}
		}
	})
}

// FuzzLogEntries: badger log bytes (a damaged write-ahead or value log met while salvaging)
// give entries and an offset inside the input, never a panic.
func FuzzLogEntries(f *testing.F) {
	f.Add(make([]byte, 64))
	f.Add(append(make([]byte, logHeaderSize), 0x40, 0, 3, 2, 0, 'k', 'e', 'y', 'v', 'v', 1, 2, 3, 4))
	if e, _, err := replayLog(walSeed()); err != nil || len(e) != 1 {
		f.Fatalf("the seed log does not replay: %d entries, %v", len(e), err)
	}
	f.Add(walSeed())
	f.Fuzz(func(t *testing.T, b []byte) {
		ents, end, _ := replayLog(b)
		if end > len(b) {
			t.Fatalf("replay ends at %d of %d", end, len(b))
		}
		for _, e := range ents {
			if e.len <= 0 {
				t.Fatal("empty entry")
			}
		}
		_, _ = readVlogValue(map[uint32][]byte{0: b}, b[:min(12, len(b))])
	})
}

// walSeed is a tiny write-ahead log: one transaction of one entry and its commit marker, in
// badger's format.
func walSeed() []byte {
	b := make([]byte, logHeaderSize)
	entry := func(meta byte, key, val []byte) {
		s := len(b)
		b = append(b, meta, 0, byte(len(key)), byte(len(val)), 0)
		b = append(b, key...)
		b = append(b, val...)
		var crc [4]byte
		c := crc32c(b[s:])
		crc[0], crc[1], crc[2], crc[3] = byte(c>>24), byte(c>>16), byte(c>>8), byte(c)
		b = append(b, crc[:]...)
	}
	ts := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xf8} // badger stores MaxUint64-ts: version 7
	entry(bitTxn, append([]byte("okey"), ts...), []byte("value"))
	entry(bitFinTxn, append([]byte("!badger!txn"), ts...), []byte("7"))
	return append(b, make([]byte, 32)...)
}

// FuzzStoredMeta: the outbox meta, the keep-latest meta and the dead-letter header are read
// back from disk at every start. Each decodes to an error or to a value that re-encodes to
// the same bytes and keeps the invariants the queue code relies on; never a panic.
func FuzzStoredMeta(f *testing.F) {
	m := meta{head: 3, tail: 10, count: 8, bytes: 4096, headMs: 1700000000000, dlqCount: 2, dlqBytes: 100, drops: [len(reasons)]uint64{1, 0, 7}}
	f.Add(m.encode())
	f.Add((&meta{head: 1}).encode())
	f.Add(latestMeta{seq: 9, count: 4, bytes: 120, superseded: 5, ttl: 3, dlqCount: 1}.encode())
	f.Add(encodeDead(1700000000000, "http 400: bad request", encodeRecord(1700000000000, []byte{0xa0})))
	f.Add(encodeDead(-1, "", nil))
	f.Add([]byte{recordVersion, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := decodeMeta(b); err == nil {
			if !bytes.Equal(m.encode(), b) {
				t.Fatalf("outbox meta %+v does not re-encode to its bytes", m)
			}
			if m.head == 0 || m.head > m.tail+1 || m.count < 0 || m.bytes < 0 || uint64(m.count) > m.tail-m.head+1 {
				t.Fatalf("inconsistent outbox meta accepted: %+v", m)
			}
		}
		if m, err := decodeLatestMeta(b); err == nil {
			if !bytes.Equal(m.encode(), b) || m.count < 0 || m.bytes < 0 {
				t.Fatalf("keep-latest meta %+v", m)
			}
		}
		if ms, reason, rec, err := decodeDead(b); err == nil {
			// The reason's length is a uvarint, which may arrive non-minimal: compare values.
			ms2, reason2, rec2, err := decodeDead(encodeDead(ms, reason, rec))
			if err != nil || ms2 != ms || reason2 != reason || !bytes.Equal(rec2, rec) {
				t.Fatalf("dead letter (%d, %q, %x) does not survive re-encoding: %v", ms, reason, rec, err)
			}
			if len(reason)+len(rec) > len(b)-10 {
				t.Fatalf("dead letter parts longer than its %d bytes", len(b))
			}
		}
	})
}

// FuzzQuarantine: salvage reads the files of a store moved aside as damaged: its tables
// (.sst, through badger's table reader), its write-ahead log (.mem) and its value log (.vlog).
// Whatever those files hold, reading them gives key/values and a list of damage, never a
// panic that escapes (a crash here would take the daemon down in the middle of its repair).
func FuzzQuarantine(f *testing.F) {
	src := f.TempDir()
	db := openT(f, src)
	ob := outboxT(f, db, "cloud", Config{})
	for i := range 3 {
		must(f, ob.Append(context.Background(), &wire.Envelope{ID: wire.NewID(), Topic: "sensors/t" + strconv.Itoa(i), Payload: []byte(`{"t":21.5}`), QoS: 1}))
	}
	must(f, ob.DeadLetter(2, "http 400: bad request"))
	must(f, db.State().Put("sess/client-1", []byte("session bytes")))
	must(f, db.Close())
	ssts, _ := filepath.Glob(filepath.Join(src, "*.sst"))
	if len(ssts) == 0 {
		f.Fatal("the seed store wrote no table")
	}
	sst, err := os.ReadFile(ssts[0])
	must(f, err)
	// The pristine table reads in full: the seed is what a healthy store leaves.
	if kvs, damaged, err := readQuarantined(src); err != nil || len(damaged) > 0 || len(kvs) == 0 {
		f.Fatalf("seed store: %d keys, damage %q, %v", len(kvs), damaged, err)
	}
	f.Add(sst, walSeed(), walSeed())
	f.Add(sst[:len(sst)/2], []byte{}, []byte{})
	f.Add([]byte{}, walSeed(), []byte{})
	f.Fuzz(func(t *testing.T, sst, mem, vlog []byte) {
		dir := t.TempDir()
		for name, b := range map[string][]byte{"000001.sst": sst, "00002.mem": mem, "000001.vlog": vlog, "1.vlog": vlog} {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		kvs, _, err := readQuarantined(dir)
		if err != nil {
			t.Fatalf("readable directory: %v", err)
		}
		for i, kv := range kvs {
			if len(kv.key) == 0 || (i > 0 && bytes.Compare(kvs[i-1].key, kv.key) >= 0) {
				t.Fatalf("keys out of order or empty at %d", i)
			}
		}
	})
}

// encodeKVs / decodeKVs: a list of key/values as fuzz input (u16 key length, key, u16 value
// length, value, repeated). decodeKVs returns them as readQuarantined does: non-empty keys,
// sorted, each once.
func encodeKVs(kvs []salvageKV) []byte {
	var b []byte
	for _, kv := range kvs {
		b = binary.BigEndian.AppendUint16(b, uint16(len(kv.key)))
		b = append(b, kv.key...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(kv.val)))
		b = append(b, kv.val...)
	}
	return b
}

func decodeKVs(b []byte) []salvageKV {
	seen := map[string]bool{}
	var out []salvageKV
	next := func() ([]byte, bool) {
		if len(b) < 2 {
			return nil, false
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			return nil, false
		}
		v := b[2 : 2+n]
		b = b[2+n:]
		return v, true
	}
	for {
		k, ok := next()
		if !ok {
			break
		}
		v, ok := next()
		if !ok {
			break
		}
		if len(k) == 0 || seen[string(k)] {
			continue
		}
		seen[string(k)] = true
		out = append(out, salvageKV{key: bytes.Clone(k), val: bytes.Clone(v)})
	}
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i].key, out[j].key) < 0 })
	return out
}

// FuzzSalvageCopy: what salvage copies into the fresh store comes from damaged files (the
// keys and values readQuarantined found, the tails the witness file kept). Whatever they
// are, the copy ends, in time and space bounded by what was found rather than by the
// numbers inside it (a sequence or a tail near 2^64 must not be walked one by one), without
// a panic, and leaves metas that decode.
func FuzzSalvageCopy(f *testing.F) {
	src := f.TempDir()
	db := openT(f, src)
	ob := outboxT(f, db, "cloud", Config{})
	for i := range 4 {
		must(f, ob.Append(context.Background(), &wire.Envelope{ID: wire.NewID(), Topic: "sensors/t" + strconv.Itoa(i), Payload: []byte(`{"t":21.5}`), QoS: 1}))
	}
	must(f, ob.DeadLetter(2, "http 400: bad request"))
	must(f, db.Close())
	kvs, damaged, err := readQuarantined(src)
	if err != nil || len(damaged) > 0 {
		f.Fatalf("seed store: %q %v", damaged, err)
	}
	wit := encodeWitness(nil, map[string]witnessed{"cloud": {head: 1, tail: 4, count: 3}})
	f.Add(encodeKVs(kvs), wit)
	f.Add(encodeKVs(kvs[:len(kvs)/2]), []byte{})
	f.Add(encodeKVs(kvs), encodeWitness(nil, map[string]witnessed{"cloud": {head: 1, tail: 1 << 40, count: 3}}))
	var hugeSeq []salvageKV
	for _, kv := range kvs {
		if kv.key[0] == kindRecord {
			k := bytes.Clone(kv.key)
			k[len(k)-8] = 0x40 // a sequence near 2^62: one damaged key byte
			hugeSeq = append(hugeSeq, salvageKV{key: k, val: kv.val})
		}
	}
	f.Add(encodeKVs(hugeSeq), []byte{})
	f.Fuzz(func(t *testing.T, in, witBytes []byte) {
		wit, err := decodeWitness(witBytes)
		if err != nil {
			wit = nil
		}
		// A fresh store each time, as salvage has: what one input left must not decide the next.
		dst := openT(t, t.TempDir())
		defer dst.Close()
		done := make(chan error, 1)
		go func() {
			_, err := dst.copySalvaged(decodeKVs(in), wit)
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("copy: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("salvage copy still running after 30s")
		}
	})
}

// TestDeadLettersAfterLast: the admin API passes ?after= through; after=2^64-1 wrapped to 0
// and listed the first page again, so a client paging to the end never saw it end.
func TestDeadLettersAfterLast(t *testing.T) {
	db := openT(t, t.TempDir())
	defer db.Close()
	ob := outboxT(t, db, "cloud", Config{})
	must(t, ob.Append(context.Background(), &wire.Envelope{ID: wire.NewID(), Topic: "t", QoS: 1}))
	must(t, ob.DeadLetter(1, "http 400: bad request"))
	if d, err := ob.DeadLetters(0, 10); err != nil || len(d) != 1 {
		t.Fatalf("from the start: %d, %v", len(d), err)
	}
	if d, err := ob.DeadLetters(math.MaxUint64, 10); err != nil || len(d) != 0 {
		t.Fatalf("after the last possible sequence: %d dead letters, %v", len(d), err)
	}
}
