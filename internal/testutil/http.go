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

var (
	// httpClient serves HTTPGet, which tests poll: a slow answer is simply tried again.
	httpClient = &http.Client{Timeout: 2 * time.Second}
	// onceClient serves GetJSON, which fails the test on the first error, so it waits longer.
	onceClient = &http.Client{Timeout: 5 * time.Second}
)

// HTTPGetOK returns nil when GET url answers 200.
func HTTPGetOK(url string) error {
	_, err := HTTPGet(url)
	return err
}

// HTTPGet returns the body of a 200 answer.
func HTTPGet(url string) ([]byte, error) { return httpGet(httpClient, url, "") }

// GetJSON GETs url (with a bearer token unless token is empty) and returns the JSON object it
// answers, failing the test on any error: how tests read /api/v1/status.
func GetJSON(t testing.TB, url, token string) map[string]any {
	t.Helper()
	b, err := httpGet(onceClient, url, token)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return doc
}

func httpGet(c *http.Client, url, token string) ([]byte, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
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
