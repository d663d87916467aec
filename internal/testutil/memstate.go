package testutil

import (
	"sort"
	"strings"
	"sync"
)

// MemState is an in-memory broker.StateStore for tests that need a broker without a disk.
type MemState struct {
	mu sync.Mutex
	m  map[string][]byte
}

// NewMemState returns an empty store.
func NewMemState() *MemState { return &MemState{m: map[string][]byte{}} }

// Put stores a copy of v.
func (s *MemState) Put(k string, v []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[k] = append([]byte(nil), v...)
	return nil
}

// Delete removes k.
func (s *MemState) Delete(k string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, k)
	return nil
}

// Scan calls fn for every key with prefix, in key order, outside the lock.
func (s *MemState) Scan(prefix string, fn func(string, []byte) error) error {
	s.mu.Lock()
	var keys []string
	for k := range s.m {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	vals := make([][]byte, len(keys))
	for i, k := range keys {
		vals[i] = s.m[k]
	}
	s.mu.Unlock()
	for i, k := range keys {
		if err := fn(k, vals[i]); err != nil {
			return err
		}
	}
	return nil
}
