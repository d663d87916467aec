package config

import (
	"testing"
	"time"

	"github.com/edged-dev/edged/internal/confkit"
)

// A connector's `backoff: {min: 10s}` alone used to be refused (the 5s default max was set
// before decoding, below the 10s written); a key written alone now carries the other's default
// along, through the loader as through a plain decode. Written values, zeros included, are still
// checked and located.
func TestConnectorBackoffThroughLoader(t *testing.T) {
	cfg, err := Parse("f", []byte(`bridge:
  connectors:
    - name: up
      type: mqtt
      url: tcp://127.0.0.1:1
      forward: [{from: a, to: b}]
      backoff: {min: 10s}
    - name: down
      type: http
      url: http://127.0.0.1:1/x
      forward: [{from: a, to: b}]
      backoff:
        max: 50ms
    - name: days
      type: websocket
      url: ws://127.0.0.1:1
      forward: [{from: a, to: b}]
      backoff: {min: 1d, max: 1w}
hardware:
  serial:
    - {name: s, port: /dev/x, topic: t, reopen: {max: 100ms}}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []confkit.Backoff{
		{Min: 10 * time.Second, Max: 10 * time.Second},
		{Min: 50 * time.Millisecond, Max: 50 * time.Millisecond},
		{Min: 24 * time.Hour, Max: 7 * 24 * time.Hour},
	}
	for i, w := range want {
		if got := cfg.Bridge.Connectors[i].Common().Backoff; got != w {
			t.Errorf("connector %d: backoff %+v, want %+v", i, got, w)
		}
	}
	// The same rule for a section that applies defaults after decoding: reopen's default min
	// (250ms) follows a lower max written alone.
	if got := cfg.Hardware.Serial[0].Reopen; got != (confkit.Backoff{Min: 100 * time.Millisecond, Max: 100 * time.Millisecond}) {
		t.Errorf("serial reopen %+v", got)
	}

	wantProblems(t, problems(t, `bridge:
  connectors:
    - name: a
      type: mqtt
      url: tcp://127.0.0.1:1
      forward: [{from: a, to: b}]
      backoff: {min: 10s, max: 5s}
    - name: b
      type: mqtt
      url: tcp://127.0.0.1:1
      forward: [{from: a, to: b}]
      backoff:
        min: 0s
    - name: c
      type: mqtt
      url: tcp://127.0.0.1:1
      forward: [{from: a, to: b}]
      backoff:
        max: 0s
    - name: d
      type: mqtt
      url: tcp://127.0.0.1:1
      forward: [{from: a, to: b}]
      backoff:
        mni: 1s
        max: 3x
`),
		`f:7: bridge.connectors[0].backoff.max: 5s is less than backoff.min 10s`,
		`f:13: bridge.connectors[1].backoff.min: 0s is not valid (must be > 0)`,
		`f:19: bridge.connectors[2].backoff.max: 0s is less than backoff.min 200ms`,
		`f:25: bridge.connectors[3].backoff.mni: unknown key (known keys here: max, min)`,
		`f:26: bridge.connectors[3].backoff.max: invalid duration "3x"`,
	)
}
