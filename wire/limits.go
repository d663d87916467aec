package wire

// Decode limits applied to outside bytes (envelopes and batches read back from disk or
// received from a peer, JSON from the cloud, serial payloads being transcoded). They are
// package variables so that cmd/edged can align them with its configuration; set them once at
// start-up, before any encode or decode runs (they are read without synchronisation).
var (
	// MaxPayload is the largest payload an envelope may carry (1 MiB). Encoding a larger
	// payload fails too, so nothing is stored that could not be read back.
	MaxPayload = 1 << 20
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
