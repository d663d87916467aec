package bridge

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// ZstdMagic starts every zstd frame (RFC 8878). A binary WebSocket frame from edged that
// begins with it is a compressed frame (see "WebSocket protocol" in the package doc).
var ZstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// compressor compresses batch bodies with one algorithm. It is safe for concurrent use.
type compressor struct {
	alg  string
	zenc *zstd.Encoder
	gz   sync.Pool
}

// Encoders are built once per connector. The zstd encoder uses one goroutine-free block
// encoder per call (EncodeAll) at the default level with the lower-memory tables: a batch is at
// most batch.max_bytes, so a larger window would buy nothing on a gateway.
func newCompressor(alg string) (*compressor, error) {
	c := &compressor{alg: alg}
	switch alg {
	case "", CompressNone:
		return nil, nil
	case CompressZstd:
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true),
			zstd.WithEncoderLevel(zstd.SpeedDefault))
		if err != nil {
			return nil, fmt.Errorf("zstd encoder: %w", err)
		}
		c.zenc = enc
	case CompressGzip:
		c.gz.New = func() any {
			w, _ := gzip.NewWriterLevel(nil, gzip.DefaultCompression)
			return w
		}
	default:
		return nil, fmt.Errorf("unknown compression %q", alg)
	}
	return c, nil
}

// compress returns the compressed body and the Content-Encoding naming it.
func (c *compressor) compress(b []byte) ([]byte, string, error) {
	switch c.alg {
	case CompressZstd:
		return c.zenc.EncodeAll(b, make([]byte, 0, len(b)/3+64)), "zstd", nil
	case CompressGzip:
		var buf bytes.Buffer
		buf.Grow(len(b)/3 + 64)
		w := c.gz.Get().(*gzip.Writer)
		defer c.gz.Put(w)
		w.Reset(&buf)
		if _, err := w.Write(b); err != nil {
			return nil, "", err
		}
		if err := w.Close(); err != nil {
			return nil, "", err
		}
		return buf.Bytes(), "gzip", nil
	}
	return b, "", nil
}

// httpTraffic is an http connector's request-rate cap and body compression.
type httpTraffic struct {
	reqs *Throttle // one token per request; nil: no cap
	comp *compressor
}

func newHTTPTraffic(h HTTPTraffic) (*httpTraffic, error) {
	t := &httpTraffic{}
	if h.MaxRequests > 0 {
		t.reqs = NewThrottle(float64(h.MaxRequests), max(1, h.MaxRequestsBurst))
	}
	c, err := newCompressor(h.Compression)
	if err != nil {
		return nil, err
	}
	t.comp = c
	return t, nil
}

// wait blocks until the request cap lets one more request go (or ctx ends). A 429's
// Retry-After is applied by the forwarder's backoff on top of this.
func (t *httpTraffic) wait(ctx context.Context) error {
	if t == nil || t.reqs == nil {
		return nil
	}
	d := t.reqs.reserve(1)
	if d <= 0 {
		return nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for max_requests: %w", context.Cause(ctx))
	}
}

// body compresses a request body; encoding is "" when it is sent as is.
func (t *httpTraffic) body(b []byte) (out []byte, encoding string, err error) {
	if t == nil || t.comp == nil {
		return b, "", nil
	}
	return t.comp.compress(b)
}

// wsFrame compresses an outgoing batch frame into a binary frame when compression is on.
func wsFrame(c *compressor, typ websocket.MessageType, frame []byte) (websocket.MessageType, []byte, error) {
	if c == nil {
		return typ, frame, nil
	}
	z, _, err := c.compress(frame)
	if err != nil {
		return typ, nil, err
	}
	return websocket.MessageBinary, z, nil
}
