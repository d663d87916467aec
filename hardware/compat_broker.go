package hardware

// TEMPORARY: stands in for broker.Message until package broker lands; then this file becomes
// `type message = broker.Message` and Local takes *broker.Message (docs/contracts.md).

import (
	"time"

	"github.com/edged-dev/edged/wire"
)

type message struct {
	Topic       string
	Payload     []byte
	QoS         byte
	Retain      bool
	ClientID    string
	Username    string
	UserProps   []wire.UserProp
	ContentType string
	Inline      bool
	Time        time.Time
}
