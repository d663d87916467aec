package broker

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edged-dev/edged/internal/ratelog"
)

// The capture pipeline
//
// A PUBLISH from a network client reaches captureHook.OnPublish on that client's read
// goroutine, after mochi validated it and the ACL allowed it. The hook queues it on the
// client's pipe and returns ErrRejectPacket, so mochi neither acks nor distributes it. The
// pipe's worker goroutine takes everything queued (up to maxBatch), hands it to the Capturer
// (one CaptureBatch call, or Capture per message in order) and then, in arrival order, for
// each message: writes the PUBACK / PUBREC (or the failure reason, or disconnects a 3.1.1
// client), and distributes it to local subscribers by re-injecting it through a per-client
// "shadow" inline client (same client id, so NoLocal and retained-message bookkeeping still
// work; inline, so no second ACL check, ack or capture).
//
// So the reader keeps reading while a commit is in progress: one client can have up to
// receive_maximum messages in the pipe, and they share one commit when the Capturer
// implements BatchCapturer. Acks stay in order per client ([MQTT-4.6.0-2]) and nothing is
// acked or distributed before it is durable. A full pipe blocks the reader: TCP backpressure.

const maxBatch = 256

type captureHook struct {
	mqtt.HookBase
	b   *Broker
	c   Capturer
	bc  BatchCapturer
	sel CaptureSelector // nil: every message goes through the pipe
	syn bool            // capture synchronously in OnPublish (one commit per message and client); for comparison

	mu      sync.Mutex
	pipes   map[*mqtt.Client]*pipe
	closing bool
	wg      sync.WaitGroup

	failures atomic.Int64
	failLog  *ratelog.Keyed
}

type pipe struct {
	cl      *mqtt.Client
	ch      chan *job
	shadow  *mqtt.Client
	pending atomic.Int64 // jobs queued and not yet acked and distributed (selector.go)
}

type job struct {
	pk packets.Packet
	m  *Message
}

func newCaptureHook(b *Broker) *captureHook {
	return &captureHook{b: b, pipes: map[*mqtt.Client]*pipe{}, failLog: ratelog.NewKeyed(10*time.Second, 1000)}
}

func (h *captureHook) set(c Capturer) {
	h.c = c
	h.bc, _ = c.(BatchCapturer)
	h.sel, _ = c.(CaptureSelector)
}

func (h *captureHook) ID() string { return "edged-capture" }

func (h *captureHook) Provides(b byte) bool {
	return b == mqtt.OnPublish || b == mqtt.OnDisconnect || b == mqtt.OnWillSent
}

// OnPublish queues a network client's PUBLISH for capture; see the pipeline comment above.
func (h *captureHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || h.c == nil {
		return pk, nil // inline publishes were captured by Broker.Publish; shadows re-inject
	}
	p := h.pipeFor(cl)
	if h.shortcut(p, pk.TopicName) {
		return pk, nil // nothing to capture: mochi acks and distributes (selector.go)
	}
	m := messageFromPacket(pk, cl.ID, string(cl.Properties.Username), time.Now())
	if p == nil || h.syn {
		err := h.captureBatch([]*Message{m})[0]
		if err == nil {
			return pk, nil // mochi acks and distributes
		}
		h.complete(&pipe{cl: cl}, &job{pk: pk, m: m}, err)
		return pk, packets.ErrRejectPacket
	}
	p.pending.Add(1)
	p.ch <- &job{pk: pk, m: m}
	return pk, packets.ErrRejectPacket
}

// OnDisconnect ends the client's pipe; its worker finishes what is queued. Called on the
// client's read goroutine after its last OnPublish.
func (h *captureHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.mu.Lock()
	p := h.pipes[cl]
	delete(h.pipes, cl)
	h.mu.Unlock()
	if p != nil {
		close(p.ch)
	}
}

// OnWillSent captures a will message after mochi distributed it. There is nobody to ack, so
// a failure is only counted and logged.
func (h *captureHook) OnWillSent(cl *mqtt.Client, pk packets.Packet) {
	if h.c == nil || cl.Net.Inline {
		return
	}
	if pk.TopicName == "" || !h.b.access.allowed(cl, pk.TopicName, true) {
		return // a will dropped by aclHook.OnWill (empty topic), or denied: never captured
	}
	m := messageFromPacket(pk, cl.ID, string(cl.Properties.Username), time.Now())
	if err := h.captureBatch([]*Message{m})[0]; err != nil {
		h.failed(cl, m, err)
	}
}

func (h *captureHook) pipeFor(cl *mqtt.Client) *pipe {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.syn || h.closing {
		return nil
	}
	p := h.pipes[cl]
	if p == nil {
		p = &pipe{cl: cl, ch: make(chan *job, h.b.cfg.ReceiveMaximum)}
		h.pipes[cl] = p
		h.wg.Add(1)
		go h.run(p)
	}
	return p
}

func (h *captureHook) run(p *pipe) {
	defer h.wg.Done()
	batch := make([]*job, 0, maxBatch)
	ms := make([]*Message, 0, maxBatch)
	for j := range p.ch {
		batch = append(batch[:0], j)
	fill:
		for len(batch) < maxBatch {
			select {
			case j, ok := <-p.ch:
				if !ok {
					break fill
				}
				batch = append(batch, j)
			default:
				break fill
			}
		}
		ms = ms[:0]
		for _, j := range batch {
			ms = append(ms, j.m)
		}
		errs := h.captureBatch(ms)
		for i, j := range batch {
			h.complete(p, j, errs[i])
			p.pending.Add(-1)
		}
	}
}

// captureBatch returns one error per message.
func (h *captureHook) captureBatch(ms []*Message) []error {
	errs := make([]error, len(ms))
	if h.bc != nil {
		res := h.bc.CaptureBatch(h.b.ctx, ms)
		switch {
		case res == nil:
		case len(res) != len(ms):
			err := fmt.Errorf("capturer returned %d results for %d messages", len(res), len(ms))
			for i := range errs {
				errs[i] = err
			}
		default:
			copy(errs, res)
		}
		return errs
	}
	for i, m := range ms {
		errs[i] = h.c.Capture(h.b.ctx, m)
	}
	return errs
}

// captureInline captures a Broker.Publish message.
func (h *captureHook) captureInline(m *Message) error {
	if h.c == nil {
		return nil
	}
	if err := h.captureBatch([]*Message{m})[0]; err != nil {
		h.failures.Add(1)
		return err
	}
	return nil
}

// complete acks (or refuses) one captured message and distributes it when durable.
func (h *captureHook) complete(p *pipe, j *job, err error) {
	cl, pk := p.cl, j.pk
	qos := pk.FixedHeader.Qos
	if err != nil {
		h.failed(cl, j.m, err)
		if qos == 0 {
			return
		}
		if cl.Properties.ProtocolVersion < 5 {
			// 3.1.1 has no negative PUBACK: never ack what is not durable; the client
			// resends after it reconnects.
			cl.Stop(fmt.Errorf("capture failed: %w", err))
			return
		}
		code := packets.ErrUnspecifiedError
		if errors.Is(err, ErrQuotaExceeded) {
			code = packets.ErrQuotaExceeded
		}
		_ = cl.WritePacket(ackPacket(pk, code))
		return
	}
	// Durable now: distribute before acking. The ack is a write syscall on the publisher's
	// connection; done first, every delivery of a batch waited for the acks of all messages
	// before it (the larger part of the capture path's latency to local subscribers).
	if p.ch != nil { // nil: synchronous path, mochi distributes
		h.distribute(p, pk)
	}
	switch qos {
	case 1:
		_ = cl.WritePacket(ackPacket(pk, packets.CodeSuccess))
	case 2:
		ack := ackPacket(pk, packets.CodeSuccess)
		if trackPubrec(h.b.srv, cl, ack) && h.b.state != nil { // processPubrel completes the flow
			h.b.state.OnQosPublish(cl, ack, ack.Created, 0)
		}
		_ = cl.WritePacket(ack)
	}
}

func (h *captureHook) distribute(p *pipe, pk packets.Packet) {
	if p.shadow == nil {
		p.shadow = newShadowClient(h.b.srv, p.cl)
	}
	if err := injectAsShadow(h.b.srv, p.shadow, pk); err != nil {
		h.b.log.Debug("distribute captured message", "client", p.cl.ID, "topic", pk.TopicName, "error", err)
	}
}

func ackPacket(pk packets.Packet, code packets.Code) packets.Packet {
	typ := packets.Puback
	if pk.FixedHeader.Qos == 2 {
		typ = packets.Pubrec
	}
	ack := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: typ},
		PacketID:    pk.PacketID,
		ReasonCode:  code.Code,
		Created:     time.Now().Unix(),
	}
	if code.Code >= packets.ErrUnspecifiedError.Code {
		ack.Properties.ReasonString = code.Reason
	}
	return ack
}

func (h *captureHook) failed(cl *mqtt.Client, m *Message, err error) {
	h.failures.Add(1)
	if ok, n := h.failLog.Allow("capture"); ok {
		h.b.log.Warn("capture failed", "client", cl.ID, "topic", m.Topic, "qos", m.QoS, "error", err, "suppressed", n)
	}
}

// drain stops creating pipes, ends the remaining ones and waits up to d for their workers.
func (h *captureHook) drain(d time.Duration) {
	h.mu.Lock()
	h.closing = true
	pipes := h.pipes
	h.pipes = map[*mqtt.Client]*pipe{}
	h.mu.Unlock()
	for _, p := range pipes {
		close(p.ch)
	}
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		h.b.log.Warn("captures still pending at shutdown; cancelling them")
	}
}

func (h *captureHook) wait() { h.wg.Wait() }
