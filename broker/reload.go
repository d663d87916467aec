package broker

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edged-dev/edged/internal/netaddr"
)

// accessTables is what the auth and ACL hooks decide with. It is never changed in place:
// Reload builds a new one and swaps the pointer, so a CONNECT or an ACL check sees either the
// old tables or the new ones, never a mix.
type accessTables struct {
	users          map[string]*User
	roles          map[string]*Role
	allowAnonymous bool
	listeners      map[string]*listenerInfo // by mochi listener id
}

func newAccessTables(cfg Config) *accessTables {
	t := &accessTables{
		users:          map[string]*User{},
		roles:          map[string]*Role{},
		allowAnonymous: cfg.AllowAnonymous,
		listeners:      map[string]*listenerInfo{},
	}
	for i := range cfg.Users {
		u := cfg.Users[i]
		t.users[u.Username] = &u
	}
	for name, r := range cfg.Roles {
		t.roles[name] = &r
	}
	return t
}

func newListenerInfo(l Listener) *listenerInfo {
	return &listenerInfo{loopback: netaddr.IsLoopback(l.Address), certAuth: l.ClientCA != ""}
}

func (a *access) t() *accessTables { return a.tables.Load() }

func specsOf(lns []*netListener) []listenerSpec {
	out := make([]listenerSpec, len(lns))
	for i, l := range lns {
		out[i] = l.spec
	}
	return out
}

// ReloadResult says what Reload changed.
type ReloadResult struct {
	ListenersAdded   []string `json:"listeners_added,omitempty"`   // type://address
	ListenersRemoved []string `json:"listeners_removed,omitempty"` // type://address
	// Disconnected lists the clients whose rights the new config revoked (user removed,
	// password changed, a subscription no longer allowed, anonymous access withdrawn).
	Disconnected []string `json:"disconnected,omitempty"`
	// NeedsRestart names the broker settings that differ but only take effect at start.
	NeedsRestart []string `json:"needs_restart,omitempty"`
}

// ErrNotStarted is returned by Reload before Start.
var ErrNotStarted = errors.New("broker: not started")

// Reload applies users, roles, allow_anonymous and listeners of cfg to the running broker.
// A listener whose configuration is unchanged keeps its socket and its clients; a removed or
// changed one is closed (its clients disconnected: they reconnect to the new one); an added
// one is bound. Connected clients whose rights cfg revokes are disconnected, and their
// subscriptions the new role does not allow are removed from their sessions, so a resumed
// session cannot keep receiving them. The other broker settings are reported in NeedsRestart.
// cfg must have been validated (Config.Validate). A bind error of an added listener is
// returned with the result of everything else, which is applied.
func (b *Broker) Reload(cfg Config) (ReloadResult, error) {
	cfg.ApplyDefaults()
	var res ReloadResult
	if err := cfg.Validate(); err != nil {
		return res, fmt.Errorf("broker config: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return res, ErrClosed
	}
	if !b.started {
		return res, ErrNotStarted
	}
	res.NeedsRestart = restartOnly(b.cfg, cfg)

	old := *b.listeners.Load()
	tabs := newAccessTables(cfg)
	var (
		keep, gone []*netListener
		added      []*netListener
		errs       []error
	)
	used := map[*netListener]bool{}
	for _, lc := range cfg.Listeners {
		var match *netListener
		for _, l := range old {
			if !used[l] && reflect.DeepEqual(l.spec.cfg, lc) {
				match = l
				break
			}
		}
		if match != nil {
			used[match] = true
			keep = append(keep, match)
			tabs.listeners[match.id] = newListenerInfo(lc)
			// Certificate, key and client CA files are read again: new handshakes get what
			// they hold now, connected clients stay.
			if match.spec.tls != nil {
				if ts, err := newTLSSetup(lc); err != nil {
					errs = append(errs, fmt.Errorf("broker: listener %s %s: %w (the previous certificate stays)", lc.Type, lc.Address, err))
				} else {
					match.spec.tls.cur.Store(ts.cur.Load())
				}
			}
			continue
		}
		keep = append(keep, nil) // placeholder, bound below once the old socket is closed
	}
	for _, l := range old {
		if !used[l] {
			gone = append(gone, l)
		}
	}
	// Close the removed and changed listeners first: a changed listener may keep its port.
	for _, l := range gone {
		b.srv.Listeners.Close(l.id, nil)
		l.wait()
		b.srv.Listeners.Delete(l.id)
		res.ListenersRemoved = append(res.ListenersRemoved, l.spec.cfg.Type+"://"+l.spec.cfg.Address)
		b.log.Info("mqtt listener removed", "type", l.spec.cfg.Type, "address", l.spec.cfg.Address)
	}
	var lns []*netListener
	for i, l := range keep {
		if l != nil {
			lns = append(lns, l)
			continue
		}
		lc := cfg.Listeners[i]
		spec := listenerSpec{id: lc.Type + strconv.Itoa(b.nextListener), cfg: lc}
		b.nextListener++
		ts, err := newTLSSetup(lc)
		if err != nil {
			errs = append(errs, fmt.Errorf("broker: listeners[%d]: %w", i, err))
			continue
		}
		spec.tls = ts
		nl, err := bindListener(spec, b.log, b.guard)
		if err != nil {
			errs = append(errs, fmt.Errorf("broker: listeners[%d] (%s %s): %w", i, lc.Type, lc.Address, err))
			continue
		}
		nl.closeClients = b.closeListenerClients
		tabs.listeners[spec.id] = newListenerInfo(lc)
		added = append(added, nl)
		lns = append(lns, nl)
	}
	// The tables know the new listeners before they accept anybody.
	prev := b.access.tables.Swap(tabs)
	for _, nl := range added {
		if err := b.srv.AddListener(nl); err != nil {
			nl.closeListener()
			errs = append(errs, fmt.Errorf("broker: add listener %s: %w", nl.id, err))
			continue
		}
		b.srv.Listeners.Serve(nl.id, b.srv.EstablishConnection)
		res.ListenersAdded = append(res.ListenersAdded, nl.spec.cfg.Type+"://"+nl.spec.cfg.Address)
		b.log.Info("mqtt listener started", "type", nl.spec.cfg.Type, "address", nl.spec.cfg.Address, "bound", nl.Address())
	}
	b.listeners.Store(&lns)
	res.Disconnected = b.revoke(prev)
	return res, errors.Join(errs...)
}

// revoke disconnects every connected network client the current tables no longer admit as it
// is, and drops the subscriptions its role no longer allows from its session.
func (b *Broker) revoke(prev *accessTables) []string {
	t := b.access.t()
	var out []string
	for _, cl := range b.srv.Clients.GetAll() {
		if cl.Net.Inline || cl.Closed() {
			continue
		}
		reason := revokedBecause(prev, t, cl)
		var bad []string
		for filter := range cl.State.Subscriptions.GetAll() {
			if !b.access.allowed(cl, filter, false) {
				bad = append(bad, filter)
			}
		}
		if reason == "" && len(bad) > 0 {
			reason = "subscription no longer allowed"
		}
		if reason == "" {
			continue
		}
		b.log.Info("client disconnected: access revoked by reload", "client", cl.ID, "username", string(cl.Properties.Username), "reason", reason)
		if cl.Properties.ProtocolVersion >= 5 {
			_ = b.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
		} else {
			cl.Stop(packets.ErrNotAuthorized)
		}
		for _, f := range bad {
			b.srv.Topics.Unsubscribe(f, cl.ID)
			cl.State.Subscriptions.Delete(f)
			if b.state != nil {
				b.state.OnUnsubscribed(cl, packets.Packet{Filters: packets.Subscriptions{{Filter: f}}})
			}
		}
		out = append(out, cl.ID)
	}
	return out
}

// revokedBecause is why cl's login (accepted under prev) would no longer be accepted under t,
// "" if it would be. A changed password hash counts as a changed password: the client's
// password is not kept to check it against the new hash.
func revokedBecause(prev, t *accessTables, cl *mqtt.Client) string {
	li := t.listeners[cl.Net.Listener]
	if li == nil {
		return "listener removed"
	}
	name := string(cl.Properties.Username)
	if name == "" || len(t.users) == 0 {
		if name != "" && len(t.users) == 0 && !(t.allowAnonymous || li.loopback) {
			return "user removed"
		}
		if !(t.allowAnonymous || li.loopback) {
			return "anonymous access withdrawn"
		}
		return ""
	}
	u, ok := t.users[name]
	if !ok {
		return "user removed"
	}
	if pu, ok := prev.users[name]; ok && !li.certAuth && pu.PasswordHash != u.PasswordHash {
		return "password changed"
	}
	return ""
}

// restartOnly names the settings of next that differ from cur and are not applied live.
func restartOnly(cur, next Config) []string {
	var out []string
	cv, nv := reflect.ValueOf(cur), reflect.ValueOf(next)
	ty := cv.Type()
	for i := 0; i < ty.NumField(); i++ {
		f := ty.Field(i)
		switch f.Name {
		case "Users", "Roles", "Listeners", "AllowAnonymous":
			continue
		}
		if !f.IsExported() {
			continue
		}
		if !reflect.DeepEqual(cv.Field(i).Interface(), nv.Field(i).Interface()) {
			name := f.Tag.Get("yaml")
			if j := indexByte(name, ','); j >= 0 {
				name = name[:j]
			}
			if name == "" || name == "-" {
				name = f.Name
			}
			out = append(out, "broker."+name)
		}
	}
	return out
}

func indexByte(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}
