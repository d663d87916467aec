package storage

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// badgerLogger routes badger's printf logging to slog. badger reports some damage only through
// its log (a compaction that fails on a bad block, a value-log or table read error, a WAL it
// truncates), often at Info or Warning level: every line that names damage or a failure goes
// out at ERROR and is counted in edged_storage_badger_errors_total, whatever level badger gave
// it; Errorf lines too. Everything else (progress, compaction chatter) is DEBUG, except
// warnings, which stay WARN. Damage lines are rate-limited to one per second per kind of line
// (badger's format string), with the number suppressed: a bad block hit by a compaction loop
// must not flood the log, nor hide a different problem.
type badgerLogger struct {
	l  *slog.Logger
	in *integrity // nil: not counted (tuneBadger's default, replaced by openBadger)
}

func newBadgerLogger(l *slog.Logger, in *integrity) badgerLogger { return badgerLogger{l: l, in: in} }

func (in *integrity) badgerLogger(l *slog.Logger) badgerLogger { return newBadgerLogger(l, in) }

// damageWords mark a badger log line as damage or failure (matched lower-case).
var damageWords = []string{"truncat", "corrupt", "checksum", "mismatch", "invalid", "damag",
	"unexpected eof", "failed", "error", "err:", "cannot", "unable", "panic"}

func isDamageLine(s string) bool {
	s = strings.ToLower(s)
	for _, w := range damageWords {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

func (b badgerLogger) damage(level, f string, a []any) {
	msg := strings.TrimSpace(fmt.Sprintf(f, a...))
	if b.in == nil {
		b.l.Error(msg, "badger_level", level)
		return
	}
	b.in.badgerErrors.Inc()
	if ok, more := b.in.limits.Limit("badger\x00"+f).Allow(time.Second, 1); ok {
		b.l.Error(msg, "badger_level", level, "suppressed_since_last_log", more)
	}
}

func (b badgerLogger) Errorf(f string, a ...any) { b.damage("error", f, a) }

func (b badgerLogger) Warningf(f string, a ...any) {
	if isDamageLine(f) || isDamageLine(fmt.Sprint(a...)) {
		b.damage("warning", f, a)
		return
	}
	b.l.Warn(strings.TrimSpace(fmt.Sprintf(f, a...)))
}

func (b badgerLogger) Infof(f string, a ...any) {
	if isDamageLine(f) || isDamageLine(fmt.Sprint(a...)) {
		b.damage("info", f, a)
		return
	}
	if b.l.Enabled(context.Background(), slog.LevelDebug) {
		b.l.Debug(strings.TrimSpace(fmt.Sprintf(f, a...)))
	}
}

func (b badgerLogger) Debugf(f string, a ...any) {
	if b.l.Enabled(context.Background(), slog.LevelDebug) {
		b.l.Debug(strings.TrimSpace(fmt.Sprintf(f, a...)))
	}
}
