package storage

import (
	"testing"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// BenchmarkDrainVerify is BenchmarkDrain with badger's block checksums verified on every read
// (the production setting) and without, in one process, to show what verification costs.
// Record checksums (CRC-32C of each envelope) are checked in both.
func BenchmarkDrainVerify(b *testing.B) {
	for _, c := range []struct {
		name string
		mode options.ChecksumVerificationMode
	}{{"block", options.OnBlockRead}, {"none", options.NoVerification}} {
		b.Run(c.name, func(b *testing.B) {
			tuneHook = func(o *badger.Options) { o.ChecksumVerificationMode = c.mode }
			defer func() { tuneHook = nil }()
			BenchmarkDrain(b)
		})
	}
}

// BenchmarkRecordDecode: decoding one stored record of a 200-byte message, with its checksum.
func BenchmarkRecordDecode(b *testing.B) {
	v := encodeRecord(nowMs(), make([]byte, 260))
	b.SetBytes(int64(len(v)))
	for b.Loop() {
		if _, _, err := decodeRecord(v); err != nil {
			b.Fatal(err)
		}
	}
}
