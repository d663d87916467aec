package hardware

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/hardware/hwkit"
	"github.com/edged-dev/edged/wire"
	"go.bug.st/serial"
)

// Port states in PortStatus.State.
const (
	StateOpen    = hwkit.StateOpen    // the port is open and being read
	StateWaiting = hwkit.StateWaiting // the device is absent (path missing, no USB match); retrying with backoff
	StateError   = hwkit.StateError   // the last open failed or the open port failed; retrying with backoff
	StateStopped = hwkit.StateStopped // Run has not started or has returned
)

// PortStatus is one port's state for `edged status` and the admin API.
type PortStatus struct {
	Name      string    `json:"name"`
	Path      string    `json:"path"` // device path last opened (or configured)
	State     string    `json:"state"`
	FramesIn  uint64    `json:"frames_in"`  // frames published
	FramesOut uint64    `json:"frames_out"` // commands written
	BytesIn   uint64    `json:"bytes_in"`
	BytesOut  uint64    `json:"bytes_out"`
	Invalid   uint64    `json:"invalid"` // frames rejected (all reasons)
	Dropped   uint64    `json:"dropped"` // frames or commands lost (all reasons)
	Queued    int       `json:"queued"`  // commands waiting to be written
	Reopens   uint64    `json:"reopens"` // opens after the first
	LastError string    `json:"last_error,omitempty"`
	Since     time.Time `json:"since"` // when State was entered
	// LastFrame previews the last frame published (text as is, anything else as hex; at most
	// 64 bytes), so a technician sees what the device says; LastFrameAt is its capture time.
	LastFrame   string    `json:"last_frame,omitempty"`
	LastFrameAt time.Time `json:"last_frame_at,omitzero"`
}

// framePreview renders at most 64 bytes of a frame for status: printable ASCII as text, else hex.
func framePreview(b []byte) string {
	const max = 64
	cut := b
	if len(cut) > max {
		cut = cut[:max]
	}
	for _, c := range cut {
		if c < 0x20 || c > 0x7e {
			s := fmt.Sprintf("%x", cut)
			if len(b) > max {
				s += "…"
			}
			return "hex " + s
		}
	}
	if len(b) > max {
		return string(cut) + "…"
	}
	return string(cut)
}

type queuedCmd struct {
	payload []byte
	at      time.Time
}

// port is one configured serial device; run owns it.
type port struct {
	cfg    SerialConfig
	local  Local
	log    *slog.Logger
	met    *metrics
	opener opener
	codec  codec
	framer *framer

	reserved []int // low fds held for the next open (see package doc)

	link hwkit.Link[queuedCmd] // state, queue and reopen loop; its lock guards st too
	st   PortStatus            // the counters of status; the link's fields are copied in
}

func newPort(cfg SerialConfig, local Local, log *slog.Logger, met *metrics, op opener) *port {
	p := &port{
		cfg: cfg, local: local, log: log, met: met, opener: op,
		codec: newCodec(&cfg), framer: newFramer(&cfg),
		reserved: reserveFDs(fdsPerPort),
	}
	p.st = PortStatus{Name: cfg.Name}
	p.link.Init(cfg.Name, "serial", "port", cfg.Port, log, met.LinkMetrics)
	// Materialise the series so dashboards see 0 rather than nothing.
	met.framesIn.WithLabelValues(cfg.Name)
	met.framesOut.WithLabelValues(cfg.Name)
	return p
}

func (p *port) status() PortStatus {
	l := &p.link
	l.Lock()
	defer l.Unlock()
	s := p.st
	s.Path, s.State, s.Since, s.LastError, s.Reopens, s.Dropped, s.Queued = l.Path, l.State, l.Since, l.LastError, l.Reopens, l.Dropped, l.Queue.Len()
	return s
}

// run resolves, opens, serves and reopens the port until ctx is done.
func (p *port) run(ctx context.Context) {
	defer func() {
		p.link.Stop(DropShutdown)
		openMu.Lock()
		releaseFDs(p.reserved)
		p.reserved = nil
		openMu.Unlock()
	}()
	var unsubscribe func()
	defer func() {
		if unsubscribe != nil {
			unsubscribe()
		}
	}()
	var sp serial.Port
	p.link.Run(ctx, p.cfg.Reopen, hwkit.Device{
		Subscribe: func() {
			if p.cfg.CommandTopic == "" || unsubscribe != nil {
				return
			}
			u, err := p.local.Subscribe(p.cfg.CommandTopic, p.onCommand)
			if err != nil {
				p.link.Warn("subscribe to command topic failed; retrying", err, "topic", p.cfg.CommandTopic)
				return
			}
			unsubscribe = u
		},
		Open: func() (path string, err error) {
			path, sp, err = p.open()
			return path, err
		},
		Absent: isAbsent,
		Serve: func(ctx context.Context, path string) (bool, error) {
			got, err := p.session(ctx, sp, path)
			if cerr := p.opener.close(sp, &p.reserved); cerr != nil && err == nil && ctx.Err() == nil {
				err = fmt.Errorf("close %s: %w", path, cerr)
			}
			if err == nil {
				err = errors.New("port closed")
			}
			return got, err
		},
		OpenAttrs: []any{"baud", p.cfg.Baud},
	})
}

// open resolves the device (re-running the USB match every time) and opens it.
func (p *port) open() (string, serial.Port, error) {
	path := p.cfg.Port
	if p.cfg.Match != nil {
		var err error
		if path, err = resolveMatch(p.cfg.Match); err != nil {
			return "", nil, err
		}
	}
	sp, err := p.opener.open(path, p.cfg.mode(), &p.reserved)
	if err != nil {
		return path, nil, fmt.Errorf("open %s: %w", path, err)
	}
	return path, sp, nil
}

// isAbsent tells a missing device (wait for it) from a real failure.
func isAbsent(err error) bool {
	var pe *serial.PortError
	if errors.As(err, &pe) && pe.Code() == serial.PortNotFound {
		return true
	}
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNoDevice)
}

// session serves an open port: a reader goroutine publishes frames while this goroutine writes
// queued commands. It returns when ctx is done (nil) or the port fails, after the reader stopped;
// got reports whether any byte was read. The caller closes the port.
func (p *port) session(ctx context.Context, sp serial.Port, path string) (got bool, err error) {
	readErr := make(chan error, 1)
	var gotBytes bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		readErr <- p.readLoop(sp, path, &gotBytes)
	}()
	defer func() {
		// Unblock and reap the reader: closing the port makes Read return PortClosed. The caller
		// closes it again through the opener (idempotent) to refill the fd reserve.
		sp.Close()
		<-done
		got = gotBytes
	}()
	p.expireQueue(time.Now())
	for {
		for {
			cmd, ok := p.link.Pop()
			if !ok {
				break
			}
			if err := p.write(sp, cmd.payload); err != nil {
				return false, fmt.Errorf("write %s: %w", path, err)
			}
		}
		select {
		case <-ctx.Done():
			return false, nil
		case err := <-readErr:
			return false, err
		case <-p.link.Woken():
		}
	}
}

// readLoop reads until the port fails. A panic inside go.bug.st/serial (fd >= 1024) becomes an
// error, so one port cannot take edged down.
func (p *port) readLoop(sp serial.Port, path string, got *bool) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("read %s: serial library panicked (fd >= %d?): %v", path, fdSetSize, r)
		}
	}()
	dec := p.codec.newDecoder()
	var seen wire.DropStats
	buf := make([]byte, 4096)
	for {
		n, rerr := sp.Read(buf)
		if n > 0 {
			*got = true
			now := time.Now()
			p.met.bytesIn.WithLabelValues(p.cfg.Name).Add(float64(n))
			p.link.Lock()
			p.st.BytesIn += uint64(n)
			p.link.Unlock()
			dec.Feed(buf[:n], func(frame []byte) { p.onFrame(frame, now) })
			if d := dec.Dropped(); d != seen {
				p.invalid(ReasonOversize, d.Oversize-seen.Oversize)
				p.invalid(ReasonMalformed, d.Malformed-seen.Malformed)
				seen = d
			}
		}
		if rerr != nil {
			return fmt.Errorf("read %s: %w", path, rerr)
		}
		// n == 0 && rerr == nil is go.bug.st/serial's read timeout: just read again.
	}
}

func (p *port) onFrame(frame []byte, now time.Time) {
	msg, reason, errMsg := p.framer.build(frame, now)
	if reason != "" {
		p.invalid(reason, 1)
		if errMsg != nil {
			if err := p.local.Publish(errMsg); err != nil {
				p.link.Drop(DropPublish, 1, err)
			}
		}
		return
	}
	if err := p.local.Publish(msg); err != nil {
		p.link.Drop(DropPublish, 1, err)
		return
	}
	p.met.framesIn.WithLabelValues(p.cfg.Name).Inc()
	preview := framePreview(frame)
	p.link.Lock()
	p.st.FramesIn++
	p.st.LastFrame, p.st.LastFrameAt = preview, now
	p.link.Unlock()
}

func (p *port) invalid(reason string, n uint64) {
	if n == 0 {
		return
	}
	p.met.invalid.WithLabelValues(p.cfg.Name, reason).Add(float64(n))
	p.link.Lock()
	p.st.Invalid += n
	p.link.Unlock()
	p.log.Debug("serial frame rejected", "reason", reason, "count", n)
}

// onCommand is called by the broker for every message on command_topic: queue and wake the
// session; never block the broker on a slow port.
func (p *port) onCommand(m *broker.Message) {
	c := queuedCmd{payload: bytes.Clone(m.Payload), at: time.Now()}
	_, why, waiting := p.link.Push(c, *p.cfg.CommandQueue)
	switch why {
	case hwkit.RefusedAway:
		p.link.Drop(DropPortAway, 1, errors.New("command not written: the port is away and command_queue is 0"))
	case hwkit.DroppedOldest:
		p.link.Drop(DropQueueFull, 1, fmt.Errorf("oldest queued command dropped: %d commands waiting for the port", waiting))
	}
}

// expireQueue drops commands that waited longer than command_max_age for the port.
func (p *port) expireQueue(now time.Time) {
	n := len(p.link.Expire(func(c queuedCmd) bool { return now.Sub(c.at) <= p.cfg.CommandMaxAge }))
	p.link.Drop(DropExpired, n, fmt.Errorf("%d queued commands older than %v", n, p.cfg.CommandMaxAge))
}

func (p *port) write(sp serial.Port, payload []byte) error {
	frame, err := p.codec.encode(payload)
	if err != nil {
		p.link.Drop(DropUnframeable, 1, err)
		return nil
	}
	for off := 0; off < len(frame); {
		n, err := sp.Write(frame[off:])
		if err != nil {
			p.link.Drop(DropWrite, 1, err)
			return err
		}
		if n == 0 {
			p.link.Drop(DropWrite, 1, errors.New("short write"))
			return errors.New("short write")
		}
		off += n
	}
	p.met.framesOut.WithLabelValues(p.cfg.Name).Inc()
	p.met.bytesOut.WithLabelValues(p.cfg.Name).Add(float64(len(frame)))
	p.link.Lock()
	p.st.FramesOut++
	p.st.BytesOut += uint64(len(frame))
	p.link.Unlock()
	return nil
}
