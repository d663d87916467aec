package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// reading is the payload devices publish: gateway, sequence, publish time (Unix ns).
type reading struct {
	G int   `json:"g"`
	S int   `json:"s"`
	T int64 `json:"t"`
}

// device publishes QoS 1 readings to the gateway's local broker at a steady rate until SIGTERM,
// then writes the sequence numbers whose PUBACK it received (only those count as acked) to
// -out, one per line.
func device(args []string) int {
	fs := flag.NewFlagSet("device", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:1883", "local edged broker")
	gw := fs.Int("gw", 0, "gateway index")
	rate := fs.Int("rate", 20, "messages per second")
	out := fs.String("out", "", "file for the acked sequence numbers")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o := paho.NewClientOptions().AddBroker("tcp://" + *addr).SetClientID(fmt.Sprintf("dev%d", *gw)).
		SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).
		SetMaxReconnectInterval(time.Second).SetOrderMatters(false).SetWriteTimeout(10 * time.Second)
	c := paho.NewClient(o)
	c.Connect().WaitTimeout(30 * time.Second)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	var (
		mu    sync.Mutex
		acked []int
		wg    sync.WaitGroup
	)
	tick := time.NewTicker(time.Second / time.Duration(*rate))
	defer tick.Stop()
	topic := fmt.Sprintf("sensors/dev%d/reading", *gw)
	seq := 0
loop:
	for {
		select {
		case <-stop:
			break loop
		case <-tick.C:
		}
		b, _ := json.Marshal(reading{G: *gw, S: seq, T: time.Now().UnixNano()})
		tok := c.Publish(topic, 1, false, b)
		wg.Add(1)
		go func(s int) {
			defer wg.Done()
			// A PUBACK is the only proof edged took the message; no ack, not counted.
			if tok.WaitTimeout(60*time.Second) && tok.Error() == nil {
				mu.Lock()
				acked = append(acked, s)
				mu.Unlock()
			}
		}(seq)
		seq++
	}
	wg.Wait()
	c.Disconnect(250)
	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "device:", err)
		return 1
	}
	defer f.Close()
	mu.Lock()
	defer mu.Unlock()
	for _, s := range acked {
		fmt.Fprintln(f, s)
	}
	return 0
}
