package faultfs

import "sort"

// span is the half-open byte range [start, end).
type span struct{ start, end int64 }

// ranges is a sorted set of disjoint, non-adjacent spans: the bytes written since the last
// fsync of a file.
type ranges []span

// add inserts [s, e), merging overlapping and adjacent spans.
func (r ranges) add(s, e int64) ranges {
	if e <= s {
		return r
	}
	// first span that ends at or after s (touching counts, so adjacent spans merge)
	i := sort.Search(len(r), func(k int) bool { return r[k].end >= s })
	j := i
	for j < len(r) && r[j].start <= e {
		s = min(s, r[j].start)
		e = max(e, r[j].end)
		j++
	}
	if i == j {
		r = append(r, span{})
		copy(r[i+1:], r[i:])
		r[i] = span{s, e}
		return r
	}
	r[i] = span{s, e}
	return append(r[:i+1], r[j:]...)
}

// clip drops everything at or beyond n.
func (r ranges) clip(n int64) ranges {
	out := r[:0]
	for _, sp := range r {
		if sp.start >= n {
			break
		}
		sp.end = min(sp.end, n)
		out = append(out, sp)
	}
	return out
}

// bytes is the total length of the spans.
func (r ranges) bytes() int64 {
	var n int64
	for _, sp := range r {
		n += sp.end - sp.start
	}
	return n
}
