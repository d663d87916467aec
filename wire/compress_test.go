package wire

import (
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// TestBatchCompression measures what zstd would buy on a batch of the corpus envelopes, the
// figure behind Batch's "no compression" decision. It asserts nothing but sanity.
func TestBatchCompression(t *testing.T) {
	bt := &Batch{Gateway: "gw-plant-01", Envelopes: loadCorpus(t)} // each message once
	raw, err := MarshalBatch(bt)
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault))
	defer enc.Close()
	start := time.Now()
	const n = 50
	var z []byte
	for range n {
		z = enc.EncodeAll(raw, z[:0])
	}
	per := time.Since(start) / n
	t.Logf("batch of %d: %d bytes, zstd %d bytes (%.2f), %v per batch to compress", len(bt.Envelopes), len(raw), len(z), float64(len(z))/float64(len(raw)), per)
	if len(z) == 0 {
		t.Fatal("empty")
	}
}
