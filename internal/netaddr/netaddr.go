// Package netaddr owns the one answer to "does this configured listen address only accept
// connections from this machine?", which decides whether the broker may allow anonymous
// clients and whether the admin API needs a token.
package netaddr

import (
	"net"
	"strings"
)

// IsLoopback reports whether a configured host:port only accepts local connections. An empty
// host (":9100": every interface), 0.0.0.0, ::, an unparsable address and any hostname other
// than localhost count as reachable from the network.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
