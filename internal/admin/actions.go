package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/edged-dev/edged/broker"
	"github.com/edged-dev/edged/storage"
)

// Outboxes gives the dead-letter actions their outboxes (storage.DB).
type Outboxes interface {
	Outboxes() []*storage.Outbox
}

// Clients lists and disconnects MQTT clients (broker.ClientTable).
type Clients interface {
	Disconnect(id string) error
}

// deadLetter is one dead letter as the dashboard lists it.
type deadLetter struct {
	Seq      uint64  `json:"seq"`
	Time     string  `json:"time"` // when it was dead-lettered
	Reason   string  `json:"reason"`
	Topic    string  `json:"topic"`
	ID       string  `json:"id"`
	ClientID string  `json:"client_id"`
	Size     int     `json:"size"`
	Error    string  `json:"error,omitempty"` // the stored record no longer decodes
	Payload  Preview `json:"payload"`
}

const maxDeadLetterPage = 200

// actionTimeout bounds an action on an outbox (a requeue or purge walks its whole range).
const actionTimeout = 30 * time.Second

// pathOutbox finds the outbox the request path names; it answers 404 itself when there is none.
func (s *Server) pathOutbox(w http.ResponseWriter, r *http.Request) (*storage.Outbox, bool) {
	ob, err := s.outbox(r.PathValue("name"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return nil, false
	}
	return ob, true
}

// outboxAction runs op on ob within actionTimeout and audits it under action, with the fields
// op returns after the outbox's name.
func (s *Server) outboxAction(r *http.Request, c who, ob *storage.Outbox, action, counter string, op func(context.Context) ([]any, error)) error {
	ctx, cancel := context.WithTimeout(r.Context(), actionTimeout)
	defer cancel()
	fields, err := op(ctx)
	s.audit(c, action, counter, err, append([]any{"outbox", ob.Name()}, fields...)...)
	return err
}

// audit logs an admin action (its fields, its error, who asked) and counts it under counter.
func (s *Server) audit(c who, action, counter string, err error, fields ...any) {
	args := append([]any{"action", action}, fields...)
	s.log.Info("admin action", append(args, "err", err, "remote", c.remote, "auth", c.auth)...)
	s.actions.WithLabelValues(counter).Inc()
}

func (s *Server) outbox(name string) (*storage.Outbox, error) {
	if s.outboxes == nil {
		return nil, errors.New("no storage")
	}
	for _, o := range s.outboxes.Outboxes() {
		if o.Name() == name {
			return o, nil
		}
	}
	return nil, fmt.Errorf("no outbox %q", name)
}

// deadLetters: GET /api/v1/outboxes/{name}/dead-letters?after=SEQ&limit=N
func (s *Server) deadLetters(w http.ResponseWriter, r *http.Request, _ who) {
	ob, ok := s.pathOutbox(w, r)
	if !ok {
		return
	}
	after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit <= 0 || limit > maxDeadLetterPage {
		limit = maxDeadLetterPage
	}
	recs, err := ob.DeadLetters(after, limit)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	out := make([]deadLetter, 0, len(recs))
	for _, d := range recs {
		dl := deadLetter{Seq: d.Seq, Time: d.Time.UTC().Format(time.RFC3339), Reason: d.Reason, Size: d.Size}
		if d.Env != nil {
			dl.Topic, dl.ID, dl.ClientID = d.Env.Topic, d.Env.ID.String(), d.Env.ClientID
			dl.Payload = MakePreview(d.Env.Payload, len(d.Env.Payload))
		} else if d.Err != nil {
			dl.Error = d.Err.Error()
		}
		out = append(out, dl)
	}
	writeJSON(w, map[string]any{"outbox": ob.Name(), "dead_letters": out})
}

// requeue: POST /api/v1/outboxes/{name}/dead-letters/requeue {"seqs": [..]} or {"all": true}
func (s *Server) requeue(w http.ResponseWriter, r *http.Request, c who) {
	ob, ok := s.pathOutbox(w, r)
	if !ok {
		return
	}
	var req struct {
		Seqs []uint64 `json:"seqs"`
		All  bool     `json:"all"`
	}
	if err := decodeBody(r, &req); err != nil || (len(req.Seqs) == 0) == !req.All {
		http.Error(w, `body must be {"seqs": [SEQ, ...]} or {"all": true}`, http.StatusBadRequest)
		return
	}
	var n int
	err := s.outboxAction(r, c, ob, "requeue_dead_letters", "requeue", func(ctx context.Context) ([]any, error) {
		var err error
		n, err = ob.Requeue(ctx, req.Seqs...)
		return []any{"seqs", req.Seqs, "all", req.All, "moved", n}, err
	})
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	res := map[string]any{"requeued": n}
	if err != nil {
		res["error"] = err.Error()
	}
	writeJSON(w, res)
}

// purge: POST /api/v1/outboxes/{name}/dead-letters/purge
func (s *Server) purge(w http.ResponseWriter, r *http.Request, c who) {
	ob, ok := s.pathOutbox(w, r)
	if !ok {
		return
	}
	var n int
	err := s.outboxAction(r, c, ob, "purge_dead_letters", "purge", func(ctx context.Context) ([]any, error) {
		var err error
		n, err = ob.PurgeDeadLetters(ctx)
		return []any{"purged", n}, err
	})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, map[string]any{"purged": n})
}

// disconnect: POST /api/v1/clients/disconnect {"id": "..."} (client ids may contain '/').
func (s *Server) disconnect(w http.ResponseWriter, r *http.Request, c who) {
	if s.clients == nil {
		http.Error(w, "no broker", http.StatusNotFound)
		return
	}
	var req struct {
		ID string `json:"id"`
	}
	if err := decodeBody(r, &req); err != nil || req.ID == "" {
		http.Error(w, `body must be {"id": "CLIENT_ID"}`, http.StatusBadRequest)
		return
	}
	err := s.clients.Disconnect(req.ID)
	s.audit(c, "disconnect_client", "disconnect", err, "client_id", req.ID)
	if errors.Is(err, broker.ErrNoClient) {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	} else if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, map[string]any{"disconnected": req.ID})
}

func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func writeJSON(w http.ResponseWriter, v any) { writeJSONStatus(w, http.StatusOK, v) }

// writeJSONStatus is writeJSON with a status other than 200.
func writeJSONStatus(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
