package storage

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/edged-dev/edged/wire"
)

const walRecords = 5000

// walFillChild appends walRecords marked messages to outbox "wal" in commits of 50, says
// "done" once every Append returned (all acknowledged), then waits to be killed.
func walFillChild() error {
	_, ob, err := openChildOutbox(os.Getenv("EDGED_WAL_DIR"), -1, "wal", Config{})
	if err != nil {
		return err
	}
	for i := 1; i <= walRecords; i += 50 {
		var es []*wire.Envelope
		for j := i; j < i+50; j++ {
			es = append(es, markedEnv(j))
		}
		if err := ob.Append(context.Background(), es...); err != nil {
			return err
		}
	}
	fmt.Println("done")
	select {}
}

// killedStore runs walFillChild on dir and kills it with SIGKILL once it acknowledged all.
func killedStore(t *testing.T, dir string) {
	t.Helper()
	cmd := childCommand("walfill", "EDGED_WAL_DIR="+dir)
	out, err := cmd.StdoutPipe()
	must(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	must(t, cmd.Start())
	sc := bufio.NewScanner(out)
	done := false
	for sc.Scan() {
		if sc.Text() == "done" {
			done = true
			break
		}
	}
	must(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	if !done {
		t.Fatalf("child ended before acknowledging everything:\n%s", stderr.String())
	}
}

// newestWAL returns the newest memtable log of dir and where its data ends (the rest of the
// file is badger's zeroed preallocation).
func newestWAL(t *testing.T, dir string) (string, []byte, int) {
	t.Helper()
	mems, _ := filepath.Glob(filepath.Join(dir, "*.mem"))
	if len(mems) == 0 {
		t.Fatal("no memtable log after kill -9")
	}
	sort.Strings(mems)
	// The space guard creates the next log ahead of time (preallocated, no entries yet): the
	// log with data is the newest one that holds any.
	for i := len(mems) - 1; i >= 0; i-- {
		b, err := os.ReadFile(mems[i])
		must(t, err)
		if end := len(bytes.TrimRight(b, "\x00")); end >= 20000 {
			return mems[i], b, end
		}
	}
	t.Fatalf("no memtable log in %v holds 20000 bytes of log", mems)
	return "", nil, 0
}

// checkWALLoss reopens dir and checks that the acknowledged records the damaged log lost are
// counted, logged with their number and marked, and that everything else is there.
func checkWALLoss(t *testing.T, dir string) {
	t.Helper()
	c := openCapture(t, dir)
	ob := outboxT(t, c.db, "wal", Config{})
	s := ob.Stats()
	lost := int64(c.metric(t, "edged_storage_corrupt_records_total", map[string]string{"outbox": "wal", "cause": causeWAL}))
	t.Logf("depth %d of %d, lost %d, dlq %d", s.Depth, walRecords, lost, s.DLQDepth)
	if lost == 0 || s.Depth >= walRecords {
		t.Fatalf("depth %d, lost %d: the damage lost nothing, or the loss was not counted", s.Depth, lost)
	}
	if s.Depth+lost != walRecords || s.DLQDepth != lost || s.Tail != walRecords {
		t.Fatalf("depth %d + lost %d != %d acknowledged (dlq %d, tail %d)", s.Depth, lost, walRecords, s.DLQDepth, s.Tail)
	}
	m := regexp.MustCompile(`level=ERROR msg="write-ahead log damaged: acknowledged records were lost from it".* records_lost=(\d+)`).FindStringSubmatch(c.log.String())
	if m == nil || m[1] != strconv.FormatInt(lost, 10) {
		t.Fatalf("no ERROR with the number lost (%d):\n%s", lost, c.log.String())
	}
	if v := c.metric(t, "edged_outbox_dead_letters_total", map[string]string{"outbox": "wal", "reason": ReasonCorrupt}); int64(v) != lost {
		t.Fatalf("dead-letter metric %v != %d", v, lost)
	}
	nums, seqs := readAll(t, ob)
	for i := range nums {
		if nums[i] != i+1 || seqs[i] != uint64(i+1) {
			t.Fatalf("record %d: got message %d at seq %d", i+1, nums[i], seqs[i])
		}
	}
	// Sequences are not reused: the next message goes after the lost ones.
	must(t, ob.Append(context.Background(), markedEnv(walRecords+1)))
	if ob.Stats().Tail != walRecords+1 {
		t.Fatalf("tail %d after the next append", ob.Stats().Tail)
	}
}

// The unflushed memtable log cut short after kill -9: the acknowledged records it held are
// lost, and the loss is counted and logged with its size.
func TestWALTruncatedLossIsReported(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	killedStore(t, dir)
	p, b, end := newestWAL(t, dir)
	// Salvage replays such logs itself: its reader must see every acknowledged record.
	ents, _, err := replayLog(b)
	records := 0
	for _, e := range ents {
		if e.key[0] == kindRecord {
			records++
		}
	}
	if err != nil || records != walRecords {
		t.Fatalf("replayLog of badger's own log: %d records, %v", records, err)
	}
	must(t, os.Truncate(p, int64(end-4000)))
	checkWALLoss(t, dir)
}

// 8 bytes overwritten inside the unflushed memtable log: badger stops its replay there.
func TestWALOverwrittenLossIsReported(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	killedStore(t, dir)
	p, b, end := newestWAL(t, dir)
	copy(b[end-6000:], bytes.Repeat([]byte{0xEE}, 8))
	must(t, os.WriteFile(p, b, 0o644))
	checkWALLoss(t, dir)
}

// A store refused after kill -9 (damaged MANIFEST) with its acknowledged records still only in
// the memtable log: salvage replays the log and copies all of them.
func TestSalvageReplaysWriteAheadLog(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	killedStore(t, dir)
	damageManifest(t, dir)
	c := openCapture(t, dir)
	ob := outboxT(t, c.db, "wal", Config{})
	nums, _ := readAll(t, ob)
	if len(nums) != walRecords || nums[0] != 1 || nums[len(nums)-1] != walRecords {
		t.Fatalf("salvaged %d of %d acknowledged records", len(nums), walRecords)
	}
	if sv := salvageOf(c.db); sv == nil || sv.Copied != walRecords || sv.Lost != 0 {
		t.Fatalf("salvage %+v", sv)
	}
}
