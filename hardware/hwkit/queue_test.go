package hwkit

import (
	"slices"
	"testing"
)

func TestQueue(t *testing.T) {
	var q Queue[int]
	if d, why := q.Push(1, 0, false); why != RefusedAway || d != 1 || q.Len() != 0 {
		t.Fatalf("away with command_queue 0: dropped %d, %v, len %d", d, why, q.Len())
	}
	// Open, command_queue 0: one command waits for the write in progress; the next replaces it.
	if _, why := q.Push(1, 0, true); why != Kept || q.Len() != 1 {
		t.Fatalf("open with command_queue 0: %v, len %d", why, q.Len())
	}
	if d, why := q.Push(2, 0, true); why != DroppedOldest || d != 1 || q.Len() != 1 {
		t.Fatalf("open and full: dropped %d, %v, len %d", d, why, q.Len())
	}
	q.Clear()
	for v := range 3 {
		if _, why := q.Push(v, 3, false); why != Kept {
			t.Fatalf("push %d: %v", v, why)
		}
	}
	if d, why := q.Push(3, 3, false); why != DroppedOldest || d != 0 {
		t.Fatalf("full: dropped %d, %v", d, why)
	}
	if got := q.Expire(func(v int) bool { return v != 2 }); !slices.Equal(got, []int{2}) || q.Len() != 2 {
		t.Fatalf("expired %v, len %d", got, q.Len())
	}
	var got []int
	for v, ok := q.Pop(); ok; v, ok = q.Pop() {
		got = append(got, v)
	}
	if !slices.Equal(got, []int{1, 3}) {
		t.Fatalf("popped %v, want [1 3]", got)
	}
	if _, why := q.Push(9, 3, false); why != Kept || q.Clear() != 1 || q.Len() != 0 {
		t.Fatal("clear")
	}
}
