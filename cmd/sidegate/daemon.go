package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/sidegate/sidegate/authz"
	"github.com/sidegate/sidegate/jwks"
	"github.com/sidegate/sidegate/revocation"
)

// daemon is one running sidegate: listeners bound, components wired.
type daemon struct {
	cfg      *Config
	log      *slog.Logger
	keys     *jwks.Cache
	denylist *revocation.Denylist   // nil without revocation
	feed     *revocation.Subscriber // nil without revocation
	deny     authz.Denylist         // what engines check; nil without revocation
	sink     *issuerCheckedSink     // what the feed applies events through; nil without revocation
	reload   *reloader              // nil when not loaded from a file
	// stages observes every engine's stage timings (metrics.stages); nil
	// when off.
	stages   func(string, time.Duration)
	grpc     *grpc.Server
	health   *authz.Health
	http     *http.Server
	admin    *http.Server
	lns      struct{ grpc, http, admin net.Listener }
	draining atomic.Bool
	ready    atomic.Bool
}

// buildEngine makes the decision engine for cfg, over the daemon's key
// cache and denylist, reporting stage timings to d.stages. Start-up and
// every reload build it the same way.
func (d *daemon) buildEngine(cfg *Config) (*authz.Engine, error) {
	engine, err := authz.NewEngine(cfg.engineConfig(), d.keys, d.deny, nil)
	if err != nil {
		return nil, err
	}
	engine.SetStageObserver(d.stages)
	return engine, nil
}

// logRouteWarnings logs what compiling cfg's routes found suspicious.
func logRouteWarnings(log *slog.Logger, cfg *Config) {
	for _, w := range cfg.warnings {
		log.Warn("routes: " + w)
	}
}

// newDaemon builds every component and binds the listeners, so that a port
// in use fails start-up with a clear error and tests can listen on :0.
func newDaemon(cfg *Config, log *slog.Logger) (*daemon, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	jo := cfg.jwksOptions()
	jo.Logger, jo.Registerer = log.With("component", "jwks"), reg
	keys, err := jwks.New(cfg.jwksIssuers(), jo)
	if err != nil {
		return nil, err
	}
	d := &daemon{cfg: cfg, log: log, keys: keys}
	if cfg.Revocation.NATS.URL != "" {
		if err := d.buildRevocation(reg); err != nil {
			return nil, err
		}
		d.deny = denylist{list: d.denylist, feed: d.feed}
	}
	m, err := authz.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	m.InitRoutes(cfg.policy.RouteNames())
	if cfg.Metrics.Stages {
		sm, err := authz.NewStageMetrics(reg)
		if err != nil {
			return nil, err
		}
		d.stages = sm.Observe
	}
	engine, err := d.buildEngine(cfg)
	if err != nil {
		return nil, err
	}
	srv := authz.NewServer(engine, m, log.With("component", "authz"))
	if err := reg.Register(srv.CacheCollector()); err != nil {
		return nil, err
	}
	if cfg.path != "" {
		if d.reload, err = newReloader(cfg, d, srv, m, reg, log.With("component", "config")); err != nil {
			return nil, err
		}
	}
	d.grpc, d.health = authz.NewGRPCServer(srv)
	d.http = &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	d.admin = &http.Server{
		Handler:           d.adminMux(reg),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	for _, l := range []struct {
		key, addr string
		ln        *net.Listener
	}{
		{"listen.grpc", cfg.Listen.GRPC, &d.lns.grpc},
		{"listen.http", cfg.Listen.HTTP, &d.lns.http},
		{"listen.admin", cfg.Listen.Admin, &d.lns.admin},
	} {
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			d.closeListeners()
			return nil, fmt.Errorf("%s: %w", l.key, err)
		}
		*l.ln = ln
	}
	return d, nil
}

// buildRevocation makes the denylist and the NATS subscriber that feeds it.
func (d *daemon) buildRevocation(reg prometheus.Registerer) error {
	r := d.cfg.Revocation
	list, err := revocation.NewDenylist(revocation.Options{
		Capacity:          r.Capacity,
		FalsePositiveRate: r.FalsePositiveRate,
		MaxLifetime:       d.cfg.Tokens.MaxLifetime.D(),
		Leeway:            d.cfg.Tokens.Leeway.D(),
		RebuildInterval:   r.RebuildInterval.D(),
		Registerer:        reg,
	})
	if err != nil {
		return err
	}
	nopts, err := d.cfg.natsOptions("sidegate " + versionString())
	if err != nil {
		return err
	}
	// The feed applies events through a sink that checks each event's
	// issuer against the configured ones (and follows reloads).
	sink := &issuerCheckedSink{list: list, log: d.log.With("component", "revocation"), warned: map[string]bool{}}
	sink.setIssuers(d.cfg)
	feed, err := revocation.NewSubscriber(revocation.SubscriberOptions{
		NATS:       nopts,
		DenyAfter:  r.OnDisconnect.DenyAfter.D(),
		Logger:     d.log.With("component", "revocation"),
		Registerer: reg,
	}, sink)
	if err != nil {
		return err
	}
	d.denylist, d.feed, d.sink = list, feed, sink
	return nil
}

func (d *daemon) closeListeners() {
	for _, ln := range []net.Listener{d.lns.grpc, d.lns.http, d.lns.admin} {
		if ln != nil {
			ln.Close()
		}
	}
}

func (d *daemon) adminMux(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg, EnableOpenMetrics: true}))
	if d.cfg.Debug.PProf {
		// Registered here: the package's init registers only on
		// http.DefaultServeMux, which sidegate never serves.
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		reason := d.notReady()
		if reason != "" {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready:", reason)
		} else {
			fmt.Fprintln(w, "ready")
		}
		// One line per issuer, so an operator sees which one holds it back.
		now := time.Now()
		for _, st := range d.keys.Status() {
			fmt.Fprintf(w, "issuer %s: ", st.Issuer)
			switch {
			case st.Ready:
				fmt.Fprintf(w, "ok, %d keys, confirmed %s ago", st.Keys, now.Sub(st.FetchedAt).Round(time.Second))
			case st.FetchedAt.IsZero():
				fmt.Fprint(w, "no keys yet")
			default:
				fmt.Fprintf(w, "keys unusable: %s", st.Problem)
			}
			if st.Optional {
				fmt.Fprint(w, " (optional: does not gate readiness)")
			}
			fmt.Fprintln(w)
		}
	})
	return mux
}

// notReady says why the daemon should not receive traffic, or "".
func (d *daemon) notReady() string {
	if d.draining.Load() {
		return "shutting down"
	}
	if missing := d.keys.Unready(); len(missing) > 0 {
		return "no usable keys yet for " + strings.Join(missing, ", ")
	}
	if d.feed != nil {
		if why := d.feed.NotReady(); why != "" {
			return "revocations: " + why
		}
	}
	return ""
}

// Run serves until ctx ends, then shuts down in order: readiness off, gRPC
// GracefulStop, HTTP Shutdown, each bounded by listen.shutdown_timeout.
func (d *daemon) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	keysCtx, stopKeys := context.WithCancel(context.Background())
	defer stopKeys()
	g.Go(func() error { return d.keys.Run(keysCtx) })
	// The revocation feed stops last (NATS Drain), after the listeners.
	feedCtx, stopFeed := context.WithCancel(context.Background())
	defer stopFeed()
	if d.feed != nil {
		g.Go(func() error { return d.denylist.Run(feedCtx) })
		g.Go(func() error { return d.feed.Run(feedCtx) })
	}
	g.Go(func() error {
		// ErrServerStopped: ctx ended before Serve began, and shutdown
		// stopped the server (and closed its listener) first. Not a failure.
		if err := d.grpc.Serve(d.lns.grpc); !errors.Is(err, grpc.ErrServerStopped) {
			return err
		}
		return nil
	})
	g.Go(func() error { return serveHTTP(d.http, d.lns.http) })
	g.Go(func() error { return serveHTTP(d.admin, d.lns.admin) })
	g.Go(func() error { d.watchReadiness(gctx); return nil })
	if d.reload != nil {
		g.Go(func() error { return d.reload.Run(gctx, d.cfg.Reload.Interval.D()) })
	}
	d.log.Info("sidegate started", "version", versionString(), "grpc", d.lns.grpc.Addr().String(),
		"http", d.lns.http.Addr().String(), "admin", d.lns.admin.Addr().String(), "issuers", len(d.cfg.Issuers))
	logRouteWarnings(d.log, d.cfg)
	if d.feed == nil {
		d.log.Warn("revocation is off (no revocation.nats.url): tokens stay valid until they expire")
	}
	g.Go(func() error {
		<-gctx.Done()
		d.shutdown()
		stopKeys()
		stopFeed()
		return nil
	})
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

func serveHTTP(s *http.Server, ln net.Listener) error {
	if err := s.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// shutdown drains: readiness off (and gRPC health NOT_SERVING), then after
// listen.shutdown_delay (time for load balancers and Envoy to stop sending
// new work) gRPC GracefulStop and HTTP Shutdown together, both bounded by
// one listen.shutdown_timeout; whatever is still open then is closed.
func (d *daemon) shutdown() {
	delay, timeout := d.cfg.Listen.ShutdownDelay.D(), d.cfg.Listen.ShutdownTimeout.D()
	d.log.Info("shutting down", "delay", delay, "drain_timeout", timeout)
	d.draining.Store(true)
	// Shutdown, not setHealth(false): it also makes the health server
	// ignore later updates, so that watchReadiness, which may be half-way
	// through an iteration, cannot set SERVING again during the drain.
	d.health.Shutdown()
	if delay > 0 {
		time.Sleep(delay)
	}
	d.health.EndWatches()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		stopped := make(chan struct{})
		go func() { d.grpc.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-ctx.Done():
			d.log.Warn("gRPC drain timed out; closing remaining streams")
			d.grpc.Stop()
		}
	})
	wg.Go(func() {
		if err := d.http.Shutdown(ctx); err != nil {
			d.log.Warn("HTTP drain timed out; closing remaining connections", "err", err)
			d.http.Close()
		}
	})
	wg.Wait()
	d.admin.Close()
	d.log.Info("stopped")
}

// watchReadiness keeps the gRPC health status in step with /readyz and
// logs each change.
func (d *daemon) watchReadiness(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		reason := d.notReady()
		if ready := reason == ""; ready != d.ready.Load() {
			d.ready.Store(ready)
			d.setHealth(ready)
			if ready {
				d.log.Info("ready")
			} else {
				d.log.Warn("not ready", "why", reason)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (d *daemon) setHealth(serving bool) {
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	d.health.SetServingStatus("", st)
	d.health.SetServingStatus(authz.AuthorizationService, st)
}
