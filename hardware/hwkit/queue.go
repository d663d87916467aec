package hwkit

// Drop says what Queue.Push had to give up.
type Drop int

const (
	// Kept: nothing was dropped.
	Kept Drop = iota
	// RefusedAway: the device is away and command_queue is 0; the new command was dropped.
	RefusedAway
	// DroppedOldest: the queue was full; its oldest command was dropped to make room for the new one.
	DroppedOldest
)

// Queue holds the commands (writes) waiting for a device, oldest first, bounded by
// command_queue. It does no locking: its owner guards it with the lock that also guards
// whether the device is open, and the zero value is an empty queue.
type Queue[T any] struct {
	items []T
}

// Push queues v. limit is command_queue; while the device is open at least one command is held
// even with command_queue 0, so a command arriving during a write waits for it instead of being
// dropped. It returns what it dropped: v (RefusedAway), the oldest command (DroppedOldest), or nothing (Kept).
func (q *Queue[T]) Push(v T, limit int, open bool) (dropped T, why Drop) {
	if open {
		limit = max(limit, 1)
	}
	switch {
	case limit == 0:
		return v, RefusedAway
	case len(q.items) >= limit:
		dropped = q.items[0]
		q.items = append(q.items[:0], q.items[1:]...)
		q.items = append(q.items, v)
		return dropped, DroppedOldest
	}
	q.items = append(q.items, v)
	return dropped, Kept
}

// Pop takes the oldest command.
func (q *Queue[T]) Pop() (T, bool) {
	var v T
	if len(q.items) == 0 {
		return v, false
	}
	v, q.items = q.items[0], q.items[1:]
	return v, true
}

// Expire removes and returns, oldest first, the commands fresh rejects (older than
// command_max_age).
func (q *Queue[T]) Expire(fresh func(T) bool) (expired []T) {
	keep := q.items[:0]
	for _, v := range q.items {
		if fresh(v) {
			keep = append(keep, v)
		} else {
			expired = append(expired, v)
		}
	}
	q.items = keep
	return expired
}

// Len is the number of commands waiting.
func (q *Queue[T]) Len() int { return len(q.items) }

// Clear empties the queue (the device stops) and returns how many commands it dropped.
func (q *Queue[T]) Clear() int {
	n := len(q.items)
	q.items = nil
	return n
}
