package broker

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/edged-dev/edged/internal/confkit"
	"github.com/edged-dev/edged/internal/netaddr"
	"golang.org/x/crypto/bcrypt"
)

// Listener types accepted in `broker.listeners[].type`.
const (
	ListenerTCP       = "tcp"
	ListenerTLS       = "tls"
	ListenerWebsocket = "websocket"
)

// Config is the `broker:` section of the edged config.
type Config struct {
	// Listeners are the network endpoints MQTT clients connect to. Default: one plain TCP
	// listener on 127.0.0.1:1883. A listener on a non-loopback address (0.0.0.0, ::, a LAN
	// address, an empty host) needs users or `allow_anonymous: true`, otherwise edged refuses
	// to start rather than silently exposing an open broker.
	Listeners []Listener `yaml:"listeners"`

	// AllowAnonymous lets clients without a username connect on non-loopback listeners, with
	// full publish/subscribe access. Clients on loopback listeners (127.0.0.0/8, ::1,
	// localhost) may always connect anonymously. Default false.
	AllowAnonymous bool `yaml:"allow_anonymous"`

	// Users are the accounts clients log in with (MQTT username/password). When the list is
	// empty, usernames and passwords sent by clients are ignored and every client is anonymous.
	Users []User `yaml:"users"`

	// Roles map a role name to the topic filters its users may publish to and subscribe to.
	// In filters, `%c` is replaced by the client id and `%u` by the username (like mosquitto's
	// ACL patterns); a client id or username containing '/', '+' or '#' never matches a pattern
	// that uses it.
	Roles map[string]Role `yaml:"roles"`

	// MaxPacketSize is the largest MQTT packet the broker accepts (and announces to MQTT 5
	// clients). A client sending a larger packet is disconnected (MQTT 5: reason 0x95 Packet too
	// large). Default 1MiB; maximum 256MiB.
	MaxPacketSize confkit.ByteSize `yaml:"max_packet_size"`

	// MaxClients limits the number of connected clients; further CONNECTs are refused with
	// "server busy" (MQTT 5 0x89) / "server unavailable" (MQTT 3.1.1 0x03). Default 0: no limit.
	MaxClients int `yaml:"max_clients"`

	// ReceiveMaximum is how many QoS 1/2 PUBLISHes a client may have unacknowledged towards the
	// broker (announced to MQTT 5 clients). Larger values let a publisher pipeline more
	// messages while they are made durable. 1-65535, default 1024.
	ReceiveMaximum int `yaml:"receive_maximum"`

	// MaxInflight is how many QoS 1/2 messages the broker keeps unacknowledged for one
	// subscriber, including messages queued for a disconnected persistent session; beyond it
	// new QoS 1/2 messages for that subscriber are dropped (and counted). 1-65535, default 1024.
	MaxInflight int `yaml:"max_inflight"`

	// MaxQueued is how many outgoing packets may wait to be written to one slow connected
	// client before further messages to it are dropped (and counted). From 3/4 of it on,
	// publishers are held back first (see backpressure_wait). Default 1024.
	MaxQueued int `yaml:"max_queued"`

	// BackpressureWait is how long a publisher is held back (not read) when a subscriber it
	// publishes to has its write queue 3/4 full (of max_queued), waiting for the queue to
	// drain to 1/4, instead of dropping the message at once. A subscriber for which a wait
	// runs out is marked slow: publishers stop waiting for it (its messages are dropped when
	// its queue is full, and counted) until it drained its queue, so a subscriber that stopped
	// reading costs each publisher one wait. Default 500ms; a negative value (-1s) turns
	// backpressure off. At most 10s.
	BackpressureWait time.Duration `yaml:"backpressure_wait"`

	// MaxTopicLength is the longest topic name or subscription filter (in bytes) the broker
	// accepts. Longer PUBLISH topics are refused (MQTT 5: PUBACK 0x90 Topic Name invalid;
	// MQTT 3.1.1 QoS 1/2: disconnected; QoS 0: dropped), longer filters get SUBACK 0x8F
	// (3.1.1: 0x80). Counted as edged_broker_refusals_total{reason}. Default 1024, 1-65535.
	MaxTopicLength int `yaml:"max_topic_length"`

	// MaxTopicLevels is the most '/'-separated levels a topic name or filter may have
	// (refused like max_topic_length). The broker's topic tree costs CPU in proportion to
	// levels x length per message, so this bounds the work one packet can cause. Default 32,
	// 1-256.
	MaxTopicLevels int `yaml:"max_topic_levels"`

	// MaxFiltersPerSubscribe is the most topic filters one SUBSCRIBE packet may carry; the
	// ones beyond get SUBACK 0x97 Quota exceeded (3.1.1: 0x80). Default 64, 1-65535.
	MaxFiltersPerSubscribe int `yaml:"max_filters_per_subscribe"`

	// MaxSubscriptionsPerClient is the most subscriptions one client session may hold;
	// further new filters get SUBACK 0x97 Quota exceeded (3.1.1: 0x80). Each subscription
	// costs memory and is persisted with the session. Default 1000, 1-1000000.
	MaxSubscriptionsPerClient int `yaml:"max_subscriptions_per_client"`

	// SessionExpiry is the longest a disconnected persistent session (MQTT 3.1.1 clean
	// session false, MQTT 5 session expiry > 0) is kept, with its subscriptions and queued
	// messages. Default 168h.
	SessionExpiry time.Duration `yaml:"session_expiry"`
}

// Listener is one network endpoint.
type Listener struct {
	// Type is tcp (plain MQTT), tls (MQTT over TLS) or websocket (MQTT over WebSocket, on any
	// path; with cert and key it is served over TLS as wss).
	Type string `yaml:"type"`

	// Address is host:port to listen on, e.g. 127.0.0.1:1883, 0.0.0.0:8883, [::1]:1883.
	// Port 0 picks a free port (see `edged status` for the bound one).
	Address string `yaml:"address"`

	// Cert is the PEM certificate (chain) file of a tls listener (optional for websocket).
	Cert string `yaml:"cert"`

	// Key is the PEM private key file matching Cert.
	Key string `yaml:"key"`

	// ClientCA is a PEM file of CA certificates. When set, clients must present a certificate
	// signed by one of them (mutual TLS); the certificate's Common Name is the client's
	// username (it must name one of `users`, and a password is not needed). A client that also
	// sends a username must send the same name.
	ClientCA string `yaml:"client_ca"`
}

// User is one account.
type User struct {
	// Username is the MQTT username.
	Username string `yaml:"username"`

	// PasswordHash is the bcrypt hash of the password, as printed by `edged passwd`
	// ("$2a$10$..."). Plain-text passwords are not accepted.
	PasswordHash string `yaml:"password_hash"`

	// Role names an entry of `roles` that defines what the user may publish and subscribe to.
	Role string `yaml:"role"`
}

// Role is a set of topic permissions.
type Role struct {
	// Publish lists the topic filters the role may publish to, e.g. "sensors/%c/#".
	Publish []string `yaml:"publish"`

	// Subscribe lists the topic filters the role may subscribe to (and receive from), e.g.
	// "cmd/%c/#". A subscription is allowed when every topic it can match is covered.
	Subscribe []string `yaml:"subscribe"`
}

// Default values filled by ApplyDefaults.
const (
	DefaultAddress        = "127.0.0.1:1883"
	DefaultMaxPacketSize  = confkit.ByteSize(1 << 20)
	DefaultReceiveMaximum = 1024
	DefaultMaxInflight    = 1024
	DefaultMaxQueued      = 1024
	DefaultSessionExpiry  = 168 * time.Hour
	DefaultBackpressure   = 500 * time.Millisecond

	DefaultMaxTopicLength            = 1024
	DefaultMaxTopicLevels            = 32
	DefaultMaxFiltersPerSubscribe    = 64
	DefaultMaxSubscriptionsPerClient = 1000

	// Every accepted message may become one outbox record: storage keeps large values in
	// 16 MiB value-log files and a forwarder reads a whole record into memory, so 8 MiB is the
	// most a 512 MB gateway should accept in one packet.
	maxPacketSizeLimit = confkit.ByteSize(8 << 20)
)

// Defaults returns the configuration used when the config file has no broker section: one
// anonymous TCP listener on 127.0.0.1:1883.
func Defaults() Config {
	var c Config
	c.ApplyDefaults()
	return c
}

// ApplyDefaults fills zero values with their defaults.
func (c *Config) ApplyDefaults() {
	if len(c.Listeners) == 0 {
		c.Listeners = []Listener{{Type: ListenerTCP, Address: DefaultAddress}}
	}
	confkit.Default(&c.MaxPacketSize, DefaultMaxPacketSize)
	confkit.Default(&c.ReceiveMaximum, DefaultReceiveMaximum)
	confkit.Default(&c.MaxInflight, DefaultMaxInflight)
	confkit.Default(&c.MaxQueued, DefaultMaxQueued)
	confkit.Default(&c.SessionExpiry, DefaultSessionExpiry)
	confkit.Default(&c.BackpressureWait, DefaultBackpressure)
	confkit.Default(&c.MaxTopicLength, DefaultMaxTopicLength)
	confkit.Default(&c.MaxTopicLevels, DefaultMaxTopicLevels)
	confkit.Default(&c.MaxFiltersPerSubscribe, DefaultMaxFiltersPerSubscribe)
	confkit.Default(&c.MaxSubscriptionsPerClient, DefaultMaxSubscriptionsPerClient)
}

// Validate checks the section and returns every problem found, as *confkit.KeyError values
// joined with errors.Join, keyed relative to the section ("listeners[1].address"). It reads
// the certificate files named by TLS listeners so that `edged check` catches bad paths. Call
// ApplyDefaults first.
func (c *Config) Validate() error {
	var errs []error
	add := func(key, format string, args ...any) { errs = append(errs, confkit.Errorf(key, format, args...)) }
	inRange := func(key string, v, lo, hi int) {
		if v < lo || v > hi {
			add(key, "%d out of range (%d-%d)", v, lo, hi)
		}
	}

	if len(c.Listeners) == 0 {
		add("listeners", "at least one listener is required")
	}
	exposed := ""
	for i, l := range c.Listeners {
		key := fmt.Sprintf("listeners[%d]", i)
		errs = append(errs, l.validate(key)...)
		if l.Address != "" && !netaddr.IsLoopback(l.Address) && exposed == "" {
			exposed = key
		}
	}
	if exposed != "" && !c.AllowAnonymous && len(c.Users) == 0 {
		addr := c.Listeners[indexOf(exposed)].Address
		add(exposed+".address", "listener %s is reachable from the network but no users are configured: "+
			"add users (password hashes from `edged passwd`), set allow_anonymous: true to accept "+
			"anonymous clients on purpose, or listen on 127.0.0.1", addr)
	}

	seen := map[string]bool{}
	for i, u := range c.Users {
		key := fmt.Sprintf("users[%d]", i)
		switch {
		case u.Username == "":
			add(key+".username", "username is required")
		case seen[u.Username]:
			add(key+".username", "duplicate username %q", u.Username)
		}
		seen[u.Username] = true
		if u.PasswordHash == "" {
			add(key+".password_hash", "password_hash is required (create one with `edged passwd`)")
		} else if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
			add(key+".password_hash", "not a bcrypt hash (create one with `edged passwd`): %v", err)
		}
		if u.Role == "" {
			add(key+".role", "role is required")
		} else if _, ok := c.Roles[u.Role]; !ok {
			add(key+".role", "unknown role %q (define it under roles)", u.Role)
		}
	}

	for name, r := range c.Roles {
		key := "roles." + name
		if name == "" {
			add("roles", "role name must not be empty")
		}
		for i, f := range r.Publish {
			if err := validatePattern(f); err != nil {
				add(fmt.Sprintf("%s.publish[%d]", key, i), "invalid topic filter %q: %v", f, err)
			}
		}
		for i, f := range r.Subscribe {
			if err := validatePattern(f); err != nil {
				add(fmt.Sprintf("%s.subscribe[%d]", key, i), "invalid topic filter %q: %v", f, err)
			}
		}
	}

	if c.MaxPacketSize < 64 || c.MaxPacketSize > maxPacketSizeLimit {
		add("max_packet_size", "%s out of range (64B-8MiB)", c.MaxPacketSize)
	}
	if c.MaxClients < 0 {
		add("max_clients", "%d must not be negative", c.MaxClients)
	}
	inRange("receive_maximum", c.ReceiveMaximum, 1, 65535)
	inRange("max_inflight", c.MaxInflight, 1, 65535)
	if c.MaxQueued < 1 {
		add("max_queued", "%d must be at least 1", c.MaxQueued)
	}
	if c.BackpressureWait > 10*time.Second {
		add("backpressure_wait", "%s out of range (at most 10s; negative turns backpressure off)", c.BackpressureWait)
	}
	inRange("max_topic_length", c.MaxTopicLength, 1, 65535)
	inRange("max_topic_levels", c.MaxTopicLevels, 1, 256)
	inRange("max_filters_per_subscribe", c.MaxFiltersPerSubscribe, 1, 65535)
	inRange("max_subscriptions_per_client", c.MaxSubscriptionsPerClient, 1, 1000000)
	if c.SessionExpiry < time.Second || c.SessionExpiry > time.Duration(1<<32-1)*time.Second {
		add("session_expiry", "%s out of range (1s-136y)", c.SessionExpiry)
	}
	return errors.Join(errs...)
}

func indexOf(key string) int {
	var i int
	_, _ = fmt.Sscanf(key, "listeners[%d]", &i)
	return i
}

func (l Listener) validate(key string) []error {
	var errs []error
	add := func(k, format string, args ...any) { errs = append(errs, confkit.Errorf(key+"."+k, format, args...)) }
	switch l.Type {
	case ListenerTCP, ListenerTLS, ListenerWebsocket:
	case "":
		add("type", "type is required (tcp, tls or websocket)")
	default:
		add("type", "unknown listener type %q (want tcp, tls or websocket)", l.Type)
	}
	if err := checkAddress(l.Address); err != nil {
		add("address", "%v", err)
	}
	if l.Type == ListenerTCP {
		for k, v := range map[string]string{"cert": l.Cert, "key": l.Key, "client_ca": l.ClientCA} {
			if v != "" {
				add(k, "not used by a tcp listener (use type: tls)")
			}
		}
		return errs
	}
	if l.Type == ListenerTLS && l.Cert == "" {
		add("cert", "a tls listener needs cert (PEM certificate file)")
	}
	if l.Type == ListenerTLS && l.Key == "" {
		add("key", "a tls listener needs key (PEM private key file)")
	}
	if (l.Cert == "") != (l.Key == "") && l.Type == ListenerWebsocket {
		add("cert", "cert and key must be given together")
	}
	if l.ClientCA != "" && l.Cert == "" && l.Type == ListenerWebsocket {
		add("client_ca", "client_ca needs cert and key (TLS)")
	}
	if l.Cert != "" && l.Key != "" {
		if _, err := tls.LoadX509KeyPair(l.Cert, l.Key); err != nil {
			add("cert", "load certificate and key: %v", err)
		}
	}
	if l.ClientCA != "" {
		if _, err := loadCertPool(l.ClientCA); err != nil {
			add("client_ca", "%v", err)
		}
	}
	return errs
}

// tlsConfig builds the server TLS config of a listener, nil for plain listeners.
func (l Listener) tlsConfig() (*tls.Config, error) {
	if l.Cert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(l.Cert, l.Key)
	if err != nil {
		return nil, fmt.Errorf("load certificate and key: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if l.ClientCA != "" {
		pool, err := loadCertPool(l.ClientCA)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

func loadCertPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("no PEM certificate found in %s", file)
	}
	return pool, nil
}

func checkAddress(addr string) error {
	if addr == "" {
		return errors.New("address is required (host:port, e.g. 127.0.0.1:1883)")
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("invalid address %q: want host:port, e.g. 127.0.0.1:1883", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("invalid port %q in %q", port, addr)
	}
	return nil
}
