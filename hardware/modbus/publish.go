package modbus

import (
	"encoding/json"
	"math"
	"strconv"
	"time"

	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/wire"
	"github.com/fxamacker/cbor/v2"
)

// Qualities of a published value ("q").
const (
	QualityGood  = "good"  // read now
	QualityBad   = "bad"   // the unit answered with an exception, or the registers hold no number (NaN)
	QualityStale = "stale" // the unit or the bus stopped answering; v is the last value read
)

// User property keys set on every published value.
const (
	PropBus  = "bus"
	PropTime = broker.TimeProp // capture time, Unix milliseconds (the broker strips it into Message.Time)
	PropUnit = "unit"          // engineering unit, when configured
)

// sample is the published document. Field order is the wire order.
type sample struct {
	V any    `json:"v" cbor:"v"`
	T int64  `json:"t" cbor:"t"`
	Q string `json:"q" cbor:"q"`
}

var cborEnc = func() cbor.EncMode {
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic(err) // static options
	}
	return em
}()

// encodeSample renders a sample in the bus format. A float that JSON cannot carry (NaN, ±Inf)
// is published as null with quality bad, in both formats, so consumers see one rule.
func encodeSample(format string, v any, at time.Time, q string) (payload []byte, ctype string) {
	if f, ok := v.(float64); ok && (math.IsNaN(f) || math.IsInf(f, 0)) {
		v, q = nil, QualityBad
	}
	s := sample{V: v, T: at.UnixMilli(), Q: q}
	if format == "cbor" {
		b, err := cborEnc.Marshal(s)
		if err != nil {
			b, _ = cborEnc.Marshal(sample{T: s.T, Q: QualityBad})
		}
		return b, "application/cbor"
	}
	b, err := json.Marshal(s)
	if err != nil {
		b, _ = json.Marshal(sample{T: s.T, Q: QualityBad})
	}
	return b, "application/json"
}

// rbe is a point's report-by-exception state; owned by the bus goroutine.
type rbe struct {
	deadband    *Deadband
	onChange    bool
	maxInterval time.Duration

	has     bool // something was published
	last    any  // last published value (good quality)
	lastQ   string
	lastPub time.Time
	force   bool // publish the next good read whatever it is (read-back after a write)
}

// shouldPublish decides for a good read. Without deadband and on_change every read is published.
func (r *rbe) shouldPublish(v any, now time.Time) bool {
	if !r.has || r.lastQ != QualityGood || r.force {
		return true
	}
	if r.deadband == nil && !r.onChange {
		return true
	}
	if r.maxInterval > 0 && now.Sub(r.lastPub) >= r.maxInterval {
		return true
	}
	if r.deadband != nil {
		a, okA := number(r.last)
		b, okB := number(v)
		if !okA || !okB {
			return a != b || okA != okB
		}
		if math.IsNaN(a) != math.IsNaN(b) {
			return true
		}
		limit := r.deadband.Value
		if r.deadband.Percent {
			limit = math.Abs(a) * r.deadband.Value / 100
		}
		return math.Abs(b-a) > limit
	}
	return !equal(r.last, v)
}

func (r *rbe) published(v any, q string, now time.Time) {
	r.has, r.lastQ, r.lastPub, r.force = true, q, now, false
	if q == QualityGood {
		r.last = v
	}
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case int64:
		return float64(x), true
	case uint64:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

func equal(a, b any) bool {
	fa, okA := a.(float64)
	fb, okB := b.(float64)
	if okA && okB && math.IsNaN(fa) && math.IsNaN(fb) {
		return true
	}
	return a == b
}

func message(topic string, payload []byte, ctype string, qos byte, retain bool, bus, unit string, at time.Time) *broker.Message {
	m := &broker.Message{
		Topic: topic, Payload: payload, QoS: qos, Retain: retain,
		ClientID: "modbus-" + bus, ContentType: ctype, Inline: true, Time: at,
		UserProps: []wire.UserProp{
			{Key: PropBus, Value: bus},
			{Key: PropTime, Value: strconv.FormatInt(at.UnixMilli(), 10)},
		},
	}
	if unit != "" {
		m.UserProps = append(m.UserProps, wire.UserProp{Key: PropUnit, Value: unit})
	}
	return m
}
