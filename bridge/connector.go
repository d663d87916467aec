package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/edged-dev/edged/internal/redact"
	"github.com/edged-dev/edged/wire"
)

// Connector talks to one remote. It does not buffer, retry, back off or count: the forwarder
// does all of that once for every type. The forwarder calls Connect, then Send repeatedly, then
// Close, all from one goroutine; a failed Send or Connect is followed by Close and, after a
// backoff, a new Connect on the same value.
type Connector interface {
	// Connect establishes the link (dial, CONNECT, subscribe, fetch a token...). ctx carries the
	// connect timeout. It must return promptly when ctx is cancelled.
	Connect(ctx context.Context) error
	// Send delivers msgs in order. For each message it calls result(i, err) at most once, from
	// any goroutine, as soon as the remote decided: nil = confirmed (may be removed from the
	// outbox), an error wrapped by Permanent = rejected for good (dead-lettered), any other
	// error = try again later. Send returns when every message has a result, or with an error
	// when the link failed (messages without a result are retried; the forwarder reconnects).
	// The forwarder cancels ctx when the remote stops confirming (stall_timeout); Send must then
	// return promptly. result must not be called after Send returned.
	Send(ctx context.Context, msgs []*Message, result func(i int, err error)) error
	// Close releases the link. Idempotent; Connect may follow.
	Close() error
}

// Windowed is implemented by connectors whose remote bounds the messages in flight (MQTT 5
// Receive Maximum); the forwarder reports it in status. Valid after Connect.
type Windowed interface {
	Window() int
}

// Linked is implemented by connectors with a long-lived link; Done is closed when the link
// drops, so the forwarder reconnects (and downlink resumes) even while the outbox is empty.
// Valid after Connect.
type Linked interface {
	Done() <-chan struct{}
}

// Message is one outbox record handed to a connector.
type Message struct {
	// Seq is the outbox sequence number (FIFO order).
	Seq uint64
	// Env is the stored envelope. Env.Topic is already the remote topic (the forward rule was
	// applied at capture time); Env.QoS is the forward rule's QoS.
	Env *wire.Envelope
}

// Env is what a connector gets from the bridge.
type Env struct {
	// Name of the connector.
	Name string
	// GatewayID of this edged.
	GatewayID string
	// Logger is already tagged with the connector name.
	Logger *slog.Logger
	// Deliver hands a downlink message (remote topic) to the bridge, which maps it through the
	// connector's subscribe rules and publishes it locally. A non-nil error means it was not
	// delivered (the connector should not acknowledge it, or answer with an error code).
	Deliver func(ctx context.Context, in *Inbound) error
	// Scrub masks the connector's secrets in text. It already knows those its config
	// declares (SecretHolder); a connector adds what it reads at run time (password and
	// secret files) and wraps every error it returns with Scrub.Error, because errors of
	// the standard library embed whole URLs. The Logger already scrubs with it. Never nil
	// when the bridge builds the connector.
	Scrub *redact.Scrubber
	// BytesOut counts bytes of message bodies written toward the remote (delivery metrics);
	// nil outside a Bridge.
	BytesOut func(n int)
	// Health returns a fresh health report for presence.health_topic (each call resets the
	// drops counted "since last"); nil outside a Bridge.
	Health func() *HealthReport
	// Wire bounds the envelopes the connector encodes and decodes (Options.Wire).
	Wire wire.Limits
	// Throttle is the connector's bandwidth cap (nil: none). Connectors dial through
	// Env.Dialer, which applies it to every socket (ratelimit.go).
	Throttle *Throttle
}

// bytesOut calls env.BytesOut if set.
func (env *Env) bytesOut(n int) {
	if env.BytesOut != nil {
		env.BytesOut(n)
	}
}

// SecretHolder is implemented by connector configs that hold credentials (URL userinfo and
// query tokens, passwords, header values); the bridge masks them in every log line, status
// field, dead-letter reason and error string of that connector.
type SecretHolder interface {
	Secrets() []string
}

// Endpointer is implemented by connector configs with one remote address; Endpoint is shown in
// status and must already be redacted (redact.URL).
type Endpointer interface {
	Endpoint() string
}

// link is the done channel of a connector's current link, guarded by mu (which the connector
// uses for its other link state too); embedded, it implements Linked.
type link struct {
	mu   sync.Mutex
	done chan struct{} // closed when the current link is lost
}

// Done implements Linked.
func (l *link) Done() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.done
}

// errLinkLost is what a send returns when its link closed under it: an acknowledgement may
// have been lost with it, so the forwarder retries what was not confirmed.
var errLinkLost = errors.New("connection lost")

// linkEnd is what a send returns once its batch left the publishing loop: the cause of ctx
// if it ended, "connection lost" if the link closed (an acknowledgement may have been lost
// with it), else nil.
func linkEnd(ctx context.Context, done <-chan struct{}) error {
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-done:
		return errLinkLost
	default:
		return nil
	}
}

// scrubberOf returns env's scrubber (a fresh one for a connector built outside a Bridge) with
// cfg's secrets added.
func scrubberOf(env *Env, cfg SecretHolder) *redact.Scrubber {
	if env.Scrub == nil {
		env.Scrub = redact.NewScrubber()
	}
	env.Scrub.Add(cfg.Secrets()...)
	return env.Scrub
}

// RedirectError is a 3xx answer. Connectors never follow redirects: Go's client would re-send
// a 301/302 POST as a body-less GET (a 200 to that would confirm messages never delivered) and
// a 307/308 with the body, the signature and the configured headers to whatever host the
// Location names. A redirect is a retriable failure (the messages stay queued, the forwarder
// backs off) counted under failure reason "redirect"; the fix is the configured url.
type RedirectError struct {
	Status int
	// Location is the redirect target, redacted.
	Location string
}

func (e *RedirectError) Error() string {
	return fmt.Sprintf("http %d: redirected to %s; fix the url", e.Status, e.Location)
}

// noRedirect is every connector http.Client's CheckRedirect: the 3xx response itself comes
// back to the caller.
func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// redirectError returns a *RedirectError for a 3xx response, nil otherwise.
func redirectError(resp *http.Response) error {
	if resp == nil || resp.StatusCode < 300 || resp.StatusCode > 399 {
		return nil
	}
	loc := resp.Header.Get("Location")
	if u, err := resp.Location(); err == nil {
		loc = u.String()
	}
	if loc == "" {
		loc = "(no Location header)"
	}
	return &RedirectError{Status: resp.StatusCode, Location: redact.URL(loc)}
}

// Inbound is a downlink message as received from the remote.
type Inbound struct {
	Topic       string // remote topic
	Payload     []byte
	QoS         byte
	Retain      bool
	UserProps   []wire.UserProp
	ContentType string
}

// PermanentError marks a message the remote rejected for good; it goes to dead letters.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return "permanent: " + e.Err.Error() }
func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err as a permanent rejection.
func Permanent(err error) error { return &PermanentError{Err: err} }

// IsPermanent reports whether err is (or wraps) a permanent rejection.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

// RetryAfterError is a retriable failure with a delay the remote asked for (HTTP Retry-After).
type RetryAfterError struct {
	After time.Duration
	Err   error
}

func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("%v (retry after %v)", e.Err, e.After)
}
func (e *RetryAfterError) Unwrap() error { return e.Err }

// EncodeEnvelope renders one envelope in format (cbor or json) within env.Wire; raw returns
// the payload.
func (env *Env) EncodeEnvelope(format string, e *wire.Envelope) ([]byte, error) {
	switch format {
	case FormatRaw:
		return e.Payload, nil
	case FormatCBOR:
		return env.Wire.MarshalEnvelope(e)
	case FormatJSON:
		return env.Wire.MarshalEnvelopeJSON(e)
	}
	return nil, fmt.Errorf("unknown format %q", format)
}

// EncodeBatch renders msgs as one wire batch of env.GatewayID in format (cbor or json) within
// env.Wire.
func (env *Env) EncodeBatch(format string, msgs []*Message) ([]byte, error) {
	b := &wire.Batch{Gateway: env.GatewayID, Envelopes: make([]*wire.Envelope, len(msgs))}
	for i, m := range msgs {
		b.Envelopes[i] = m.Env
	}
	if len(msgs) > 0 {
		b.First, b.Last = msgs[0].Env.ID, msgs[len(msgs)-1].Env.ID
	}
	switch format {
	case FormatCBOR:
		return env.Wire.MarshalBatch(b)
	case FormatJSON:
		return env.Wire.MarshalBatchJSON(b)
	}
	return nil, fmt.Errorf("format %q cannot be batched", format)
}

// ContentType of format.
func ContentType(format string) string {
	switch format {
	case FormatCBOR:
		return "application/cbor"
	case FormatJSON:
		return "application/json"
	}
	return "application/octet-stream"
}

func userProp(k, v string) wire.UserProp { return wire.UserProp{Key: k, Value: v} }
