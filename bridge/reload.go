package bridge

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/edged-dev/edged/internal/redact"
	"github.com/edged-dev/edged/internal/runset"
	"github.com/edged-dev/edged/storage"
)

// reloadState is the running set of forwarders and what Run and Reload share to start and
// stop them one by one.
type reloadState struct {
	cur atomic.Pointer[[]*forwarder] // read by every capture: swapped whole, never changed in place

	mu    sync.Mutex             // serialises Reload and the start of Run
	run   runset.Set[*forwarder] // once Run is over, Reload starts nothing more
	built map[*forwarder]builtFrom
}

// builtFrom is the config a forwarder was built from and the digest of its secret files then.
type builtFrom struct {
	src   ConnectorConfig
	print [32]byte
}

func (b *Bridge) forwarders() []*forwarder {
	if p := b.rl.cur.Load(); p != nil {
		return *p
	}
	return nil
}

// setForwarders installs New's forwarders, built from srcs (same order).
func (b *Bridge) setForwarders(fs []*forwarder, srcs []ConnectorConfig) {
	fs = append([]*forwarder(nil), fs...)
	b.rl.cur.Store(&fs)
	b.rl.mu.Lock()
	defer b.rl.mu.Unlock()
	b.rl.built = map[*forwarder]builtFrom{}
	for i, f := range fs {
		b.rl.built[f] = builtFrom{src: srcs[i], print: secretFilesPrint(srcs[i])}
	}
}

// runAll runs every current forwarder, and those Reload adds, until ctx is done.
func (b *Bridge) runAll(ctx context.Context) {
	b.rl.run.Run(ctx, &b.rl.mu, func() {
		for _, f := range b.forwarders() {
			b.rl.run.Start(f, f.run)
		}
	})
}

// ReloadResult says what Reload did with the connectors, by name.
type ReloadResult struct {
	Added   []string `json:"added,omitempty"`
	Removed []string `json:"removed,omitempty"` // their outboxes stay in the store, orphaned
	Changed []string `json:"changed,omitempty"` // restarted with the new config, same outbox
	// Failed are connectors the new config could not build (e.g. an unreadable secret file);
	// they keep running with their old config, or are not started if they are new.
	Failed []string `json:"failed,omitempty"`
}

// Reload applies a new connector list: an unchanged connector keeps running (its outbox
// limits take the new storage defaults at once); a changed one (config or the contents of a
// secret file) is stopped and started again with the new config on the same outbox; an added
// one starts; a removed one stops and its outbox is kept, marked not configured, until it is
// purged on purpose. The new rules are in force for every capture that starts after the swap.
// Nothing queued is lost or re-queued: outboxes are never reopened, and a batch in flight when
// its forwarder stops is read again by the next one. cs must have been validated.
func (b *Bridge) Reload(cs []ConnectorConfig, defaults storage.Config) (ReloadResult, error) {
	var res ReloadResult
	if err := ValidateAll(cs); err != nil {
		return res, fmt.Errorf("bridge: %w", err)
	}
	if len(cs) > 0 && b.opts.DB == nil {
		return res, errors.New("bridge: reload: no storage DB")
	}
	b.rl.mu.Lock()
	defer b.rl.mu.Unlock()
	b.opts.Defaults = defaults
	old := b.forwarders()
	byName := map[string]*forwarder{}
	for _, f := range old {
		byName[f.cfg.Name] = f
	}
	var (
		next     []*forwarder
		start    []*forwarder
		replaced []*forwarder
		errs     []error
	)
	seen := map[string]bool{}
	for i, cfg := range cs {
		c := cfg.Common()
		seen[c.Name] = true
		prev := byName[c.Name]
		fp := secretFilesPrint(cfg)
		if was, ok := b.rl.built[prev]; prev != nil && ok && reflect.DeepEqual(was.src, cfg) && was.print == fp {
			if err := prev.relimitLanes(b.opts.DB, c.Outbox.Inherit(defaults)); err != nil { // lanes.go
				errs = append(errs, fmt.Errorf("bridge: connector %q: outbox limits: %w", c.Name, err))
			}
			next = append(next, prev)
			continue
		}
		f, err := b.buildForwarder(i, cfg)
		if err != nil {
			errs = append(errs, err)
			res.Failed = append(res.Failed, c.Name)
			if prev != nil {
				next = append(next, prev)
			}
			continue
		}
		b.rl.built[f] = builtFrom{src: cfg, print: fp}
		next = append(next, f)
		start = append(start, f)
		if prev != nil {
			replaced = append(replaced, prev)
			res.Changed = append(res.Changed, c.Name)
		} else {
			res.Added = append(res.Added, c.Name)
		}
	}
	var removed []*forwarder
	for _, f := range old {
		if !seen[f.cfg.Name] {
			replaced = append(replaced, f)
			removed = append(removed, f)
			res.Removed = append(res.Removed, f.cfg.Name)
		}
	}
	// Swap first: captures from now on use the new rules (same outboxes). Then the old
	// forwarders stop, and only then their successors start, so one outbox never has two
	// readers.
	nx := next
	b.rl.cur.Store(&nx)
	for _, f := range replaced {
		// Stop waits until f's goroutine returned: its link closed, nothing of its outbox in
		// flight any more (an unconfirmed batch stays in the outbox for the next forwarder).
		b.rl.run.Stop(f)
		delete(b.rl.built, f)
	}
	for _, f := range removed {
		for _, l := range f.lanes { // every lane's outbox (lanes.go)
			if l.ob != nil {
				b.opts.DB.Unconfigure(l.name)
			}
		}
		b.log.Warn("connector removed; its outbox is kept until purged", "connector", f.cfg.Name)
	}
	for _, f := range start {
		b.rl.run.Start(f, f.run)
	}
	return res, errors.Join(errs...)
}

// buildForwarder is New's construction of one connector, with the checks New makes first.
func (b *Bridge) buildForwarder(i int, cfg ConnectorConfig) (*forwarder, error) {
	c := cfg.Common()
	if err := cfg.Validate(); err != nil {
		// Validation messages redact URLs themselves; this also masks any other secret.
		if sh, ok := cfg.(SecretHolder); ok {
			err = redact.NewScrubber(sh.Secrets()...).Error(err)
		}
		return nil, fmt.Errorf("bridge: connector %q: %w", c.Name, err)
	}
	t, ok := LookupType(c.Type)
	if !ok {
		return nil, fmt.Errorf("bridge: connector %q: unknown type %q", c.Name, c.Type)
	}
	return b.newForwarder(i, cfg, t)
}

// secretFilesPrint digests the contents of every *_file setting of a connector config (password,
// token, key and certificate files), so a reload notices a rotated secret behind an unchanged
// path. An unreadable file digests its error: reading it again is the connector's business.
func secretFilesPrint(cfg any) [32]byte {
	h := sha256.New()
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Pointer, reflect.Interface:
			if !v.IsNil() {
				walk(v.Elem())
			}
		case reflect.Struct:
			t := v.Type()
			for i := 0; i < t.NumField(); i++ {
				f := t.Field(i)
				if !f.IsExported() {
					continue
				}
				tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
				fv := v.Field(i)
				if fv.Kind() == reflect.String && strings.HasSuffix(tag, "_file") && fv.String() != "" {
					b, err := os.ReadFile(fv.String())
					if err != nil {
						b = []byte(err.Error())
					}
					fmt.Fprintf(h, "%s=%d:", tag, len(b))
					h.Write(b)
					continue
				}
				walk(fv)
			}
		case reflect.Slice, reflect.Array:
			for i := 0; i < v.Len(); i++ {
				walk(v.Index(i))
			}
		}
	}
	walk(reflect.ValueOf(cfg))
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}
