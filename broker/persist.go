package broker

import (
	"encoding"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edged-dev/edged/internal/ratelog"
)

// Keys in the StateStore. A client id cannot contain U+0000 ([MQTT-1.5.4-2]), so it
// separates the id from the rest of the key.
const (
	keyClient   = "c/" // c/<client id>
	keySub      = "s/" // s/<client id>\x00<filter>
	keyInflight = "i/" // i/<client id>\x00<packet id>
	keyRetained = "r/" // r/<topic>
)

func clientKey(id string) string      { return keyClient + id }
func subKey(id, filter string) string { return keySub + id + "\x00" + filter }
func inflightKey(id string, pid uint16) string {
	return keyInflight + id + "\x00" + strconv.Itoa(int(pid))
}
func retainedKey(topic string) string { return keyRetained + topic }

// stateHook persists what must survive a restart on the StateStore: persistent sessions with
// their subscriptions and inflight (queued) messages, and retained messages. Clean sessions
// (3.1.1 clean session, MQTT 5 session expiry 0) are never written: they end with their
// connection anyway, and skipping them keeps the write load off the disk for ordinary
// clients. $SYS counters are not persisted (they would be written every tick).
type stateHook struct {
	mqtt.HookBase
	st   StateStore
	log  *slog.Logger
	errs *ratelog.Keyed

	mu    sync.Mutex
	known map[string]bool // client ids with a stored record
}

func newStateHook(st StateStore, log *slog.Logger) *stateHook {
	return &stateHook{st: st, log: log, errs: ratelog.NewKeyed(10*time.Second, 1000), known: map[string]bool{}}
}

func (h *stateHook) ID() string { return "edged-state" }

func (h *stateHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnSubscribed, mqtt.OnUnsubscribed,
		mqtt.OnRetainMessage, mqtt.OnRetainedExpired, mqtt.OnQosPublish, mqtt.OnQosComplete,
		mqtt.OnQosDropped, mqtt.OnClientExpired,
		mqtt.StoredClients, mqtt.StoredSubscriptions, mqtt.StoredInflightMessages, mqtt.StoredRetainedMessages:
		return true
	}
	return false
}

// persistent reports whether the client's session outlives its connection.
func persistent(cl *mqtt.Client) bool {
	if cl.Net.Inline {
		return false
	}
	if cl.Properties.ProtocolVersion == 5 {
		return cl.Properties.Props.SessionExpiryInterval > 0
	}
	return !cl.Properties.Clean
}

func (h *stateHook) put(key string, v encoding.BinaryMarshaler) {
	b, err := v.MarshalBinary()
	if err == nil {
		err = h.st.Put(key, b)
	}
	if err != nil {
		h.fail("put", key, err)
	}
}

func (h *stateHook) del(key string) {
	if err := h.st.Delete(key); err != nil {
		h.fail("delete", key, err)
	}
}

func (h *stateHook) fail(op, key string, err error) {
	if ok, n := h.errs.Allow(op); ok {
		h.log.Error("broker state "+op+" failed", "key", key, "error", err, "suppressed", n)
	}
}

func (h *stateHook) purge(id string) {
	for _, prefix := range []string{keySub + id + "\x00", keyInflight + id + "\x00"} {
		var keys []string
		err := h.st.Scan(prefix, func(k string, _ []byte) error { keys = append(keys, k); return nil })
		if err != nil {
			h.fail("scan", prefix, err)
		}
		for _, k := range keys {
			h.del(k)
		}
	}
}

func (h *stateHook) saveClient(cl *mqtt.Client) {
	props := cl.Properties.Props.Copy(false)
	h.put(clientKey(cl.ID), &storage.Client{
		ID:              cl.ID,
		T:               storage.ClientKey,
		Remote:          cl.Net.Remote,
		Listener:        cl.Net.Listener,
		Username:        cl.Properties.Username,
		Clean:           cl.Properties.Clean,
		ProtocolVersion: cl.Properties.ProtocolVersion,
		Properties: storage.ClientProperties{
			SessionExpiryInterval:     props.SessionExpiryInterval,
			SessionExpiryIntervalFlag: props.SessionExpiryIntervalFlag,
			AuthenticationMethod:      props.AuthenticationMethod,
			AuthenticationData:        props.AuthenticationData,
			RequestProblemInfo:        props.RequestProblemInfo,
			RequestProblemInfoFlag:    props.RequestProblemInfoFlag,
			RequestResponseInfo:       props.RequestResponseInfo,
			ReceiveMaximum:            props.ReceiveMaximum,
			TopicAliasMaximum:         props.TopicAliasMaximum,
			User:                      props.User,
			MaximumPacketSize:         props.MaximumPacketSize,
		},
		Will: storage.ClientWill(cl.Properties.Will),
	})
	h.mu.Lock()
	h.known[cl.ID] = true
	h.mu.Unlock()
}

// forget deletes a client record and everything stored under its id.
func (h *stateHook) forget(id string) {
	h.mu.Lock()
	known := h.known[id]
	delete(h.known, id)
	h.mu.Unlock()
	if known {
		h.del(clientKey(id))
		h.purge(id)
	}
}

func (h *stateHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if persistent(cl) {
		h.saveClient(cl)
		return
	}
	h.forget(cl.ID) // a clean session replaces whatever was stored
}

func takenOver(cl *mqtt.Client) bool {
	return cl.IsTakenOver() || errors.Is(cl.StopCause(), packets.ErrSessionTakenOver)
}

func (h *stateHook) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	if cl.Net.Inline || takenOver(cl) || cl.Net.Conn == nil {
		return // restored offline clients (Conn nil) and taken-over connections own nothing
	}
	if expire {
		h.forget(cl.ID)
		return
	}
	if persistent(cl) {
		h.saveClient(cl) // MQTT 5 DISCONNECT may have changed the session expiry
	}
}

func (h *stateHook) OnClientExpired(cl *mqtt.Client) {
	h.mu.Lock()
	h.known[cl.ID] = true // expire even records loaded at start
	h.mu.Unlock()
	h.forget(cl.ID)
}

func (h *stateHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	if !persistent(cl) {
		return
	}
	for i, f := range pk.Filters {
		if i >= len(codes) || codes[i] >= packets.ErrUnspecifiedError.Code {
			continue // refused subscriptions are not subscriptions
		}
		h.put(subKey(cl.ID, f.Filter), &storage.Subscription{
			ID:                subKey(cl.ID, f.Filter),
			T:                 storage.SubscriptionKey,
			Client:            cl.ID,
			Filter:            f.Filter,
			Qos:               codes[i],
			Identifier:        f.Identifier,
			NoLocal:           f.NoLocal,
			RetainHandling:    f.RetainHandling,
			RetainAsPublished: f.RetainAsPublished,
		})
	}
}

func (h *stateHook) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	if !persistent(cl) {
		return
	}
	for _, f := range pk.Filters {
		h.del(subKey(cl.ID, f.Filter))
	}
}

func (h *stateHook) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	if r == -1 || len(pk.Payload) == 0 {
		h.del(retainedKey(pk.TopicName))
		return
	}
	h.put(retainedKey(pk.TopicName), messageRecord(retainedKey(pk.TopicName), storage.RetainedKey, cl, pk, 0))
}

func (h *stateHook) OnRetainedExpired(topic string) { h.del(retainedKey(topic)) }

func (h *stateHook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, _ int) {
	if !persistent(cl) {
		return
	}
	k := inflightKey(cl.ID, pk.PacketID)
	h.put(k, messageRecord(k, storage.InflightKey, cl, pk, sent))
}

func (h *stateHook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if persistent(cl) {
		h.del(inflightKey(cl.ID, pk.PacketID))
	}
}

func (h *stateHook) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if persistent(cl) {
		h.del(inflightKey(cl.ID, pk.PacketID))
	}
}

func messageRecord(key, typ string, cl *mqtt.Client, pk packets.Packet, sent int64) *storage.Message {
	props := pk.Properties.Copy(false)
	return &storage.Message{
		ID:          key,
		T:           typ,
		Client:      cl.ID,
		Origin:      pk.Origin,
		PacketID:    pk.PacketID,
		FixedHeader: pk.FixedHeader,
		TopicName:   pk.TopicName,
		Payload:     pk.Payload,
		Sent:        sent,
		Created:     pk.Created,
		Properties: storage.MessageProperties{
			PayloadFormat:          props.PayloadFormat,
			PayloadFormatFlag:      props.PayloadFormatFlag,
			MessageExpiryInterval:  props.MessageExpiryInterval,
			ContentType:            props.ContentType,
			ResponseTopic:          props.ResponseTopic,
			CorrelationData:        props.CorrelationData,
			SubscriptionIdentifier: props.SubscriptionIdentifier,
			User:                   props.User,
		},
	}
}

// load scans prefix and decodes each record with dec; undecodable records are logged and
// deleted rather than failing start-up.
func load[T any](h *stateHook, prefix string, dec func(*T, []byte) error) ([]T, error) {
	var out []T
	var bad []string
	err := h.st.Scan(prefix, func(k string, v []byte) error {
		var t T
		if err := dec(&t, v); err != nil {
			h.log.Warn("dropping undecodable broker state record", "key", k, "error", err)
			bad = append(bad, k)
			return nil
		}
		out = append(out, t)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan broker state %q: %w", prefix, err)
	}
	for _, k := range bad {
		h.del(k)
	}
	return out, nil
}

func (h *stateHook) StoredClients() ([]storage.Client, error) {
	cs, err := load(h, keyClient, func(c *storage.Client, b []byte) error { return c.UnmarshalBinary(b) })
	h.mu.Lock()
	for _, c := range cs {
		h.known[c.ID] = true
	}
	h.mu.Unlock()
	return cs, err
}

func (h *stateHook) StoredSubscriptions() ([]storage.Subscription, error) {
	return load(h, keySub, func(s *storage.Subscription, b []byte) error { return s.UnmarshalBinary(b) })
}

func (h *stateHook) StoredInflightMessages() ([]storage.Message, error) {
	return load(h, keyInflight, func(m *storage.Message, b []byte) error { return m.UnmarshalBinary(b) })
}

func (h *stateHook) StoredRetainedMessages() ([]storage.Message, error) {
	return load(h, keyRetained, func(m *storage.Message, b []byte) error { return m.UnmarshalBinary(b) })
}
