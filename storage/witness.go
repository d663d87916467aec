package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/edged-dev/edged/internal/ratelog"
)

// The witness: a small file next to badger's, rewritten in place after every group commit
// whose fsync succeeded, holding each outbox's head, tail and count.
//
// Why: an outbox's meta (head, tail, count) is written in the same transaction as its records,
// so when badger's write-ahead log loses its end (a truncated or overwritten *.mem file),
// badger silently stops its replay at the damage and the meta rolls back together with the
// records: the store is consistent, and the acked messages are gone without a trace. The
// witness is the second, independent record of what was acked: at Open a witnessed tail above
// the persisted one is a loss of exactly that many acknowledged appends.
//
// Cost: one pwrite of a few dozen bytes per outbox per group commit, never fsynced by itself
// (it is fsynced at Close): no extra fsync, and the kernel writes the page back at its own
// pace. Because it is written only after the log's fsync, it never claims more than was
// durable: after a power cut it is at worst older than the store (or torn, and then ignored
// by its checksum), which hides a loss but never invents one.
//
//	"EDGW" ver(1)=1 len(4) { n(uvarint) n x (nameLen(uvarint) name head tail count (uvarints)) } crc32c(4)
//
// len and the checksum cover the braces; bytes after the checksum (left by a longer earlier
// version) are ignored.
const witnessFile = "OUTBOX-TAILS"

var witnessMagic = []byte("EDGW\x01")

type witnessed struct {
	head, tail uint64
	count      int64
}

type witness struct {
	f      *os.File
	tails  map[string]witnessed
	buf    []byte
	failed ratelog.Limit
}

func encodeWitness(buf []byte, tails map[string]witnessed) []byte {
	names := make([]string, 0, len(tails))
	for n := range tails {
		names = append(names, n)
	}
	sort.Strings(names)
	b := append(buf[:0], witnessMagic...)
	b = append(b, 0, 0, 0, 0)
	body := len(b)
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, n := range names {
		t := tails[n]
		b = binary.AppendUvarint(b, uint64(len(n)))
		b = append(b, n...)
		b = binary.AppendUvarint(b, t.head)
		b = binary.AppendUvarint(b, t.tail)
		b = binary.AppendUvarint(b, uint64(t.count))
	}
	binary.BigEndian.PutUint32(b[body-4:body], uint32(len(b)-body))
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[body:], castagnoli))
}

var errBadWitness = errors.New("outbox tails file: bad format or checksum")

func decodeWitness(b []byte) (map[string]witnessed, error) {
	h := len(witnessMagic) + 4
	if len(b) < h || string(b[:len(witnessMagic)]) != string(witnessMagic) {
		return nil, errBadWitness
	}
	n := int(binary.BigEndian.Uint32(b[h-4 : h]))
	if n < 0 || n > len(b)-h-4 {
		return nil, errBadWitness
	}
	body := b[h : h+n]
	if crc32.Checksum(body, castagnoli) != binary.BigEndian.Uint32(b[h+n:h+n+4]) {
		return nil, errBadWitness
	}
	next := func() (uint64, bool) {
		v, k := binary.Uvarint(body)
		if k <= 0 {
			return 0, false
		}
		body = body[k:]
		return v, true
	}
	cnt, ok := next()
	if !ok || cnt > uint64(len(body)) {
		return nil, errBadWitness
	}
	out := make(map[string]witnessed, cnt)
	for range cnt {
		l, ok := next()
		if !ok || l == 0 || l > maxNameLen || l > uint64(len(body)) {
			return nil, errBadWitness
		}
		name := string(body[:l])
		body = body[l:]
		head, ok1 := next()
		tail, ok2 := next()
		count, ok3 := next()
		if !ok1 || !ok2 || !ok3 || head == 0 || head > tail+1 || count > tail-head+1 {
			return nil, errBadWitness
		}
		out[name] = witnessed{head, tail, int64(count)}
	}
	if len(body) != 0 {
		return nil, errBadWitness
	}
	return out, nil
}

// readWitness reads the witness of dir; a missing file is no witness (a store written before
// it existed, or a fresh one).
func readWitness(dir string) (map[string]witnessed, error) {
	b, err := os.ReadFile(filepath.Join(dir, witnessFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("read %s: %w", witnessFile, err)
	}
	return decodeWitness(b)
}

// openWitness starts witnessing with the state Open ended with, and makes that durable.
func (db *DB) openWitness() {
	tails := map[string]witnessed{}
	for _, ob := range db.Outboxes() {
		ob.mu.Lock()
		tails[ob.name] = witnessed{ob.cm.head, ob.cm.tail, ob.cm.count}
		ob.mu.Unlock()
	}
	f, err := os.OpenFile(filepath.Join(db.opts.Dir, witnessFile), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		db.log.Warn("cannot write the outbox tails file; a damaged write-ahead log's loss will not be counted", "error", err)
		return
	}
	w := &witness{f: f, tails: tails}
	w.buf = encodeWitness(w.buf, tails)
	if _, err := f.WriteAt(w.buf, 0); err == nil {
		_ = f.Sync()
	}
	db.integ.wit = w
}

// witness records the tails of a committed, fsynced group (committer goroutine).
func (db *DB) witness(g *group) {
	w := db.integ.wit
	if w == nil {
		return
	}
	changed := false
	for _, ob := range g.order {
		m := g.outs[ob].m
		t := witnessed{m.head, m.tail, m.count}
		if w.tails[ob.name] != t {
			w.tails[ob.name] = t
			changed = true
		}
	}
	if !changed {
		return
	}
	w.buf = encodeWitness(w.buf, w.tails)
	if _, err := w.f.WriteAt(w.buf, 0); err != nil {
		if ok, _ := w.failed.Allow(time.Minute, 1); ok {
			db.log.Warn("writing the outbox tails file failed", "error", err)
		}
	}
}

// closeWitness makes the last tails durable (Close, after the committer stopped).
func (db *DB) closeWitness() {
	if w := db.integ.wit; w != nil {
		_ = w.f.Sync()
		_ = w.f.Close()
		db.integ.wit = nil
	}
}
