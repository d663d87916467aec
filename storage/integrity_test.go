package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/edged-dev/edged/internal/testutil"
	"github.com/edged-dev/edged/wire"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// markedEnv is message i with a payload that is unique and easy to find in a raw file.
func markedEnv(i int) *wire.Envelope {
	p := []byte(fmt.Sprintf("%d-", i))
	for len(p) < 200 {
		p = append(p, fmt.Sprintf("PAYLOAD<%06d>", i)...)
	}
	return &wire.Envelope{ID: wire.NewID(), Topic: "rot/t", Payload: p, QoS: 1, Time: time.Now().UnixMilli()}
}

// capture is a DB opened with a log buffer and its own registry.
type capture struct {
	db  *DB
	log *testutil.LockedBuffer
	reg *prometheus.Registry
}

func openCapture(t *testing.T, dir string, mod ...func(*Options)) *capture {
	t.Helper()
	c := &capture{log: &testutil.LockedBuffer{}, reg: prometheus.NewRegistry()}
	c.db = openT(t, dir, append([]func(*Options){func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(c.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
		o.Registerer = c.reg
	}}, mod...)...)
	return c
}

func (c *capture) metric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	v, _ := testutil.MetricValue(t, c.reg, name, labels)
	return v
}

// metricSum sums every series of name whose labels include want.
func (c *capture) metricSum(t *testing.T, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := c.reg.Gather()
	must(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range want {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// writeBacklog stores n marked messages in outbox "rot" of a closed store in dir and returns
// their envelope ids by payload number.
func writeBacklog(t *testing.T, dir string, n int) map[int]wire.ID {
	t.Helper()
	db := openT(t, dir)
	ob := outboxT(t, db, "rot", Config{})
	ids := map[int]wire.ID{}
	var es []*wire.Envelope
	for i := 1; i <= n; i++ {
		e := markedEnv(i)
		ids[i] = e.ID
		es = append(es, e)
		if len(es) == 100 || i == n {
			must(t, ob.Append(context.Background(), es...))
			es = nil
		}
	}
	must(t, db.Close())
	return ids
}

// flipIn XORs n bytes of the first *.sst of dir that contains needle, starting at the needle
// or, with atStart, at the start of that file (the header of its first block).
func flipIn(t *testing.T, dir string, needle []byte, n int, atStart bool) string {
	t.Helper()
	ssts, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
	if len(ssts) == 0 {
		t.Fatal("no table file: the backlog was not flushed")
	}
	for _, p := range ssts {
		b, err := os.ReadFile(p)
		must(t, err)
		at := bytes.Index(b, needle)
		if at < 0 {
			continue
		}
		if atStart {
			at = 0
		}
		for i := at; i < at+n && i < len(b); i++ {
			b[i] ^= 0xA5
		}
		// In place (no truncation): the file may be mapped by a running store.
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		must(t, err)
		_, err = f.WriteAt(b[at:min(at+n, len(b))], int64(at))
		must(t, err)
		must(t, f.Close())
		return p
	}
	t.Fatalf("payload %q not found in any table", needle)
	return ""
}

// checkAccounted drains ob and checks that every message is either delivered intact or in the
// dead letters with reason corrupt, that nothing damaged is delivered, and that the metrics
// agree with the DLQ depth. It returns the delivered and dead-lettered sequence numbers.
func checkAccounted(t *testing.T, c *capture, n int, ids map[int]wire.ID) (delivered, dead []uint64) {
	t.Helper()
	ob := outboxT(t, c.db, "rot", Config{})
	var after uint64
	salvaged := false
	for {
		recs, err := ob.Read(after, 500, 1<<20)
		if errors.Is(err, ErrSalvageRequested) && !salvaged {
			// Damage badger trips over (salvagereq.go): the store says so and the next Open
			// salvages it; what was acked so far stays acked.
			if perr := c.db.Ping(context.Background()); !errors.Is(perr, ErrSalvageRequested) {
				t.Fatalf("a read tripped on damage but Ping says %v", perr)
			}
			t.Logf("read: %v; reopening to salvage", err)
			must(t, c.db.Close())
			*c = *openCapture(t, c.db.opts.Dir)
			if c.db.Stats().MovedAside == "" {
				t.Fatal("salvage was requested but the next Open did not move the store aside")
			}
			salvaged = true
			ob = outboxT(t, c.db, "rot", Config{})
			continue
		}
		must(t, err)
		if len(recs) == 0 {
			break
		}
		for _, r := range recs {
			num := payloadNum(r.Env)
			want := markedEnv(num).Payload
			if !bytes.Equal(r.Env.Payload, want) || r.Env.ID != ids[num] || uint64(num) != r.Seq {
				t.Fatalf("seq %d: damaged or wrong message delivered: %q", r.Seq, r.Env.Payload)
			}
			delivered = append(delivered, r.Seq)
		}
		after = recs[len(recs)-1].Seq
		must(t, ob.Ack(after))
	}
	dls, err := ob.DeadLetters(0, 0)
	must(t, err)
	for _, d := range dls {
		if !strings.HasPrefix(d.Reason, ReasonCorrupt) {
			t.Fatalf("dead letter %d: reason %q, want corrupt", d.Seq, d.Reason)
		}
		if d.Env != nil && !bytes.Equal(d.Env.Payload, markedEnv(int(d.Seq)).Payload) {
			t.Fatalf("dead letter %d handed out a damaged envelope as valid", d.Seq)
		}
		dead = append(dead, d.Seq)
	}
	if len(delivered)+len(dead) != n {
		t.Fatalf("delivered %d + dead letters %d != %d appended: records vanished without a trace", len(delivered), len(dead), n)
	}
	all := append(append([]uint64{}, delivered...), dead...)
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	for i, s := range all {
		if s != uint64(i+1) {
			t.Fatalf("sequence %d neither delivered nor dead-lettered", i+1)
		}
	}
	st := ob.Stats()
	if st.Depth != 0 || st.DLQDepth != int64(len(dead)) {
		t.Fatalf("after the drain: depth %d dlq %d, want 0 and %d", st.Depth, st.DLQDepth, len(dead))
	}
	lbl := map[string]string{"outbox": "rot"}
	if v := c.metricSum(t, "edged_outbox_dead_letters_total", lbl); int(v) != len(dead) {
		t.Fatalf("edged_outbox_dead_letters_total %v != DLQ depth %d", v, len(dead))
	}
	if v := c.metricSum(t, "edged_storage_corrupt_records_total", lbl); int(v) != len(dead) {
		t.Fatalf("edged_storage_corrupt_records_total %v != %d corrupt", v, len(dead))
	}
	if v := c.metric(t, "edged_outbox_dropped_total", map[string]string{"outbox": "rot", "reason": ReasonCorrupt}); int(v) != len(dead) {
		t.Fatalf("edged_outbox_dropped_total{reason=corrupt} %v != %d", v, len(dead))
	}
	if v := c.metric(t, "edged_outbox_dlq_depth", lbl); int(v) != len(dead) {
		t.Fatalf("edged_outbox_dlq_depth %v != %d", v, len(dead))
	}
	return delivered, dead
}

// 64 bytes flipped inside the value of a queued record in a table file: the damaged payload
// is never delivered, the record is in the dead letters as corrupt, everything else is
// delivered, and depth, DLQ depth and the metrics agree.
func TestBitRotInTableDataIsNotDelivered(t *testing.T) {
	dir := t.TempDir() + "/data"
	const n = 3000
	ids := writeBacklog(t, dir, n)
	victim := 1500
	flipIn(t, dir, []byte(fmt.Sprintf("PAYLOAD<%06d>", victim)), 64, false)

	c := openCapture(t, dir)
	_, dead := checkAccounted(t, c, n, ids)
	found := false
	for _, s := range dead {
		found = found || s == uint64(victim)
	}
	if !found {
		t.Fatalf("damaged record %d not in the dead letters (dead: %v)", victim, dead)
	}
	if !strings.Contains(c.log.String(), "level=ERROR") || !strings.Contains(c.log.String(), "outbox=rot") {
		t.Fatalf("no ERROR naming the outbox:\n%s", c.log.String())
	}
	t.Logf("flip in record %d: %d records lost with its block, all in the DLQ as corrupt", victim, len(dead))
}

// Bytes flipped in the header of a table's first block (which holds the outbox meta and the
// first records): the store still opens, the outbox is rebuilt, the records of that block are
// counted as lost and marked, every other record is delivered.
func TestBitRotInBlockHeaderIsAccounted(t *testing.T) {
	dir := t.TempDir() + "/data"
	const n = 3000
	ids := writeBacklog(t, dir, n)
	flipIn(t, dir, []byte("PAYLOAD<000001>"), 8, true)

	c := openCapture(t, dir)
	delivered, dead := checkAccounted(t, c, n, ids)
	if len(dead) == 0 || len(delivered) == 0 {
		t.Fatalf("delivered %d, dead %d: want a lost block and the rest delivered", len(delivered), len(dead))
	}
	if c.db.Stats().MovedAside != "" {
		t.Fatal("one bad block moved the whole store aside")
	}
}

// A record whose stored envelope no longer matches its checksum (damage the table checksums
// cannot see, e.g. in a memtable) is moved to the dead letters as it is, never delivered.
func TestRecordChecksumMismatchGoesToDeadLetters(t *testing.T) {
	c := openCapture(t, t.TempDir())
	ob := outboxT(t, c.db, "rot", Config{})
	ids := map[int]wire.ID{}
	for i := 1; i <= 10; i++ {
		e := markedEnv(i)
		ids[i] = e.ID
		must(t, ob.Append(context.Background(), e))
	}
	k := seqKey(ob.prefix, 5)
	must(t, c.db.bdb.Update(func(txn *badger.Txn) error {
		v, err := getValue(txn, k)
		if err != nil {
			return err
		}
		i := bytes.Index(v, []byte("PAYLOAD<"))
		copy(v[i:], "PAYLOAD<999999>") // same length, plausible, wrong
		return txn.Set(k, v)
	}))
	_, dead := checkAccounted(t, c, 10, ids)
	if len(dead) != 1 || dead[0] != 5 {
		t.Fatalf("dead letters %v, want [5]", dead)
	}
	dls, _ := ob.DeadLetters(0, 0)
	if dls[0].Err == nil || !strings.Contains(dls[0].Reason, "checksum") {
		t.Fatalf("dead letter 5: reason %q err %v", dls[0].Reason, dls[0].Err)
	}
	if !strings.Contains(c.log.String(), "seq=5") {
		t.Fatalf("the ERROR does not name the sequence:\n%s", c.log.String())
	}
}

// Records written before checksums existed (version 1) still read.
func TestRecordVersion1StillReads(t *testing.T) {
	db := openT(t, t.TempDir())
	ob := outboxT(t, db, "old", Config{})
	must(t, ob.Append(context.Background(), markedEnv(1)))
	e := markedEnv(2)
	b, err := wire.MarshalEnvelope(e)
	must(t, err)
	v1 := append([]byte{recordV1, 0, 0, 0, 0, 0, 0, 0, 1}, b...)
	dec, env, err := decodeRecord(v1)
	if err != nil || dec != 1 || !bytes.Equal(env, b) {
		t.Fatalf("v1 record: %v", err)
	}
	must(t, db.bdb.Update(func(txn *badger.Txn) error { return txn.Set(seqKey(ob.prefix, 1), v1) }))
	recs, err := ob.Read(0, 10, 0)
	must(t, err)
	if len(recs) != 1 || recs[0].Env.ID != e.ID {
		t.Fatalf("read %d records", len(recs))
	}
}

// A table block that rots under a running store: Read skips past it, still delivers what
// follows, and the records it hid are counted and marked once.
func TestBitRotWhileRunning(t *testing.T) {
	dir := t.TempDir() + "/data"
	const n = 3000
	ids := writeBacklog(t, dir, n)
	c := openCapture(t, dir)
	flipIn(t, dir, []byte(fmt.Sprintf("PAYLOAD<%06d>", 700)), 64, false)
	_, dead := checkAccounted(t, c, n, ids)
	if len(dead) == 0 {
		t.Fatal("the damage was not seen")
	}
}

// badger's log lines that name damage are errors and counted, whatever level badger used;
// its chatter is debug.
func TestBadgerDamageLogIsError(t *testing.T) {
	buf := &testutil.LockedBuffer{}
	in := newIntegrity(nil)
	l := in.badgerLogger(slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	l.Infof("All %d tables opened in %s\n", 3, "1ms")
	l.Infof("truncating log file %s at offset %d", "00001.mem", 40)
	l.Warningf("While running doCompact: %v\n", fmt.Errorf("checksum mismatch in table 7"))
	l.Warningf("Slow compaction")
	l.Errorf("while opening memtable: %v", "bad entry")
	out := buf.String()
	for _, want := range []string{`level=DEBUG msg="All 3 tables opened in 1ms"`, `level=ERROR msg="truncating log file 00001.mem at offset 40"`,
		`level=ERROR msg="While running doCompact: checksum mismatch in table 7"`, `level=WARN msg="Slow compaction"`, `level=ERROR msg="while opening memtable: bad entry"`} {
		if !strings.Contains(out, want) {
			t.Fatalf("missing %s in:\n%s", want, out)
		}
	}
	var m dto.Metric
	must(t, in.badgerErrors.Write(&m))
	if v := m.GetCounter().GetValue(); v != 3 {
		t.Fatalf("badger errors counted %v, want 3", v)
	}
}

// The background scrub after Open finds records lost from a damaged table before anything
// reads them, and marks and counts them.
func TestScrubFindsLossWithoutReads(t *testing.T) {
	dir := t.TempDir() + "/data"
	const n = 3000
	writeBacklog(t, dir, n)
	flipIn(t, dir, []byte(fmt.Sprintf("PAYLOAD<%06d>", 2000)), 64, false)
	c := openCapture(t, dir)
	ob := outboxT(t, c.db, "rot", Config{})
	testutil.WaitFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		if ob.Stats().DLQDepth == 0 {
			return fmt.Errorf("no loss found yet")
		}
		return nil
	})
	s := ob.Stats()
	if s.Depth+s.DLQDepth != n {
		t.Fatalf("depth %d + dlq %d != %d", s.Depth, s.DLQDepth, n)
	}
	if v := c.metric(t, "edged_storage_corrupt_records_total", map[string]string{"outbox": "rot", "cause": causeUnreadable}); int64(v) != s.DLQDepth {
		t.Fatalf("corrupt metric %v != dlq %d", v, s.DLQDepth)
	}
}

// 4 bytes flipped at 40 places of a table (data blocks, block trailers, the index at the end):
// whatever badger makes of it, Open never fails and nothing vanishes: every message is either
// delivered intact or in the dead letters as corrupt (a damaged index moves the store aside
// and the salvage accounts for the table it cannot read).
func TestBitRotAnywhereIsAccounted(t *testing.T) {
	base := t.TempDir() + "/base"
	const n = 3000
	ids := writeBacklog(t, base, n)
	ssts, _ := filepath.Glob(filepath.Join(base, "*.sst"))
	if len(ssts) != 1 {
		t.Fatalf("want one table, have %d", len(ssts))
	}
	fi, err := os.Stat(ssts[0])
	must(t, err)
	size := fi.Size()
	places := scaled(40, 10)
	for k := range places {
		off := int64(k) * size / int64(places)
		if k%3 == 0 { // the index and footer live at the end
			off = size - 8 - int64(k)*7
		}
		dir := fmt.Sprintf("%s/c%d", t.TempDir(), k)
		must(t, os.CopyFS(dir, os.DirFS(base)))
		p := filepath.Join(dir, filepath.Base(ssts[0]))
		b, err := os.ReadFile(p)
		must(t, err)
		for i := off; i < off+4; i++ {
			b[i] ^= 0x5a
		}
		must(t, os.WriteFile(p, b, 0o640))
		t.Run(fmt.Sprintf("offset_%d", off), func(t *testing.T) {
			c := openCapture(t, dir)
			checkAccounted(t, c, n, ids)
		})
	}
}
