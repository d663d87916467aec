package redact

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestURL(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"tcp://user:pa55word@broker:1883", "tcp://user:xxxxx@broker:1883"},
		{"tcp://user@broker:1883", "tcp://user@broker:1883"},
		{"wss://h/v1?token=abc123&room=7", "wss://h/v1?token=REDACTED&room=7"},
		{"https://h/p?Access_Token=t0k&x=1&API-KEY=k&sig=s&Signature=z&X-Amz-Signature=q", "https://h/p?Access_Token=REDACTED&x=1&API-KEY=REDACTED&sig=REDACTED&Signature=REDACTED&X-Amz-Signature=REDACTED"},
		{"https://h/p?apikey=a&key=b&secret=c&password=d&auth=e&client_secret=f&monkey=g", "https://h/p?apikey=REDACTED&key=REDACTED&secret=REDACTED&password=REDACTED&auth=REDACTED&client_secret=REDACTED&monkey=g"},
		{"https://h/cb#access_token=abc&state=1", "https://h/cb#access_token=REDACTED&state=1"},
		{"http://127.0.0.1:9200/v1/messages", "http://127.0.0.1:9200/v1/messages"},
		// Not parseable as a URL (bad port, control char): masked by pattern.
		{"tcp://u:secretpw@host:port?token=zz\x7f", "tcp://u:xxxxx@host:port?token=REDACTED"},
	} {
		if got := URL(c.in); got != c.want {
			t.Errorf("URL(%q)\n got %q\nwant %q", c.in, got, c.want)
		}
	}
}

func TestHeader(t *testing.T) {
	h := http.Header{"X-Api-Key": {"k1", "k2"}, "X-Tenant": {"acme"}}
	got := Header(h)
	if got.Get("X-Api-Key") != Mask || got.Values("X-Api-Key")[1] != Mask || got.Get("X-Tenant") != Mask {
		t.Fatalf("%v", got)
	}
	if h.Get("X-Api-Key") != "k1" {
		t.Fatal("Header modified its argument")
	}
	if n := HeaderNames(map[string]string{"b": "1", "a": "2"}); strings.Join(n, ",") != "a,b" {
		t.Fatal(n)
	}
}

// url.Error embeds the whole URL (query included) in Error(); Scrubber.Error must leave no
// trace of the secret in any escaping, while errors.As still finds the url.Error.
func TestScrubberError(t *testing.T) {
	raw := "https://u:p%40ss%2Fw0rd@h:1/x?token=t%2Bk%20n&x=1"
	s := NewScrubber()
	s.AddURL(raw)
	s.Add("header-api-key-value", "ab") // "ab" is shorter than MinSecretLen: ignored
	base := &url.Error{Op: "Post", URL: raw, Err: errors.New("connection refused, header-api-key-value")}
	err := s.Error(fmt.Errorf("post: %w", base))
	msg := fmt.Sprintf("%v %s %q", err, err, err.Error())
	for _, secret := range []string{"p@ss/w0rd", "p%40ss%2Fw0rd", "t+k n", "t%2Bk%20n", "t+k+n", "header-api-key-value"} {
		if strings.Contains(msg, secret) {
			t.Errorf("%q leaks %q", msg, secret)
		}
	}
	var ue *url.Error
	if !errors.As(err, &ue) {
		t.Fatal("scrubbed error lost its chain")
	}
	if !strings.Contains(msg, "connection refused") || !strings.Contains(msg, "x=1") {
		t.Fatalf("scrubbed too much: %s", msg)
	}
	if s.Error(nil) != nil {
		t.Fatal("Error(nil) != nil")
	}
}

func TestHandler(t *testing.T) {
	var buf bytes.Buffer
	s := NewScrubber("hunter22")
	log := slog.New(Handler(slog.NewJSONHandler(&buf, nil), s)).With("url", "tcp://a:hunter22@h")
	log.Warn("failed hunter22", "err", errors.New("dial: hunter22"), slog.Group("g", "v", "x?token=abcdef"),
		"list", []string{"hunter22"}, "any", struct{ P string }{"hunter22"})
	out := buf.String()
	if strings.Contains(out, "hunter22") || strings.Contains(out, "abcdef") {
		t.Fatalf("log leaks: %s", out)
	}
	if !strings.Contains(out, "dial: REDACTED") {
		t.Fatalf("log lost content: %s", out)
	}
}

func FuzzURL(f *testing.F) {
	for _, s := range []string{"tcp://u:p@h:1", "wss://h/?token=abc", "https://h/?a=1&access_token=x#k=v", "%zz://::@", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := URL(s)
		u, err := url.Parse(s)
		if err != nil || u.User == nil {
			return
		}
		if p, ok := u.User.Password(); ok && len(p) >= 8 && strings.Contains(out, ":"+p+"@") {
			t.Fatalf("URL(%q) = %q keeps the password", s, out)
		}
	})
}
