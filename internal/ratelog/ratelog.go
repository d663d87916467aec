// Package ratelog owns edged's one way to rate-limit log lines: the first event is logged, then
// at most one per interval, each carrying the number of events held back since the last line.
// A flapping link, a hammering client or a damaged file must not flood the journal, nor hide
// that it is still happening.
package ratelog

import (
	"sync"
	"time"
)

// Limit limits one kind of event. The zero value is ready; it is safe for concurrent use.
type Limit struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// Allow counts n events now and reports whether to log them, and if so how many earlier events
// were held back since the last line (those n are not part of it).
func (l *Limit) Allow(every time.Duration, n int) (ok bool, suppressed int) {
	return l.AllowAt(time.Now(), every, n)
}

// AllowAt is Allow at a given time.
func (l *Limit) AllowAt(now time.Time, every time.Duration, n int) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < every {
		l.suppressed += n
		return false, 0
	}
	s := l.suppressed
	l.last, l.suppressed = now, 0
	return true, s
}

// Reset forgets the last line, so the next event is logged at once (after a recovery, the next
// failure is news).
func (l *Limit) Reset() {
	l.mu.Lock()
	l.last, l.suppressed = time.Time{}, 0
	l.mu.Unlock()
}

// Keyed keeps one Limit per key (a message text, a client, a kind of damage), so one noisy
// kind never hides another. Keys are bounded: a new key past max starts the map afresh, which
// lets at most max lines through at once and keeps memory bounded whatever the keys are (client
// identifiers come and go for the life of the daemon; sharing one Limit past max would let one
// noisy client hide every later one).
type Keyed struct {
	every time.Duration
	max   int
	mu    sync.Mutex
	m     map[string]*Limit
}

// NewKeyed returns a Keyed logging each key at most once per every, for up to max keys.
func NewKeyed(every time.Duration, max int) *Keyed {
	return &Keyed{every: every, max: max, m: map[string]*Limit{}}
}

// Limit returns key's Limit.
func (k *Keyed) Limit(key string) *Limit {
	k.mu.Lock()
	defer k.mu.Unlock()
	l := k.m[key]
	if l == nil {
		if len(k.m) >= k.max {
			clear(k.m)
		}
		l = &Limit{}
		k.m[key] = l
	}
	return l
}

// Allow counts one event of key; see Limit.Allow.
func (k *Keyed) Allow(key string) (ok bool, suppressed int) {
	return k.Limit(key).Allow(k.every, 1)
}
