package broker

import (
	"reflect"
	"sync"
	"sync/atomic"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Where edged leans on mochi's internals
//
// Everything the broker needs from mochi-mqtt/server/v2 beyond its documented hooks is here,
// one assumption per section, each checked by a test in mochi_test.go that fails loudly when
// a mochi upgrade breaks it (TestMochiVersion fails first on any upgrade, so these get
// re-read). Written against mochi v2.7.9 (go.mod pins exactly that version). The other files
// use only mochi's hooks, Server and Client fields it exports for hooks, and the functions
// below.
//
// Upstream API that would remove the hacks (a proposal for mochi-mqtt/server; not filed yet):
//
//   - A queue-length accessor, func (cl *Client) QueuedPackets() int, returning
//     len(cl.State.outbound): backpressure reads it by reflection today (assumption 1).
//   - A delivery hook, OnDeliver(cl *Client, sub packets.Subscription, pk packets.Packet),
//     called in publishToClient before the non-blocking send, allowed to block: backpressure
//     uses OnACLCheck as that tap today (assumption 2).
//   - An async-ack hook: OnPublish may return a pending result, and mochi acks (PUBACK /
//     PUBREC with a reason code) and distributes the message when the application completes
//     it, in per-client order. Capture does that by hand today: it rejects the packet, writes
//     the ack itself, books QoS 2 state in mochi's inflight map and re-injects the message
//     through a per-client inline "shadow" client (assumption 3).
//   - A leaner delivery path. Each delivered QoS 0 message costs 3,464 B in 19 allocations
//     in bare mochi (BenchmarkDeliverQoS0; edged's hooks add none, its packet guard one). In a
//     profile 41 % of it is gatherSubscriptions making fresh maps per publish (pooled
//     Subscribers would do), 21 % publishToClient's packet copy and 17 % a bytes.Buffer per
//     write; hooks could take *packets.Packet instead of copies. This is part of edged's
//     paced-latency gap to mosquitto at 10k msgs/s: the same garbage added to a Go relay moved its
//     median by 7-17 us. The rest is the Go runtime's wake-ups; see README "Performance". Not the
//     lever: mochi's handling of a PUBLISH took 2.9 us at the median in a hand-instrumented
//     build (not kept), and writing through on the publishing goroutine (publishToClient
//     writing directly when the subscriber's queue is empty) moved the paced median only from
//     0.135 to 0.128 ms.
//   - DisconnectClient that sends no DISCONNECT to MQTT 3.1.1 clients (assumption 5), a way
//     for OnWill to cancel a will (assumption 6), and SUBSCRIBE/UNSUBSCRIBE ids checked only
//     against the client's own packet ids (assumption 9; a bug fix rather than an API).

// --- Assumption 1: the client's write queue is Client.State.outbound, a chan *packets.Packet
// of capacity Capabilities.MaximumClientWritesPending, that publishToClient fills with a
// non-blocking send (dropping when full) and WriteLoop drains. Checked by
// TestMochiOutboundQueue. If the field is not found, backpressure is turned off with a warning.

// outboundField is the index path of mochi's Client.State.outbound, nil if not found.
var outboundField = func() []int {
	st, ok := reflect.TypeOf(mqtt.Client{}).FieldByName("State")
	if !ok {
		return nil
	}
	f, ok := st.Type.FieldByName("outbound")
	if !ok || f.Type != reflect.TypeOf(make(chan *packets.Packet)) {
		return nil
	}
	return append(append([]int{}, st.Index...), f.Index...)
}()

// outboundOffset is the byte offset of that field in mqtt.Client (valid when outboundField is
// non-nil): queueLen runs on every delivery to a congested-looking subscriber, and a
// reflect.Value walk there cost more than the rest of the backpressure check.
var outboundOffset = func() uintptr {
	if outboundField == nil {
		return 0
	}
	t := reflect.TypeOf(mqtt.Client{})
	var off uintptr
	for _, i := range outboundField {
		f := t.Field(i)
		off += f.Offset
		t = f.Type
	}
	return off
}()

// queueLen is the number of packets waiting in cl's write queue. The field's type was checked
// when outboundField was resolved, so the pointer below has the field's real type.
func queueLen(cl *mqtt.Client) int {
	return len(*(*chan *packets.Packet)(unsafe.Add(unsafe.Pointer(cl), outboundOffset)))
}

// --- Assumption 2: mochi calls OnACLCheck(subscriber, topic, false) once per delivery in
// publishToClient, on the distributing goroutine, before queueing the packet, and the first
// hook that answers true wins (so a hook that always answers false is a pure tap). Used by
// backpressureHook (see backpressure.go). Checked by TestMochiACLCheckPerDelivery.

// --- Assumption 3 (capture, see capture.go):
//   - OnPublish returning packets.ErrRejectPacket: mochi neither acks, retains nor
//     distributes the packet, and does not touch the receive quota.
//   - For QoS 2, a PUBREC we write ourselves must be booked in cl.State.Inflight (so that
//     processPubrel finds it, sends PUBCOMP and restores the receive quota), with the
//     Info.Inflight counter and the receive quota adjusted as processPublish does.
//   - An inline client created with NewClient(nil, listener, id, true) and given the
//     publisher's id: InjectPacket through it distributes (retains, NoLocal by origin id)
//     without ACL check, ack or capture (hooks see cl.Net.Inline), and counts the message
//     and packet as received once more, which we take back.
// Checked by TestMochiRejectAndShadowInject (and the capture tests).

const shadowListener = "edged-capture"

// newShadowClient returns the inline client that re-injects cl's captured messages.
func newShadowClient(srv *mqtt.Server, cl *mqtt.Client) *mqtt.Client {
	sh := srv.NewClient(nil, shadowListener, cl.ID, true)
	sh.Properties.ProtocolVersion = cl.Properties.ProtocolVersion
	sh.Properties.Username = cl.Properties.Username
	return sh
}

// injectAsShadow distributes a captured PUBLISH as if mochi had accepted it.
func injectAsShadow(srv *mqtt.Server, shadow *mqtt.Client, pk packets.Packet) error {
	pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = 0, false // already resolved
	if err := srv.InjectPacket(shadow, pk); err != nil {
		return err
	}
	// InjectPacket counts the message as received a second time.
	atomic.AddInt64(&srv.Info.MessagesReceived, -1)
	atomic.AddInt64(&srv.Info.PacketsReceived, -1)
	return nil
}

// trackPubrec books a PUBREC we send for a captured QoS 2 PUBLISH the way processPublish
// would; it reports whether the packet was new in the inflight map.
func trackPubrec(srv *mqtt.Server, cl *mqtt.Client, ack packets.Packet) bool {
	added := cl.State.Inflight.Set(ack)
	if added {
		atomic.AddInt64(&srv.Info.Inflight, 1)
	}
	cl.State.Inflight.DecreaseReceiveQuota()
	return added
}

// --- Assumption 4: mochi's own listener close (Server.closeListenerClients) calls
// Clients.GetByListener, which in v2.7.9 takes the clients read lock twice (it calls Len
// inside RLock); a disconnecting client's Delete waiting for the write lock in between
// deadlocks it, and Close hangs for ever (upstream mochi-mqtt/server issue #488; seen in
// TestBackpressureNoDrops under load). Our listeners call closeListenerClients instead,
// which takes the lock once (GetAll). Checked by TestMochiListenerCloseReplaced.

// closeListenerClients disconnects the clients of one listener at shutdown. MQTT 5 clients
// get DISCONNECT 0x8B Server shutting down; MQTT 3.1.1 clients only see the connection close:
// 3.1.1 has no DISCONNECT from server to client, and libmosquitto clients treat one as a
// protocol error and stop instead of reconnecting.
func (b *Broker) closeListenerClients(listenerID string) {
	for _, cl := range b.srv.Clients.GetAll() {
		if cl.Net.Listener != listenerID || cl.Closed() {
			continue
		}
		if cl.Properties.ProtocolVersion >= 5 {
			_ = b.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
		} else {
			cl.Stop(packets.ErrServerShuttingDown)
		}
	}
}

// --- Assumption 5: Client.WritePacket runs OnPacketEncode before encoding and returns an
// error without writing anything for a packet type it cannot encode (packets.Reserved), and
// every DisconnectClient caller ignores that error and closes the connection anyway. That is
// how no DISCONNECT reaches an MQTT 3.1.1 client from mochi's own paths (session take-over,
// ACL refusal, receive maximum; limitsHook.OnPacketEncode). Checked by
// TestMochiUnwritablePacket.

// unwritable turns pk into a packet mochi's WritePacket refuses to write.
func unwritable(pk packets.Packet) packets.Packet {
	pk.FixedHeader.Type = packets.Reserved
	return pk
}

// --- Assumption 6: OnWill cannot cancel a will; sendLWT publishes whatever the hooks return.
// A will with an empty topic is matched to no subscription (TopicsIndex.Subscribers returns
// nothing for "", '#' and '+' subscriptions included) and, not retained, is not stored; the
// capture hook ignores it. Checked by TestMochiEmptyTopicMatchesNothing.

// droppedWill is what aclHook.OnWill returns for a will that may not be sent.
func droppedWill() mqtt.Will { return mqtt.Will{} }

// --- Assumption 7: OnSubscribe may rewrite a SUBSCRIBE's filters before processSubscribe
// looks at them; a filter that IsValidFilter rejects gets 0x8F (3.1.1: 0x80), never enters
// the topic tree, the subscription list or the store (OnSubscribed sees its failure code),
// and OnPacketEncode may change the SUBACK's codes. Checked by TestMochiRefusedFilter.

// refusedFilter replaces a refused filter in a SUBSCRIBE (limitsHook.OnSubscribe).
const refusedFilter = "#/"

// --- Assumption 8: CONNACK codes (auth.go). A false OnConnectAuthenticate makes mochi send
// ErrBadUsernameOrPassword (MQTT 5 0x86, mapped to 3.1.1 0x05), and a 3.1.1 CONNECT with an
// empty client id and clean session 0 gets ErrUnspecifiedError (0x80, not a 3.1.1 code) with
// a generated id in Props.AssignedClientID; OnPacketEncode rewrites both. Checked by
// TestWillPublishACL and TestV311EmptyClientIDPersistent.

// --- Assumption 9: mochi checks a SUBSCRIBE's or UNSUBSCRIBE's packet id against the
// client's whole inflight map (processSubscribe, processUnsubscribe), which also holds the
// broker's own outgoing QoS 1/2 messages to that client. Those ids are the broker's, not the
// client's ([MQTT-2.2.1]: each side numbers its own packets), so a client whose SUBSCRIBE
// happens to reuse one gets every filter refused (0x91; 3.1.1: 0x80) and an UNSUBSCRIBE is
// silently not done. It happens as soon as messages were queued for a persistent session:
// after a restart `mosquitto_sub -c` re-subscribes with id 1, gets "All subscription
// requests were denied" and exits. OnPacketRead runs before either check, so packetIDHook
// gives such a packet a free id while mochi processes it and puts the client's id back into
// the SUBACK/UNSUBACK (OnPacketEncode, registered after limitsHook, whose SUBACK fix matches
// the substitute id). A real collision with the client's own unfinished QoS 2 PUBLISH (a
// PUBREC/PUBCOMP entry) still gets 0x91. Checked by TestSubscribeIDOfQueuedMessage.

// --- Assumption 10 (the packet guard, see guard.go): mochi's Client.ReadPacket decodes a
// client's packet on its connection goroutine, with the public packets decoder for its type
// (the switch guard.check repeats) and the protocol version of the client's CONNECT, and
// nothing recovers a panic there: a decoder that panics on malformed bytes ends the process
// (v2.7.9: SubscribeDecode, MQTT 5, a filter without its options byte; upstream #501). mochi
// reads the connection through a bufio.Reader, so it cannot tell that the guard hands it one
// packet at a time. Checked by TestMalformedSubscribeRefused (which crashes the test binary
// without the guard) and FuzzClientBytes.

type packetIDHook struct {
	mqtt.HookBase
	sub sync.Map // *mqtt.Client -> [2]uint16{substitute, client's id}; one packet at a time per client
}

func (h *packetIDHook) ID() string { return "edged-packet-ids" }

func (h *packetIDHook) Provides(b byte) bool {
	return b == mqtt.OnPacketRead || b == mqtt.OnPacketEncode || b == mqtt.OnDisconnect
}

func (h *packetIDHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	t := pk.FixedHeader.Type
	if t != packets.Subscribe && t != packets.Unsubscribe {
		return pk, nil
	}
	e, ok := cl.State.Inflight.Get(pk.PacketID)
	if !ok || (e.FixedHeader.Type != packets.Publish && e.FixedHeader.Type != packets.Pubrel) {
		return pk, nil // free, or the client's own id in use: mochi decides
	}
	for id := uint16(65535); id > 0; id-- {
		if _, used := cl.State.Inflight.Get(id); !used {
			h.sub.Store(cl, [2]uint16{id, pk.PacketID})
			pk.PacketID = id
			break
		}
	}
	return pk, nil
}

func (h *packetIDHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if t := pk.FixedHeader.Type; t != packets.Suback && t != packets.Unsuback {
		return pk
	}
	if v, ok := h.sub.Load(cl); ok && v.([2]uint16)[0] == pk.PacketID {
		h.sub.Delete(cl)
		pk.PacketID = v.([2]uint16)[1]
	}
	return pk
}

func (h *packetIDHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) { h.sub.Delete(cl) }

// --- Known defect, not worked around: TopicsIndex.RetainMessage writes a particle's
// retainPath without the lock under which scanMessages (retained messages for a new
// subscription) reads it, so a retained PUBLISH racing a SUBSCRIBE on an overlapping topic is
// a data race (go test -race reports it; upstream mochi-mqtt/server issue #200, closed, still
// in v2.7.9). No hook runs around both, so it cannot be serialised from here; the fix belongs
// upstream (take the particle lock in scanMessages).
