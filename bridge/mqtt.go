package bridge

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/eclipse/paho.golang/packets"
	paho3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/edged-dev/edged/bridge/internal/mqtt5"
	"github.com/edged-dev/edged/internal/confkit"
	"github.com/edged-dev/edged/internal/redact"
)

func init() {
	Register(Type{
		Name:        "mqtt",
		Description: "MQTT 5 or 3.1.1 broker upstream (tcp, tls, websocket); ordered windowed QoS 1; downlink subscriptions",
		NewConfig:   func() ConnectorConfig { c := &MQTTConfig{}; c.defaults(); return c },
		New:         newMQTT,
	})
}

// IDProp is the MQTT 5 user property carrying the envelope id (UUID text) on every message the
// mqtt connector publishes, so the remote can deduplicate redelivered messages.
const IDProp = "id"

// MQTTConfig is a connector of type mqtt.
type MQTTConfig struct {
	Base `yaml:",inline"`
	// URL of the remote broker: tcp:// or mqtt:// (plain), ssl:// or mqtts:// (TLS), ws:// or
	// wss:// (MQTT over WebSocket, path included). Port defaults: 1883, 8883, 80, 443.
	// Userinfo (tcp://user:pass@host) is the CONNECT username and password, allowed only when
	// username, password and password_file are empty. A query string is allowed only for ws://
	// and wss:// (sent on the handshake, e.g. ?token=...). Credentials are masked in every log,
	// status and error.
	URL string `yaml:"url"`
	// URLs lists brokers for failover, primary first (instead of url; same forms): on failure
	// the connector moves to the next, and returns to the primary once it answered MQTT
	// CONNECTs a few times in a row (see "Failover" in the README).
	URLs []string `yaml:"urls"`
	// Presence announces the gateway upstream: retained online/offline (will) and periodic
	// health reports. Default: off.
	Presence *PresenceConfig `yaml:"presence"`
	// Protocol is the MQTT version: "5" (default) or "3.1.1". With 5 every message carries its
	// envelope id as user property `id`, PUBACK reason codes >= 0x80 dead-letter the message and
	// the server's Receive Maximum bounds the window. With 3.1.1 there are no user properties:
	// use format cbor or json if the remote must deduplicate.
	Protocol string `yaml:"protocol"`
	// ClientID; default "edged-{gateway_id}-{name}".
	ClientID string `yaml:"client_id"`
	// Username and Password for CONNECT; PasswordFile reads the password from a file instead.
	Username     string `yaml:"username"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	// TLS settings for ssl://, mqtts:// and wss://.
	TLS TLSConfig `yaml:"tls"`
	// CleanStart discards the remote session on connect. Default false: a persistent session,
	// so downlink messages published while edged was offline are delivered on reconnect.
	CleanStart bool `yaml:"clean_start"`
	// SessionExpiry is how long the remote keeps the session after a disconnect (MQTT 5).
	// Default 24h.
	SessionExpiry time.Duration `yaml:"session_expiry"`
	// KeepAlive interval; default 30s.
	KeepAlive time.Duration `yaml:"keepalive"`
}

func (c *MQTTConfig) defaults() {
	if c.Protocol == "" {
		c.Protocol = "5"
	}
	if c.SessionExpiry == 0 {
		c.SessionExpiry = 24 * time.Hour
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = 30 * time.Second
	}
	c.Presence.defaults()
	c.Base.defaults(FormatRaw, 1000, 1000)
}

// Validate implements ConnectorConfig.
func (c *MQTTConfig) Validate() error {
	errs := []error{c.Base.validate([]string{FormatRaw, FormatCBOR, FormatJSON}, true)}
	errs = append(errs, validateEndpoints(c.URL, c.URLs, c.validateURL)...)
	errs = append(errs, c.Presence.validate()...)
	switch c.Protocol {
	case "5", "3.1.1":
	default:
		errs = append(errs, confkit.Errorf("protocol", "%q: want 5 or 3.1.1", c.Protocol))
	}
	if c.Password != "" && c.PasswordFile != "" {
		errs = append(errs, confkit.Errorf("password_file", "give password or password_file, not both"))
	}
	errs = append(errs, checkSecretFile("password_file", c.PasswordFile))
	errs = append(errs, c.TLS.validate("tls")...)
	if c.SessionExpiry <= 0 {
		errs = append(errs, confkit.Errorf("session_expiry", "%v: must be positive", c.SessionExpiry))
	}
	if c.KeepAlive < time.Second || c.KeepAlive > 65535*time.Second {
		errs = append(errs, confkit.Errorf("keepalive", "%v: want 1s..18h", c.KeepAlive))
	}
	for i, r := range c.Forward {
		if c.Protocol == "3.1.1" && r.QoS > 1 {
			errs = append(errs, confkit.Errorf(fmt.Sprintf("forward[%d].qos", i), "want 0 or 1"))
		}
	}
	return errors.Join(errs...)
}

func (c *MQTTConfig) validateURL(key, raw string) []error {
	var errs []error
	u, err := url.Parse(raw)
	switch {
	case raw == "":
		errs = append(errs, confkit.Errorf(key, "required (e.g. tcp://broker:1883)"))
	case err != nil:
		errs = append(errs, confkit.Errorf(key, "%q: not a URL", redact.URL(raw)))
	default:
		switch u.Scheme {
		case "tcp", "mqtt", "ssl", "mqtts", "tls", "ws", "wss":
		default:
			errs = append(errs, confkit.Errorf(key, "%q: scheme must be tcp, mqtt, ssl, mqtts, ws or wss", redact.URL(raw)))
		}
		if u.Hostname() == "" {
			errs = append(errs, confkit.Errorf(key, "%q: no host", redact.URL(raw)))
		}
		if u.User != nil && (c.Username != "" || c.Password != "" || c.PasswordFile != "") {
			errs = append(errs, confkit.Errorf(key, "%q: credentials in the url and in username/password/password_file; give them once", redact.URL(raw)))
		}
		if (u.RawQuery != "" || u.ForceQuery) && u.Scheme != "ws" && u.Scheme != "wss" {
			errs = append(errs, confkit.Errorf(key, "%q: a query string is only sent for ws:// and wss:// (the MQTT CONNECT carries credentials: use username/password)", redact.URL(raw)))
		}
	}
	return errs
}

// Secrets implements SecretHolder: the password and URL credentials.
func (c *MQTTConfig) Secrets() []string {
	var out []string
	for _, u := range endpointList(c.URL, c.URLs) {
		out = append(out, redact.URLSecrets(u)...)
	}
	return append(out, c.Password)
}

// Endpoint implements Endpointer: the primary.
func (c *MQTTConfig) Endpoint() string { return redact.URL(endpointList(c.URL, c.URLs)[0]) }

// mqttEndpoint is one broker of url/urls, its userinfo moved into the CONNECT credentials.
type mqttEndpoint struct {
	url                string // without userinfo (that goes into CONNECT, not a handshake)
	display            string // redacted
	username, password string
}

type mqttConn struct {
	cfg      *MQTTConfig
	env      Env
	clientID string
	eps      []mqttEndpoint
	tls      *tls.Config
	scrub    *redact.Scrubber
	qos2     *mqtt5.QoS2Set // incoming QoS 2 ids, kept across connections of one session

	mu   sync.Mutex
	c5   *mqtt5.Client
	c3   paho3.Client
	done chan struct{} // link closed (3.1.1)
	lost error         // why it closed, when paho said (3.1.1)
	win  int
	cur  int           // endpoint in use (failover)
	pres *presenceLoop // health reports of the current link
}

func newMQTT(cc ConnectorConfig, env Env) (Connector, error) {
	cfg, ok := cc.(*MQTTConfig)
	if !ok {
		return nil, fmt.Errorf("mqtt: config is %T", cc)
	}
	scrub := scrubberOf(&env, cfg)
	m := &mqttConn{cfg: cfg, env: env, clientID: cfg.ClientID, scrub: scrub, qos2: mqtt5.NewQoS2Set()}
	if m.clientID == "" {
		m.clientID = "edged-" + env.GatewayID + "-" + cfg.Name
	}
	password, err := secretOr(cfg.Password, cfg.PasswordFile)
	if err != nil {
		return nil, fmt.Errorf("mqtt: password_file: %w", err)
	}
	scrub.Add(password)
	for _, raw := range endpointList(cfg.URL, cfg.URLs) {
		ep := mqttEndpoint{url: raw, display: redact.URL(raw), username: cfg.Username, password: password}
		if u, err := url.Parse(raw); err == nil && u.User != nil {
			// Validate refused userinfo next to username/password keys.
			ep.username = u.User.Username()
			ep.password, _ = u.User.Password()
			u.User = nil
			ep.url = u.String()
			scrub.Add(ep.password)
		}
		m.eps = append(m.eps, ep)
	}
	t, err := cfg.TLS.build()
	if err != nil {
		return nil, fmt.Errorf("mqtt: %w", err)
	}
	m.tls = t
	return m, nil
}

func (m *mqttConn) dial(ctx context.Context, raw string) (net.Conn, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	host := u.Host
	port := func(p string) string {
		if u.Port() == "" {
			return net.JoinHostPort(u.Hostname(), p)
		}
		return host
	}
	dial := m.env.Dialer(&net.Dialer{KeepAlive: 30 * time.Second}) // bandwidth cap (ratelimit.go)
	switch u.Scheme {
	case "tcp", "mqtt":
		c, err := dial(ctx, "tcp", port("1883"))
		if err != nil {
			return nil, err
		}
		setNoDelay(c)
		return c, nil
	case "ssl", "mqtts", "tls":
		return dialTLS(ctx, dial, port("8883"), m.tls)
	case "ws", "wss":
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: m.tls, DialContext: dial}, CheckRedirect: noRedirect}
		ws, resp, err := websocket.Dial(ctx, raw, &websocket.DialOptions{HTTPClient: hc, Subprotocols: []string{"mqtt"}})
		if err != nil {
			if rerr := redirectError(resp); rerr != nil {
				return nil, rerr
			}
			return nil, err
		}
		ws.SetReadLimit(-1)
		return websocket.NetConn(context.Background(), ws, websocket.MessageBinary), nil
	}
	return nil, fmt.Errorf("unsupported url scheme %q", u.Scheme)
}

// Connect implements Connector.
func (m *mqttConn) Connect(ctx context.Context) error { return m.scrub.Error(m.connect(ctx)) }

// endpoint is the broker the next Connect dials.
func (m *mqttConn) endpoint() mqttEndpoint {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.eps[m.cur]
}

// maxServerPacket is the largest packet taken from the server: downlink payloads as large as
// the envelopes this gateway handles, with room for topic and properties.
func (m *mqttConn) maxServerPacket() int {
	return max(mqtt5.DefaultMaxPacketSize, m.env.Wire.MaxPayload+64<<10)
}

func (m *mqttConn) connect(ctx context.Context) error {
	ep := m.endpoint()
	if m.cfg.Protocol == "3.1.1" {
		return m.connect3(ctx, ep)
	}
	conn, err := m.dial(ctx, ep.url)
	if err != nil {
		return fmt.Errorf("dial %s: %w", ep.display, err)
	}
	var pw []byte
	if ep.password != "" {
		pw = []byte(ep.password)
	}
	c, err := mqtt5.Connect(ctx, conn, mqtt5.Options{
		ClientID: m.clientID, Username: ep.username, Password: pw, CleanStart: m.cfg.CleanStart,
		SessionExpiry: uint32(m.cfg.SessionExpiry / time.Second), KeepAlive: m.cfg.KeepAlive,
		ReceiveMaximum: 100, MaxInflight: m.cfg.Window, OnPublish: m.onPublish5, QoS2: m.qos2,
		Will: m.will5(),
		// The server is told, and a larger packet ends the link unread.
		MaxPacketSize: m.maxServerPacket(),
	})
	if err != nil {
		return fmt.Errorf("%s: %w", ep.display, err)
	}
	m.mu.Lock()
	m.c5 = c
	m.win = c.Window()
	m.mu.Unlock()
	if len(m.cfg.Subscribe) > 0 {
		subs := make([]packets.SubOptions, len(m.cfg.Subscribe))
		for i, r := range m.cfg.Subscribe {
			subs[i] = packets.SubOptions{Topic: ResolveFilter(r.From, m.env.GatewayID), QoS: r.QoS}
		}
		codes, err := c.Subscribe(ctx, subs)
		if err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
		for i, code := range codes {
			if code >= 0x80 && i < len(subs) {
				m.env.Logger.Warn("remote refused subscription", "filter", subs[i].Topic, "reason", fmt.Sprintf("0x%02x", code))
			}
		}
	}
	m.startPresence(c5Publisher(c), c.Done())
	return nil
}

func (m *mqttConn) onPublish5(p *packets.Publish) error {
	in := &Inbound{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain}
	if p.Properties != nil {
		in.ContentType = p.Properties.ContentType
		for _, u := range p.Properties.User {
			in.UserProps = append(in.UserProps, userProp(u.Key, u.Value))
		}
	}
	return m.env.Deliver(context.Background(), in)
}

// Window implements Windowed.
func (m *mqttConn) Window() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.win
}

// Done implements Linked.
func (m *mqttConn) Done() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.c5 != nil {
		return m.c5.Done()
	}
	return m.done
}

// LinkErr says why the link closed (nil while it is up or when nobody said): the forwarder
// puts it in status.
func (m *mqttConn) LinkErr() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	err := m.lost
	if m.c5 != nil {
		err = m.c5.Err()
	}
	return m.scrub.Error(err)
}

// Close implements Connector.
func (m *mqttConn) Close() error {
	m.mu.Lock()
	c5, c3, pres := m.c5, m.c3, m.pres
	m.c5, m.c3, m.pres = nil, nil, nil
	m.mu.Unlock()
	m.stopPresence(pres, c5, c3)
	if c5 != nil {
		_ = c5.Close()
	}
	if c3 != nil {
		c3.Disconnect(100)
	}
	return nil
}

func (m *mqttConn) publish5(msg *Message) (*packets.Publish, error) {
	body, err := m.env.EncodeEnvelope(m.cfg.Format, msg.Env)
	if err != nil {
		return nil, err
	}
	m.env.bytesOut(len(body) + len(msg.Env.Topic))
	p := &packets.Publish{Topic: msg.Env.Topic, QoS: msg.Env.QoS, Retain: msg.Env.Retain, Payload: body,
		Properties: &packets.Properties{}}
	if m.cfg.Format == FormatRaw {
		p.Properties.ContentType = msg.Env.ContentType
		for _, u := range msg.Env.UserProps {
			p.Properties.User = append(p.Properties.User, packets.User{Key: u.Key, Value: u.Value})
		}
	} else {
		p.Properties.ContentType = ContentType(m.cfg.Format)
	}
	p.Properties.User = append(p.Properties.User, packets.User{Key: IDProp, Value: msg.Env.ID.String()})
	return p, nil
}

// Send implements Connector: publishes in order, pipelined up to the window, then waits for
// every PUBACK. A PUBACK reason >= 0x80 is a permanent rejection.
func (m *mqttConn) Send(ctx context.Context, msgs []*Message, result func(int, error)) error {
	if m.cfg.Protocol == "3.1.1" {
		return m.send3(ctx, msgs, result)
	}
	m.mu.Lock()
	c := m.c5
	m.mu.Unlock()
	if c == nil {
		return errors.New("not connected")
	}
	var remaining atomic.Int64
	remaining.Store(int64(len(msgs)))
	all := make(chan struct{})
	for i, msg := range msgs {
		p, err := m.publish5(msg)
		if err != nil {
			result(i, Permanent(fmt.Errorf("encode: %w", err)))
			if remaining.Add(-1) == 0 {
				close(all)
			}
			continue
		}
		err = c.PublishAsync(ctx, p, func(err error) {
			var re *mqtt5.ReasonError
			if errors.As(err, &re) {
				err = Permanent(err)
			}
			if err == nil || IsPermanent(err) {
				result(i, m.scrub.Error(err))
			}
			if remaining.Add(-1) == 0 {
				close(all)
			}
		})
		if err != nil {
			return m.scrub.Error(fmt.Errorf("publish: %w", err))
		}
	}
	if err := c.Flush(); err != nil {
		return m.scrub.Error(fmt.Errorf("publish: %w", err))
	}
	if len(msgs) == 0 {
		return nil
	}
	select {
	case <-all:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-c.Done():
		select {
		case <-all:
			return nil
		default:
		}
		return m.scrub.Error(fmt.Errorf("connection lost: %v", c.Err())) //nolint:errorlint // text only: the forwarder must not classify by the library's cause
	}
}

func (m *mqttConn) connect3(ctx context.Context, ep mqttEndpoint) error {
	m.mu.Lock()
	m.lost = nil // before the dial: paho may report this link lost before Connect returns
	m.mu.Unlock()
	done := make(chan struct{})
	var once sync.Once
	drop := func() { once.Do(func() { close(done) }) }
	// Manual acks: paho's default acknowledges a downlink PUBLISH when the handler returns,
	// whether or not the local publish worked, so a failed delivery was lost for good.
	o := paho3.NewClientOptions().AddBroker(strings.Replace(ep.url, "mqtts://", "ssl://", 1)).SetClientID(m.clientID).
		SetCleanSession(m.cfg.CleanStart).SetAutoReconnect(false).SetConnectRetry(false).SetOrderMatters(true).
		SetKeepAlive(m.keepalive3()).SetConnectTimeout(m.cfg.ConnectTimeout).SetWriteTimeout(m.cfg.StallTimeout).
		SetProtocolVersion(4).SetAutoAckDisabled(true).
		// The connector dials, as for MQTT 5: paho's own dialer bypassed the bandwidth cap
		// (ratelimit.go), and the server's packet sizes are bounded (mqtt5.LimitReads).
		SetCustomOpenConnectionFn(func(*url.URL, paho3.ClientOptions) (net.Conn, error) {
			conn, err := m.dial(ctx, ep.url)
			if err != nil {
				return nil, err
			}
			return mqtt5.LimitReads(conn, m.maxServerPacket()), nil
		}).
		SetConnectionLostHandler(func(_ paho3.Client, err error) {
			m.mu.Lock()
			m.lost = err
			m.mu.Unlock()
			drop()
		}).
		// A resumed session's messages (the redelivery of an unacknowledged one above all)
		// arrive right after CONNACK, before the SUBSCRIBE below is answered: paho drops
		// messages that match no route without acknowledging them, so every message goes to
		// this default handler instead of per-subscription routes.
		SetDefaultPublishHandler(func(_ paho3.Client, pm paho3.Message) { m.deliver3(pm, drop) })
	if ep.username != "" {
		o.SetUsername(ep.username)
	}
	if ep.password != "" {
		o.SetPassword(ep.password)
	}
	if w := m.will5(); w != nil {
		o.SetBinaryWill(w.Topic, w.Payload, w.QoS, w.Retain)
	}
	c := paho3.NewClient(o)
	if err := dial3(ctx, c); err != nil {
		if errors.Is(err, ctx.Err()) {
			return err
		}
		return fmt.Errorf("%s: %w", ep.display, err)
	}
	m.mu.Lock()
	m.c3, m.done, m.win = c, done, m.cfg.Window
	m.mu.Unlock()
	for _, r := range m.cfg.Subscribe {
		st := c.Subscribe(ResolveFilter(r.From, m.env.GatewayID), r.QoS, nil)
		select {
		case <-st.Done():
			if err := st.Error(); err != nil {
				return fmt.Errorf("subscribe %q: %w", r.From, err)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	m.startPresence(c3Publisher(c), done)
	return nil
}

// dial3 connects c, waiting no longer than ctx: then it returns ctx.Err() and a CONNECT
// still in progress is disconnected once paho completes it, so no link outlives the caller.
func dial3(ctx context.Context, c paho3.Client) error {
	tok := c.Connect()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		go func() { <-tok.Done(); c.Disconnect(0) }()
		return ctx.Err()
	}
}

// deliver3 publishes one 3.1.1 downlink message locally and acknowledges it to the remote only
// once that worked. On failure (counted by the bridge as downlink_failed) the message stays
// unacknowledged and the link is dropped: MQTT 3.1.1 redelivers an unacknowledged message only
// when the session resumes, so the forwarder reconnects (after its backoff) and the remote
// sends it again. Holding the link open would leave it unacknowledged until the next outage.
func (m *mqttConn) deliver3(pm paho3.Message, drop func()) {
	err := m.env.Deliver(context.Background(), &Inbound{Topic: pm.Topic(), Payload: pm.Payload(), QoS: pm.Qos(), Retain: pm.Retained()})
	if err == nil {
		pm.Ack()
		return
	}
	if pm.Qos() == 0 {
		m.env.Logger.Warn("downlink QoS 0 message not delivered locally; dropped", "topic", pm.Topic(), "err", m.scrub.Error(err))
		return
	}
	m.env.Logger.Warn("downlink not delivered locally; left unacknowledged and reconnecting so the remote redelivers",
		"topic", pm.Topic(), "err", m.scrub.Error(err))
	drop()
}

func (m *mqttConn) send3(ctx context.Context, msgs []*Message, result func(int, error)) error {
	m.mu.Lock()
	c, done, win := m.c3, m.done, m.win
	m.mu.Unlock()
	if c == nil {
		return errors.New("not connected")
	}
	if win <= 0 {
		win = 1000
	}
	type pend struct {
		i   int
		tok paho3.Token
	}
	q := make(chan pend, win)
	waiter := make(chan struct{})
	go func() {
		defer close(waiter)
		for p := range q {
			select {
			case <-p.tok.Done():
				if err := p.tok.Error(); err == nil {
					result(p.i, nil)
				}
			case <-ctx.Done():
				for range q {
				}
				return
			case <-done:
				for range q {
				}
				return
			}
		}
	}()
	var err error
	for i, msg := range msgs {
		body, encErr := m.env.EncodeEnvelope(m.cfg.Format, msg.Env)
		if encErr != nil {
			result(i, Permanent(fmt.Errorf("encode: %w", encErr)))
			continue
		}
		m.env.bytesOut(len(body) + len(msg.Env.Topic))
		tok := c.Publish(msg.Env.Topic, msg.Env.QoS, msg.Env.Retain, body)
		select {
		case q <- pend{i, tok}:
		case <-ctx.Done():
			err = context.Cause(ctx)
		case <-done:
			err = errLinkLost
		}
		if err != nil {
			break
		}
	}
	close(q)
	<-waiter
	if err != nil {
		return err
	}
	return linkEnd(ctx, done)
}

var (
	_ Connector = (*mqttConn)(nil)
	_ Windowed  = (*mqttConn)(nil)
	_ Linked    = (*mqttConn)(nil)
)
