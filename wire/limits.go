package wire

import "fmt"

// Limits are the decode limits that follow the configuration: a gateway whose broker accepts
// larger packets stores and forwards larger payloads. The package functions (UnmarshalEnvelope,
// MarshalBatchJSON, ...) apply the zero Limits, which means the defaults; a part that needs
// more calls the same functions as methods of its Limits. Nothing in wire is mutable.
type Limits struct {
	// MaxPayload is the largest payload an envelope may carry; <= 0 means DefaultMaxPayload.
	// Encoding a larger payload fails too, so nothing is stored that could not be read back.
	MaxPayload int
}

// DefaultMaxPayload is Limits.MaxPayload when not set (1 MiB).
const DefaultMaxPayload = 1 << 20

func (l Limits) maxPayload() int {
	if l.MaxPayload <= 0 {
		return DefaultMaxPayload
	}
	return l.MaxPayload
}

// decodeWithin runs dec on p within l's payload limit; its error names what was decoded.
func decodeWithin[T any](l Limits, what string, p []byte, dec func([]byte, int) (T, error)) (T, error) {
	v, err := dec(p, l.maxPayload())
	if err != nil {
		var zero T
		return zero, fmt.Errorf("decode %s: %w", what, err)
	}
	return v, nil
}

// Decode limits applied to outside bytes (envelopes and batches read back from disk or
// received from a peer, JSON from the cloud, serial payloads being transcoded) that no
// configuration changes.
const (
	// MaxTopic is the longest topic (the MQTT limit, 65535 bytes).
	MaxTopic = 65535
	// MaxString bounds every other string field (gateway, client id, content type, user
	// property keys and values).
	MaxString = 65535
	// MaxUserProps bounds the number of user properties per envelope.
	MaxUserProps = 1024
	// MaxBatch bounds the number of envelopes in one batch.
	MaxBatch = 100_000
	// MaxTranscode bounds the input size of JSONToCBOR, CBORToJSON, Diagnose and the JSON
	// envelope / batch decoders (64 MiB).
	MaxTranscode = 64 << 20
)

// Structural limits for generic CBOR / JSON values (transcoding, Diagnose, skipping unknown
// envelope keys). These are constants because the CBOR decode modes are built from them once.
const (
	// MaxNesting is the deepest nesting of arrays, maps and tags accepted.
	MaxNesting = 32
	// MaxItems is the largest number of elements of one array or pairs of one map accepted.
	MaxItems = 131072
	// maxEnvelopePairs bounds the map of one envelope or batch header (known + unknown keys).
	maxEnvelopePairs = 256
)
