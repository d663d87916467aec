package wire

import (
	"fmt"
	"math"
)

// Batch is one CBOR item carrying many envelopes, as forwarders send them.
//
// CBOR form (map with unsigned integer keys, Core Deterministic Encoding):
//
//	key  field      type
//	0    version    uint (1), required
//	1    Gateway    tstr, required
//	2    First      bstr .size 16, required: ID of the first envelope (zero id when empty)
//	3    Last       bstr .size 16, required: ID of the last envelope (zero id when empty)
//	4    Envelopes  [* envelope], required
//
// Each nested envelope is an envelope map (see Envelope) without key 0 (the batch's version
// applies) and without key 7 when its gateway equals the batch's; a nested envelope that
// carries key 7 keeps its own gateway (even ""). Decoding restores both, so
// UnmarshalBatch(MarshalBatch(b)) equals b.
//
// Compression: none. TestBatchCompression measures zstd (klauspost/compress, default level)
// on a batch of the 68 corpus messages: 8988 -> 6066 bytes (0.67) for ~126 µs of CPU per batch,
// about 10x the cost of encoding it, on a 2-core gateway that must drain 20k msgs/s. A batch
// that any CBOR decoder can read without a decompressor is worth more than a third of the
// bytes; where bandwidth matters more, compress at the transport (HTTP Content-Encoding).
type Batch struct {
	Gateway   string
	First     ID // zero: taken from Envelopes[0].ID by MarshalBatch
	Last      ID // zero: taken from Envelopes[len-1].ID by MarshalBatch
	Envelopes []*Envelope
}

// Batch CBOR keys.
const (
	bkeyVersion = iota
	bkeyGateway
	bkeyFirst
	bkeyLast
	bkeyEnvelopes
)

// header returns the First/Last to write, checking explicit values against the envelopes.
func (b *Batch) header() (first, last ID, err error) {
	first, last = b.First, b.Last
	if len(b.Envelopes) > MaxBatch {
		return first, last, fmt.Errorf("%w: %d envelopes > %d", ErrLimit, len(b.Envelopes), MaxBatch)
	}
	if err := checkString("gateway", b.Gateway, MaxString); err != nil {
		return first, last, err
	}
	if len(b.Envelopes) == 0 {
		return first, last, nil
	}
	for i, e := range b.Envelopes {
		if e == nil {
			return first, last, fmt.Errorf("envelope %d: %w: nil", i, ErrMalformed)
		}
	}
	f, l := b.Envelopes[0].ID, b.Envelopes[len(b.Envelopes)-1].ID
	if first.IsZero() {
		first = f
	}
	if last.IsZero() {
		last = l
	}
	if first != f || last != l {
		return first, last, fmt.Errorf("%w: first/last %s/%s do not match the envelopes %s/%s", ErrMalformed, first, last, f, l)
	}
	return first, last, nil
}

// MarshalBatch encodes b in deterministic CBOR. It does not modify b.
func MarshalBatch(b *Batch) ([]byte, error) { return Limits{}.MarshalBatch(b) }

// MarshalBatch is MarshalBatch within l.
func (l Limits) MarshalBatch(b *Batch) ([]byte, error) {
	first, last, err := b.header()
	if err != nil {
		return nil, fmt.Errorf("encode batch: %w", err)
	}
	size := 1 + 2 + 1 + strSize(len(b.Gateway)) + 2*18 + 1 + headLen(uint64(len(b.Envelopes)))
	for i, e := range b.Envelopes {
		if err := e.check(l.maxPayload()); err != nil {
			return nil, fmt.Errorf("encode batch: envelope %d: %w", i, err)
		}
		size += envelopeSize(e, true, b.Gateway)
	}
	out := make([]byte, 0, size)
	out = append(out, majorMap<<5|5, bkeyVersion, Version, bkeyGateway)
	out = appendText(out, b.Gateway)
	out = append(out, bkeyFirst, majorBytes<<5|16)
	out = append(out, first[:]...)
	out = append(out, bkeyLast, majorBytes<<5|16)
	out = append(out, last[:]...)
	out = append(out, bkeyEnvelopes)
	out = appendHead(out, majorArray, uint64(len(b.Envelopes)))
	for _, e := range b.Envelopes {
		out = appendEnvelope(out, e, true, b.Gateway)
	}
	return out, nil
}

// UnmarshalBatch decodes outside bytes into a batch with the same guarantees as
// UnmarshalEnvelope. Nested envelopes inherit the batch's gateway when they do not carry one.
func UnmarshalBatch(p []byte) (*Batch, error) { return Limits{}.UnmarshalBatch(p) }

// UnmarshalBatch is UnmarshalBatch within l.
func (l Limits) UnmarshalBatch(p []byte) (*Batch, error) {
	return decodeWithin(l, "batch", p, unmarshalBatch)
}

func unmarshalBatch(p []byte, maxPayload int) (*Batch, error) {
	r := reader{b: p, maxPayload: maxPayload}
	n, err := mapHead(&r, "batch")
	if err != nil {
		return nil, err
	}
	b := new(Batch)
	var seen keySet
	envStart := -1
	for range n {
		k, err := r.uint("batch key")
		if err != nil {
			return nil, err
		}
		if k > math.MaxUint32 {
			return nil, fmt.Errorf("%w: batch key %d out of range", ErrMalformed, k)
		}
		if !seen.add(k) {
			return nil, fmt.Errorf("%w: duplicate key %d", ErrMalformed, k)
		}
		switch k {
		case bkeyVersion:
			v, err := r.uint("version")
			if err != nil {
				return nil, err
			}
			if v != Version {
				return nil, fmt.Errorf("%w %d (this build reads %d)", ErrVersion, v, Version)
			}
		case bkeyGateway:
			if b.Gateway, err = r.text(MaxString, "gateway"); err != nil {
				return nil, err
			}
		case bkeyFirst, bkeyLast:
			q, err := r.span(majorBytes, 16, "first/last")
			if err != nil {
				return nil, err
			}
			if len(q) != 16 {
				return nil, fmt.Errorf("%w: first/last: %d bytes, want 16", ErrMalformed, len(q))
			}
			if k == bkeyFirst {
				copy(b.First[:], q)
			} else {
				copy(b.Last[:], q)
			}
		case bkeyEnvelopes:
			// The gateway key may come later in a non-deterministic encoding: skip now, decode
			// once the header is complete.
			envStart = r.off
			if err := r.skip(1); err != nil {
				return nil, err
			}
		default:
			if err := r.skip(1); err != nil {
				return nil, err
			}
		}
	}
	if r.off != len(p) {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(p)-r.off)
	}
	for _, k := range []uint64{bkeyVersion, bkeyGateway, bkeyFirst, bkeyLast, bkeyEnvelopes} {
		if !seen.has(k) {
			return nil, fmt.Errorf("%w: missing key %d", ErrMalformed, k)
		}
	}
	r.off = envStart
	cnt, err := r.expect(majorArray, "envelopes")
	if err != nil {
		return nil, err
	}
	if cnt > uint64(MaxBatch) {
		return nil, fmt.Errorf("%w: %d envelopes > %d", ErrLimit, cnt, MaxBatch)
	}
	if cnt > uint64(r.remaining())/20 { // an envelope is at least 20 bytes
		return nil, errTruncated
	}
	if cnt > 0 {
		envs := make([]Envelope, cnt) // one allocation for all envelopes
		b.Envelopes = make([]*Envelope, cnt)
		for i := range envs {
			if err := decodeEnvelope(&r, &envs[i], true, b.Gateway); err != nil {
				return nil, fmt.Errorf("envelope %d: %w", i, err)
			}
			b.Envelopes[i] = &envs[i]
		}
		if b.First != envs[0].ID || b.Last != envs[cnt-1].ID {
			return nil, fmt.Errorf("%w: first/last do not match the envelopes", ErrMalformed)
		}
	}
	return b, nil
}
