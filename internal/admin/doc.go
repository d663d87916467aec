// Package admin serves edged's local HTTP API and web dashboard: /healthz, /metrics
// (Prometheus exposition), /api/v1/status (JSON), the dead-letter and client actions, a live
// message view (server-sent events) and the embedded dashboard at /. It owns the HTTP server,
// its authentication (bearer token, CSRF checks on actions, audit log), the dashboard's
// history ring buffers and the formatting of payload previews. The status document itself is
// assembled by the caller, the metrics by whoever registered them; actions call into storage
// and broker and hold no state of their own.
package admin
