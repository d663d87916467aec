package netaddr

import "testing"

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:1883": true, "[::1]:1883": true, "localhost:1883": true, "LocalHost:1": true, "127.3.2.1:1": true,
		"0.0.0.0:1883": false, ":1883": false, "[::]:1883": false, "192.168.1.10:1883": false, "gw.lan:1883": false,
		"127.0.0.1": false, "": false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}
