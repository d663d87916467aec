package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/fxamacker/cbor/v2"

	"github.com/edged-dev/edged/internal/confkit"
	"github.com/edged-dev/edged/internal/redact"
	"github.com/edged-dev/edged/wire"
)

func init() {
	Register(Type{
		Name:        "websocket",
		Description: "long-lived WebSocket to an IM service: JSON or CBOR envelope frames, acks by id, downlink frames",
		NewConfig:   func() ConnectorConfig { c := &WebSocketConfig{}; c.defaults(); return c },
		New:         newWebSocket,
	})
}

// WebSocketConfig is a connector of type websocket. The frame protocol is described in the
// package documentation ("WebSocket protocol").
type WebSocketConfig struct {
	Base `yaml:",inline"`
	// Where to connect and how: url or urls, auth, tls, headers (webtarget.go).
	WebTarget `yaml:",inline"`
	// PingInterval between WebSocket pings; a ping unanswered within the interval drops the
	// link (the forwarder reconnects). Default 20s.
	PingInterval time.Duration `yaml:"ping_interval"`
	// Traffic control: compression (traffic.go).
	WSTraffic `yaml:",inline"`
}

func (c *WebSocketConfig) defaults() {
	if c.PingInterval == 0 {
		c.PingInterval = 20 * time.Second
	}
	c.Base.defaults(FormatJSON, 100, 1)
}

// Validate implements ConnectorConfig.
func (c *WebSocketConfig) Validate() error {
	errs := []error{c.Base.validate([]string{FormatJSON, FormatCBOR}, true)}
	errs = append(errs, c.WebTarget.validate([2]string{"ws", "wss"}, "a ws:// or wss:// URL")...)
	if c.PingInterval <= 0 {
		errs = append(errs, confkit.Errorf("ping_interval", "%v: must be positive", c.PingInterval))
	}
	errs = append(errs, c.WSTraffic.validate()...)
	return errors.Join(errs...)
}

// wsControl is an ack or reject frame from the server (and the ack edged sends for downlink).
type wsControl struct {
	Ack    string `json:"ack,omitempty" cbor:"ack,omitempty"`
	Reject string `json:"reject,omitempty" cbor:"reject,omitempty"`
	Error  string `json:"error,omitempty" cbor:"error,omitempty"`
}

type wsConn struct {
	cfg    *WebSocketConfig
	env    Env
	client *http.Client
	auth   *authorizer
	scrub  *redact.Scrubber
	eps    endpoints
	comp   *compressor // compress.go; nil: frames as they are

	link   // mu guards the fields below too
	c      *websocket.Conn
	cancel context.CancelFunc
	ctrl   chan wsControl
	wg     sync.WaitGroup
}

func newWebSocket(cc ConnectorConfig, env Env) (Connector, error) {
	cfg, ok := cc.(*WebSocketConfig)
	if !ok {
		return nil, fmt.Errorf("websocket: config is %T", cc)
	}
	tc, err := cfg.TLS.build()
	if err != nil {
		return nil, fmt.Errorf("websocket: %w", err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, Proxy: http.ProxyFromEnvironment,
		DialContext: env.Dialer(nil)}, CheckRedirect: noRedirect} // bandwidth cap (ratelimit.go)
	scrub := scrubberOf(&env, cfg)
	a, err := newAuthorizer(cfg.Auth, client, scrub)
	if err != nil {
		return nil, fmt.Errorf("websocket: %w", scrub.Error(err))
	}
	comp, err := newCompressor(cfg.Compression)
	if err != nil {
		return nil, fmt.Errorf("websocket: %w", err)
	}
	return &wsConn{cfg: cfg, env: env, client: client, auth: a, scrub: scrub, eps: newEndpoints(cfg.URL, cfg.URLs), comp: comp}, nil
}

// Connect dials and starts the reader and pinger.
func (w *wsConn) Connect(ctx context.Context) error { return w.scrub.Error(w.connect(ctx)) }

func (w *wsConn) connect(ctx context.Context) error {
	c, err := w.handshake(ctx, w.eps.url())
	if err != nil {
		return err
	}
	c.SetReadLimit(16 << 20)
	lctx, cancel := context.WithCancel(context.Background())
	w.mu.Lock()
	w.c, w.done, w.cancel, w.ctrl = c, make(chan struct{}), cancel, make(chan wsControl, 4096)
	done, ctrl := w.done, w.ctrl
	w.mu.Unlock()
	w.wg.Add(2)
	go w.reader(lctx, c, done, ctrl)
	go w.pinger(lctx, c)
	return nil
}

// handshake dials raw with the configured headers and auth.
func (w *wsConn) handshake(ctx context.Context, raw string) (*websocket.Conn, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range w.cfg.Headers {
		req.Header.Set(k, v)
	}
	if w.env.GatewayID != "" {
		req.Header.Set("X-Edged-Gateway", w.env.GatewayID)
	}
	if err := w.auth.apply(ctx, req, nil); err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	c, resp, err := websocket.Dial(ctx, raw, &websocket.DialOptions{HTTPClient: w.client, HTTPHeader: req.Header})
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusUnauthorized {
			w.auth.invalidate()
			err = &StatusError{Code: resp.StatusCode, Err: err}
		}
		if rerr := redirectError(resp); rerr != nil {
			return nil, fmt.Errorf("dial %s: %w", redact.URL(raw), rerr)
		}
		return nil, fmt.Errorf("dial %s: %w", redact.URL(raw), err)
	}
	return c, nil
}

func (w *wsConn) reader(ctx context.Context, c *websocket.Conn, done chan struct{}, ctrl chan wsControl) {
	defer w.wg.Done()
	defer close(done)
	for {
		typ, data, err := c.Read(ctx)
		if err != nil {
			if ctx.Err() == nil {
				w.env.Logger.Debug("websocket read", "err", err)
			}
			c.CloseNow()
			return
		}
		cm, env, err := decodeWSFrame(w.env.Wire, typ == websocket.MessageText, data)
		if err != nil {
			w.env.Logger.Warn("websocket: ignoring a frame that is neither an ack nor an envelope", "err", err)
			continue
		}
		if cm != nil {
			select {
			case ctrl <- *cm:
			case <-ctx.Done():
				return
			}
			continue
		}
		in := &Inbound{Topic: env.Topic, Payload: env.Payload, QoS: env.QoS, Retain: env.Retain, UserProps: env.UserProps, ContentType: env.ContentType}
		derr := w.env.Deliver(ctx, in)
		if env.ID.IsZero() {
			continue
		}
		reply := wsControl{Ack: env.ID.String()}
		if derr != nil {
			reply = wsControl{Reject: env.ID.String(), Error: derr.Error()}
		}
		if err := w.writeControl(ctx, c, typ, reply); err != nil {
			c.CloseNow()
			return
		}
	}
}

// decodeWSFrame classifies a frame from the server (outside bytes, fuzzed by FuzzWSFrame):
// an ack/reject control map, or a downlink envelope (JSON in text frames, CBOR in binary).
func decodeWSFrame(lim wire.Limits, text bool, data []byte) (*wsControl, *wire.Envelope, error) {
	var cm wsControl
	var derr error
	if text {
		derr = json.Unmarshal(data, &cm)
	} else {
		derr = wsCBOR.Unmarshal(data, &cm)
	}
	if derr == nil && (cm.Ack != "" || cm.Reject != "") {
		return &cm, nil, nil
	}
	var env *wire.Envelope
	var err error
	if text {
		env, err = lim.UnmarshalEnvelopeJSON(data)
	} else {
		env, err = lim.UnmarshalEnvelope(data)
	}
	if err != nil {
		return nil, nil, err
	}
	return nil, env, nil
}

// wsCBOR decodes control frames with limits (the frame comes from the network).
var wsCBOR = func() cbor.DecMode {
	dm, err := cbor.DecOptions{MaxNestedLevels: 4, MaxArrayElements: 16, MaxMapPairs: 16, DupMapKey: cbor.DupMapKeyEnforcedAPF}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

func (w *wsConn) writeControl(ctx context.Context, c *websocket.Conn, typ websocket.MessageType, m wsControl) error {
	var b []byte
	var err error
	if typ == websocket.MessageText {
		b, err = json.Marshal(m)
	} else {
		b, err = cbor.Marshal(m)
	}
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return c.Write(wctx, typ, b)
}

func (w *wsConn) pinger(ctx context.Context, c *websocket.Conn) {
	defer w.wg.Done()
	iv := w.cfg.PingInterval
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, iv)
		err := c.Ping(pctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			w.env.Logger.Debug("websocket ping failed; dropping link", "err", err)
			c.CloseNow()
			return
		}
	}
}

// Close implements Connector.
func (w *wsConn) Close() error {
	w.mu.Lock()
	c, cancel := w.c, w.cancel
	w.c, w.cancel = nil, nil
	w.mu.Unlock()
	if c == nil {
		return nil
	}
	cancel()
	c.CloseNow()
	w.wg.Wait()
	return nil
}

// Send implements Connector: one frame per batch, then waits for acks. An ack confirms that id
// and every earlier message of the frame (cumulative); a reject dead-letters that one message.
func (w *wsConn) Send(ctx context.Context, msgs []*Message, result func(int, error)) error {
	w.mu.Lock()
	c, done, ctrl := w.c, w.done, w.ctrl
	w.mu.Unlock()
	if c == nil {
		return errors.New("not connected")
	}
	if len(msgs) == 0 {
		return nil
	}
	var frame []byte
	var err error
	if w.cfg.Batch.MaxMessages == 1 {
		msgs = msgs[:1]
		frame, err = w.env.EncodeEnvelope(w.cfg.Format, msgs[0].Env)
	} else {
		frame, err = w.env.EncodeBatch(w.cfg.Format, msgs)
	}
	if err != nil {
		for i := range msgs {
			result(i, Permanent(fmt.Errorf("encode: %w", err)))
		}
		return nil
	}
	typ := websocket.MessageText
	if w.cfg.Format == FormatCBOR {
		typ = websocket.MessageBinary
	}
	if typ, frame, err = wsFrame(w.comp, typ, frame); err != nil {
		return w.scrub.Error(fmt.Errorf("compress frame: %w", err))
	}
	w.env.bytesOut(len(frame))
	if err := c.Write(ctx, typ, frame); err != nil {
		return w.scrub.Error(fmt.Errorf("write frame: %w", err))
	}
	idx := make(map[string]int, len(msgs))
	for i, m := range msgs {
		idx[m.Env.ID.String()] = i
	}
	resolved := make([]bool, len(msgs))
	left := len(msgs)
	next := 0 // everything below next is resolved
	for left > 0 {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-done:
			return errLinkLost
		case cm := <-ctrl:
			if i, ok := idx[cm.Reject]; ok && !resolved[i] {
				resolved[i] = true
				left--
				result(i, w.scrub.Error(Permanent(fmt.Errorf("rejected by remote: %s", cm.Error))))
			}
			if i, ok := idx[cm.Ack]; ok {
				for ; next <= i; next++ {
					if !resolved[next] {
						resolved[next] = true
						left--
						result(next, nil)
					}
				}
			}
		}
	}
	return nil
}

var (
	_ Connector = (*wsConn)(nil)
	_ Linked    = (*wsConn)(nil)
)
