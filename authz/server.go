package authz

import (
	"context"
	"log/slog"
	"time"
)

// Server answers checks over gRPC (Envoy ext_authz v3) and HTTP with one
// Engine, recording metrics and the decision log for both.
type Server struct {
	engine *Engine
	m      *Metrics
	log    *slog.Logger
}

// NewServer wraps an engine. log may be nil.
func NewServer(e *Engine, m *Metrics, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{engine: e, m: m, log: log}
}

// decide runs the engine and records the outcome. The decision log line is
// at debug level and names the reason, issuer, subject and kid; tokens and
// cookies never reach the log.
func (s *Server) decide(ctx context.Context, transport string, in Input) Decision {
	start := time.Now()
	d := s.engine.Decide(ctx, in)
	s.m.observe(transport, &d, time.Since(start))
	if s.log.Enabled(ctx, slog.LevelDebug) {
		attrs := []slog.Attr{
			slog.String("transport", transport),
			slog.Bool("allowed", d.Allowed),
			slog.String("reason", d.Reason.Code),
		}
		if d.Claims != nil {
			attrs = append(attrs, slog.String("iss", d.Claims.Issuer), slog.String("sub", d.Claims.Subject), slog.String("kid", d.Claims.KeyID))
		}
		if d.Err != nil {
			attrs = append(attrs, slog.String("detail", d.Err.Error()))
		}
		s.log.LogAttrs(ctx, slog.LevelDebug, "decision", attrs...)
	}
	return d
}
