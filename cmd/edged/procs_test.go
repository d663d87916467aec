package main_test

import (
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/edged-dev/edged/internal/procs"
	"github.com/edged-dev/edged/internal/testutil"
)

// The running daemon reports its processor mode; `procs: 1` in a reloaded config fixes it.
func TestProcsStatusAndReload(t *testing.T) {
	if os.Getenv("GOMAXPROCS") != "" {
		t.Skip("GOMAXPROCS is set: edged leaves the processors to it (mode env)")
	}
	cfg := baseConfig(tcpListener(testutil.FreeAddr(t)), "")
	e := testutil.StartEdged(t, testutil.EdgedOptions{ConfigYAML: cfg})
	want := procs.ModeAdaptive
	if runtime.NumCPU() < 2 {
		want = procs.ModeSingle
	}
	p, _ := statusDoc(t, e.Admin)["procs"].(map[string]any)
	if p == nil || p["mode"] != want {
		t.Fatalf("status procs %v, want mode %s", p, want)
	}

	writeConfig(t, e, strings.Replace(cfg, "gateway_id: gw-test", "gateway_id: gw-test\nprocs: 1", 1))
	if code, rep, raw := postReload(t, e.Admin); code != http.StatusOK || rep.Result != "applied" {
		t.Fatalf("reload with procs: 1: HTTP %d: %s", code, raw)
	}
	p, _ = statusDoc(t, e.Admin)["procs"].(map[string]any)
	if p == nil || p["mode"] != procs.ModeFixed || fmt.Sprint(p["procs"]) != "1" {
		t.Fatalf("status procs after reload %v, want fixed 1", p)
	}
	if m, err := testutil.HTTPGet("http://" + e.Admin + "/metrics"); err != nil || !strings.Contains(string(m), "\nedged_runtime_procs 1\n") {
		t.Fatalf("metrics lack edged_runtime_procs 1 (%v)", err)
	}
	stopClean(t, e)
}
