package broker

import (
	"crypto/sha256"
	"crypto/tls"
	"runtime"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"
)

// authHook authenticates CONNECTs: bcrypt users, client certificates on listeners with a
// client CA, anonymous clients on loopback listeners (or everywhere with allow_anonymous). A
// refused client gets CONNACK 0x86 (MQTT 5) / 0x04 (3.1.1) from mochi; other clients are not
// affected because each connection has its own goroutine.
type authHook struct {
	mqtt.HookBase
	a     *access
	cache *passCache
	sem   chan struct{} // bounds concurrent bcrypt work so a login storm leaves CPU for traffic
	dummy []byte        // hash compared for unknown users, so they take as long as known ones

	// refused holds the CONNACK code for clients refused because of their will (acl.go), set
	// in OnConnectAuthenticate and consumed by OnPacketEncode of that CONNACK, both on the
	// client's goroutine; mochi itself would answer 0x86 / 0x05 (bad username or password).
	refused sync.Map // *mqtt.Client -> packets.Code
}

func newAuthHook(a *access) *authHook {
	n := runtime.GOMAXPROCS(0) / 2
	if n < 1 {
		n = 1
	}
	dummy, _ := bcrypt.GenerateFromPassword([]byte("edged-dummy"), bcrypt.MinCost)
	return &authHook{a: a, cache: newPassCache(1024, 10*time.Minute), sem: make(chan struct{}, n), dummy: dummy}
}

func (h *authHook) ID() string { return "edged-auth" }

func (h *authHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnPacketEncode
}

// OnPacketEncode fixes CONNACK refusal codes:
//   - a client refused for its will gets 0x87 Not authorized / 0x90 Topic Name invalid
//     (MQTT 5) or 0x05 Not authorized (3.1.1) instead of mochi's "bad username or password";
//   - 3.1.1: mochi answers every refused login with 0x05 "not authorized"; a client that sent
//     a username gets 0x04 "bad user name or password";
//   - 3.1.1: an empty client id with clean session 0 gets 0x02 Identifier rejected
//     ([MQTT-3.1.3-8]); mochi sends 0x80, which is not a 3.1.1 return code.
func (h *authHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type != packets.Connack {
		return pk
	}
	if v, ok := h.refused.LoadAndDelete(cl); ok {
		code := v.(packets.Code)
		if pk.ProtocolVersion < 5 {
			pk.ReasonCode = packets.Err3NotAuthorized.Code
		} else {
			pk.ReasonCode = code.Code
			pk.Properties.ReasonString = code.Reason
		}
		return pk
	}
	if pk.ProtocolVersion >= 5 {
		return pk
	}
	switch {
	case pk.ReasonCode == packets.Err3NotAuthorized.Code && len(cl.Properties.Username) > 0:
		pk.ReasonCode = 0x04
	case pk.ReasonCode == packets.ErrUnspecifiedError.Code && !cl.Properties.Clean && cl.Properties.Props.AssignedClientID != "":
		pk.ReasonCode = packets.Err3ClientIdentifierNotValid.Code
	}
	return pk
}

// OnConnectAuthenticate authenticates the client, then checks its will (acl.go).
func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if !h.authenticate(cl, pk) {
		return false
	}
	if !pk.Connect.WillFlag {
		return true
	}
	reason, code := h.a.willProblem(cl, pk.Connect.WillTopic)
	if reason == "" {
		return true
	}
	h.a.ref.add(reason)
	if n, ok := h.a.ref.log.allow(reason); ok {
		h.Log.Info("connection refused: will message not allowed", "reason", reason, "client", cl.ID,
			"remote", cl.Net.Remote, "username", string(cl.Properties.Username), "will_topic", pk.Connect.WillTopic, "suppressed", n)
	}
	h.refused.Store(cl, code)
	return false
}

func (h *authHook) authenticate(cl *mqtt.Client, pk packets.Packet) bool {
	t := h.a.t() // one table for the whole decision, even across a reload
	li := t.listeners[cl.Net.Listener]
	if li == nil {
		return false
	}
	name := string(pk.Connect.Username)
	if li.certAuth {
		cn, ok := peerCommonName(cl)
		if !ok || cn == "" || (name != "" && name != cn) {
			h.Log.Info("client certificate refused", "client", cl.ID, "remote", cl.Net.Remote, "cn", cn, "username", name)
			return false
		}
		if _, known := t.users[cn]; !known {
			h.Log.Info("client certificate names an unknown user", "client", cl.ID, "remote", cl.Net.Remote, "cn", cn)
			return false
		}
		cl.Properties.Username = []byte(cn) // the certificate is the identity the ACL uses
		return true
	}
	if name == "" || len(t.users) == 0 {
		if t.allowAnonymous || li.loopback {
			cl.Properties.Username = nil // credentials are ignored when there are no users
			return true
		}
		h.Log.Info("anonymous client refused on a non-loopback listener", "client", cl.ID, "remote", cl.Net.Remote, "listener", cl.Net.Listener)
		return false
	}
	if !h.checkPassword(t, name, pk.Connect.Password) {
		h.Log.Info("bad username or password", "client", cl.ID, "remote", cl.Net.Remote, "username", name)
		return false
	}
	return true
}

func (h *authHook) checkPassword(t *accessTables, name string, password []byte) bool {
	u, ok := t.users[name]
	hash := h.dummy
	if ok {
		hash = []byte(u.PasswordHash)
	}
	key := sha256.Sum256(append(append(append([]byte(name), 0), password...), hash...))
	if ok && h.cache.hit(key) {
		return true
	}
	h.sem <- struct{}{}
	err := bcrypt.CompareHashAndPassword(hash, password)
	<-h.sem
	if !ok || err != nil {
		return false
	}
	h.cache.add(key)
	return true
}

func peerCommonName(cl *mqtt.Client) (string, bool) {
	c, ok := cl.Net.Conn.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return "", false
	}
	st := c.ConnectionState()
	if len(st.PeerCertificates) == 0 || len(st.VerifiedChains) == 0 {
		return "", false
	}
	return st.PeerCertificates[0].Subject.CommonName, true
}

// passCache remembers recently verified (user, password, hash) digests so reconnect storms of
// legitimate clients don't each pay for bcrypt. Only successes are cached; the key includes the
// hash, so a changed password hash invalidates it.
type passCache struct {
	mu  sync.Mutex
	max int
	ttl time.Duration
	m   map[[32]byte]time.Time
}

func newPassCache(max int, ttl time.Duration) *passCache {
	return &passCache{max: max, ttl: ttl, m: map[[32]byte]time.Time{}}
}

func (c *passCache) hit(k [32]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.m[k] // keys are SHA-256 digests: lookup timing reveals nothing useful
	if ok && time.Now().After(exp) {
		delete(c.m, k)
		return false
	}
	return ok
}

func (c *passCache) add(k [32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		clear(c.m)
	}
	c.m[k] = time.Now().Add(c.ttl)
}
