package bridge

// Captures implements broker.CaptureSelector: it reports whether CaptureBatch would store a
// message that a network client published on topic, i.e. whether any connector has a forward
// rule matching it. (Origin loop prevention only concerns inline messages, which the broker
// never asks about.) When it says false the broker acks and distributes the message itself,
// without a trip through the client's capture pipe: the local-only traffic of a gateway
// (sensors to a dashboard on the same box) then costs what it costs in a plain broker.
func (b *Bridge) Captures(topic string) bool {
	for _, f := range b.fwds {
		for _, r := range f.forward {
			if _, ok := r.match(topic); ok {
				return true
			}
		}
	}
	return false
}
