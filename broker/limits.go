package broker

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edged-dev/edged/internal/ratelog"
)

// Broker limits
//
// mochi's topic tree walks a topic one level at a time and finds each level by scanning the
// topic from its start (isolateParticle), so subscribing, retaining and matching a topic of n
// levels costs O(n * length): one 48 KB SUBSCRIBE of 24,000 levels cost seconds of CPU, and a
// PUBLISH matching such a subscription took tens of seconds to deliver. Subscriptions also
// cost memory and persistence per entry. These limits keep every packet's work small and
// bounded; they are checked before mochi touches its topic tree:
//
//   - PUBLISH whose topic is too long or has too many levels: MQTT 5 QoS 1/2 gets
//     PUBACK/PUBREC 0x90 Topic Name invalid; MQTT 3.1.1 QoS 1/2 is disconnected without a
//     DISCONNECT (3.1.1 has no negative PUBACK and no server DISCONNECT; the client resends
//     to nobody's harm); QoS 0 is dropped. Counted as topic_too_long / topic_too_deep.
//   - SUBSCRIBE: each filter that is too long or too deep gets 0x8F Topic Filter invalid;
//     filters beyond max_filters_per_subscribe in one packet, and new filters beyond
//     max_subscriptions_per_client, get 0x97 Quota exceeded (MQTT 3.1.1: 0x80 Failure, the
//     only refusal code it has). The other filters of the packet are handled as usual.
//   - Will topics are checked at CONNECT like a PUBLISH (see auth.go).
//   - Broker.Publish and Broker.Subscribe (inline: serial devices, cloud downlink) return an
//     error for topics beyond the limits, so a cloud cannot push the broker into the slow path
//     either.

// refusal reasons, the values of the reason label of edged_broker_refusals_total and the keys
// of Status.Refusals.
const (
	refuseTopicTooLong     = "topic_too_long"
	refuseTopicTooDeep     = "topic_too_deep"
	refuseFilterTooLong    = "filter_too_long"
	refuseFilterTooDeep    = "filter_too_deep"
	refuseFiltersPerSub    = "filters_per_subscribe"
	refuseSubsPerClient    = "subscriptions_per_client"
	refuseWillNotAllowed   = "will_not_authorized"
	refuseWillTopicInvalid = "will_topic_invalid"
	refuseWillDropped      = "will_dropped"
)

var refusalReasons = []string{
	refuseTopicTooLong, refuseTopicTooDeep, refuseFilterTooLong, refuseFilterTooDeep,
	refuseFiltersPerSub, refuseSubsPerClient, refuseWillNotAllowed, refuseWillTopicInvalid,
	refuseWillDropped, refuseMalformed,
}

// refusals counts refused packets by reason; the map is fixed at construction.
type refusals struct {
	n   map[string]*atomic.Int64
	log *ratelog.Keyed
}

func newRefusals() *refusals {
	r := &refusals{n: map[string]*atomic.Int64{}, log: ratelog.NewKeyed(10*time.Second, 1000)}
	for _, k := range refusalReasons {
		r.n[k] = new(atomic.Int64)
	}
	return r
}

func (r *refusals) add(reason string) { r.n[reason].Add(1) }

func (r *refusals) snapshot() map[string]int64 {
	out := make(map[string]int64, len(r.n))
	for k, v := range r.n {
		out[k] = v.Load()
	}
	return out
}

// topicLimits are the configured bounds (see Config).
type topicLimits struct {
	maxLen, maxLevels, maxFilters, maxSubs int
}

func newTopicLimits(c Config) topicLimits {
	return topicLimits{maxLen: c.MaxTopicLength, maxLevels: c.MaxTopicLevels,
		maxFilters: c.MaxFiltersPerSubscribe, maxSubs: c.MaxSubscriptionsPerClient}
}

// topicProblem returns the refusal reason for a topic name, "" if it is within the limits.
// Linear in the length of the topic.
func (l topicLimits) topicProblem(topic string) string {
	switch {
	case len(topic) > l.maxLen:
		return refuseTopicTooLong
	case strings.Count(topic, "/")+1 > l.maxLevels:
		return refuseTopicTooDeep
	}
	return ""
}

// filterProblem is topicProblem for a subscription filter; the $share/{group}/ prefix of a
// shared subscription does not count towards the levels.
func (l topicLimits) filterProblem(filter string) string {
	switch {
	case len(filter) > l.maxLen:
		return refuseFilterTooLong
	case strings.Count(stripShare(filter), "/")+1 > l.maxLevels:
		return refuseFilterTooDeep
	}
	return ""
}

func (l topicLimits) checkTopic(topic string) error {
	switch l.topicProblem(topic) {
	case refuseTopicTooLong:
		return fmt.Errorf("topic is %d bytes long, more than max_topic_length %d", len(topic), l.maxLen)
	case refuseTopicTooDeep:
		return fmt.Errorf("topic has %d levels, more than max_topic_levels %d", strings.Count(topic, "/")+1, l.maxLevels)
	}
	return nil
}

// limitsHook enforces the limits above, announces the maximum packet size in MQTT 5
// CONNACKs (mochi enforces it but does not announce it, so well-behaved clients could not
// refuse oversized messages themselves), and keeps DISCONNECT packets away from MQTT 3.1.1
// clients (see OnPacketEncode).
type limitsHook struct {
	mqtt.HookBase
	maxPacket uint32
	lim       topicLimits
	a         *access
	ref       *refusals
	log       func(msg string, args ...any)

	// quota holds, per client, the SUBACK codes to rewrite to 0x97: set in OnSubscribe and
	// consumed in OnPacketEncode of the SUBACK, both on the client's read goroutine.
	quota sync.Map // *mqtt.Client -> subackFix
}

type subackFix struct {
	id  uint16
	idx []int
}

func (h *limitsHook) ID() string { return "edged-limits" }

func (h *limitsHook) Provides(b byte) bool {
	return b == mqtt.OnPacketEncode || b == mqtt.OnSubscribe || b == mqtt.OnPublish || b == mqtt.OnDisconnect
}

// OnPublish refuses network PUBLISHes whose topic is beyond the limits. It runs before the
// capture hook, so a refused message is neither captured, acked nor distributed.
func (h *limitsHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // Broker.Publish checked it; shadows re-inject checked messages
	}
	reason := h.lim.topicProblem(pk.TopicName)
	if reason == "" {
		return pk, nil
	}
	h.ref.add(reason)
	h.warn(reason, cl, len(pk.TopicName))
	if pk.FixedHeader.Qos > 0 {
		if cl.Properties.ProtocolVersion >= 5 {
			_ = cl.WritePacket(ackPacket(pk, packets.ErrTopicNameInvalid))
		} else {
			cl.Stop(fmt.Errorf("publish refused: %s", reason))
		}
	}
	return pk, packets.ErrRejectPacket
}

// OnSubscribe replaces each filter beyond the limits by refusedFilter (see there).
func (h *limitsHook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if cl.Net.Inline {
		return pk
	}
	count := cl.State.Subscriptions.Len()
	var fix subackFix
	var added map[string]bool
	for i := range pk.Filters {
		f := pk.Filters[i].Filter
		reason := ""
		switch {
		case i >= h.lim.maxFilters:
			reason = refuseFiltersPerSub
		default:
			reason = h.lim.filterProblem(f)
		}
		if reason == "" && mqtt.IsValidFilter(f, false) && h.a.allowed(cl, f, false) {
			if _, exists := cl.State.Subscriptions.Get(f); !exists && !added[f] {
				if count >= h.lim.maxSubs {
					reason = refuseSubsPerClient
				} else {
					count++
					if added == nil {
						added = map[string]bool{}
					}
					added[f] = true // a filter repeated in the packet is one subscription
				}
			}
		}
		if reason == "" {
			continue
		}
		h.ref.add(reason)
		h.warn(reason, cl, len(f))
		pk.Filters[i].Filter = refusedFilter
		if reason == refuseFiltersPerSub || reason == refuseSubsPerClient {
			fix.idx = append(fix.idx, i)
		}
	}
	if len(fix.idx) > 0 && cl.Properties.ProtocolVersion >= 5 {
		fix.id = pk.PacketID
		h.quota.Store(cl, fix)
	}
	return pk
}

func (h *limitsHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) { h.quota.Delete(cl) }

func (h *limitsHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	switch pk.FixedHeader.Type {
	case packets.Connack:
		if pk.ProtocolVersion == 5 && pk.ReasonCode == 0 {
			pk.Properties.MaximumPacketSize = h.maxPacket
		}
	case packets.Suback:
		if v, ok := h.quota.LoadAndDelete(cl); ok {
			fix := v.(subackFix)
			if fix.id == pk.PacketID {
				for _, i := range fix.idx {
					if i < len(pk.ReasonCodes) && pk.ReasonCodes[i] == packets.ErrTopicFilterInvalid.Code {
						pk.ReasonCodes[i] = packets.ErrQuotaExceeded.Code
					}
				}
			}
		}
	case packets.Disconnect:
		// MQTT 3.1.1 has no DISCONNECT from server to client: a client receiving one treats
		// it as a protocol error and may give up for good instead of reconnecting
		// (libmosquitto does). mochi sends one on shutdown, session take-over, ACL refusal
		// and receive-maximum overrun.
		if cl.Properties.ProtocolVersion < 5 {
			pk = unwritable(pk)
		}
	}
	return pk
}

func (h *limitsHook) warn(reason string, cl *mqtt.Client, n int) {
	if h.log == nil {
		return
	}
	if ok, sup := h.ref.log.Allow(reason); ok {
		h.log("packet refused by broker limits", "reason", reason, "client", cl.ID, "remote", cl.Net.Remote, "bytes", n, "suppressed", sup)
	}
}
