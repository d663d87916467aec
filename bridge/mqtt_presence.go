package bridge

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	paho3 "github.com/eclipse/paho.mqtt.golang"

	"github.com/edged-dev/edged/bridge/internal/mqtt5"
)

// publisher sends one QoS 1 presence message on the live link; done gets the remote's answer.
// A goroutine it needs to wait for the answer is counted in wg and ends when ctx does.
type publisher func(ctx context.Context, wg *sync.WaitGroup, topic string, body []byte, contentType string, retain bool, done func(error)) error

func c5Publisher(c *mqtt5.Client) publisher {
	return func(ctx context.Context, _ *sync.WaitGroup, topic string, body []byte, ct string, retain bool, done func(error)) error {
		p := &packets.Publish{Topic: topic, QoS: 1, Retain: retain, Payload: body, Properties: &packets.Properties{ContentType: ct}}
		if err := c.PublishAsync(ctx, p, done); err != nil {
			return err
		}
		return c.Flush()
	}
}

func c3Publisher(c paho3.Client) publisher {
	return func(ctx context.Context, wg *sync.WaitGroup, topic string, body []byte, _ string, retain bool, done func(error)) error {
		tok := c.Publish(topic, 1, retain, body)
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-tok.Done():
				done(tok.Error())
			case <-ctx.Done():
				done(ctx.Err())
			}
		}()
		return nil
	}
}

// presenceLoop sends the birth message and the health reports of one link.
type presenceLoop struct {
	pub    publisher
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// will5 is the `offline` last will, nil without presence.
func (m *mqttConn) will5() *mqtt5.Will {
	p := m.cfg.Presence
	if p == nil {
		return nil
	}
	topic := resolveTopic(p.Topic, m.env.GatewayID)
	body, ct, err := presenceBody(&m.env, m.cfg.Format, topic, []byte(PresenceOffline), "text/plain")
	if err != nil {
		return nil
	}
	return &mqtt5.Will{Topic: topic, Payload: body, QoS: 1, Retain: true, ContentType: ct}
}

// startPresence publishes `online` (retained) and runs the health reports until the link is
// done or Close stops them.
func (m *mqttConn) startPresence(pub publisher, linkDone <-chan struct{}) {
	p := m.cfg.Presence
	if p == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	pl := &presenceLoop{pub: pub, cancel: cancel}
	m.mu.Lock()
	m.pres = pl
	m.mu.Unlock()
	log := m.env.Logger
	topic := resolveTopic(p.Topic, m.env.GatewayID)
	report := func(what string) func(error) {
		return func(err error) {
			if err != nil && ctx.Err() == nil {
				log.Warn("presence message not confirmed", "what", what, "err", m.scrub.Error(err))
			}
		}
	}
	if body, ct, err := presenceBody(&m.env, m.cfg.Format, topic, []byte(PresenceOnline), "text/plain"); err == nil {
		m.env.bytesOut(len(body) + len(topic))
		if err := pub(ctx, &pl.wg, topic, body, ct, true, report("online")); err != nil {
			log.Warn("presence: online not sent", "err", m.scrub.Error(err))
		}
	}
	if p.HealthTopic == "" || m.env.Health == nil {
		return
	}
	htopic := resolveTopic(p.HealthTopic, m.env.GatewayID)
	pl.wg.Add(1)
	go func() {
		defer pl.wg.Done()
		t := time.NewTicker(p.HealthInterval)
		defer t.Stop()
		for {
			body, ct, err := healthBody(&m.env, m.cfg.Format, htopic, m.env.Health())
			if err == nil {
				m.env.bytesOut(len(body) + len(htopic))
				err = pub(ctx, &pl.wg, htopic, body, ct, false, report("health"))
			}
			if err != nil && ctx.Err() == nil {
				log.Warn("presence: health report not sent", "err", m.scrub.Error(err))
			}
			select {
			case <-ctx.Done():
				return
			case <-linkDone:
				return
			case <-t.C:
			}
		}
	}()
}

// stopPresence says `offline` on a link that is still up (a clean stop or a switch of
// endpoint: the remote does not publish the will after a normal DISCONNECT), waiting up to a
// second for the remote to confirm it, then stops the health reports.
func (m *mqttConn) stopPresence(pl *presenceLoop, c5 *mqtt5.Client, c3 paho3.Client) {
	if pl == nil {
		return
	}
	up := false
	switch {
	case c5 != nil:
		select {
		case <-c5.Done():
		default:
			up = true
		}
	case c3 != nil:
		up = c3.IsConnectionOpen()
	}
	if up {
		if w := m.will5(); w != nil {
			acked := make(chan struct{})
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if err := pl.pub(ctx, &pl.wg, w.Topic, w.Payload, w.ContentType, true, func(error) { close(acked) }); err == nil {
				select {
				case <-acked:
				case <-ctx.Done():
				}
			}
			cancel()
		}
	}
	pl.cancel()
	pl.wg.Wait()
}

// keepalive3 is the keepalive paho announces for 3.1.1. paho pings only after a whole
// keepalive without traffic, so the broker's last packet from us may be a keepalive older than
// the moment the link died, and the will would come up to 2.5 x keepalive later. With presence
// it announces half the configured keepalive: pings come every half keepalive or so and the
// will within 1.5 x keepalive of the link's death, as with protocol 5 (whose client pings every
// half keepalive anyway).
func (m *mqttConn) keepalive3() time.Duration {
	if m.cfg.Presence == nil {
		return m.cfg.KeepAlive
	}
	return max(m.cfg.KeepAlive/2, time.Second)
}

// Endpoints implements Failoverable.
func (m *mqttConn) Endpoints() []string {
	out := make([]string, len(m.eps))
	for i, ep := range m.eps {
		out[i] = ep.display
	}
	return out
}

// UseEndpoint implements Failoverable.
func (m *mqttConn) UseEndpoint(i int) {
	m.mu.Lock()
	if i >= 0 && i < len(m.eps) {
		m.cur = i
	}
	m.mu.Unlock()
}

// Probe implements Failoverable: an MQTT CONNECT answered by a successful CONNACK, with a
// client id of its own (suffix "-probe"), a clean start, no session and no will, then
// DISCONNECT. An endpoint that accepts TCP but does not speak MQTT fails it.
func (m *mqttConn) Probe(ctx context.Context, i int) error {
	if i < 0 || i >= len(m.eps) {
		return fmt.Errorf("probe: no endpoint %d", i)
	}
	ep := m.eps[i]
	id := m.clientID + "-probe"
	if m.cfg.Protocol == "3.1.1" {
		o := paho3.NewClientOptions().AddBroker(strings.Replace(ep.url, "mqtts://", "ssl://", 1)).SetClientID(id).
			SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(m.cfg.ConnectTimeout).
			SetTLSConfig(m.tls).SetProtocolVersion(4).SetUsername(ep.username).SetPassword(ep.password)
		c := paho3.NewClient(o)
		if err := dial3(ctx, c); err != nil {
			return m.scrub.Error(fmt.Errorf("probe %s: %w", ep.display, err))
		}
		c.Disconnect(0)
		return nil
	}
	conn, err := m.dial(ctx, ep.url)
	if err != nil {
		return m.scrub.Error(fmt.Errorf("probe %s: dial: %w", ep.display, err))
	}
	var pw []byte
	if ep.password != "" {
		pw = []byte(ep.password)
	}
	c, err := mqtt5.Connect(ctx, conn, mqtt5.Options{ClientID: id, Username: ep.username, Password: pw, CleanStart: true, KeepAlive: m.cfg.KeepAlive})
	if err != nil {
		return m.scrub.Error(fmt.Errorf("probe %s: %w", ep.display, err))
	}
	return c.Close()
}

var _ Failoverable = (*mqttConn)(nil)
