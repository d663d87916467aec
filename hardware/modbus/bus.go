package modbus

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/hardware/hwkit"
	"github.com/edged-dev/edged/internal/backoff"
	mb "github.com/simonvetter/modbus"
)

// Bus states in BusStatus.State.
const (
	StateOpen    = hwkit.StateOpen    // the link is open and units are polled
	StateWaiting = hwkit.StateWaiting // the serial device is absent; retrying with backoff
	StateError   = hwkit.StateError   // the last open failed or the link broke; retrying with backoff
	StateStopped = hwkit.StateStopped // Run has not started or has returned
)

// Unit states in UnitStatus.State.
const (
	UnitUnknown = "unknown" // not polled yet
	UnitOnline  = "online"
	UnitOffline = "offline" // offline_after polls failed in a row; probed with backoff
)

// Reasons in edged_modbus_dropped_total.
const (
	DropPublish       = "publish_error"  // Local.Publish failed for a value or a reply
	DropBusAway       = "bus_away"       // a write arrived while the bus is away and command_queue is 0
	DropQueueFull     = "queue_full"     // the oldest queued write made room for a new one
	DropExpired       = "expired"        // a queued write was older than command_max_age
	DropReplyOverflow = "reply_overflow" // write replies arrived faster than they could be published
	DropShutdown      = "shutdown"       // writes still queued when edged stopped
)

// Request results (label result of edged_modbus_requests_total).
const (
	resultOK        = "ok"
	resultTimeout   = "timeout"
	resultException = "exception"
	resultCRC       = "crc"
	resultProtocol  = "protocol" // a frame that is not the answer: wrong unit id, short, malformed
	resultError     = "error"
)

// BusStatus is one bus for `edged status` and the admin API.
type BusStatus struct {
	Name      string       `json:"name"`
	Kind      string       `json:"kind"` // rtu or tcp
	Path      string       `json:"path"` // device path last opened, or host:port
	State     string       `json:"state"`
	Requests  uint64       `json:"requests"`
	Published uint64       `json:"published"`
	Writes    uint64       `json:"writes"`
	Dropped   uint64       `json:"dropped"`
	Queued    int          `json:"queued"`
	Reopens   uint64       `json:"reopens"`
	Resyncs   uint64       `json:"resyncs"` // RTU line reopened after a timeout or garbled answer (see resync)
	LastError string       `json:"last_error,omitempty"`
	Since     time.Time    `json:"since"`
	Units     []UnitStatus `json:"units"`
}

// UnitStatus is one slave of a bus.
type UnitStatus struct {
	Name        string            `json:"name"`
	ID          int               `json:"id"`
	State       string            `json:"state"`
	Polls       uint64            `json:"polls"` // successful reads
	Timeouts    uint64            `json:"timeouts"`
	CRCErrors   uint64            `json:"crc_errors"`
	Protocol    uint64            `json:"protocol_errors"`      // answers that were not the answer (wrong unit id, short, malformed)
	Exceptions  map[string]uint64 `json:"exceptions,omitempty"` // by exception code
	Published   uint64            `json:"published"`
	Skipped     uint64            `json:"skipped"`       // polls skipped while the bus was behind
	FailedInRow int               `json:"failed_in_row"` // polls failed in a row
	LastError   string            `json:"last_error,omitempty"`
	LastOK      time.Time         `json:"last_ok,omitzero"`
}

type point struct {
	cfg        *PointConfig
	unit       *unit
	codec      codec
	addr       uint16
	topic      string
	cmdTopic   string
	replyTopic string
	qos        byte
	retain     bool
	rbe        rbe
	reqs       []*request // the requests that read it (one, unless its poll group overlaps)
}

type unit struct {
	name       string
	id         uint8
	points     []*point
	byName     map[string]*point
	cmdTopic   string
	replyTopic string

	// Owned by the bus goroutine.
	fails     int
	offline   bool
	notBefore time.Time // offline: next probe
}

type request struct {
	unit   *unit
	kind   string // register type
	addr   uint16
	qty    uint16
	every  time.Duration
	due    time.Time
	points []*point
}

type writeCmd struct {
	p     *point
	value any
	at    time.Time
	reply string
}

type reply struct {
	topic string
	point string
	unit  string
	err   error
	at    time.Time
}

// Bus is one configured bus; Run owns it.
type Bus struct {
	cfg    BusConfig
	local  Local
	log    *slog.Logger
	met    *metrics
	serial SerialLayer
	units  []*unit
	reqs   []*request

	replies chan reply

	link   hwkit.Link[writeCmd] // state, write queue and reopen loop; its lock guards st and unitSt too
	st     BusStatus            // the counters of status; the link's fields are copied in
	unitSt []UnitStatus
}

func newBus(cfg BusConfig, local Local, log *slog.Logger, met *metrics, sl SerialLayer) *Bus {
	b := &Bus{cfg: cfg, local: local, log: log, met: met, serial: sl,
		replies: make(chan reply, 64)}
	kind, path := "tcp", cfg.TCP
	if cfg.RTU != nil {
		kind, path = "rtu", cfg.RTU.Port
	}
	b.st = BusStatus{Name: cfg.Name, Kind: kind}
	b.link.Init(cfg.Name, "modbus", "bus", path, log, met.LinkMetrics)
	for i := range cfg.Units {
		uc := &cfg.Units[i]
		u := &unit{name: uc.Name, id: uint8(*uc.ID), byName: map[string]*point{}}
		if uc.CommandTopic != "" {
			u.cmdTopic = expand(uc.CommandTopic, cfg.Name, uc.Name, "")
			u.replyTopic = expand(uc.ReplyTopic, cfg.Name, uc.Name, "")
		}
		for j := range uc.Points {
			pc := &uc.Points[j]
			p := &point{cfg: pc, unit: u, codec: newCodec(pc), addr: uint16(*pc.Address),
				topic: expand(pc.Topic, cfg.Name, uc.Name, pc.Name), qos: *pc.QoS, retain: *pc.Retain,
				rbe: rbe{deadband: pc.Deadband, onChange: pc.OnChange, maxInterval: pc.MaxInterval}}
			if pc.CommandTopic != "" {
				p.cmdTopic = expand(pc.CommandTopic, cfg.Name, uc.Name, pc.Name)
				p.replyTopic = expand(pc.ReplyTopic, cfg.Name, uc.Name, pc.Name)
			}
			u.points = append(u.points, p)
			u.byName[pc.Name] = p
		}
		b.units = append(b.units, u)
		b.unitSt = append(b.unitSt, UnitStatus{Name: u.name, ID: int(u.id), State: UnitUnknown})
		met.online.WithLabelValues(cfg.Name, u.name).Set(0)
		met.published.WithLabelValues(cfg.Name, u.name)
	}
	b.reqs = plan(b.units)
	return b
}

// plan merges the points of each unit into as few read requests as possible: points of the same
// register type and poll interval whose addresses touch or overlap share one request, up to the
// protocol limit (125 registers, 2000 bits). Gaps are not bridged: reading an unmapped address
// makes many devices answer with an exception for the whole request.
func plan(units []*unit) []*request {
	var out []*request
	for _, u := range units {
		type key struct {
			kind  string
			every time.Duration
		}
		groups := map[key][]*point{}
		var keys []key
		for _, p := range u.points {
			k := key{p.cfg.Type, p.cfg.Poll}
			if _, ok := groups[k]; !ok {
				keys = append(keys, k)
			}
			groups[k] = append(groups[k], p)
		}
		for _, k := range keys {
			ps := groups[k]
			slices.SortStableFunc(ps, func(a, b *point) int { return int(a.addr) - int(b.addr) })
			limit := maxReadRegisters
			if k.kind == Coil || k.kind == DiscreteInput {
				limit = maxReadBits
			}
			var cur *request
			for _, p := range ps {
				end := int(p.addr) + p.cfg.Count
				if cur != nil && int(p.addr) <= int(cur.addr)+int(cur.qty) && end-int(cur.addr) <= limit {
					cur.qty = uint16(max(int(cur.qty), end-int(cur.addr)))
					cur.points = append(cur.points, p)
					p.reqs = append(p.reqs, cur)
					continue
				}
				cur = &request{unit: u, kind: k.kind, addr: p.addr, qty: uint16(p.cfg.Count), every: k.every, points: []*point{p}}
				p.reqs = append(p.reqs, cur)
				out = append(out, cur)
			}
		}
	}
	return out
}

func (b *Bus) status() BusStatus {
	l := &b.link
	l.Lock()
	defer l.Unlock()
	s := b.st
	s.Path, s.State, s.Since, s.LastError, s.Reopens, s.Dropped, s.Queued = l.Path, l.State, l.Since, l.LastError, l.Reopens, l.Dropped, l.Queue.Len()
	s.Units = make([]UnitStatus, len(b.unitSt))
	for i, u := range b.unitSt {
		u.Exceptions = maps(u.Exceptions)
		s.Units[i] = u
	}
	return s
}

func maps(m map[string]uint64) map[string]uint64 {
	if m == nil {
		return nil
	}
	c := make(map[string]uint64, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func (b *Bus) unitIndex(u *unit) int {
	for i, x := range b.units {
		if x == u {
			return i
		}
	}
	return -1
}

func (b *Bus) updUnit(u *unit, fn func(*UnitStatus)) {
	i := b.unitIndex(u)
	b.link.Lock()
	fn(&b.unitSt[i])
	b.link.Unlock()
}

// run opens the link, polls and reopens until ctx is done.
func (b *Bus) run(ctx context.Context) {
	var wg sync.WaitGroup
	replyCtx, stopReplies := context.WithCancel(context.Background())
	wg.Go(func() { b.replyLoop(replyCtx) })
	var unsubs []func()
	defer func() {
		for _, u := range unsubs {
			u()
		}
		b.link.Stop(DropShutdown)
		stopReplies()
		wg.Wait()
		b.link.Drop(DropShutdown, len(b.replies), errors.New("write replies not published before shutdown"))
		if b.serial != nil {
			b.serial.Release()
		}
	}()
	subscribed := false
	subscribe := func() {
		if subscribed {
			return
		}
		var got []func()
		var err error
		for _, u := range b.units {
			if u.cmdTopic != "" {
				var un func()
				if un, err = b.local.Subscribe(u.cmdTopic, b.onUnitCommand(u)); err != nil {
					break
				}
				got = append(got, un)
			}
			for _, p := range u.points {
				if p.cmdTopic == "" {
					continue
				}
				var un func()
				if un, err = b.local.Subscribe(p.cmdTopic, b.onPointCommand(p)); err != nil {
					break
				}
				got = append(got, un)
			}
			if err != nil {
				break
			}
		}
		if err != nil {
			for _, un := range got {
				un()
			}
			b.link.Warn("subscribe to command topics failed; retrying", err)
			return
		}
		unsubs, subscribed = got, true
	}

	var c *mb.ModbusClient
	b.link.Run(ctx, b.cfg.Reopen, hwkit.Device{
		Subscribe: subscribe,
		Open: func() (path string, err error) {
			c, path, err = b.open()
			return path, err
		},
		Absent: func(err error) bool { return b.serial != nil && b.serial.Absent(err) },
		Serve: func(ctx context.Context, _ string) (bool, error) {
			err := b.session(ctx, c)
			c.Close()
			return false, err
		},
		Down: func() { b.markAllStale(time.Now()) },
	})
}

// open creates and opens the library client. RTU devices are resolved (USB match) and opened
// through the serial layer, which keeps the fd below 1024 (see the package doc).
func (b *Bus) open() (*mb.ModbusClient, string, error) {
	libLog := log.New(slogWriter{b.log}, "", 0)
	if b.cfg.RTU == nil {
		c, err := mb.NewClient(&mb.ClientConfiguration{URL: "tcp://" + b.cfg.TCP, Timeout: b.cfg.Timeout, Logger: libLog})
		if err != nil {
			return nil, b.cfg.TCP, fmt.Errorf("modbus client %s: %w", b.cfg.TCP, err)
		}
		if err := c.Open(); err != nil {
			return nil, b.cfg.TCP, fmt.Errorf("connect %s: %w", b.cfg.TCP, err)
		}
		return c, b.cfg.TCP, nil
	}
	r := b.cfg.RTU
	path, err := b.serial.Resolve(r.Port, r.Match)
	if err != nil {
		return nil, path, err
	}
	parity := map[string]uint{"none": mb.PARITY_NONE, "even": mb.PARITY_EVEN, "odd": mb.PARITY_ODD}[r.Parity]
	stop, _ := strconv.Atoi(r.StopBits)
	c, err := mb.NewClient(&mb.ClientConfiguration{URL: "rtu://" + path, Speed: uint(r.Baud), DataBits: uint(r.DataBits),
		Parity: parity, StopBits: uint(stop), Timeout: b.cfg.Timeout, Logger: libLog})
	if err != nil {
		return nil, path, fmt.Errorf("modbus client %s: %w", path, err)
	}
	if err := b.openRTU(c); err != nil {
		return nil, path, fmt.Errorf("open %s: %w", path, err)
	}
	return c, path, nil
}

// openRTU opens an RTU client's device inside the serial layer's guard and refuses an fd the
// serial library cannot select on.
func (b *Bus) openRTU(c *mb.ModbusClient) error {
	return b.serial.Open(func() error {
		if err := c.Open(); err != nil {
			return err
		}
		if fd := clientFD(c); fd >= fdSetSize {
			c.Close()
			return fmt.Errorf("got fd %d >= %d, which the serial library cannot select on (too many open files; will retry)", fd, fdSetSize)
		}
		return nil
	})
}

// resync clears an RTU line after a timeout or a garbled answer. RTU answers carry no request
// id: the late answer of a request that timed out would otherwise be read as the answer to the
// next request, and with the same unit, function and length it would be accepted, publishing one
// point's registers as another's. The library flushes the line only after CRC and framing
// errors. So, as libmodbus does in its error recovery, wait one more timeout for a late answer
// to arrive, then close the device (the kernel drops what it holds) and open it again (the
// library discards what is still arriving). An answer later than twice the timeout is beyond
// any master: keep timeout above the slowest unit's answer time.
func (b *Bus) resync(ctx context.Context, c *mb.ModbusClient) error {
	c.Close()
	backoff.Sleep(ctx, b.cfg.Timeout)
	if err := b.openRTU(c); err != nil {
		return err
	}
	b.link.Lock()
	b.st.Resyncs++
	b.link.Unlock()
	return nil
}

// session polls and writes on an open link until ctx is done (nil) or the link fails.
func (b *Bus) session(ctx context.Context, c *mb.ModbusClient) (err error) {
	defer func() {
		// The serial library's select(2) panics on an fd >= 1024; never let one bus take edged
		// down (the open-time check should make this unreachable).
		if r := recover(); r != nil {
			err = fmt.Errorf("modbus library panicked: %v", r)
		}
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		b.expireQueue(time.Now())
		if cmd, ok := b.link.Pop(); ok {
			if err := b.write(ctx, c, cmd); err != nil {
				return err
			}
			continue
		}
		r, at := b.next()
		if r == nil {
			select {
			case <-ctx.Done():
			case <-b.link.Woken():
			}
			continue
		}
		if wait := time.Until(at); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
			case <-b.link.Woken():
			case <-timer.C:
			}
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			continue
		}
		if err := b.poll(ctx, c, r); err != nil {
			return err
		}
	}
	return nil
}

// next is the request due first; an offline unit's requests wait for its probe time.
func (b *Bus) next() (*request, time.Time) {
	var best *request
	var at time.Time
	for _, r := range b.reqs {
		t := r.due
		if r.unit.offline && r.unit.notBefore.After(t) {
			t = r.unit.notBefore
		}
		if best == nil || t.Before(at) {
			best, at = r, t
		}
	}
	return best, at
}

// classify sorts a library error: ok, timeout, exception (with code), crc or a link error.
func classify(err error) (result string, code int) {
	if err == nil {
		return resultOK, 0
	}
	var e mb.Error
	if errors.As(err, &e) {
		switch e {
		case mb.ErrRequestTimedOut:
			return resultTimeout, 0
		case mb.ErrBadCRC:
			return resultCRC, 0
		}
		if c, ok := exceptionCodes[e]; ok {
			return resultException, c
		}
		switch e {
		case mb.ErrBadUnitId, mb.ErrShortFrame, mb.ErrProtocolError, mb.ErrUnexpectedParameters, mb.ErrBadTransactionId:
			return resultProtocol, 0
		}
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return resultTimeout, 0
	}
	return resultError, 0
}

var exceptionCodes = map[mb.Error]int{
	mb.ErrIllegalFunction: 1, mb.ErrIllegalDataAddress: 2, mb.ErrIllegalDataValue: 3,
	mb.ErrServerDeviceFailure: 4, mb.ErrAcknowledge: 5, mb.ErrServerDeviceBusy: 6,
	mb.ErrMemoryParityError: 8, mb.ErrGWPathUnavailable: 10, mb.ErrGWTargetFailedToRespond: 11,
}

// linkBroken: errors after which the link cannot be trusted. I/O errors always; on TCP also a
// garbled frame (the stream lost its framing; a new connection resynchronises it). A timeout is
// not one: the unit may be silent while others answer (an RTU line, or units behind a TCP
// gateway), and the TCP transport skips late responses by transaction id. Nor is a garbled frame
// on RTU: typically the late answer of a unit that had timed out, read as the next unit's
// answer (wrong unit id); the library flushes the line after bad frames, and the request is
// retried. A TCP link on which every unit is offline is reconnected by poll, though: a
// half-open connection looks the same.
func (b *Bus) linkBroken(result string) bool {
	return result == resultError || (result == resultProtocol && b.cfg.RTU == nil)
}

func (b *Bus) allOffline() bool {
	for _, u := range b.units {
		if !u.offline {
			return false
		}
	}
	return true
}

// count records one request's result.
func (b *Bus) count(u *unit, result string, code int, err error) {
	b.met.requests.WithLabelValues(b.cfg.Name, u.name, result).Inc()
	if result == resultException {
		b.met.exceptions.WithLabelValues(b.cfg.Name, u.name, strconv.Itoa(code)).Inc()
	}
	b.link.Lock()
	b.st.Requests++
	b.link.Unlock()
	b.updUnit(u, func(s *UnitStatus) {
		switch result {
		case resultOK:
		case resultTimeout:
			s.Timeouts++
		case resultCRC:
			s.CRCErrors++
		case resultProtocol:
			s.Protocol++
		case resultException:
			if s.Exceptions == nil {
				s.Exceptions = map[string]uint64{}
			}
			s.Exceptions[strconv.Itoa(code)]++
		}
		if err != nil {
			s.LastError = err.Error()
		}
	})
}

// do runs one request with retries (none for an offline unit's probe).
func (b *Bus) do(ctx context.Context, c *mb.ModbusClient, u *unit, fn func() error) (result string, code int, err error) {
	attempts := 1 + *b.cfg.Retries
	if u.fails > 0 {
		// Already failing (or offline): one try, so a silent unit costs the bus one timeout.
		attempts = 1
	}
	for range attempts {
		err = fn()
		result, code = classify(err)
		b.count(u, result, code, err)
		if result != resultTimeout && result != resultCRC && result != resultProtocol {
			break
		}
		if b.linkBroken(result) {
			break
		}
		if b.cfg.RTU != nil && result != resultCRC {
			if rerr := b.resync(ctx, c); rerr != nil {
				return resultError, 0, fmt.Errorf("reopen after %s: %w", err, rerr) //nolint:errorlint // the reopen failure decides; the first error is context
			}
		}
	}
	return result, code, err
}

func (b *Bus) poll(ctx context.Context, c *mb.ModbusClient, r *request) error {
	u := r.unit
	if err := c.SetUnitId(u.id); err != nil {
		return fmt.Errorf("set unit id: %w", err)
	}
	var regs []uint16
	var bits []bool
	result, code, err := b.do(ctx, c, u, func() (err error) {
		switch r.kind {
		case Coil:
			bits, err = c.ReadCoils(r.addr, r.qty)
		case DiscreteInput:
			bits, err = c.ReadDiscreteInputs(r.addr, r.qty)
		case Holding:
			regs, err = c.ReadRegisters(r.addr, r.qty, mb.HOLDING_REGISTER)
		default:
			regs, err = c.ReadRegisters(r.addr, r.qty, mb.INPUT_REGISTER)
		}
		return err
	})
	now := time.Now() // the read time: when the response arrived (or did not)
	b.advance(r, now)
	switch result {
	case resultOK:
		b.unitAnswered(u, now)
		for _, p := range r.points {
			off := int(p.addr - r.addr)
			var v any
			var derr error
			if bits != nil {
				if off < len(bits) {
					v = bits[off]
				} else {
					derr = errors.New("short response")
				}
			} else if off+p.cfg.Count <= len(regs) {
				v, derr = p.codec.decodeRegisters(regs[off : off+p.cfg.Count])
			} else {
				derr = errors.New("short response")
			}
			if derr != nil {
				b.publish(p, nil, QualityBad, now)
				continue
			}
			if p.rbe.shouldPublish(v, now) {
				b.publish(p, v, QualityGood, now)
			}
		}
		b.updUnit(u, func(s *UnitStatus) { s.Polls++; s.LastOK = now })
	case resultException:
		// The unit is alive; these points cannot be read. Publish bad once per transition.
		b.unitAnswered(u, now)
		for _, p := range r.points {
			if p.rbe.lastQ != QualityBad {
				b.publish(p, nil, QualityBad, now)
			}
		}
		b.link.Warn("modbus exception response", err, "unit", u.name, "code", code, "address", r.addr)
	default:
		if b.linkBroken(result) {
			return fmt.Errorf("unit %s: %w", u.name, err)
		}
		b.unitFailed(u, now, err)
		// Its other requests due now would most likely time out too: skip this round of them
		// rather than spend a timeout each while the other units wait.
		for _, o := range b.reqs {
			if o.unit == u && o != r && !o.due.After(now) {
				b.advance(o, now)
			}
		}
		if b.cfg.RTU == nil && b.allOffline() {
			return fmt.Errorf("every unit is offline (last: %s: %w); reconnecting", u.name, err)
		}
	}
	return nil
}

// advance moves a request to its next slot, keeping its phase; slots that already passed are
// skipped (counted for units that answer: then the bus is overloaded).
func (b *Bus) advance(r *request, now time.Time) {
	if r.due.IsZero() {
		r.due = now
	}
	r.due = r.due.Add(r.every)
	if !r.due.After(now) {
		n := now.Sub(r.due)/r.every + 1
		r.due = r.due.Add(n * r.every)
		if r.unit.fails == 0 {
			b.met.skipped.WithLabelValues(b.cfg.Name, r.unit.name).Add(float64(n))
			b.updUnit(r.unit, func(s *UnitStatus) { s.Skipped += uint64(n) })
		}
	}
}

func (b *Bus) unitAnswered(u *unit, now time.Time) {
	wasOffline := u.offline
	u.fails, u.offline = 0, false
	b.met.online.WithLabelValues(b.cfg.Name, u.name).Set(1)
	b.updUnit(u, func(s *UnitStatus) { s.State, s.FailedInRow = UnitOnline, 0 })
	if wasOffline {
		b.log.Info("modbus unit back online", "unit", u.name)
		// Its requests' slots passed while it was away; poll them now, on a fresh phase.
		for _, r := range b.reqs {
			if r.unit == u && r.due.Before(now) {
				r.due = now
			}
		}
	}
}

func (b *Bus) unitFailed(u *unit, now time.Time, err error) {
	u.fails++
	if u.fails >= b.cfg.OfflineAfter {
		if !u.offline {
			b.log.Warn("modbus unit offline; probing with backoff", "unit", u.name, "failed_in_row", u.fails, "err", err)
			for _, p := range u.points {
				b.stale(p, now)
			}
		}
		u.offline = true
		u.notBefore = now.Add(backoff.Delay(b.cfg.OfflineBackoff.Min, b.cfg.OfflineBackoff.Max, u.fails-b.cfg.OfflineAfter+1))
		b.met.online.WithLabelValues(b.cfg.Name, u.name).Set(0)
	}
	b.updUnit(u, func(s *UnitStatus) {
		s.FailedInRow = u.fails
		if u.offline {
			s.State = UnitOffline
		}
	})
}

func (b *Bus) markAllStale(now time.Time) {
	for _, u := range b.units {
		for _, p := range u.points {
			b.stale(p, now)
		}
	}
}

// stale publishes the last value with quality stale, once per loss.
func (b *Bus) stale(p *point, now time.Time) {
	if p.rbe.has && p.rbe.lastQ == QualityGood {
		b.publish(p, p.rbe.last, QualityStale, now)
	}
}

func (b *Bus) publish(p *point, v any, q string, at time.Time) {
	payload, ctype := encodeSample(b.cfg.Format, v, at, q)
	m := message(p.topic, payload, ctype, p.qos, p.retain, b.cfg.Name, p.cfg.Unit, at)
	if err := b.local.Publish(m); err != nil {
		b.link.Drop(DropPublish, 1, err)
		return
	}
	p.rbe.published(v, q, at)
	b.met.published.WithLabelValues(b.cfg.Name, p.unit.name).Inc()
	b.link.Lock()
	b.st.Published++
	b.link.Unlock()
	b.updUnit(p.unit, func(s *UnitStatus) { s.Published++ })
}

// write performs one queued write; a non-nil error means the link broke.
func (b *Bus) write(ctx context.Context, c *mb.ModbusClient, w writeCmd) error {
	p, u := w.p, w.p.unit
	if err := c.SetUnitId(u.id); err != nil {
		return fmt.Errorf("set unit id: %w", err)
	}
	var fn func() error
	if p.cfg.Type == Coil {
		v, err := toBool(w.value)
		if err != nil {
			b.replyErr(w, "invalid", err)
			return nil
		}
		fn = func() error { return c.WriteCoil(p.addr, v) }
	} else {
		regs, err := p.codec.encodeRegisters(w.value)
		if err != nil {
			b.replyErr(w, "invalid", err)
			return nil
		}
		if len(regs) == 1 {
			fn = func() error { return c.WriteRegister(p.addr, regs[0]) }
		} else {
			fn = func() error { return c.WriteRegisters(p.addr, regs) }
		}
	}
	result, code, err := b.do(ctx, c, u, fn)
	b.met.writes.WithLabelValues(b.cfg.Name, u.name, result).Inc()
	b.link.Lock()
	b.st.Writes++
	b.link.Unlock()
	now := time.Now()
	switch result {
	case resultOK:
		b.unitAnswered(u, now)
		// Read it back now and publish the result whatever report-by-exception says.
		p.rbe.force = true
		for _, r := range p.reqs {
			r.due = now
		}
		b.sendReply(reply{topic: w.reply, point: p.cfg.Name, unit: u.name, at: now})
	case resultException:
		b.unitAnswered(u, now)
		b.sendReply(reply{topic: w.reply, point: p.cfg.Name, unit: u.name, err: &exceptionError{code: code, err: err}, at: now})
	default:
		b.sendReply(reply{topic: w.reply, point: p.cfg.Name, unit: u.name, err: err, at: now})
		if b.linkBroken(result) {
			return fmt.Errorf("write %s/%s: %w", u.name, p.cfg.Name, err)
		}
		b.unitFailed(u, now, err)
	}
	return nil
}

type exceptionError struct {
	code int
	err  error
}

func (e *exceptionError) Error() string { return e.err.Error() }
func (e *exceptionError) Unwrap() error { return e.err }

func (b *Bus) replyErr(w writeCmd, result string, err error) {
	b.met.writes.WithLabelValues(b.cfg.Name, w.p.unit.name, result).Inc()
	b.sendReply(reply{topic: w.reply, point: w.p.cfg.Name, unit: w.p.unit.name, err: err, at: time.Now()})
}

// sendReply hands a reply to the reply goroutine; replies are never published from the
// broker's subscriber callback or allowed to block polling.
func (b *Bus) sendReply(r reply) {
	if r.topic == "" {
		return
	}
	select {
	case b.replies <- r:
	default:
		b.link.Drop(DropReplyOverflow, 1, fmt.Errorf("reply to %s dropped: %d replies waiting", r.topic, cap(b.replies)))
	}
}

func (b *Bus) replyLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-b.replies:
			payload := replyPayload(r)
			m := message(r.topic, payload, "application/json", 1, false, b.cfg.Name, "", r.at)
			if err := b.local.Publish(m); err != nil {
				b.link.Drop(DropPublish, 1, err)
			}
		}
	}
}

// --- commands -------------------------------------------------------------------------------

func (b *Bus) onPointCommand(p *point) func(*broker.Message) {
	return func(m *broker.Message) {
		v, err := parsePointCommand(m.Payload)
		if err != nil {
			b.replyErr(writeCmd{p: p, reply: p.replyTopic}, "invalid", err)
			return
		}
		b.enqueue(writeCmd{p: p, value: v, at: time.Now(), reply: p.replyTopic})
	}
}

func (b *Bus) onUnitCommand(u *unit) func(*broker.Message) {
	return func(m *broker.Message) {
		name, v, err := parseUnitCommand(m.Payload)
		var p *point
		if err == nil {
			if p = u.byName[name]; p == nil || !p.cfg.Writable {
				err = fmt.Errorf("no writable point %q on unit %s", name, u.name)
			}
		}
		if err != nil {
			b.met.writes.WithLabelValues(b.cfg.Name, u.name, "invalid").Inc()
			b.sendReply(reply{topic: u.replyTopic, point: name, unit: u.name, err: err, at: time.Now()})
			return
		}
		b.enqueue(writeCmd{p: p, value: v, at: time.Now(), reply: u.replyTopic})
	}
}

// enqueue queues a write and wakes the bus; it never blocks the broker.
func (b *Bus) enqueue(w writeCmd) {
	dropped, why, _ := b.link.Push(w, *b.cfg.CommandQueue)
	if why != hwkit.Kept {
		reason := DropQueueFull
		if why == hwkit.RefusedAway {
			reason = DropBusAway
		}
		err := fmt.Errorf("write not sent: %s", reason)
		b.link.Drop(reason, 1, err)
		b.replyErr(dropped, "dropped", err)
	}
}

func (b *Bus) expireQueue(now time.Time) {
	expired := b.link.Expire(func(w writeCmd) bool { return now.Sub(w.at) <= b.cfg.CommandMaxAge })
	for _, w := range expired {
		err := fmt.Errorf("write older than command_max_age %v", b.cfg.CommandMaxAge)
		b.link.Drop(DropExpired, 1, err)
		b.replyErr(w, "expired", err)
	}
}

// slogWriter sends the library's own log lines to slog at debug level: it logs every timeout
// and exception, which edged already counts and reports at a rate limit.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug("modbus library", "msg", string(p))
	return len(p), nil
}
