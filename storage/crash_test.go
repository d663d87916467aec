package storage

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const crashProducers = 4

// crashChild appends in a loop from several producers (so kills land inside group commits),
// drains with a consumer and writes broker state. Lines on stdout:
//
//	D n      message n is durable (Append returned nil)
//	R n      the consumer read message n and is about to ack it (it may or may not be gone)
//	S k      state key k is durable
func crashChild() error {
	dir := os.Getenv("EDGED_CRASH_DIR")
	base, _ := strconv.Atoi(os.Getenv("EDGED_CRASH_BASE"))
	db, ob, err := openChildOutbox(dir, -1, "crash", Config{MaxMessages: 1 << 40, MaxBytes: 1 << 50})
	if err != nil {
		return err
	}
	var mu sync.Mutex
	out := os.Stdout
	say := func(s string) {
		mu.Lock()
		io.WriteString(out, s)
		mu.Unlock()
	}
	say("ready\n")
	for p := range crashProducers {
		go func() {
			for i := 0; ; i++ {
				n := base + p*100_000 + i
				var err error
				if i%50 == 49 { // some multi-envelope appends
					err = ob.Append(context.Background(), env(n, 150), env(n+1, 150))
					if err == nil {
						say(fmt.Sprintf("D %d\nD %d\n", n, n+1))
					}
					i++
				} else {
					err = ob.Append(context.Background(), env(n, 100+i%300))
					if err == nil {
						say(fmt.Sprintf("D %d\n", n))
					}
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, "append:", err)
					os.Exit(1)
				}
			}
		}()
	}
	go func() {
		for i := 0; ; i++ {
			k := fmt.Sprintf("sess/%d", base+i)
			if err := db.State().Put(k, []byte(k)); err != nil {
				os.Exit(1)
			}
			say("S " + k + "\n")
			time.Sleep(time.Millisecond)
		}
	}()
	// Consumer: reads a batch, reports it, acks it; leaves a backlog so the parent has lots to check.
	for {
		time.Sleep(5 * time.Millisecond)
		if ob.Stats().Depth < 3000 {
			continue
		}
		recs, err := ob.Read(0, 500, 1<<20)
		if err != nil {
			return err
		}
		var b strings.Builder
		for _, r := range recs {
			fmt.Fprintf(&b, "R %d\n", payloadNum(r.Env))
		}
		say(b.String())
		if len(recs) > 0 {
			if err := ob.Ack(recs[len(recs)-1].Seq); err != nil {
				return err
			}
		}
	}
}

func TestCrashKill9(t *testing.T) {
	cycles := scaled(20, 5)
	if s := os.Getenv("EDGED_SOAK_CYCLES"); s != "" {
		cycles, _ = strconv.Atoi(s)
	}
	dir := t.TempDir() + "/data"
	durable := map[int]bool{}  // every message reported durable
	consumed := map[int]bool{} // read by the child's consumer (may have been acked)
	stateKeys := map[string]bool{}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	totalD := 0
	for c := range cycles {
		cmd := childCommand("crash", "EDGED_CRASH_DIR="+dir, fmt.Sprintf("EDGED_CRASH_BASE=%d", (c+1)*1_000_000))
		stdout, err := cmd.StdoutPipe()
		must(t, err)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		must(t, cmd.Start())
		lines := make(chan string, 1024)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		ready := false
		var kill <-chan time.Time
		for line := range lines {
			if line == "ready" && !ready {
				ready = true
				kill = time.After(time.Duration(20+rng.IntN(400)) * time.Millisecond)
				go func(k <-chan time.Time) {
					<-k
					cmd.Process.Signal(syscall.SIGKILL)
				}(kill)
				continue
			}
			kind, val, ok := strings.Cut(line, " ")
			if !ok {
				continue // a line cut by the kill
			}
			switch kind {
			case "D":
				if n, err := strconv.Atoi(val); err == nil {
					durable[n] = true
					totalD++
				}
			case "R":
				if n, err := strconv.Atoi(val); err == nil {
					consumed[n] = true
				}
			case "S":
				stateKeys[val] = true
			}
		}
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("cycle %d: child ended by itself: %v\n%s", c, err, stderr.String())
		}
		// Reopen as the daemon would and check.
		db, err := Open(Options{Dir: dir, Logger: testLogger(t), MinFreeBytes: -1})
		if err != nil {
			t.Fatalf("cycle %d: reopen: %v", c, err)
		}
		if s := db.Stats(); s.CorruptRecoveries != 0 {
			t.Fatalf("cycle %d: store was moved aside: %+v", c, s)
		}
		ob := outboxT(t, db, "crash", Config{MaxMessages: 1 << 40, MaxBytes: 1 << 50})
		var after uint64
		seen := map[int]bool{}
		lastPer := map[int]int{}
		var depth, bytes int64
		for {
			recs, err := ob.Read(after, 5000, 4<<20)
			must(t, err)
			if len(recs) == 0 {
				break
			}
			for _, r := range recs {
				n := payloadNum(r.Env)
				if seen[n] {
					t.Fatalf("cycle %d: message %d present twice", c, n)
				}
				seen[n] = true
				p := (n % 1_000_000) / 100_000
				if last, ok := lastPer[p]; ok && n <= last {
					t.Fatalf("cycle %d: producer %d out of order: %d after %d", c, p, n, last)
				}
				lastPer[p] = n
				depth++
				bytes += int64(r.Size)
			}
			after = recs[len(recs)-1].Seq
		}
		for n := range durable {
			if !seen[n] && !consumed[n] {
				t.Fatalf("cycle %d: durable message %d lost (depth %d)", c, n, depth)
			}
		}
		if s := ob.Stats(); s.Depth != depth || s.Bytes != bytes {
			t.Fatalf("cycle %d: stats depth %d bytes %d, records %d bytes %d", c, s.Depth, s.Bytes, depth, bytes)
		}
		got := map[string]bool{}
		must(t, db.State().Scan("sess/", func(k string, _ []byte) error { got[k] = true; return nil }))
		for k := range stateKeys {
			if !got[k] {
				t.Fatalf("cycle %d: durable state key %s lost", c, k)
			}
		}
		// Forget what is settled so the maps stay small: consumed and gone.
		for n := range consumed {
			if !seen[n] {
				delete(consumed, n)
				delete(durable, n)
			}
		}
		must(t, db.Close())
		if testing.Verbose() && (c%10 == 9 || c == cycles-1) {
			t.Logf("cycle %d: %d durable so far, queue depth %d", c+1, totalD, depth)
		}
	}
	if totalD == 0 {
		t.Fatal("child never made anything durable")
	}
	t.Logf("%d cycles, %d durable appends checked", cycles, totalD)
}
