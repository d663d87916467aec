package ratelog

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestLimit(t *testing.T) {
	var l Limit
	t0 := time.Unix(1000, 0)
	steps := []struct {
		at      time.Duration
		n       int
		ok      bool
		suppr   int
		comment string
	}{
		{0, 1, true, 0, "first event logs"},
		{time.Second, 1, false, 0, "inside the interval"},
		{2 * time.Second, 5, false, 0, "a batch of 5 held back"},
		{10 * time.Second, 1, true, 6, "interval over: 6 held back"},
		{11 * time.Second, 1, false, 0, "new interval"},
	}
	for _, s := range steps {
		ok, n := l.AllowAt(t0.Add(s.at), 10*time.Second, s.n)
		if ok != s.ok || n != s.suppr {
			t.Fatalf("%s: got (%v, %d), want (%v, %d)", s.comment, ok, n, s.ok, s.suppr)
		}
	}
	l.Reset()
	if ok, n := l.AllowAt(t0.Add(12*time.Second), 10*time.Second, 1); !ok || n != 0 {
		t.Fatalf("after reset: (%v, %d)", ok, n)
	}
}

func TestKeyedSeparatesAndBounds(t *testing.T) {
	k := NewKeyed(time.Hour, 2)
	if ok, _ := k.Allow("a"); !ok {
		t.Fatal("a: first not logged")
	}
	if ok, _ := k.Allow("b"); !ok {
		t.Fatal("b hidden by a")
	}
	if ok, _ := k.Allow("a"); ok {
		t.Fatal("a logged twice in the interval")
	}
	// Past max keys the map starts afresh: memory stays bounded, and a new key is logged.
	if ok, _ := k.Allow("c"); !ok {
		t.Fatal("c: first key past max not logged")
	}
	if len(k.m) != 1 {
		t.Fatalf("%d keys kept, want 1", len(k.m))
	}
	if ok, _ := k.Allow("c"); ok {
		t.Fatal("c logged twice in the interval")
	}
}

func TestKeyedConcurrent(t *testing.T) {
	k := NewKeyed(time.Hour, 100)
	var wg sync.WaitGroup
	var mu sync.Mutex
	logged := 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				if ok, _ := k.Allow(fmt.Sprint(j % 10)); ok {
					mu.Lock()
					logged++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if logged != 10 {
		t.Fatalf("%d lines logged, want one per key (10)", logged)
	}
}
