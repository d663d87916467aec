package bridge

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/edged-dev/edged/internal/confkit"
)

// TLSConfig is the client side of TLS toward a remote (mqtts://, wss://, https://).
type TLSConfig struct {
	// CA is a PEM file of CAs to trust instead of the system pool; "" uses the system pool.
	CA string `yaml:"ca"`
	// Cert and Key are a PEM client certificate and its key, for mutual TLS; both or neither.
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ServerName overrides the name checked in the server certificate (default: the URL host).
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify disables certificate verification. For tests only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

func (t TLSConfig) validate(prefix string) []error {
	var errs []error
	if (t.Cert == "") != (t.Key == "") {
		errs = append(errs, confkit.Errorf(prefix+".cert", "cert and key must be given together"))
	}
	for k, f := range map[string]string{"ca": t.CA, "cert": t.Cert, "key": t.Key} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			errs = append(errs, confkit.Errorf(prefix+"."+k, "%v", err))
		}
	}
	return errs
}

// build returns the *tls.Config (never nil, so https/wss work with the system pool).
func (t TLSConfig) build() (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
	if t.CA != "" {
		pem, err := os.ReadFile(t.CA)
		if err != nil {
			return nil, fmt.Errorf("tls ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls ca %s: no PEM certificate found", t.CA)
		}
		c.RootCAs = pool
	}
	if t.Cert != "" {
		kp, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("tls cert: %w", err)
		}
		c.Certificates = []tls.Certificate{kp}
	}
	return c, nil
}

// readSecret reads a secret file, trimming one trailing newline (files written by echo).
func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", errors.New("file is empty")
	}
	return s, nil
}

// secretOr is the secret of file when one is named (read now), else inline: the two config
// keys of one credential (password and password_file) are exclusive, Validate checks that.
func secretOr(inline, file string) (string, error) {
	if file == "" {
		return inline, nil
	}
	return readSecret(file)
}

func checkSecretFile(key, path string) error {
	if path == "" {
		return nil
	}
	if _, err := readSecret(path); err != nil {
		return confkit.Errorf(key, "%v", err)
	}
	return nil
}
