package main

import (
	"bytes"
	"fmt"
	"sort"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/edged-dev/edged/wire"
)

// compressSection measures what the http connector's `compression:` (and the websocket
// connector's compressed frames) do to batches of the corpus: bytes on the wire against the
// plain JSON batch, and the CPU cost of compressing (input MB/s on this machine, one core),
// with the connector's settings (zstd SpeedDefault with the lower-memory tables, one encoder
// goroutine; gzip at its default level).
func compressSection(envs []*wire.Envelope) string {
	var w bytes.Buffer
	fmt.Fprintf(&w, "\n### Compression of batches (`compression: zstd|gzip`, same corpus)\n\n")
	zenc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true), zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		fmt.Fprintf(&w, "zstd encoder: %v: nothing measured.\n", err)
		return w.String()
	}
	defer zenc.Close()
	zw, _ := gzip.NewWriterLevel(nil, gzip.DefaultCompression) // reused, as the connector pools them
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		zw.Reset(&buf)
		_, _ = zw.Write(b)
		_ = zw.Close()
		return buf.Bytes()
	}
	zs := func(b []byte) []byte { return zenc.EncodeAll(b, nil) }
	// throughput runs f over b for 200 ms, three times, and returns the median input MB/s.
	throughput := func(b []byte, f func([]byte) []byte) float64 {
		var r [3]float64
		for i := range r {
			n := 0
			t0 := time.Now()
			for time.Since(t0) < 200*time.Millisecond {
				f(b)
				n++
			}
			r[i] = float64(n*len(b)) / time.Since(t0).Seconds() / 1e6
		}
		sort.Float64s(r[:])
		return r[1]
	}
	// share is the part of one core compression takes to fill a 32KiB/s uplink.
	share := func(ratio, mbs float64) string {
		return fmt.Sprintf("%.2f %%", 100*(32768/ratio)/(mbs*1e6))
	}
	fmt.Fprintf(&w, "| batch | form | bytes | / JSON batch | compress MB/s (1 core) | core share at 32KiB/s out |\n| --- | --- | ---: | ---: | ---: | ---: |\n")
	for _, size := range []int{10, len(envs)} {
		if size > len(envs) {
			continue
		}
		es := envs[:size]
		batch := &wire.Batch{Gateway: "gw-plant-01", First: es[0].ID, Last: es[len(es)-1].ID, Envelopes: es}
		bj, err1 := wire.MarshalBatchJSON(batch)
		bc, err2 := wire.MarshalBatch(batch)
		if err1 != nil || err2 != nil {
			fmt.Fprintf(&w, "| %d | marshal failed: %v %v | | | |\n", size, err1, err2)
			continue
		}
		mjs := throughput(bj, func([]byte) []byte { b, _ := wire.MarshalBatchJSON(batch); return b })
		base := float64(len(bj))
		fmt.Fprintf(&w, "| %d | JSON (`MarshalBatchJSON`; MB/s = its encoding, for scale) | %d | 1.00 | %.0f | |\n", size, len(bj), mjs)
		for _, c := range []struct {
			name string
			in   []byte
			f    func([]byte) []byte
		}{{"JSON + zstd", bj, zs}, {"JSON + gzip", bj, gz}, {"CBOR (`MarshalBatch`)", bc, nil}, {"CBOR + zstd", bc, zs}, {"CBOR + gzip", bc, gz}} {
			if c.f == nil {
				fmt.Fprintf(&w, "| %d | %s | %d | %.2f | | |\n", size, c.name, len(c.in), float64(len(c.in))/base)
				continue
			}
			out := len(c.f(c.in))
			mbs := throughput(c.in, c.f)
			ratio := float64(out) / float64(len(c.in))
			fmt.Fprintf(&w, "| %d | %s | %d | %.2f | %.0f | %s |\n", size, c.name, out, float64(out)/base, mbs, share(ratio, mbs))
		}
	}
	fmt.Fprintf(&w, "\nMB/s: input bytes compressed per second on one core of this machine (median of three\n"+
		"200 ms runs). Core share: the CPU it takes to compress enough to keep a 32KiB/s uplink full.\n")
	return w.String()
}
