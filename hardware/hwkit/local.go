package hwkit

import "github.com/edged-dev/edged/broker"

// Local is the in-process broker client serial ports and Modbus buses publish into and take
// commands from (broker.Broker implements it: inline publish, no TCP).
type Local interface {
	Publish(*broker.Message) error
	Subscribe(filter string, fn func(*broker.Message)) (unsubscribe func(), err error)
}
