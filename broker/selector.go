package broker

// CaptureSelector is an optional extension of Capturer. Captures(topic) == false promises that
// Capture of a network client's message on topic would store nothing and return nil; the
// broker then lets mochi ack and distribute that message on the client's read goroutine, as a
// plain broker does, instead of queueing it on the client's capture pipe (one goroutine hop,
// which showed as most of the extra tail latency at paced load).
//
// Order per client is kept: the shortcut is only taken while the client's pipe holds nothing
// (every earlier message of the client was acked and distributed already); otherwise the
// message queues behind them as before.
type CaptureSelector interface {
	Captures(topic string) bool
}

// shortcut reports whether a network client's PUBLISH on topic may skip the capture pipe.
// Called on the client's read goroutine (the only one that queues onto its pipe), so a pipe
// that is idle here stays idle until this message was handled.
func (h *captureHook) shortcut(p *pipe, topic string) bool {
	if h.sel == nil || (p != nil && p.pending.Load() != 0) {
		return false
	}
	return !h.sel.Captures(topic)
}
