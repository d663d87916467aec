package bridge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/edged-dev/edged/internal/confkit"
	"github.com/edged-dev/edged/internal/redact"
)

func init() {
	Register(Type{
		Name:        "http",
		Description: "HTTP(S) POST of single or batched envelopes to an IM/REST API (JSON or CBOR; bearer, token, hmac auth)",
		NewConfig:   func() ConnectorConfig { c := &HTTPConfig{}; c.defaults(); return c },
		New:         newHTTP,
	})
}

// HTTPConfig is a connector of type http.
//
// Each request is a POST of one batch: with batch.max_messages 1 the body is one envelope
// (wire JSON or CBOR envelope), otherwise a wire batch (even when it holds one message).
// A retried request holds exactly the same messages as the failed one.
type HTTPConfig struct {
	Base `yaml:",inline"`
	// Where to POST and how: url or urls, auth, tls, headers (webtarget.go).
	WebTarget `yaml:",inline"`
	// Timeout of one request (connect, send, response). Default 10s.
	Timeout time.Duration `yaml:"timeout"`
	// Traffic control: max_requests, max_requests_burst, compression (traffic.go).
	HTTPTraffic `yaml:",inline"`
}

func (c *HTTPConfig) defaults() {
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	c.Base.defaults(FormatJSON, 100, 1)
}

// Validate implements ConnectorConfig.
func (c *HTTPConfig) Validate() error {
	errs := []error{c.Base.validate([]string{FormatJSON, FormatCBOR}, false)}
	errs = append(errs, c.WebTarget.validate([2]string{"http", "https"}, "an http:// or https:// URL")...)
	if c.Timeout <= 0 {
		errs = append(errs, confkit.Errorf("timeout", "%v: must be positive", c.Timeout))
	}
	errs = append(errs, c.HTTPTraffic.validate()...)
	return errors.Join(errs...)
}

type httpConn struct {
	cfg    *HTTPConfig
	env    Env
	client *http.Client
	auth   *authorizer
	scrub  *redact.Scrubber
	eps    endpoints
	tc     *httpTraffic // request cap and compression (compress.go)
}

func newHTTP(cc ConnectorConfig, env Env) (Connector, error) {
	cfg, ok := cc.(*HTTPConfig)
	if !ok {
		return nil, fmt.Errorf("http: config is %T", cc)
	}
	tc, err := cfg.TLS.build()
	if err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         env.Dialer(&net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}), // bandwidth cap (ratelimit.go)
		TLSClientConfig:     tc,
		TLSHandshakeTimeout: cfg.ConnectTimeout,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     90 * time.Second,
	}
	client := &http.Client{Transport: tr, Timeout: cfg.Timeout, CheckRedirect: noRedirect}
	scrub := scrubberOf(&env, cfg)
	a, err := newAuthorizer(cfg.Auth, client, scrub)
	if err != nil {
		return nil, fmt.Errorf("http: %w", scrub.Error(err))
	}
	tcx, err := newHTTPTraffic(cfg.HTTPTraffic)
	if err != nil {
		return nil, fmt.Errorf("http: %w", err)
	}
	return &httpConn{cfg: cfg, env: env, client: client, auth: a, scrub: scrub, eps: newEndpoints(cfg.URL, cfg.URLs), tc: tcx}, nil
}

// Connect fetches a token for auth type token; otherwise there is nothing to dial ahead.
func (h *httpConn) Connect(ctx context.Context) error { return h.scrub.Error(h.auth.prepare(ctx)) }

// Close drops idle connections.
func (h *httpConn) Close() error {
	h.client.CloseIdleConnections()
	return nil
}

// IdempotencyKey is the Idempotency-Key header of a request carrying msgs: the envelope id for
// a single-envelope body; for a batch "<first id>.<count>" (the batch's X-Edged-Batch-First
// and X-Edged-Batch-Count headers). Retries of a batch carry the same messages, so the same key.
func IdempotencyKey(msgs []*Message, batched bool) string {
	if !batched {
		return msgs[0].Env.ID.String()
	}
	return msgs[0].Env.ID.String() + "." + strconv.Itoa(len(msgs))
}

// Send implements Connector: one POST for the whole batch. 2xx confirms all; 429 (with
// Retry-After), 5xx, 401 (after one token refresh), 408 and network errors are retried;
// any other status rejects every message of the request permanently (dead letters).
func (h *httpConn) Send(ctx context.Context, msgs []*Message, result func(int, error)) error {
	if len(msgs) == 0 {
		return nil
	}
	batched := h.cfg.Batch.MaxMessages != 1
	var body []byte
	var err error
	if batched {
		body, err = h.env.EncodeBatch(h.cfg.Format, msgs)
	} else {
		msgs = msgs[:1]
		body, err = h.env.EncodeEnvelope(h.cfg.Format, msgs[0].Env)
	}
	if err != nil {
		for i := range msgs {
			result(i, Permanent(fmt.Errorf("encode: %w", err)))
		}
		return nil
	}
	h.env.bytesOut(len(body))
	status, retryAfter, respBody, redir, err := h.post(ctx, msgs, body, batched)
	if err == nil && status == http.StatusUnauthorized && (h.cfg.Auth.Type == "token" || h.cfg.Auth.Type == "bearer") {
		h.auth.invalidate()
		h.env.bytesOut(len(body))
		status, retryAfter, respBody, redir, err = h.post(ctx, msgs, body, batched)
	}
	if err != nil {
		return h.scrub.Error(err)
	}
	var res error
	switch {
	case status >= 200 && status < 300:
	case redir != nil:
		res = redir
	case status == http.StatusTooManyRequests:
		res = &RetryAfterError{After: retryAfter, Err: fmt.Errorf("http %d: %s", status, snippet(respBody))}
	case status == http.StatusUnauthorized, status == http.StatusRequestTimeout, status >= 500, status < 400:
		res = fmt.Errorf("http %d: %s", status, snippet(respBody))
		if retryAfter > 0 {
			res = &RetryAfterError{After: retryAfter, Err: res}
		}
	default:
		res = Permanent(fmt.Errorf("http %d: %s", status, snippet(respBody)))
	}
	if res != nil {
		res = &StatusError{Code: status, Err: res} // classed in failures_total
	}
	// A response body may echo the request (URL, headers): mask before anyone prints it.
	res = h.scrub.Error(res)
	for i := range msgs {
		result(i, res)
	}
	return nil
}

// post sends one request; redir is a *RedirectError for a 3xx answer (never followed).
func (h *httpConn) post(ctx context.Context, msgs []*Message, body []byte, batched bool) (status int, retryAfter time.Duration, rb []byte, redir, err error) {
	// Compressed before signing: an hmac signature covers the bytes on the wire.
	body, encoding, err := h.tc.body(body)
	if err != nil {
		return 0, 0, nil, nil, fmt.Errorf("compress: %w", err)
	}
	if err := h.tc.wait(ctx); err != nil {
		return 0, 0, nil, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.eps.url(), bytes.NewReader(body))
	if err != nil {
		return 0, 0, nil, nil, err
	}
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	for k, v := range h.cfg.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", ContentType(h.cfg.Format))
	req.Header.Set("User-Agent", "edged")
	req.Header.Set("Idempotency-Key", IdempotencyKey(msgs, batched))
	if batched {
		req.Header.Set("X-Edged-Batch-First", msgs[0].Env.ID.String())
		req.Header.Set("X-Edged-Batch-Last", msgs[len(msgs)-1].Env.ID.String())
		req.Header.Set("X-Edged-Batch-Count", strconv.Itoa(len(msgs)))
	}
	if h.env.GatewayID != "" {
		req.Header.Set("X-Edged-Gateway", h.env.GatewayID)
	}
	if err := h.auth.apply(ctx, req, body); err != nil {
		return 0, 0, nil, nil, fmt.Errorf("auth: %w", err)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		if c := context.Cause(ctx); c != nil {
			return 0, 0, nil, nil, fmt.Errorf("post: %w", c)
		}
		return 0, 0, nil, nil, fmt.Errorf("post: %w", err)
	}
	defer resp.Body.Close()
	rb, _ = io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, parseRetryAfter(resp.Header.Get("Retry-After")), rb, redirectError(resp), nil
}

// maxRetryAfter caps how long a Retry-After header can hold a connector back.
const maxRetryAfter = time.Hour

// parseRetryAfter reads delta-seconds or an HTTP date (outside bytes, fuzzed by
// FuzzRetryAfter); capped at maxRetryAfter. The seconds are capped before they become a
// Duration: "Retry-After: 9223372037" overflowed to a negative wait (retry at once) and
// 18446744074 wrapped to 0.29 s, the opposite of what the server asked for.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		// ParseInt saturates on range errors: a huge delay is a long delay.
		if n >= int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = time.Until(t)
	}
	if d < 0 {
		d = 0
	}
	return min(d, maxRetryAfter)
}

var _ Connector = (*httpConn)(nil)
