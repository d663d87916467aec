package broker

import (
	"errors"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// validatePattern checks an ACL topic filter that may contain %c and %u.
func validatePattern(f string) error {
	if f == "" {
		return errors.New("empty filter")
	}
	s := strings.NewReplacer("%c", "x", "%u", "x").Replace(f)
	levels := strings.Split(s, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return errors.New("'#' must be the last level")
		case l != "#" && l != "+" && strings.ContainsAny(l, "#+"):
			return errors.New("wildcards must occupy a whole level")
		}
	}
	if strings.HasPrefix(strings.ToLower(s), "$share/") {
		return errors.New("$share/ is not allowed in an ACL filter; write the plain filter")
	}
	return nil
}

// expandPattern substitutes %c and %u. ok is false when the pattern uses a value that is
// empty or contains a topic separator or wildcard: such a pattern must not match anything,
// otherwise a client could widen its own permissions by choosing its id.
func expandPattern(p, clientID, username string) (string, bool) {
	if !strings.Contains(p, "%") {
		return p, true
	}
	bad := func(v string) bool { return v == "" || strings.ContainsAny(v, "/+#") }
	if strings.Contains(p, "%c") && bad(clientID) {
		return "", false
	}
	if strings.Contains(p, "%u") && bad(username) {
		return "", false
	}
	return strings.NewReplacer("%c", clientID, "%u", username).Replace(p), true
}

// covers reports whether every topic matched by filter (a topic name or a filter) is also
// matched by allowed. Wildcards in the first level of allowed do not match topics starting
// with '$' ([MQTT-4.7.2-1]).
func covers(allowed, filter string) bool {
	if strings.HasPrefix(filter, "$") && (strings.HasPrefix(allowed, "+") || strings.HasPrefix(allowed, "#")) {
		return false
	}
	a := strings.Split(allowed, "/")
	f := strings.Split(filter, "/")
	for i, al := range a {
		if al == "#" {
			return true
		}
		if i >= len(f) {
			return false
		}
		fl := f[i]
		switch {
		case al == "+":
			if fl == "#" {
				return false
			}
		case fl == "+" || fl == "#":
			return false
		case al != fl:
			return false
		}
	}
	return len(a) == len(f)
}

// stripShare turns "$share/group/filter" into "filter".
func stripShare(filter string) string {
	if len(filter) > 7 && strings.EqualFold(filter[:7], "$share/") {
		if i := strings.IndexByte(filter[7:], '/'); i >= 0 {
			return filter[7+i+1:]
		}
	}
	return filter
}

// aclHook enforces role permissions. It decides from the client's username and listener
// only (both survive a restart with the session), so checks made for an offline persistent
// session give the same answer as for the connected client.
type aclHook struct {
	mqtt.HookBase
	a *access
}

func (h *aclHook) ID() string { return "edged-acl" }

func (h *aclHook) Provides(b byte) bool { return b == mqtt.OnACLCheck }

// OnACLCheck is called by mochi for PUBLISH (write) and for SUBSCRIBE filters and deliveries
// (read). Denials: MQTT 5 publishers get PUBACK/PUBREC 0x87, MQTT 3.1.1 publishers of QoS
// 1/2 are disconnected by mochi (3.1.1 has no negative PUBACK), QoS 0 is dropped silently;
// subscribers get SUBACK 0x87 (MQTT 5) or 0x80 (3.1.1).
func (h *aclHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	id := h.a.identify(cl)
	if id.all {
		return true
	}
	if id.role == nil {
		return false
	}
	filters := id.role.Subscribe
	if write {
		filters = id.role.Publish
	} else {
		topic = stripShare(topic)
	}
	user := string(cl.Properties.Username)
	for _, p := range filters {
		if f, ok := expandPattern(p, cl.ID, user); ok && covers(f, topic) {
			return true
		}
	}
	return false
}

// identity is what a client may do.
type identity struct {
	all  bool  // anonymous client where anonymous is allowed: everything
	role *Role // authenticated user: the role's filters
}

// access holds the user table shared by the auth and ACL hooks.
type access struct {
	users          map[string]*User
	roles          map[string]*Role
	allowAnonymous bool
	listeners      map[string]*listenerInfo // by mochi listener id
}

type listenerInfo struct {
	loopback bool
	certAuth bool // client_ca set: the client certificate CN is the username
}

func (a *access) loopback(listener string) bool {
	li, ok := a.listeners[listener]
	return ok && li.loopback
}

func (a *access) identify(cl *mqtt.Client) identity {
	name := string(cl.Properties.Username)
	if u, ok := a.users[name]; ok && name != "" {
		return identity{role: a.roles[u.Role]}
	}
	if (name == "" || len(a.users) == 0) && (a.allowAnonymous || a.loopback(cl.Net.Listener)) {
		return identity{all: true}
	}
	return identity{}
}

// limitsHook announces the broker's maximum packet size in MQTT 5 CONNACKs (mochi enforces it
// but does not announce it), so well-behaved clients refuse oversized messages themselves.
type limitsHook struct {
	mqtt.HookBase
	maxPacket uint32
}

func (h *limitsHook) ID() string { return "edged-limits" }

func (h *limitsHook) Provides(b byte) bool { return b == mqtt.OnPacketEncode }

func (h *limitsHook) OnPacketEncode(_ *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && pk.ProtocolVersion == 5 && pk.ReasonCode == 0 {
		pk.Properties.MaximumPacketSize = h.maxPacket
	}
	return pk
}
