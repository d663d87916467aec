package bridge_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/internal/testutil"
	"github.com/edged-dev/edged/storage"
)

// BenchmarkDrain measures the drain rate after the uplink returns: a backlog of 100k 200-byte
// messages is queued with the uplink down (through the bridge's Capture path, batched), then
// the uplink opens and the time until the outbox is empty is measured. The remote is a
// loopback mosquitto; the mqtt connector publishes QoS 1 ordered and windowed.
//
//	go test -run '^$' -bench BenchmarkDrain -benchtime 1x ./bridge
func BenchmarkDrain(b *testing.B) {
	for _, format := range []string{"raw", "cbor"} {
		b.Run(format, func(b *testing.B) { benchDrain(b, format) })
	}
}

func benchDrain(b *testing.B, format string) {
	const backlog = 100_000
	cloud := testutil.StartMosquitto(b, 0, "")
	var total time.Duration
	for i := 0; i < b.N; i++ {
		p := testutil.StartRelay(b, cloud.Addr, testutil.RelayDead)
		cfg := decodeConnector(b, fmt.Sprintf(`
name: cloud
type: mqtt
url: tcp://%s
format: %s
backoff: {min: 5ms, max: 20ms}
breaker: {failures: -1}
forward:
  - {from: "sensors/#", to: "gw1/{topic}"}
`, p.Addr(), format))
		dir := b.TempDir()
		db, err := storage.Open(storage.Options{Dir: dir})
		if err != nil {
			b.Fatal(err)
		}
		br, err := bridge.New(bridge.Options{Connectors: []bridge.ConnectorConfig{cfg}, GatewayID: "gw1", DB: db, Defaults: storage.Defaults()})
		if err != nil {
			b.Fatal(err)
		}
		payload := make([]byte, 200)
		ctx := context.Background()
		const chunk = 1000
		for n := 0; n < backlog; n += chunk {
			ms := make([]*broker.Message, chunk)
			for k := range ms {
				ms[k] = &broker.Message{Topic: "sensors/a/b", Payload: payload, QoS: 1, ClientID: "dev1", Time: time.Now()}
			}
			if errs := br.CaptureBatch(ctx, ms); errs != nil {
				b.Fatal(errs)
			}
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { br.Run(rctx); close(done) }()
		b.ResetTimer()
		start := time.Now()
		p.Set(true)
		for br.Status()[0].Depth > 0 {
			time.Sleep(2 * time.Millisecond)
		}
		total += time.Since(start)
		b.StopTimer()
		cancel()
		<-done
		db.Close()
	}
	b.ReportMetric(float64(backlog*b.N)/total.Seconds(), "msgs/s")
}
