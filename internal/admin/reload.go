package admin

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/edged-dev/edged/storage"
)

// ReloadFunc re-reads and applies the config file. result is the report served as JSON; a
// non-nil err means the new file was refused (result then lists its problems) and the old
// configuration keeps running.
type ReloadFunc func(ctx context.Context, by string) (result any, err error)

// reloadConfig: POST /api/v1/reload. 200 with the report when applied, 422 with the same
// document (problems included) when the new file was refused.
func (s *Server) reloadConfig(w http.ResponseWriter, r *http.Request, c who) {
	if s.reload == nil {
		http.Error(w, "reload is not available", http.StatusNotFound)
		return
	}
	res, err := s.reload(r.Context(), "api "+c.remote)
	s.audit(c, "reload", "reload", err)
	if err != nil {
		writeJSONStatus(w, http.StatusUnprocessableEntity, res)
		return
	}
	writeJSON(w, res)
}

// purgeOrphaned: POST /api/v1/outboxes/{name}/purge deletes the backlog and dead letters of
// an outbox whose connector a reload removed (409 for a configured connector's outbox).
func (s *Server) purgeOrphaned(w http.ResponseWriter, r *http.Request, c who) {
	ob, ok := s.pathOutbox(w, r)
	if !ok {
		return
	}
	var (
		q int64
		d int
	)
	err := s.outboxAction(r, c, ob, "purge_outbox", "purge_outbox", func(ctx context.Context) ([]any, error) {
		var err error
		q, d, err = ob.PurgeOrphaned(ctx)
		return []any{"purged_queued", q, "purged_dead_letters", d}, err
	})
	switch {
	case errors.Is(err, storage.ErrConfigured):
		http.Error(w, err.Error(), http.StatusConflict)
		return
	case err != nil:
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, map[string]any{"purged": q, "purged_dead_letters": d})
}

// SetToken replaces the bearer token the API wants (a rotated admin.token_file, re-read on
// reload). A server started without a token keeps serving loopback only: switching the kind
// of protection needs a restart, and so does dropping the token.
func (s *Server) SetToken(file string) error {
	if !s.guard.hasToken {
		return errors.New("admin.token_file added: restart to require a token")
	}
	if file == "" {
		return errors.New("admin.token_file removed: restart to serve without a token")
	}
	tok, err := LoadToken(file)
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(tok))
	s.guard.rotated.Store(&sum)
	return nil
}

// token is the digest requests must match: the rotated one if any, else the start-up one.
func (g *guard) token() [32]byte {
	if p := g.rotated.Load(); p != nil {
		return *p
	}
	return g.sum
}

// Post sends an action to a running edged's admin API (for `edged reload`) with the action
// header and the bearer token when one is given, and returns the status code and body.
func Post(url, token string) (int, []byte, error) {
	c := &http.Client{Timeout: 2 * time.Minute} // a reload waits for forwarders to stop
	req, err := http.NewRequest(http.MethodPost, url, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set(actionHeader, "1")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("read %s: %w", url, err)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return 0, nil, fmt.Errorf("POST %s: %s (the admin API needs its token: pass -c with the config naming admin.token_file)", url, resp.Status)
	}
	return resp.StatusCode, b, nil
}
