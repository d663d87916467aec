package main

import (
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// Bare mochi-mqtt is the third floor of the paced-latency figures: the library edged embeds,
// with one allow-all hook, a TCP listener and nothing of edged (no hooks of its own, no store,
// no admin, no background work). Between the relay with a writer goroutine and edged it tells
// how much of edged's gap to mosquitto is the embedded broker's own per-message work (topic
// index, packet copies, hook dispatch) and how much is edged's. It runs as a child process
// (`edged-bench -mochi ADDR`), with its own Go runtime, like the other servers.
func runBareMochi(addr string) error {
	s := mqtt.New(&mqtt.Options{Logger: slog.New(slog.DiscardHandler)})
	if err := s.AddHook(new(auth.AllowHook), nil); err != nil {
		return err
	}
	if err := s.AddListener(listeners.NewTCP(listeners.Config{ID: "bench", Address: addr})); err != nil {
		return err
	}
	if err := s.Serve(); err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return s.Close()
}

// startBareMochi runs this program as a bare mochi-mqtt child on a free loopback port.
func startBareMochi() (*proc, error) { return startSelf("bare mochi-mqtt", "-mochi") }
