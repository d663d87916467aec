package broker

import (
	"errors"
	"strings"
	"sync/atomic"

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

func (h *aclHook) Provides(b byte) bool { return b == mqtt.OnACLCheck || b == mqtt.OnWill }

// OnACLCheck is called by mochi for PUBLISH (write) and for SUBSCRIBE filters and deliveries
// (read). Denials: MQTT 5 publishers get PUBACK/PUBREC 0x87, MQTT 3.1.1 publishers of QoS
// 1/2 are disconnected by mochi (3.1.1 has no negative PUBACK), QoS 0 is dropped silently;
// subscribers get SUBACK 0x87 (MQTT 5) or 0x80 (3.1.1).
func (h *aclHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	return h.a.allowed(cl, topic, write)
}

// allowed is the ACL decision: may cl publish to (write) or subscribe to / receive (read)
// topic.
func (a *access) allowed(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	id := a.identify(cl)
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
	tables atomic.Pointer[accessTables] // swapped whole by Reload (reload.go)
	lim    topicLimits
	ref    *refusals
	log    func(msg string, args ...any) // rate-limited through ref.log; nil: silent
}

type listenerInfo struct {
	loopback bool
	certAuth bool // client_ca set: the client certificate CN is the username
}

func (a *access) loopback(listener string) bool {
	li, ok := a.t().listeners[listener]
	return ok && li.loopback
}

func (a *access) identify(cl *mqtt.Client) identity {
	t := a.t()
	name := string(cl.Properties.Username)
	if u, ok := t.users[name]; ok && name != "" {
		return identity{role: t.roles[u.Role]}
	}
	if (name == "" || len(t.users) == 0) && (t.allowAnonymous || a.loopback(cl.Net.Listener)) {
		return identity{all: true}
	}
	return identity{}
}

// Will messages
//
// A will is a PUBLISH the broker makes on the client's behalf, so it passes the same checks
// as one: valid topic name, within the topic limits, allowed by the client's publish ACL.
// They are checked twice:
//
//   - At CONNECT (authHook, after authentication): a will that fails refuses the connection,
//     MQTT 5 with CONNACK 0x87 Not authorized (0x90 Topic Name invalid for a bad topic),
//     MQTT 3.1.1 with CONNACK 0x05 Not authorized, counted as will_not_authorized /
//     will_topic_invalid. Refusing (rather than accepting the client and silently dropping
//     its will) tells a misconfigured device at once why its will would never be sent.
//   - When mochi sends it (OnWill): rights that changed since CONNECT, or a will that reached
//     the client by any other path, are checked again. A will that fails is dropped and
//     counted as will_dropped: OnWill hands mochi a will with an empty topic, which matches
//     no subscription and is not retained, and the capture hook never captures a will with an
//     empty topic or one the ACL denies, so no forward rule sees it.

// willProblem returns the refusal reason and code for the client's will, "" if it has none
// or it may be sent.
func (a *access) willProblem(cl *mqtt.Client, topic string) (string, packets.Code) {
	if topic == "" || !mqtt.IsValidFilter(topic, true) || a.lim.topicProblem(topic) != "" {
		return refuseWillTopicInvalid, packets.ErrTopicNameInvalid
	}
	if !a.allowed(cl, topic, true) {
		return refuseWillNotAllowed, packets.ErrNotAuthorized
	}
	return "", packets.CodeSuccess
}

// OnWill drops a will that may not be sent (any longer); see above.
func (h *aclHook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if cl.Net.Inline {
		return will, nil
	}
	if reason, _ := h.a.willProblem(cl, will.TopicName); reason != "" {
		h.a.ref.add(refuseWillDropped)
		if h.a.log != nil {
			if n, ok := h.a.ref.log.allow(refuseWillDropped); ok {
				h.a.log("will message dropped", "reason", reason, "client", cl.ID, "topic", will.TopicName, "suppressed", n)
			}
		}
		return droppedWill(), nil
	}
	return will, nil
}
