package testutil

import (
	"fmt"
	"io"
	"net/http"
	"syscall"
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
