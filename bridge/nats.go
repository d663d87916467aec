package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edged-dev/edged/internal/confkit"
	"github.com/edged-dev/edged/internal/redact"
)

func init() {
	Register(Type{
		Name:        "nats",
		Description: "NATS JetStream cluster: publish with Nats-Msg-Id dedupe, PubAck confirms; downlink from durable consumers",
		NewConfig:   func() ConnectorConfig { c := &NATSConfig{}; c.defaults(); return c },
		New:         newNATS,
	})
}

// Headers the nats connector sets on every message. Nats-Msg-Id is JetStream's own: the stream
// drops a message whose id it has seen within its duplicate window, so a redelivery after a
// crash or a lost PubAck is stored once.
const (
	natsHdrMsgID   = "Nats-Msg-Id"
	natsHdrGateway = "Edged-Gateway"
	natsHdrTime    = "Edged-Time"   // capture time, Unix milliseconds
	natsHdrClient  = "Edged-Client" // local publisher's client id
	natsHdrTopic   = "Edged-Topic"  // the remote topic before subject mapping
	natsHdrCType   = "Content-Type"
)

// NATSConfig is a connector of type nats. Forward rules' `to` and subscribe rules' `from` are
// written as MQTT topics (levels separated by '/', wildcards + and #); the connector maps them to
// NATS subjects (see "NATS subjects" in the README): '/' -> '.', '+' -> '*', '#' -> '>', and
// characters subjects forbid percent-escaped.
type NATSConfig struct {
	Base `yaml:",inline"`
	// URLs of the cluster's servers (nats:// or tls://). Connect tries them in turn; when the
	// link drops the forwarder reconnects to whichever answers.
	URLs []string `yaml:"urls"`
	// Username and Password (or PasswordFile) authenticate with user/password.
	Username     string `yaml:"username"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	// TokenFile holds an authentication token.
	TokenFile string `yaml:"token_file"`
	// NKeySeedFile is a file holding an NKey seed (SU...), for nkey authentication.
	NKeySeedFile string `yaml:"nkey_seed_file"`
	// CredsFile is a NATS .creds file (JWT + NKey seed), for decentralized auth.
	CredsFile string `yaml:"creds_file"`
	// TLS settings for tls:// URLs (and servers that require TLS).
	TLS TLSConfig `yaml:"tls"`
	// AckTimeout bounds the wait for one PubAck; a message without one is sent again (same
	// Nats-Msg-Id, so the stream keeps one copy). Default 5s.
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// Downlink configures where `subscribe` rules read from: a JetStream stream and a durable
	// consumer per rule. Required when subscribe rules are given.
	Downlink NATSDownlink `yaml:"downlink"`
}

// NATSDownlink names the stream downlink messages are read from.
type NATSDownlink struct {
	// Stream is the JetStream stream holding the downlink subjects.
	Stream string `yaml:"stream"`
	// Durable is the consumer name prefix; rule i uses "<durable>-<i>". Default
	// "edged-<gateway_id>-<connector name>" (dots replaced, as NATS names forbid them).
	Durable string `yaml:"durable"`
	// AckWait is how long the stream waits for edged's ack before redelivering. Default 30s.
	AckWait time.Duration `yaml:"ack_wait"`
}

func (c *NATSConfig) defaults() {
	if c.AckTimeout == 0 {
		c.AckTimeout = 5 * time.Second
	}
	if c.Downlink.AckWait == 0 {
		c.Downlink.AckWait = 30 * time.Second
	}
	// A window of 256 in-flight publishes keeps a loopback or LAN cluster busy without letting
	// one slow stream leader hold thousands of unacknowledged messages.
	c.Base.defaults(FormatJSON, 256, 256)
}

var natsNameRE = strings.NewReplacer(".", "_", "*", "_", ">", "_", " ", "_")

// Validate implements ConnectorConfig.
func (c *NATSConfig) Validate() error {
	errs := []error{c.validate([]string{FormatRaw, FormatCBOR, FormatJSON}, true)}
	if len(c.URLs) == 0 {
		errs = append(errs, confkit.Errorf("urls", "at least one server URL is required (e.g. [nats://10.0.0.1:4222])"))
	}
	for i, s := range c.URLs {
		key := fmt.Sprintf("urls[%d]", i)
		u, err := url.Parse(s)
		switch {
		case err != nil:
			errs = append(errs, confkit.Errorf(key, "not a URL"))
		case u.Scheme != "nats" && u.Scheme != "tls":
			errs = append(errs, confkit.Errorf(key, "scheme %q: want nats:// or tls://", u.Scheme))
		case u.Hostname() == "":
			errs = append(errs, confkit.Errorf(key, "no host"))
		case u.User != nil:
			// Credentials in URLs end up in logs and error strings; keep them in the keys
			// (and files) made for them.
			errs = append(errs, confkit.Errorf(key, "credentials in the URL are not accepted: use username/password_file, token_file, nkey_seed_file or creds_file"))
		}
	}
	auths := 0
	for _, a := range []string{c.Username, c.TokenFile, c.NKeySeedFile, c.CredsFile} {
		if a != "" {
			auths++
		}
	}
	if auths > 1 {
		errs = append(errs, confkit.Errorf("username", "give one of username, token_file, nkey_seed_file, creds_file"))
	}
	if c.Password != "" && c.PasswordFile != "" {
		errs = append(errs, confkit.Errorf("password_file", "give password or password_file, not both"))
	}
	if (c.Password != "" || c.PasswordFile != "") && c.Username == "" {
		errs = append(errs, confkit.Errorf("password", "a password needs a username"))
	}
	for _, kv := range [][2]string{{"password_file", c.PasswordFile}, {"token_file", c.TokenFile},
		{"nkey_seed_file", c.NKeySeedFile}, {"creds_file", c.CredsFile}} {
		errs = append(errs, checkSecretFile(kv[0], kv[1]))
	}
	errs = append(errs, c.TLS.validate("tls")...)
	if c.AckTimeout <= 0 {
		errs = append(errs, confkit.Errorf("ack_timeout", "%v: must be positive", c.AckTimeout))
	}
	for i, r := range c.Forward {
		// A '.' in a template is almost always a NATS subject written by habit; it would be
		// escaped (%2E), not split. Say so instead of publishing to a surprising subject.
		if strings.Contains(r.To, ".") {
			errs = append(errs, confkit.Errorf(fmt.Sprintf("forward[%d].to", i), "%q: write the subject with '/' between levels (edged maps '/' to '.')", r.To))
		}
	}
	if len(c.Subscribe) > 0 && c.Downlink.Stream == "" {
		errs = append(errs, confkit.Errorf("downlink.stream", "required with subscribe rules: the JetStream stream that holds the downlink subjects"))
	}
	if c.Downlink.AckWait <= 0 {
		errs = append(errs, confkit.Errorf("downlink.ack_wait", "%v: must be positive", c.Downlink.AckWait))
	}
	return errors.Join(errs...)
}

// Secrets implements SecretHolder: the password (URLs may not carry credentials).
func (c *NATSConfig) Secrets() []string { return []string{c.Password} }

// Endpoint implements Endpointer: the server list.
func (c *NATSConfig) Endpoint() string {
	out := make([]string, len(c.URLs))
	for i, u := range c.URLs {
		out[i] = redact.URL(u)
	}
	return strings.Join(out, ",")
}

type natsConn struct {
	cfg   *NATSConfig
	env   Env
	opts  []nats.Option
	scrub *redact.Scrubber

	link // mu guards the fields below too
	nc   *nats.Conn
	js   jetstream.JetStream
	subs []jetstream.ConsumeContext
}

func newNATS(cc ConnectorConfig, env Env) (Connector, error) {
	cfg, ok := cc.(*NATSConfig)
	if !ok {
		return nil, fmt.Errorf("nats: config is %T", cc)
	}
	n := &natsConn{cfg: cfg, env: env}
	n.scrub = scrubberOf(&n.env, cfg)
	// nats.go's own reconnect is off: the forwarder owns reconnects (backoff, breaker, status),
	// as for every connector, and a fresh Connect walks the URL list.
	n.opts = []nats.Option{nats.Name("edged-" + env.GatewayID + "-" + cfg.Name), nats.NoReconnect(),
		nats.Timeout(cfg.ConnectTimeout), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			env.Logger.Debug("nats async error", "err", err)
		})}
	if env.Throttle != nil { // bandwidth cap (ratelimit.go)
		n.opts = append(n.opts, nats.SetCustomDialer(natsDialer{dial: env.Dialer(&net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}), timeout: cfg.ConnectTimeout}))
	}
	if cfg.Username != "" {
		pw, err := secretOr(cfg.Password, cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("nats: password_file: %w", err)
		}
		n.scrub.Add(pw)
		n.opts = append(n.opts, nats.UserInfo(cfg.Username, pw))
	}
	if cfg.TokenFile != "" {
		tok, err := readSecret(cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("nats: token_file: %w", err)
		}
		n.scrub.Add(tok)
		n.opts = append(n.opts, nats.Token(tok))
	}
	if cfg.NKeySeedFile != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats: nkey_seed_file: %w", err)
		}
		n.opts = append(n.opts, o)
	}
	if cfg.CredsFile != "" {
		n.opts = append(n.opts, nats.UserCredentials(cfg.CredsFile))
	}
	needTLS := cfg.TLS != (TLSConfig{})
	for _, u := range cfg.URLs {
		needTLS = needTLS || strings.HasPrefix(u, "tls://")
	}
	if needTLS {
		t, err := cfg.TLS.build()
		if err != nil {
			return nil, fmt.Errorf("nats: %w", err)
		}
		n.opts = append(n.opts, nats.Secure(t))
	}
	return n, nil
}

// Connect implements Connector: dial the first server that answers, then attach the downlink
// consumers.
func (n *natsConn) Connect(ctx context.Context) error { return n.scrub.Error(n.connect(ctx)) }

func (n *natsConn) connect(ctx context.Context) error {
	done := make(chan struct{})
	var once sync.Once
	opts := append([]nats.Option{nats.ClosedHandler(func(*nats.Conn) { once.Do(func() { close(done) }) })}, n.opts...)
	type res struct {
		nc  *nats.Conn
		err error
	}
	ch := make(chan res, 1)
	// nats.Connect takes no context; it is bounded by nats.Timeout per server.
	go func() {
		nc, err := nats.Connect(strings.Join(n.cfg.URLs, ","), opts...)
		ch <- res{nc, err}
	}()
	var r res
	select {
	case r = <-ch:
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.nc != nil {
				r.nc.Close()
			}
		}()
		return ctx.Err()
	}
	if r.err != nil {
		return fmt.Errorf("connect: %w", r.err)
	}
	js, err := jetstream.New(r.nc, jetstream.WithPublishAsyncMaxPending(n.cfg.Window+1),
		jetstream.WithPublishAsyncTimeout(n.cfg.AckTimeout))
	if err != nil {
		r.nc.Close()
		return fmt.Errorf("jetstream: %w", err)
	}
	n.mu.Lock()
	n.nc, n.js, n.done = r.nc, js, done
	n.mu.Unlock()
	if len(n.cfg.Subscribe) > 0 {
		if err := n.subscribe(ctx, js); err != nil {
			return fmt.Errorf("downlink: %w", err)
		}
	}
	return nil
}

func (n *natsConn) durable() string {
	d := n.cfg.Downlink.Durable
	if d == "" {
		d = "edged-" + n.env.GatewayID + "-" + n.cfg.Name
	}
	return natsNameRE.Replace(d)
}

// subscribe attaches one durable pull consumer per subscribe rule (one filter each, so servers
// before 2.10 work) and acks each message only after the local publish succeeded.
func (n *natsConn) subscribe(ctx context.Context, js jetstream.JetStream) error {
	st, err := js.Stream(ctx, n.cfg.Downlink.Stream)
	if err != nil {
		return fmt.Errorf("stream %q: %w", n.cfg.Downlink.Stream, err)
	}
	for i, r := range n.cfg.Subscribe {
		cons, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable: n.durable() + "-" + strconv.Itoa(i), FilterSubject: filterToSubject(r.From),
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: n.cfg.Downlink.AckWait, MaxAckPending: 256,
		})
		if err != nil {
			return fmt.Errorf("consumer for %q: %w", r.From, err)
		}
		qos := r.QoS
		cc, err := cons.Consume(func(m jetstream.Msg) { n.onDownlink(m, qos) },
			jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				n.env.Logger.Debug("nats consumer", "err", err)
			}))
		if err != nil {
			return fmt.Errorf("consume %q: %w", r.From, err)
		}
		n.mu.Lock()
		n.subs = append(n.subs, cc)
		n.mu.Unlock()
	}
	return nil
}

func (n *natsConn) onDownlink(m jetstream.Msg, qos byte) {
	topic, err := subjectToTopic(m.Subject())
	if err != nil {
		// A subject edged cannot map is never deliverable: terminate it, so the stream does
		// not redeliver it forever, and say why.
		n.env.Logger.Warn("downlink subject refused", "subject", m.Subject(), "err", err)
		_ = m.Term()
		return
	}
	in := &Inbound{Topic: topic, Payload: m.Data(), QoS: qos}
	for k, vs := range m.Headers() {
		switch k {
		case natsHdrCType:
			if len(vs) > 0 {
				in.ContentType = vs[0]
			}
		case natsHdrMsgID, "Nats-Expected-Stream", "Nats-Expected-Last-Msg-Id":
		default:
			for _, v := range vs {
				in.UserProps = append(in.UserProps, userProp(k, v))
			}
		}
	}
	if err := n.env.Deliver(context.Background(), in); err != nil {
		// Not delivered locally: let the stream redeliver after a pause instead of acking.
		_ = m.NakWithDelay(time.Second)
		return
	}
	_ = m.Ack()
}

// Close implements Connector.
func (n *natsConn) Close() error {
	n.mu.Lock()
	nc, subs := n.nc, n.subs
	n.nc, n.js, n.subs = nil, nil, nil
	n.mu.Unlock()
	for _, s := range subs {
		s.Stop()
	}
	if nc != nil {
		nc.Close()
	}
	return nil
}

// Window implements Windowed.
func (n *natsConn) Window() int { return n.cfg.Window }

func (n *natsConn) message(msg *Message) (*nats.Msg, error) {
	body, err := n.env.EncodeEnvelope(n.cfg.Format, msg.Env)
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(topicToSubject(msg.Env.Topic))
	m.Data = body
	if n.cfg.Format == FormatRaw {
		if msg.Env.ContentType != "" {
			m.Header.Set(natsHdrCType, msg.Env.ContentType)
		}
		for _, u := range msg.Env.UserProps {
			if validHeaderKey(u.Key) {
				m.Header.Add(u.Key, u.Value)
			}
		}
	} else {
		m.Header.Set(natsHdrCType, ContentType(n.cfg.Format))
	}
	m.Header.Set(natsHdrGateway, n.env.GatewayID)
	m.Header.Set(natsHdrTopic, msg.Env.Topic)
	if msg.Env.Time != 0 {
		m.Header.Set(natsHdrTime, strconv.FormatInt(msg.Env.Time, 10))
	}
	if msg.Env.ClientID != "" {
		m.Header.Set(natsHdrClient, msg.Env.ClientID)
	}
	return m, nil
}

// validHeaderKey keeps user properties that cannot be NATS header names (which follow MIME
// header rules) out of the headers rather than corrupting the message.
func validHeaderKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

// Send implements Connector: publish every message asynchronously with its envelope id as
// Nats-Msg-Id, pipelined up to the window, and report each PubAck in order of arrival.
func (n *natsConn) Send(ctx context.Context, msgs []*Message, result func(int, error)) error {
	return n.scrub.Error(n.send(ctx, msgs, func(i int, err error) { result(i, n.scrub.Error(err)) }))
}

func (n *natsConn) send(ctx context.Context, msgs []*Message, result func(int, error)) error {
	n.mu.Lock()
	js, done := n.js, n.done
	n.mu.Unlock()
	if js == nil {
		return errors.New("not connected")
	}
	type pend struct {
		i    int
		subj string
		f    jetstream.PubAckFuture
	}
	win := n.cfg.Window
	if win <= 0 {
		win = 256
	}
	// slots bounds the publishes awaiting a PubAck to the window (window 1: one at a time);
	// failed tells the publishing loop to stop once a retriable failure ends the batch, so
	// nothing more is published behind the message that will be resent.
	slots := make(chan struct{}, win)
	q := make(chan pend, win)
	failed := make(chan struct{})
	linkErr := make(chan error, 1)
	waiter := make(chan struct{})
	go func() {
		defer close(waiter)
		stopped := false
		stop := func() {
			if !stopped {
				stopped = true
				close(failed)
			}
		}
		for p := range q {
			if stopped {
				<-slots
				continue
			}
			select {
			case <-p.f.Ok():
				result(p.i, nil)
			case err := <-p.f.Err():
				if perr := n.classify(ctx, js, p.subj, err); IsPermanent(perr) {
					result(p.i, perr)
				} else {
					// Retriable: leave it without a result and stop here so the batch keeps
					// its order; the forwarder resends from the first unconfirmed message.
					linkErr <- perr
					stop()
				}
			case <-ctx.Done():
				stop()
			case <-done:
				stop()
			}
			<-slots
		}
	}()
	var err error
publish:
	for i, msg := range msgs {
		m, encErr := n.message(msg)
		if encErr != nil {
			result(i, Permanent(fmt.Errorf("encode: %w", encErr)))
			continue
		}
		select {
		case slots <- struct{}{}:
		case <-failed:
			break publish
		case <-ctx.Done():
			err = context.Cause(ctx)
			break publish
		case <-done:
			err = errLinkLost
			break publish
		}
		// No retries inside the client: the forwarder resends from the first unconfirmed
		// message, which keeps a failover's reordering small.
		f, perr := js.PublishMsgAsync(m, jetstream.WithMsgID(msg.Env.ID.String()), jetstream.WithRetryAttempts(0))
		if perr != nil {
			<-slots
			err = fmt.Errorf("publish: %w", perr)
			break
		}
		q <- pend{i, m.Subject, f} // never blocks: q has a place for every slot
	}
	close(q)
	<-waiter
	if err != nil {
		return err
	}
	select {
	case e := <-linkErr:
		return e
	default:
	}
	return linkEnd(ctx, done)
}

// classify maps a failed publish to the forwarder's semantics. "No responders" means no stream
// captured the subject right now; during a leader election that is brief, so the connector asks
// the cluster whether any stream covers the subject before it gives a message up as
// undeliverable. A JetStream API error with HTTP-like code 400 (e.g. message too large for the
// stream) is the stream refusing that message for good; everything else is retried.
func (n *natsConn) classify(ctx context.Context, js jetstream.JetStream, subj string, err error) error {
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		lctx, cancel := context.WithTimeout(ctx, n.cfg.AckTimeout)
		defer cancel()
		if _, serr := js.StreamNameBySubject(lctx, subj); errors.Is(serr, jetstream.ErrStreamNotFound) {
			return Permanent(fmt.Errorf("no JetStream stream captures subject %q: add it to a stream's subjects", subj))
		}
		return fmt.Errorf("publish %q: %w", subj, err)
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code == 400 {
		return Permanent(fmt.Errorf("stream refused %q: %w", subj, err))
	}
	return fmt.Errorf("publish %q: %w", subj, err)
}

var (
	_ Connector = (*natsConn)(nil)
	_ Windowed  = (*natsConn)(nil)
	_ Linked    = (*natsConn)(nil)
)
