package broker

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// processCPU is the CPU time (user + system) this process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sizedTopic returns a topic of exactly levels levels and length bytes (length >= 2*levels-1),
// ending in tag so topics differ.
func sizedTopic(levels, length int, tag string) string {
	per := (length - (levels - 1)) / levels
	parts := make([]string, levels)
	for i := range parts {
		parts[i] = strings.Repeat("x", per)
	}
	last := tag + strings.Repeat("y", length-(levels-1)-per*(levels-1)-len(tag))
	parts[levels-1] = last
	return strings.Join(parts, "/")
}

// BenchmarkTopicLimits measures the CPU the broker spends on one packet at the limits
// (max_topic_levels 32, max_topic_length 1024) and on the attack packets of issue #12.2,
// which are now refused before mochi's topic tree sees them. cpu-ms/op is the whole
// process's CPU per packet (broker and the raw test clients), so the small figures are upper
// bounds.
//
//	go test -run '^$' -bench BenchmarkTopicLimits -benchtime 200x ./broker/
//	go test -run '^$' -bench 'BenchmarkTopicLimits/attack' -benchtime 3x ./broker/
func BenchmarkTopicLimits(b *testing.B) {
	c := localConfig()
	c.MaxSubscriptionsPerClient = 1000000
	br := startBroker(b, Options{Config: c}, &recCapturer{})
	a := addr(br, 0)
	maxTopic := sizedTopic(DefaultMaxTopicLevels, DefaultMaxTopicLength, "t")
	if len(maxTopic) != DefaultMaxTopicLength || strings.Count(maxTopic, "/")+1 != DefaultMaxTopicLevels {
		b.Fatalf("sizedTopic: %d bytes, %d levels", len(maxTopic), strings.Count(maxTopic, "/")+1)
	}
	report := func(b *testing.B, c0 time.Duration) {
		b.ReportMetric(float64(processCPU()-c0)/float64(b.N)/1e6, "cpu-ms/op")
	}
	subscribe := func(rc *rawClient, id uint16, filter string) byte {
		return rc.subscribe(id, packets.Subscription{Filter: filter, Qos: 1}).ReasonCodes[0]
	}

	b.Run("subscribe_max_allowed", func(b *testing.B) {
		rc := dialRaw(b, a, 5, "bench-sub", noProps)
		c0 := processCPU()
		for i := 0; i < b.N; i++ {
			f := sizedTopic(DefaultMaxTopicLevels, DefaultMaxTopicLength, fmt.Sprint(i))
			if code := subscribe(rc, uint16(i%65535+1), f); code != 1 {
				b.Fatalf("SUBACK %#x", code)
			}
		}
		report(b, c0)
	})

	b.Run("publish_max_allowed", func(b *testing.B) {
		sub := dialRaw(b, a, 5, "bench-deliver", noProps)
		if code := subscribe(sub, 1, maxTopic); code != 1 {
			b.Fatalf("SUBACK %#x", code)
		}
		pub := dialRaw(b, a, 5, "bench-pub", noProps)
		c0 := processCPU()
		for i := 0; i < b.N; i++ {
			pub.publish(maxTopic, 1, uint16(i%65535+1), []byte("x"), noProps)
			if ack := pub.expect(packets.Puback); ack.ReasonCode != 0 {
				b.Fatalf("PUBACK %#x", ack.ReasonCode)
			}
			sub.expect(packets.Publish)
		}
		report(b, c0)
	})

	// The attack packets: a 32 KB SUBSCRIBE of 16,000 levels, and a 32 KB PUBLISH to the same
	// topic (delivered, when the subscription was granted, which is what made it costly).
	attack := deepTopic(16000)
	b.Run("attack_subscribe_16000_levels", func(b *testing.B) {
		rc := dialRaw(b, a, 5, "bench-attack-sub", noProps)
		c0 := processCPU()
		for i := 0; i < b.N; i++ {
			rc.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: uint16(i%65535 + 1),
				Filters: packets.Subscriptions{{Filter: attack, Qos: 1}}})
			if _, err := rc.read(5 * time.Minute); err != nil { // seconds per packet before the limits
				b.Fatal(err)
			}
		}
		report(b, c0)
	})
	b.Run("attack_publish_16000_levels", func(b *testing.B) {
		sub := dialRaw(b, a, 5, "bench-attack-deliver", noProps)
		sub.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 1,
			Filters: packets.Subscriptions{{Filter: attack, Qos: 1}}})
		ack, err := sub.read(5 * time.Minute)
		must(b, err)
		granted := ack.ReasonCodes[0] < 0x80
		pub := dialRaw(b, a, 5, "bench-attack-pub", noProps)
		c0 := processCPU()
		for i := 0; i < b.N; i++ {
			pub.publish(attack, 1, uint16(i%65535+1), []byte("x"), noProps)
			pub.expect(packets.Puback)
			if granted {
				if _, err := sub.read(5 * time.Minute); err != nil {
					b.Fatal(err)
				}
			}
		}
		report(b, c0)
	})
}
