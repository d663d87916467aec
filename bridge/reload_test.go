package bridge_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/edged-dev/edged/bridge"
	"github.com/edged-dev/edged/internal/testutil"
	"github.com/edged-dev/edged/storage"
)

func outboxStats(t *testing.T, db *storage.DB, name string) storage.OutboxStats {
	t.Helper()
	for _, o := range db.Stats().Outboxes {
		if o.Name == name {
			return o
		}
	}
	t.Fatalf("no outbox %q", name)
	return storage.OutboxStats{}
}

// Reload keeps an unchanged connector running (its link not re-dialled) while applying new
// outbox limits, restarts one whose secret file was rotated behind the same path, keeps a
// removed connector's backlog (orphaned) and drains it when the connector comes back.
func TestReloadConnectors(t *testing.T) {
	cloud := testutil.StartMosquitto(t, 0, "")
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("one\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := fmt.Sprintf(`name: c1
type: mqtt
url: tcp://%s
username: gw
password_file: %s
forward: [{from: "s/#", to: "up/{topic}", qos: 1}]
`, cloud.Addr, pw)
	cfg := decodeConnector(t, src)
	s := startStack(t, "", cfg)
	s.waitConnected("c1")

	// Same config, other storage defaults: nothing restarts, the limits change at once.
	lim := storage.Defaults()
	lim.MaxMessages = 12345
	res, err := s.b.Reload([]bridge.ConnectorConfig{decodeConnector(t, src)}, lim)
	if err != nil || len(res.Added)+len(res.Changed)+len(res.Removed) != 0 {
		t.Fatalf("unchanged reload: %+v, %v", res, err)
	}
	if got := outboxStats(t, s.db, "c1").Limits.MaxMessages; got != 12345 {
		t.Fatalf("outbox limit after reload: %d, want 12345", got)
	}
	if st := s.status("c1"); st.State != bridge.StateConnected || st.Reconnects != 0 {
		t.Fatalf("unchanged connector disturbed: %+v", st)
	}

	// The password file rotated behind the same path: the connector restarts.
	if err := os.WriteFile(pw, []byte("two\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err = s.b.Reload([]bridge.ConnectorConfig{decodeConnector(t, src)}, lim)
	if err != nil || !slices.Equal(res.Changed, []string{"c1"}) {
		t.Fatalf("rotated secret: %+v, %v", res, err)
	}
	s.waitConnected("c1")

	// Cloud away, a backlog builds; the connector is removed: the backlog stays, orphaned.
	cloud.Stop()
	local := localClient(t, s.addr, "dev")
	publishN(t, local, "s/x", 0, 20)
	if _, err = s.b.Reload(nil, lim); err != nil {
		t.Fatal(err)
	}
	st := outboxStats(t, s.db, "c1")
	if st.Depth != 20 || st.Configured {
		t.Fatalf("removed connector's outbox: depth %d configured %v, want 20 kept and not configured", st.Depth, st.Configured)
	}
	publishN(t, local, "s/x", 20, 5) // no rule captures these any more
	if d := outboxStats(t, s.db, "c1").Depth; d != 20 {
		t.Fatalf("depth %d after the connector's removal, want 20", d)
	}

	// Back again: the backlog drains to the cloud, nothing lost.
	cloud.Restart()
	sub := subscribeCloud(t, cloud.Addr, "up/#")
	res, err = s.b.Reload([]bridge.ConnectorConfig{decodeConnector(t, src)}, lim)
	if err != nil || !slices.Equal(res.Added, []string{"c1"}) {
		t.Fatalf("re-added: %+v, %v", res, err)
	}
	sub.waitCount(t, 20, 30*time.Second)
	if st := outboxStats(t, s.db, "c1"); !st.Configured || st.Depth != 0 {
		t.Fatalf("re-added outbox: %+v", st)
	}
}
