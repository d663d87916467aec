package main

import (
	"context"
	"log/slog"
	"slices"
)

// uniqueAttrs keeps the attributes added by Logger.With itself, so that a key set twice (our
// component=broker, then the broker's own component=mochi for mochi's lines) is written once,
// with the innermost value. slog's handlers append instead: JSON with the key twice, which log
// shippers resolve differently. Groups flush the kept attributes to the wrapped handler, as
// keys inside a group cannot collide with those outside it.
type uniqueAttrs struct {
	h     slog.Handler
	attrs []slog.Attr
}

func newUniqueAttrs(h slog.Handler) slog.Handler { return &uniqueAttrs{h: h} }

func (u *uniqueAttrs) Enabled(ctx context.Context, l slog.Level) bool { return u.h.Enabled(ctx, l) }

func (u *uniqueAttrs) WithAttrs(as []slog.Attr) slog.Handler {
	out := slices.Clone(u.attrs)
	for _, a := range as {
		if i := slices.IndexFunc(out, func(b slog.Attr) bool { return b.Key == a.Key }); i >= 0 {
			out = slices.Delete(out, i, i+1)
		}
		out = append(out, a)
	}
	return &uniqueAttrs{h: u.h, attrs: out}
}

func (u *uniqueAttrs) WithGroup(name string) slog.Handler {
	if name == "" {
		return u
	}
	h := u.h
	if len(u.attrs) > 0 {
		h = h.WithAttrs(u.attrs)
	}
	return &uniqueAttrs{h: h.WithGroup(name)}
}

func (u *uniqueAttrs) Handle(ctx context.Context, r slog.Record) error {
	if len(u.attrs) == 0 {
		return u.h.Handle(ctx, r)
	}
	nr := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	nr.AddAttrs(u.attrs...)
	r.Attrs(func(a slog.Attr) bool { nr.AddAttrs(a); return true })
	return u.h.Handle(ctx, nr)
}
