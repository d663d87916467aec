package broker

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// ClientInfo describes one connected MQTT client for the admin API and dashboard.
type ClientInfo struct {
	ID       string `json:"id"`
	Username string `json:"username,omitempty"`
	Remote   string `json:"remote"`   // remote address (ip:port) of the connection
	Listener string `json:"listener"` // listener id (type and index, e.g. tcp0)
	// ProtocolVersion is 3 (3.1), 4 (3.1.1) or 5.
	ProtocolVersion byte `json:"protocol_version"`
	Subscriptions   int  `json:"subscriptions"`
	Inflight        int  `json:"inflight"`
	// ConnectedAt is when the session was established; zero for a client that connected
	// before the ClientTable was installed.
	ConnectedAt time.Time `json:"connected_at,omitzero"`
}

// ErrNoClient is returned by ClientTable.Disconnect for an id that is not connected.
var ErrNoClient = errors.New("no such connected client")

// ClientTable lists the broker's connected clients with the time each connected (mochi keeps
// no such time) and disconnects them on request. It watches connections through a mochi hook,
// so build it before Start to have the connect time of every client.
type ClientTable struct {
	b     *Broker
	mu    sync.Mutex
	since map[*mqtt.Client]time.Time // keyed by the connection, not the id: a takeover is a new one
}

// NewClientTable installs the hook that records connect times and returns the table.
func (b *Broker) NewClientTable() (*ClientTable, error) {
	t := &ClientTable{b: b, since: map[*mqtt.Client]time.Time{}}
	if err := b.srv.AddHook(&clientTimesHook{t: t}, nil); err != nil {
		return nil, fmt.Errorf("broker: add client table hook: %w", err)
	}
	return t, nil
}

// List returns the connected network clients (not the inline client, not offline sessions),
// sorted by id.
func (t *ClientTable) List() []ClientInfo {
	if t == nil {
		return nil
	}
	out := []ClientInfo{}
	for _, cl := range t.b.srv.Clients.GetAll() {
		if cl.Net.Inline || cl.Closed() {
			continue
		}
		ci := ClientInfo{
			ID:              cl.ID,
			Remote:          cl.Net.Remote,
			Listener:        cl.Net.Listener,
			Subscriptions:   cl.State.Subscriptions.Len(),
			Inflight:        cl.State.Inflight.Len(),
			ProtocolVersion: clientProtocol(cl),
		}
		cl.RLock()
		ci.Username = string(cl.Properties.Username)
		cl.RUnlock()
		t.mu.Lock()
		ci.ConnectedAt = t.since[cl]
		t.mu.Unlock()
		out = append(out, ci)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// clientProtocol reads the protocol version under the client's lock: mochi writes it while
// the CONNECT is read.
func clientProtocol(cl *mqtt.Client) byte {
	cl.RLock()
	defer cl.RUnlock()
	return cl.Properties.ProtocolVersion
}

// Disconnect closes the connection of the client with this id (MQTT 5 clients get a
// DISCONNECT with reason 0x98 Administrative action). Its persistent session, if any, stays.
func (t *ClientTable) Disconnect(id string) error {
	cl, ok := t.b.srv.Clients.Get(id)
	if !ok || cl.Net.Inline || cl.Closed() {
		return fmt.Errorf("broker: disconnect %q: %w", id, ErrNoClient)
	}
	// DisconnectClient returns the code itself as an error for codes >= 0x80; the
	// connection is closed either way.
	_ = t.b.srv.DisconnectClient(cl, packets.ErrAdministrativeAction)
	return nil
}

// clientTimesHook records when each connection's session was established.
type clientTimesHook struct {
	mqtt.HookBase
	t *ClientTable
}

func (h *clientTimesHook) ID() string { return "edged-client-table" }

func (h *clientTimesHook) Provides(b byte) bool {
	return b == mqtt.OnSessionEstablished || b == mqtt.OnDisconnect
}

func (h *clientTimesHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	h.t.mu.Lock()
	h.t.since[cl] = time.Now()
	h.t.mu.Unlock()
}

func (h *clientTimesHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.t.mu.Lock()
	delete(h.t.since, cl)
	h.t.mu.Unlock()
}

// TapMessage is one message seen by Tap.
type TapMessage struct {
	*Message
	// Replayed is true for a retained message delivered because the tap started, not
	// because it was just published.
	Replayed bool
}

// Tap watches messages matching filter through mochi's inline client, for a live view: every
// message network clients and inline publishes send to a matching topic, after the ACL and
// capture (what subscribers would get). Retained messages matching filter are delivered first,
// marked Replayed. Username is filled in from the publishing client. fn runs on the
// publisher's goroutine and must not block (hand the message to a buffered channel or drop
// it); the Message must not be kept past fn without copying Payload. The returned function
// stops the tap (idempotent).
func (b *Broker) Tap(filter string, fn func(TapMessage)) (func(), error) {
	if fn == nil {
		return nil, errors.New("broker: tap: nil handler")
	}
	if !mqtt.IsValidFilter(filter, false) {
		return nil, fmt.Errorf("broker: tap: invalid topic filter %q", filter)
	}
	id := int(b.subID.Add(1))
	var mu sync.Mutex
	subscribing := true
	// mochi replays retained messages synchronously inside Subscribe, on this goroutine;
	// live messages can arrive meanwhile from publisher goroutines. The replay is told apart
	// by running while subscribing is set and carrying the retain flag.
	err := b.srv.Subscribe(filter, id, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		user := ""
		if cl, ok := b.srv.Clients.Get(pk.Origin); ok && !cl.Net.Inline {
			cl.RLock()
			user = string(cl.Properties.Username)
			cl.RUnlock()
		}
		mu.Lock()
		replay := subscribing && pk.FixedHeader.Retain
		mu.Unlock()
		fn(TapMessage{Message: messageFromPacket(pk, pk.Origin, user, time.Now()), Replayed: replay})
	})
	mu.Lock()
	subscribing = false
	mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("broker: tap %q: %w", filter, err)
	}
	var once sync.Once
	return func() { once.Do(func() { _ = b.srv.Unsubscribe(filter, id) }) }, nil
}
