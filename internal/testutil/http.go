package testutil

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"syscall"
	"testing"
	"time"
)

const syscallSIGTERM = syscall.SIGTERM

var httpClient = &http.Client{Timeout: 2 * time.Second}

// HTTPGetOK returns nil when GET url answers 200.
func HTTPGetOK(url string) error {
	_, err := HTTPGet(url)
	return err
}

// HTTPGet returns the body of a 200 answer.
func HTTPGet(url string) ([]byte, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return b, nil
}

// GetJSON GETs url and returns the JSON object it answers, failing the test on any error: how
// tests read /api/v1/status.
func GetJSON(t testing.TB, url string) map[string]any {
	t.Helper()
	b, err := HTTPGet(url)
	if err != nil {
		t.Fatal(err)
	}
	return ParseJSON(t, b)
}

// ParseJSON decodes a JSON object, failing the test when b is not one.
func ParseJSON(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("not a JSON object: %v: %.200s", err, b)
	}
	return doc
}
