package main_test

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edged-dev/edged/internal/testutil"
	"github.com/edged-dev/edged/wire"
)

// A serial meter on a real pty, the real edged binary and a real mosquitto as the cloud: a
// reading taken while the uplink is down reaches the cloud later, in a CBOR envelope that keeps
// its capture time and port; a cloud command reaches the device, framed.
func TestSerialToCloudAndBack(t *testing.T) {
	master, slave := testutil.OpenPTY(t)
	var mu sync.Mutex
	var fromEdged bytes.Buffer
	go func() {
		buf := make([]byte, 1024)
		for {
			n, err := master.Read(buf)
			mu.Lock()
			fromEdged.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()

	cloudPort := testutil.FreePort(t)
	addr := testutil.FreeAddr(t)
	cfg := fmt.Sprintf(`data_dir: {data_dir}
gateway_id: gw7
admin: {address: "{admin}"}
broker:
  listeners: [{type: tcp, address: %q}]
bridge:
  connectors:
    - name: cloud
      type: mqtt
      url: tcp://127.0.0.1:%d
      format: cbor
      backoff: {min: 50ms, max: 200ms}
      forward:   [{from: "sensors/#", to: "{gateway_id}/{topic}", qos: 1}]
      subscribe: [{from: "gw7/cmd/#", to: "cmd/{1}", qos: 1}]
hardware:
  serial:
    - name: meter1
      port: %s
      framing: line
      format: json
      topic: sensors/meter1
      qos: 1
      command_topic: cmd/meter1
`, addr, cloudPort, slave.Name())
	testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: cfg})

	// The uplink is down: the reading is captured now and must keep this time.
	captured := time.Now()
	if _, err := master.Write([]byte("{\"kwh\": 1234.5}\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // the reading waits in the outbox
	cloud := testutil.StartMosquitto(t, cloudPort, "")
	got := make(chan mqtt.Message, 4)
	c := v3Client(t, "tcp://"+cloud.Addr, "cloud-sub", true, "", "")
	wait(t, c.Subscribe("gw7/#", 1, func(_ mqtt.Client, m mqtt.Message) { got <- m }), "subscribe cloud")

	var m mqtt.Message
	select {
	case m = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("the serial reading did not reach the cloud")
	}
	if m.Topic() != "gw7/sensors/meter1" {
		t.Fatalf("cloud topic %q", m.Topic())
	}
	env, err := wire.UnmarshalEnvelope(m.Payload())
	if err != nil {
		t.Fatalf("cloud payload is not an envelope: %v", err)
	}
	if string(env.Payload) != `{"kwh": 1234.5}` || env.Gateway != "gw7" {
		t.Fatalf("envelope %+v", env)
	}
	if d := time.UnixMilli(env.Time).Sub(captured); d < -time.Second || d > time.Second {
		t.Fatalf("envelope time is %v after the capture, want the capture time (not the forward time)", d)
	}
	port := ""
	for _, p := range env.UserProps {
		if p.Key == "port" {
			port = p.Value
		}
	}
	if port != "meter1" {
		t.Fatalf("user properties %v lack port=meter1", env.UserProps)
	}

	// Downlink: a cloud command is written to the device with the port's framing.
	wait(t, c.Publish("gw7/cmd/meter1", 1, false, "reset"), "publish command")
	testutil.WaitFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if !bytes.Contains(fromEdged.Bytes(), []byte("reset\n")) {
			return fmt.Errorf("device got %q", fromEdged.String())
		}
		return nil
	})
}
