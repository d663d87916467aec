package bridge

import (
	"encoding/json"
	"math/big"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzRetryAfter: a Retry-After header is outside bytes. Whatever it holds, the wait is
// between 0 and maxRetryAfter, and delta-seconds (digits only) mean exactly that many seconds
// up to the cap, however many digits.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"3", "0", "120", "3600", "3601", "9223372037", "18446744074", "99999999999999999999999",
		"-1", "+5", " 5", "Wed, 21 Oct 2015 07:28:00 GMT", "Sun, 06 Nov 2094 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d := parseRetryAfter(v)
		if d < 0 || d > maxRetryAfter {
			t.Fatalf("parseRetryAfter(%q) = %v", v, d)
		}
		if v == "" || strings.Trim(v, "0123456789") != "" {
			return
		}
		n, _ := new(big.Int).SetString(v, 10)
		want := maxRetryAfter
		if n.Cmp(big.NewInt(int64(maxRetryAfter/time.Second))) < 0 {
			want = time.Duration(n.Int64()) * time.Second
		}
		if d != want {
			t.Fatalf("parseRetryAfter(%q) = %v, want %v", v, d, want)
		}
	})
}

// The header values that overflowed time.Duration: a server asking for centuries got an
// immediate retry (or 0.29 s).
func TestRetryAfterHugeIsCapped(t *testing.T) {
	for _, v := range []string{"9223372037", "18446744074", "99999999999999999999999"} {
		if d := parseRetryAfter(v); d != maxRetryAfter {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", v, d, maxRetryAfter)
		}
	}
}

// FuzzTokenResponse: a token endpoint's answer is outside bytes. It gives a token and a
// lifetime in [0, maxTokenLifetime] or an error; a positive expires_in below the cap is
// kept; a UTF-8 body gives a UTF-8 error of bounded length.
func FuzzTokenResponse(f *testing.F) {
	for _, s := range []string{
		`{"access_token":"tok-1","token_type":"Bearer","expires_in":3600}`,
		`{"access_token":"tok-1","expires_in":"3599"}`,
		`{"access_token":"tok-1","expires_in":0.5}`,
		`{"access_token":"tok-1"}`,
		`{"access_token":"tok-1","expires_in":1e300}`,
		`{"access_token":"tok-1","expires_in":"Infinity"}`,
		`{"access_token":"tok-1","expires_in":"NaN"}`,
		`{"access_token":"tok-1","expires_in":-5}`,
		`{"access_token":"","expires_in":5}`,
		`{"error":"invalid_client","error_description":"` + strings.Repeat("é", 150) + `"}`,
		`<html>bad gateway</html>`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		tok, life, err := parseTokenResponse(body)
		if err != nil {
			if tok != "" {
				t.Fatal("token with an error")
			}
			if utf8.Valid(body) && !utf8.ValidString(err.Error()) {
				t.Fatalf("UTF-8 body %q gives a broken error %q", body, err)
			}
			if len(err.Error()) > 300 {
				t.Fatalf("error of %d bytes", len(err.Error()))
			}
			return
		}
		if tok == "" || life < 0 || life > maxTokenLifetime {
			t.Fatalf("token %q lifetime %v", tok, life)
		}
		var doc struct {
			ExpiresIn *float64 `json:"expires_in"`
		}
		if json.Unmarshal(body, &doc) == nil && doc.ExpiresIn != nil && *doc.ExpiresIn > 0 && *doc.ExpiresIn < maxTokenLifetime.Seconds() {
			if want := time.Duration(*doc.ExpiresIn * float64(time.Second)); life != want {
				t.Fatalf("expires_in %v gave lifetime %v", *doc.ExpiresIn, life)
			}
		}
	})
}

// expires_in beyond time.Duration's range gave a negative lifetime: every request then
// fetched a new token from the endpoint.
func TestTokenLifetimeOverflow(t *testing.T) {
	for _, body := range []string{`{"access_token":"t","expires_in":1e300}`, `{"access_token":"t","expires_in":"Infinity"}`,
		`{"access_token":"t","expires_in":1e10}`} {
		_, life, err := parseTokenResponse([]byte(body))
		if err != nil || life != maxTokenLifetime {
			t.Errorf("%s: lifetime %v, %v; want %v", body, life, err, maxTokenLifetime)
		}
	}
	if _, life, _ := parseTokenResponse([]byte(`{"access_token":"t","expires_in":"120"}`)); life != 2*time.Minute {
		t.Errorf("expires_in \"120\": %v", life)
	}
}
