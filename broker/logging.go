package broker

import (
	"context"
	"log/slog"
	"time"

	"github.com/edged-dev/edged/internal/ratelog"
)

// mochiLogHandler adapts mochi's logging to edged's: mochi's INFO lifecycle chatter becomes
// DEBUG (edged logs its own lifecycle), its per-message WARN/ERROR lines (one per dropped
// message, one per refused connection) are rate-limited per message text with a "suppressed"
// count, and packet dumps (which carry payloads) are left out of WARN/ERROR records.
type mochiLogHandler struct {
	next slog.Handler
	lim  *ratelog.Keyed
}

func newMochiLogHandler(next slog.Handler) *mochiLogHandler {
	return &mochiLogHandler{next: next, lim: ratelog.NewKeyed(10*time.Second, 1000)}
}

func demote(l slog.Level) slog.Level {
	if l < slog.LevelWarn {
		return slog.LevelDebug
	}
	return l
}

func (h *mochiLogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, demote(l))
}

func (h *mochiLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "publish packet rejected" {
		return nil // the capture pipeline's normal path, once per message
	}
	level := demote(r.Level)
	if !h.next.Enabled(ctx, level) {
		return nil
	}
	out := slog.NewRecord(r.Time, level, r.Message, r.PC)
	if level >= slog.LevelWarn {
		ok, n := h.lim.Allow(r.Message)
		if !ok {
			return nil
		}
		if n > 0 {
			out.AddAttrs(slog.Int("suppressed", n))
		}
	}
	r.Attrs(func(a slog.Attr) bool {
		if level >= slog.LevelWarn && (a.Key == "pk" || a.Key == "packet") {
			return true
		}
		out.AddAttrs(a)
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h *mochiLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &mochiLogHandler{next: h.next.WithAttrs(as), lim: h.lim}
}

func (h *mochiLogHandler) WithGroup(name string) slog.Handler {
	return &mochiLogHandler{next: h.next.WithGroup(name), lim: h.lim}
}
