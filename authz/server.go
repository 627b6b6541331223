package authz

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Server answers checks over gRPC (Envoy ext_authz v3) and HTTP with one
// Engine, recording metrics and the decision log for both. The engine can
// be replaced while checks run (a configuration reload): each check uses
// the engine it started with.
type Server struct {
	engine atomic.Pointer[Engine]
	m      *Metrics
	log    *slog.Logger
}

// NewServer wraps an engine. log may be nil.
func NewServer(e *Engine, m *Metrics, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{m: m, log: log}
	s.engine.Store(e)
	return s
}

// Engine is the engine checks use now.
func (s *Server) Engine() *Engine { return s.engine.Load() }

// SetEngine makes every check that starts from now on use e. The old
// engine's verified-token cache goes with it: a new configuration may
// decide differently. Its cache counters carry over, so that the cache
// metrics never go backwards.
func (s *Server) SetEngine(e *Engine) {
	if old := s.engine.Load(); old != nil && old != e {
		e.cache.inherit(old.cache)
		e.neg.inherit(old.neg)
	}
	s.engine.Store(e)
}

// CacheCollector exports the verified-token cache metrics of whichever
// engine is current.
func (s *Server) CacheCollector() prometheus.Collector { return cacheCollector{s.Engine} }

// decide runs the engine and records the outcome. The decision log line is
// at debug level and names the reason, issuer, subject and kid; tokens and
// cookies never reach the log.
func (s *Server) decide(ctx context.Context, transport string, in Input) Decision {
	start := time.Now()
	d := s.engine.Load().Decide(ctx, in)
	s.m.observe(transport, &d, time.Since(start))
	// A shadow denial is logged at info: it is what a rule being rolled
	// out would have done, and the operator is watching for it.
	level, msg := slog.LevelDebug, "decision"
	if d.Shadow {
		level, msg = slog.LevelInfo, "shadow denial"
	}
	if s.log.Enabled(ctx, level) {
		attrs := []slog.Attr{
			slog.String("transport", transport),
			slog.Bool("allowed", d.Allowed),
			slog.String("reason", d.Reason.Code),
			slog.String("route", d.Route),
		}
		if d.Claims != nil {
			attrs = append(attrs, slog.String("iss", d.Claims.Issuer), slog.String("sub", d.Claims.Subject), slog.String("kid", d.Claims.KeyID))
		}
		if d.Err != nil {
			attrs = append(attrs, slog.String("detail", d.Err.Error()))
		}
		s.log.LogAttrs(ctx, level, msg, attrs...)
	}
	return d
}
