package storage

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edged-dev/edged/internal/testutil"
	"github.com/edged-dev/edged/wire"
)

// The full-disk tests run the store in a child process (this test binary re-executed), so a
// SIGBUS from a mapped file is a failed test with the child's stack, not a crashed test binary.
// The data dir is on a small tmpfs and on a small loop-mounted ext4 (the two differ in how
// they allocate), filled from outside with dd at the moment the scenario names.

const (
	fullMinFree = 24 << 20 // MinFreeBytes of the child: small file systems, same mechanism
	fullMsgSize = 400
	fullBatch   = 10 // envelopes per Append: one fsync each on a loop device is slow
)

// diskFullChild serves commands from stdin, one per line, and reports on stdout:
//
//	ingest N   start a producer appending messages N, N+1, ... (fullBatch per Append): "D n"
//	           when n is durable, "F n" when the batch from n was refused with ErrDiskFull
//	           (then it is offered again later)
//	stop       stop the producer; answers "stopped NEXT"
//	drain [K]  start a consumer: reads from the head, acks, "K n" per acked message,
//	           "AE error" when an ack was refused, "empty" whenever the queue is empty;
//	           with K it leaves the last K messages queued and says "held" when there
//	stopdrain  stop the consumer; answers "drainstopped"
//	settle     answers "settled" once badger writes no table and has none due
//	stats      answers "S depth free_bytes {json of Stats.Space}"
//	quit       closes the store; the process exits 0
func diskFullChild() error {
	dir := os.Getenv("EDGED_FULL_DIR")
	db, ob, err := openChildOutbox(dir, fullMinFree, "full", Config{MaxMessages: 1 << 40, MaxBytes: 1 << 50})
	if err != nil {
		return err
	}
	var mu sync.Mutex
	say := func(f string, a ...any) {
		mu.Lock()
		fmt.Fprintf(os.Stdout, f+"\n", a...)
		mu.Unlock()
	}
	fail := func(f string, a ...any) {
		fmt.Fprintf(os.Stderr, f+"\n", a...)
		os.Exit(1)
	}
	var prodStop, consStop chan struct{}
	var prodDone, consDone chan int
	say("ready")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		switch cmd {
		case "ingest":
			n, _ := strconv.Atoi(arg)
			prodStop, prodDone = make(chan struct{}), make(chan int, 1)
			go func(stop chan struct{}, done chan int) {
				for {
					select {
					case <-stop:
						done <- n
						return
					default:
					}
					envs := make([]*wire.Envelope, fullBatch)
					for i := range envs {
						envs[i] = env(n+i, fullMsgSize)
					}
					err := ob.Append(context.Background(), envs...)
					switch {
					case err == nil:
						var b strings.Builder
						for i := range envs {
							fmt.Fprintf(&b, "D %d\n", n+i)
						}
						mu.Lock()
						io.WriteString(os.Stdout, b.String())
						mu.Unlock()
						n += fullBatch
					case errors.Is(err, ErrDiskFull):
						say("F %d", n)
						time.Sleep(5 * time.Millisecond)
					default:
						fail("append %d: %v", n, err)
					}
				}
			}(prodStop, prodDone)
		case "stop":
			close(prodStop)
			say("stopped %d", <-prodDone)
		case "drain":
			keep, _ := strconv.Atoi(arg)
			consStop, consDone = make(chan struct{}), make(chan int, 1)
			go func(stop chan struct{}, done chan int) {
				held := false
				for {
					select {
					case <-stop:
						done <- 0
						return
					default:
					}
					recs, err := ob.Read(0, 50, 1<<20)
					if err != nil {
						fail("read: %v", err)
					}
					if len(recs) == 0 {
						say("empty")
						time.Sleep(20 * time.Millisecond)
						continue
					}
					if d := int(ob.Stats().Depth); d-len(recs) < keep {
						recs = recs[:max(0, d-keep)]
						if len(recs) == 0 {
							if !held {
								say("held")
								held = true
							}
							time.Sleep(20 * time.Millisecond)
							continue
						}
					}
					if err := ob.Ack(recs[len(recs)-1].Seq); err != nil {
						if !errors.Is(err, ErrDiskFull) {
							fail("ack: %v", err)
						}
						say("AE %v", err)
						time.Sleep(10 * time.Millisecond)
						continue
					}
					var b strings.Builder
					for _, r := range recs {
						fmt.Fprintf(&b, "K %d\n", payloadNum(r.Env))
					}
					mu.Lock()
					io.WriteString(os.Stdout, b.String())
					mu.Unlock()
				}
			}(consStop, consDone)
		case "stopdrain":
			close(consStop)
			<-consDone
			say("drainstopped")
		case "settle":
			// No table write under way or due: no memtable waiting for its flush (only the
			// active and the prepared next WAL exist) and no level due for compaction.
			for {
				mems, _ := filepath.Glob(filepath.Join(dir, "*"+memExt))
				due := false
				for _, l := range db.bdb.Levels() {
					due = due || l.Score >= 1
				}
				if len(mems) <= 2 && !due {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			say("settled")
		case "stats":
			s := db.Stats()
			b, _ := json.Marshal(s.Space)
			say("S %d %d %s", ob.Stats().Depth, s.DiskFree, b)
		case "quit":
			return db.Close()
		}
	}
	return db.Close()
}

// fullChild is the parent's handle on one child.
type fullChild struct {
	t      *testing.T
	dir    string
	cmd    *exec.Cmd
	in     io.WriteCloser
	stderr *testutil.LockedBuffer
	lines  chan string
	exited chan struct{}
	log    *fullLog
}

// fullLog is what all children of one test reported.
type fullLog struct {
	durable   map[int]bool
	acked     map[int]int // times acked (a refused ack reads the same messages again)
	ackOrder  []int
	refused   int
	ackErrors int
}

func newFullLog() *fullLog { return &fullLog{durable: map[int]bool{}, acked: map[int]int{}} }

func startFullChild(t *testing.T, dir string, log *fullLog) *fullChild {
	t.Helper()
	cmd := childCommand("diskfull", "EDGED_FULL_DIR="+dir)
	in, err := cmd.StdinPipe()
	must(t, err)
	out, err := cmd.StdoutPipe()
	must(t, err)
	c := &fullChild{t: t, dir: dir, cmd: cmd, in: in, stderr: &testutil.LockedBuffer{}, lines: make(chan string, 1<<16), exited: make(chan struct{}), log: log}
	cmd.Stderr = c.stderr
	must(t, cmd.Start())
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-c.exited
	})
	c.expect("ready", time.Minute)
	return c
}

func (c *fullChild) send(cmd string) {
	if _, err := io.WriteString(c.in, cmd+"\n"); err != nil {
		c.dead(cmd)
	}
}

// dead fails the test with how the child ended (a SIGBUS shows here).
func (c *fullChild) dead(waitingFor string) {
	c.t.Helper()
	<-c.exited
	c.t.Fatalf("child ended while waiting for %q: %v\nstderr:\n%s", waitingFor, c.cmd.ProcessState, crashSummary(c.stderr.String()))
}

// crashSummary keeps the log lines and the faulting goroutine of a child's stderr.
func crashSummary(s string) string {
	lines := strings.Split(s, "\n")
	var out []string
	for i, l := range lines {
		if strings.HasPrefix(l, "time=") || strings.Contains(l, "fatal error") || strings.HasPrefix(l, "[signal") || strings.HasPrefix(l, "panic") {
			out = append(out, l)
		}
		if strings.HasPrefix(l, "[signal") || strings.HasPrefix(l, "panic") {
			out = append(out, lines[i+1:min(len(lines), i+30)]...)
			break
		}
	}
	return strings.Join(out, "\n")
}

func tailLines(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// record files one report line in the log; it returns the line's kind.
func (c *fullChild) record(line string) {
	kind, val, _ := strings.Cut(line, " ")
	switch kind {
	case "D":
		n, _ := strconv.Atoi(val)
		c.log.durable[n] = true
	case "F":
		c.log.refused++
	case "K":
		n, _ := strconv.Atoi(val)
		c.log.acked[n]++
		c.log.ackOrder = append(c.log.ackOrder, n)
	case "AE":
		c.log.ackErrors++
	}
}

// until consumes report lines until ok returns true for one. There is no wall-clock limit while
// the child makes progress (durable appends, acks, answers): stall is how long it may go
// without (refusals are not progress).
func (c *fullChild) until(what string, stall time.Duration, ok func(line string) bool) string {
	c.t.Helper()
	timer := time.NewTimer(stall)
	defer timer.Stop()
	for {
		select {
		case line, open := <-c.lines:
			if !open {
				c.dead(what)
			}
			c.record(line)
			if ok(line) {
				return line
			}
			if !strings.HasPrefix(line, "AE ") && !strings.HasPrefix(line, "F ") && line != "empty" {
				timer.Reset(stall)
			}
		case <-timer.C:
			c.t.Fatalf("no progress for %v while waiting for %s\nchild log:\n%s", stall, what, crashSummary(c.stderr.String()))
		}
	}
}

func (c *fullChild) expect(prefix string, stall time.Duration) string {
	c.t.Helper()
	return c.until(prefix, stall, func(l string) bool { return strings.HasPrefix(l, prefix) })
}

// stats asks for Stats and waits until cond holds (the child re-measures the disk every second).
func (c *fullChild) stats(what string, cond func(SpaceStats, int64) bool) SpaceStats {
	c.t.Helper()
	for i := 0; ; i++ {
		c.send("stats")
		line := c.expect("S ", time.Minute)
		f := strings.SplitN(line, " ", 4)
		var sp SpaceStats
		must(c.t, json.Unmarshal([]byte(f[3]), &sp))
		depth, _ := strconv.ParseInt(f[1], 10, 64)
		if cond(sp, depth) {
			return sp
		}
		if i == 300 { // 30 s of polls at a 1 s measuring period
			c.t.Fatalf("stats never showed %s: %s", what, line)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ingest makes n more messages durable, starting at *next.
func (c *fullChild) ingest(next *int, n int) {
	c.t.Helper()
	c.send(fmt.Sprintf("ingest %d", *next))
	goal := *next + n
	c.until("durable appends", time.Minute, func(l string) bool { return l == fmt.Sprintf("D %d", goal-1) })
	c.stop(next)
}

func (c *fullChild) stop(next *int) {
	c.t.Helper()
	c.send("stop")
	l := c.expect("stopped ", time.Minute)
	*next, _ = strconv.Atoi(strings.TrimPrefix(l, "stopped "))
}

// drainAll acks everything queued, on whatever disk.
func (c *fullChild) drainAll() {
	c.t.Helper()
	c.send("drain")
	c.expect("empty", time.Minute)
	c.send("stopdrain")
	c.expect("drainstopped", time.Minute)
}

// settle waits until badger has no table write under way or due (see diskFullChild).
func (c *fullChild) settle() {
	c.t.Helper()
	c.send("settle")
	c.expect("settled", 2*time.Minute)
}

func (c *fullChild) quit() {
	c.t.Helper()
	c.send("quit")
	for range c.lines {
	}
	<-c.exited
	if !c.cmd.ProcessState.Success() {
		c.t.Fatalf("child did not close cleanly: %v\nstderr:\n%s", c.cmd.ProcessState, tailLines(c.stderr.String(), 40))
	}
}

// mountSmall mounts a small file system of kind "tmpfs" (of tmpfsSize, e.g. "80m") or "ext4"
// (96 MB) and returns its path. Needs root: skipped without it outside CI, a failure under
// CI=true.
func mountSmall(t *testing.T, kind, tmpfsSize string) string {
	t.Helper()
	if os.Getuid() != 0 {
		if testutil.InCI() {
			t.Fatal("full-disk tests need root (mount) under CI")
		}
		t.Skip("full-disk tests need root to mount a tmpfs and a loop ext4 (run as root, e.g. sudo go test ./storage/)")
	}
	base := t.TempDir()
	mnt := filepath.Join(base, "mnt")
	must(t, os.MkdirAll(mnt, 0o755))
	var args []string
	switch kind {
	case "tmpfs":
		args = []string{"-t", "tmpfs", "-o", "size=" + tmpfsSize, "tmpfs", mnt}
	case "ext4":
		img := filepath.Join(base, "fs.img")
		f, err := os.Create(img)
		must(t, err)
		must(t, f.Truncate(96<<20))
		f.Close()
		if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
			mountFailed(t, fmt.Sprintf("mkfs.ext4: %v %s (apt-get install e2fsprogs)", err, out))
		}
		args = []string{"-o", "loop", img, mnt}
	}
	if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
		mountFailed(t, fmt.Sprintf("mount %v: %v %s", args, err, out))
	}
	t.Cleanup(func() {
		if exec.Command("umount", mnt).Run() != nil {
			exec.Command("umount", "-l", mnt).Run()
		}
	})
	return mnt
}

func mountFailed(t *testing.T, why string) {
	t.Helper()
	if testutil.InCI() {
		t.Fatal(why)
	}
	t.Skip(why)
}

// fill takes every free block of the file system from outside, as a runaway log would.
func fill(t *testing.T, mnt string) {
	t.Helper()
	exec.Command("dd", "if=/dev/zero", "of="+filepath.Join(mnt, "filler"), "bs=1M", "oflag=append", "conv=notrunc").Run()
	exec.Command("dd", "if=/dev/zero", "of="+filepath.Join(mnt, "filler2"), "bs=4k").Run()
	var st syscall.Statfs_t
	must(t, syscall.Statfs(mnt, &st))
	// ext4 keeps a few clusters back for its own metadata that no writer gets (not even root).
	if st.Bavail != 0 {
		t.Fatalf("file system not full after dd: %d blocks available", st.Bavail)
	}
}

// fillLeaving fills the file system from outside until about leave bytes are free.
func fillLeaving(t *testing.T, mnt string, leave int64) {
	t.Helper()
	free, err := diskFree(mnt)
	must(t, err)
	if mb := (free - leave) >> 20; mb > 0 {
		exec.Command("dd", "if=/dev/zero", "of="+filepath.Join(mnt, "filler"), "bs=1M", fmt.Sprintf("count=%d", mb)).Run()
	}
}

func unfill(t *testing.T, mnt string) {
	t.Helper()
	must(t, os.Remove(filepath.Join(mnt, "filler")))
	os.Remove(filepath.Join(mnt, "filler2"))
}

// verifyFull frees the disk, opens the store in this process and checks the log: every
// durable message is either acked or still queued, exactly once, in order; nothing acked is
// queued again. Allowed by the ack protocol: a message read but whose ack was refused is read
// (delivered) again; it is still acked once in the store's terms.
func verifyFull(t *testing.T, mnt, dir string, lg *fullLog) {
	t.Helper()
	unfill(t, mnt)
	db := openT(t, dir, func(o *Options) { o.MinFreeBytes = fullMinFree })
	if s := db.Stats(); s.CorruptRecoveries != 0 {
		t.Fatalf("store moved aside: %+v", s)
	}
	ob := outboxT(t, db, "full", Config{MaxMessages: 1 << 40, MaxBytes: 1 << 50})
	nums, _ := readAll(t, ob)
	queued := map[int]bool{}
	last := -1
	for _, n := range nums {
		if queued[n] {
			t.Fatalf("message %d queued twice", n)
		}
		if n <= last {
			t.Fatalf("message %d queued after %d", n, last)
		}
		if lg.acked[n] > 0 {
			t.Fatalf("acked message %d is queued again", n)
		}
		if !lg.durable[n] {
			t.Fatalf("message %d queued but never reported durable", n)
		}
		queued[n], last = true, n
	}
	lost := 0
	for n := range lg.durable {
		if !queued[n] && lg.acked[n] == 0 {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d durable messages neither acked nor queued", lost)
	}
	redelivered, prev := 0, -1
	for _, n := range lg.ackOrder {
		if n <= prev {
			t.Fatalf("acked out of order: %d after %d", n, prev)
		}
		prev = n
	}
	for _, k := range lg.acked {
		redelivered += k - 1
	}
	if redelivered > 0 {
		t.Fatalf("%d messages acked twice", redelivered)
	}
	// And the freed disk takes new messages again.
	appendN(t, ob, 1<<30, 1, 10)
	t.Logf("%d durable, %d acked, %d still queued, %d appends refused, %d acks refused", len(lg.durable), len(lg.ackOrder), len(nums), lg.refused, lg.ackErrors)
}

var fullKinds = []string{"tmpfs", "ext4"}

func diskFullStats(sp SpaceStats, _ int64) bool {
	return sp.DiskFull && strings.HasPrefix(sp.Health, "degraded")
}

// diskFullKinds runs scenario on each file-system kind: a fresh small mount (mnt) with a
// child storing into it. The child the scenario returns (it may have restarted it) then
// drains everything queued and quits, and verifyFull checks the log of all its children.
func diskFullKinds(t *testing.T, scenario func(t *testing.T, mnt string, c *fullChild) *fullChild) {
	for _, kind := range fullKinds {
		t.Run(kind, func(t *testing.T) {
			mnt := mountSmall(t, kind, "80m")
			dir := filepath.Join(mnt, "data")
			lg := newFullLog()
			c := scenario(t, mnt, startFullChild(t, dir, lg))
			c.drainAll()
			c.quit()
			verifyFull(t, mnt, dir, lg)
		})
	}
}

// backlog makes 20,000 messages durable, waits until badger writes no table and has none
// due, and returns the number of the next message.
func (c *fullChild) backlog() int {
	c.t.Helper()
	next := 0
	c.ingest(&next, 20_000)
	c.settle()
	return next
}

// waitDiskFull waits until the child's Stats say the disk is full and health is degraded.
func (c *fullChild) waitDiskFull() {
	c.t.Helper()
	c.stats("disk full", diskFullStats)
}

// refuseNew checks that ingesting from next is refused with ErrDiskFull, then stops.
func (c *fullChild) refuseNew(next *int) {
	c.t.Helper()
	c.send(fmt.Sprintf("ingest %d", *next))
	c.expect("F ", time.Minute)
	c.stop(next)
}

// TestDiskFullIdle: the disk fills while nothing happens; edged stays up, says so, refuses new
// messages and drains the whole backlog on the full disk.
func TestDiskFullIdle(t *testing.T) {
	diskFullKinds(t, func(t *testing.T, mnt string, c *fullChild) *fullChild {
		next := c.backlog()
		fill(t, mnt)
		c.waitDiskFull()
		c.refuseNew(&next)
		return c
	})
}

// TestDiskFullWhileIngesting: the disk fills under a producer.
func TestDiskFullWhileIngesting(t *testing.T) {
	diskFullKinds(t, func(t *testing.T, mnt string, c *fullChild) *fullChild {
		c.send("ingest 0")
		c.expect("D 5000", time.Minute)
		// Just below the threshold under the running producer: refused from here on. The
		// threshold is the headroom for the flush and compaction that may be under way
		// (the default 64 MiB is sized for the same), so this leaves most of it.
		fillLeaving(t, mnt, fullMinFree-(2<<20))
		c.expect("F ", time.Minute)
		// Then all of it, with the producer still trying. (Filling to the last block
		// while badger writes a table is the one case the space guard cannot cover, see
		// diskfull.go: the refusals above stopped the flushes, settle waits for the last.)
		c.settle()
		fill(t, mnt)
		c.expect("F ", time.Minute)
		c.waitDiskFull()
		next := 0
		c.stop(&next)
		return c
	})
}

// TestDiskFullWhileDraining: the disk fills while the backlog is being acked; acks go on.
func TestDiskFullWhileDraining(t *testing.T) {
	diskFullKinds(t, func(t *testing.T, mnt string, c *fullChild) *fullChild {
		c.backlog()
		// Acks go on while the disk fills; the last 100 are held back so the queue
		// empties (DropPrefix: table writes) only once the filler is done: a table
		// written while another process takes the last blocks is the one case the guard
		// cannot cover (diskfull.go).
		c.send("drain 100")
		c.expect("K 3000", time.Minute)
		fill(t, mnt)
		c.expect("held", time.Minute)
		c.send("stopdrain")
		c.expect("drainstopped", time.Minute)
		c.waitDiskFull()
		return c
	})
}

// TestDiskFullAtStart: edged was killed with a backlog (WALs to replay), the disk filled, and
// it starts on the full disk: it opens, says so, refuses new messages and drains.
func TestDiskFullAtStart(t *testing.T) {
	diskFullKinds(t, func(t *testing.T, mnt string, c *fullChild) *fullChild {
		next := c.backlog()
		c.cmd.Process.Signal(syscall.SIGKILL)
		<-c.exited
		fill(t, mnt)
		c = startFullChild(t, c.dir, c.log)
		c.waitDiskFull()
		c.refuseNew(&next)
		return c
	})
}
