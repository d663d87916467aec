package storage

import (
	"errors"
	"time"

	"github.com/edged-dev/edged/internal/confkit"
)

// Policies for Config.WhenFull.
const (
	// DropOldest makes room for a new message by dropping the oldest ones (counted, logged).
	DropOldest = "drop_oldest"
	// Reject refuses the new message with ErrFull (MQTT 5 PUBACK reason 0x97 Quota exceeded).
	Reject = "reject"
)

// Config is the `storage:` section of the config file: the limits every outbox gets unless its
// connector overrides them. A limit is reached when any one of them is.
type Config struct {
	// MaxBytes bounds the disk space one outbox may use (keys plus stored envelopes), e.g. 1GiB.
	// Default 1GiB.
	MaxBytes confkit.ByteSize `yaml:"max_bytes" json:"max_bytes"`
	// MaxMessages bounds the number of queued messages of one outbox. Default 5000000.
	MaxMessages int64 `yaml:"max_messages" json:"max_messages"`
	// TTL is how long a message may wait in an outbox; older messages are dropped (counted as
	// reason "ttl"). Default 168h (one week).
	TTL time.Duration `yaml:"ttl" json:"ttl_ns"`
	// WhenFull is what happens to a new message when the outbox is full: "drop_oldest" (default)
	// drops the oldest queued messages to make room; "reject" refuses the new one, which the
	// broker answers with MQTT 5 reason 0x97 (Quota exceeded).
	WhenFull string `yaml:"when_full" json:"when_full"`
}

// Defaults returns the default limits.
func Defaults() Config {
	return Config{MaxBytes: 1 << 30, MaxMessages: 5_000_000, TTL: 168 * time.Hour, WhenFull: DropOldest}
}

// ApplyDefaults fills zero fields from Defaults.
func (c *Config) ApplyDefaults() { *c = c.Inherit(Defaults()) }

// Inherit returns c with its zero fields taken from parent: a connector's outbox overrides
// inherit the storage: section this way.
func (c Config) Inherit(parent Config) Config {
	if c.MaxBytes == 0 {
		c.MaxBytes = parent.MaxBytes
	}
	if c.MaxMessages == 0 {
		c.MaxMessages = parent.MaxMessages
	}
	if c.TTL == 0 {
		c.TTL = parent.TTL
	}
	if c.WhenFull == "" {
		c.WhenFull = parent.WhenFull
	}
	return c
}

// Validate reports every bad field as a *confkit.KeyError (joined). Zero values are valid (they
// mean "default").
func (c Config) Validate() error {
	var errs []error
	if c.MaxBytes < 0 {
		errs = append(errs, confkit.Errorf("max_bytes", "must be positive, got %d", int64(c.MaxBytes)))
	} else if c.MaxBytes != 0 && c.MaxBytes < 4<<10 {
		errs = append(errs, confkit.Errorf("max_bytes", "must be at least 4KiB, got %s", c.MaxBytes))
	}
	if c.MaxMessages < 0 {
		errs = append(errs, confkit.Errorf("max_messages", "must be positive, got %d", c.MaxMessages))
	}
	if c.TTL < 0 {
		errs = append(errs, confkit.Errorf("ttl", "must be positive, got %s", c.TTL))
	} else if c.TTL != 0 && c.TTL < time.Second {
		errs = append(errs, confkit.Errorf("ttl", "must be at least 1s, got %s", c.TTL))
	}
	switch c.WhenFull {
	case "", DropOldest, Reject:
	default:
		errs = append(errs, confkit.Errorf("when_full", "must be %q or %q, got %q", DropOldest, Reject, c.WhenFull))
	}
	return errors.Join(errs...)
}
