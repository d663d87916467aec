package bridge

import (
	"testing"
	"unicode/utf8"
)

// natsSubjects is the shared table: a topic, its subject, and back.
var natsSubjects = []struct{ topic, subject string }{
	{"gw1/sensors/temp", "gw1.sensors.temp"},
	{"a", "a"},
	{"room 1/temp.c", "room%201.temp%2Ec"},
	{"a/*/>", "a.%2A.%3E"},
	{"50%/x", "50%25.x"},
	{"/leading", "%.leading"},
	{"a//b", "a.%.b"},
	{"trailing/", "trailing.%"},
	{"tab\there", "tab%09here"},
	{"ünïcode/✓", "ünïcode.✓"},
}

func TestNATSSubjectTable(t *testing.T) {
	for _, tc := range natsSubjects {
		if got := topicToSubject(tc.topic); got != tc.subject {
			t.Errorf("topicToSubject(%q) = %q, want %q", tc.topic, got, tc.subject)
		}
		if got, err := subjectToTopic(tc.subject); err != nil || got != tc.topic {
			t.Errorf("subjectToTopic(%q) = %q, %v; want %q", tc.subject, got, err, tc.topic)
		}
	}
	for _, tc := range []struct{ filter, subject string }{
		{"gw1/cmd/#", "gw1.cmd.>"},
		{"gw1/+/cmd", "gw1.*.cmd"},
		{"#", ">"},
		{"a b/+", "a%20b.*"},
	} {
		if got := filterToSubject(tc.filter); got != tc.subject {
			t.Errorf("filterToSubject(%q) = %q, want %q", tc.filter, got, tc.subject)
		}
	}
	for _, bad := range []string{"", "a..b", "a.*", "a.>", "a%2", "a%zz", "a%2F", "a%00", "a%23", "x/y", "x+y", "x y", "\xff"} {
		if got, err := subjectToTopic(bad); err == nil {
			t.Errorf("subjectToTopic(%q) = %q, want an error", bad, got)
		}
	}
}

// FuzzNATSSubject: a downlink subject is outside bytes. Decoding never panics, yields a valid
// MQTT topic name (UTF-8, no wildcards, no NUL), and encodes back to a subject that decodes to
// the same topic.
func FuzzNATSSubject(f *testing.F) {
	for _, tc := range natsSubjects {
		f.Add(tc.subject)
	}
	f.Fuzz(func(t *testing.T, subject string) {
		topic, err := subjectToTopic(subject)
		if err != nil {
			return
		}
		if !utf8.ValidString(topic) {
			t.Fatalf("%q -> invalid UTF-8 topic %q", subject, topic)
		}
		for i := 0; i < len(topic); i++ {
			if c := topic[i]; c == '+' || c == '#' || c == 0 {
				t.Fatalf("%q -> topic %q with %q", subject, topic, c)
			}
		}
		again, err := subjectToTopic(topicToSubject(topic))
		if err != nil || again != topic {
			t.Fatalf("%q -> %q -> %q -> %q, %v", subject, topic, topicToSubject(topic), again, err)
		}
	})
}
