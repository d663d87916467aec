// Package wire owns edged's bytes: the CBOR envelope every stored and forwarded message is
// wrapped in, the batch that carries many envelopes at once, their JSON form for HTTP/JSON
// connectors, JSON<->CBOR payload transcoding, CBOR diagnostic notation for the CLI, and the
// serial frame codecs (line, COBS, SLIP) the hardware package runs over a port's byte stream.
//
// What wire must not do: any I/O of its own (files, sockets, serial ports, clocks other than
// NewID's), logging, metrics, goroutines or configuration parsing. (LoadCorpus, for the tests
// and the benchmark, reads test corpora only through the fs.FS its caller opened.) Everything here is a pure function or
// a small state machine fed by its caller, so that it can be fuzzed in isolation; its only
// dependency besides the standard library is github.com/fxamacker/cbor/v2 (used for generic
// CBOR values: transcoding and Diagnose; the envelope and batch codecs are hand-written for
// speed and checked against that library in the tests).
//
// Everything that decodes outside bytes (UnmarshalEnvelope, UnmarshalBatch, the JSON
// decoders, CBORToJSON, JSONToCBOR, Diagnose, the frame decoders) is hardened: it returns an
// error (wrapping ErrMalformed, ErrLimit or ErrVersion) and never panics, never allocates more
// than a small multiple of its input or the configured limits (Limits.MaxPayload, MaxTopic, MaxString,
// MaxUserProps, MaxBatch, MaxTranscode, MaxNesting, MaxItems), and always terminates.
// Duplicate map keys are rejected. Every decoder has a native fuzz target (go test -fuzz).
//
// Wire compatibility: the envelope and batch carry a format version (Version). Readers ignore
// unknown unsigned-integer keys, so a newer writer may add keys without a version bump; a new
// version is only for incompatible changes, and readers reject it with ErrVersion.
package wire
