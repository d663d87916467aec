package admin

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/edged-dev/edged/internal/testutil"
	"github.com/edged-dev/edged/wire"
)

// POST /api/v1/reload: token and CSRF rules of every action; 200 with the report when
// applied, 422 with the problems when refused; audited and counted.
func TestReloadEndpoint(t *testing.T) {
	fail := false
	f := start(t, Options{TokenFile: writeToken(t, testToken), Reload: func(_ context.Context, by string) (any, error) {
		if fail {
			return map[string]any{"result": "refused", "problems": []string{"edged.yaml:3: log.level: bad"}}, errors.New("refused")
		}
		return map[string]any{"result": "applied", "by": by}, nil
	}})
	auth := "Bearer " + testToken
	if code, _ := f.do(t, "POST", "/api/v1/reload", "", map[string]string{actionHeader: "1"}); code != http.StatusUnauthorized {
		t.Fatalf("reload without token: %d", code)
	}
	if code, _ := f.do(t, "POST", "/api/v1/reload", "", map[string]string{"Authorization": auth}); code != http.StatusForbidden {
		t.Fatalf("reload without the action header: %d", code)
	}
	ok := map[string]string{"Authorization": auth, actionHeader: "1"}
	if code, body := f.do(t, "POST", "/api/v1/reload", "", ok); code != 200 || !strings.Contains(body, `"applied"`) || !strings.Contains(body, `"api 127.0.0.1:`) {
		t.Fatalf("reload: %d %s", code, body)
	}
	fail = true
	if code, body := f.do(t, "POST", "/api/v1/reload", "", ok); code != http.StatusUnprocessableEntity || !strings.Contains(body, "edged.yaml:3: log.level") {
		t.Fatalf("refused reload: %d %s", code, body)
	}
	if v, _ := testutil.MetricValue(t, f.reg, "edged_admin_actions_total", map[string]string{"action": "reload"}); v != 2 {
		t.Fatalf("reload actions counted %v, want 2", v)
	}
	if !strings.Contains(f.log.String(), "action=reload") {
		t.Fatalf("reload not audited:\n%s", f.log.String())
	}
}

// A rotated admin token is required from the next request on; the old one is refused.
func TestSetTokenRotates(t *testing.T) {
	file := writeToken(t, testToken)
	f := start(t, Options{TokenFile: file})
	const newToken = "rotated-token-0123456789abcdef"
	if err := os.WriteFile(file, []byte(newToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.s.SetToken(file); err != nil {
		t.Fatal(err)
	}
	if code, _ := f.do(t, "GET", "/api/v1/status", "", map[string]string{"Authorization": "Bearer " + testToken}); code != http.StatusUnauthorized {
		t.Fatalf("old token after rotation: %d", code)
	}
	if code, _ := f.do(t, "GET", "/api/v1/status", "", map[string]string{"Authorization": "Bearer " + newToken}); code != 200 {
		t.Fatalf("new token after rotation: %d", code)
	}
	if err := f.s.SetToken(""); err == nil {
		t.Fatal("dropping the token on a reload accepted")
	}
	g := start(t, Options{})
	if err := g.s.SetToken(file); err == nil {
		t.Fatal("adding a token on a reload accepted")
	}
}

// POST /api/v1/outboxes/NAME/purge empties a removed connector's outbox, and refuses a
// configured one.
func TestPurgeOrphanedOutbox(t *testing.T) {
	db, ob := openOutbox(t, "gone")
	for i := 0; i < 3; i++ {
		if err := ob.Append(context.Background(), &wire.Envelope{Version: wire.Version, ID: wire.NewID(), Topic: "t", Payload: []byte("x"), QoS: 1}); err != nil {
			t.Fatal(err)
		}
	}
	f := start(t, Options{TokenFile: writeToken(t, testToken), Outboxes: db})
	ok := map[string]string{"Authorization": "Bearer " + testToken, actionHeader: "1"}
	if code, body := f.do(t, "POST", "/api/v1/outboxes/gone/purge", "", ok); code != http.StatusConflict {
		t.Fatalf("purge of a configured outbox: %d %s", code, body)
	}
	db.Unconfigure("gone")
	if code, body := f.do(t, "POST", "/api/v1/outboxes/gone/purge", "", ok); code != 200 || !strings.Contains(body, `"purged": 3`) {
		t.Fatalf("purge of an orphaned outbox: %d %s", code, body)
	}
	if d := ob.Stats().Depth; d != 0 {
		t.Fatalf("depth %d after purge", d)
	}
}
