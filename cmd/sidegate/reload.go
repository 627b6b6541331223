package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sidegate/sidegate/authz"
)

// reloader applies a changed configuration file to the running daemon:
// when the file's content changes (a ConfigMap update; checked every
// reload.interval) and on SIGHUP. The new file is read, parsed and
// validated off the request path. If it is good, the issuers' key caches
// follow it and a new engine (routes, issuers, tokens, forward rules,
// CSRF, a new verified-token cache) is swapped in atomically: checks in
// flight finish on the engine they started with. If it is bad, nothing
// changes and the error is logged and counted.
//
// Listeners, the revocation feed, metrics and debug settings are bound at
// start: a change to them is logged as needing a restart and otherwise
// ignored.
type reloader struct {
	path string
	d    *daemon
	srv  *authz.Server
	m    *authz.Metrics
	log  *slog.Logger

	mu      sync.Mutex // one reload at a time
	current *Config    // in force
	seen    [sha256.Size]byte
	gen     int64

	reloads    *prometheus.CounterVec
	generation prometheus.Gauge
	lastOK     prometheus.Gauge
}

func newReloader(cfg *Config, d *daemon, srv *authz.Server, m *authz.Metrics, reg prometheus.Registerer, log *slog.Logger) (*reloader, error) {
	r := &reloader{
		path: cfg.path, d: d, srv: srv, m: m, log: log, current: cfg, seen: cfg.sum, gen: 1,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sidegate_config_reload_total",
			Help: "Configuration reloads by outcome: success (applied), error (the file was invalid; the configuration in force is unchanged).",
		}, []string{"outcome"}),
		generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sidegate_config_generation",
			Help: "Generation of the configuration in force: 1 at start, one more for every reload applied.",
		}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sidegate_config_last_reload_success_timestamp_seconds",
			Help: "When the configuration in force was loaded (start, or the last reload applied).",
		}),
	}
	for _, c := range []prometheus.Collector{r.reloads, r.generation, r.lastOK} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	r.reloads.WithLabelValues("success")
	r.reloads.WithLabelValues("error")
	r.generation.Set(1)
	r.lastOK.SetToCurrentTime()
	return r, nil
}

// Run reloads on SIGHUP and, every interval, when the file has changed,
// until ctx ends.
func (r *reloader) Run(ctx context.Context, interval time.Duration) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var tick <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			r.reload("SIGHUP", true)
		case <-tick:
			r.reload("file changed", false)
		}
	}
}

// reload reads the file and applies it if it is good. Unless forced, a
// file whose content was already seen (applied, or refused) is left alone,
// so that a bad file is reported once, not on every tick.
func (r *reloader) reload(why string, force bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	data, err := os.ReadFile(r.path)
	if err != nil {
		// A ConfigMap update swaps a symlink; a read between the two steps
		// may fail. The next tick tries again; the config in force stays.
		if force {
			r.fail(why, err)
		}
		return
	}
	sum := sha256.Sum256(data)
	if sum == r.seen && !force {
		return
	}
	r.seen = sum
	cfg, err := ParseConfig(data)
	if err != nil {
		r.fail(why, err)
		return
	}
	if err := r.apply(cfg); err != nil {
		r.fail(why, err)
		return
	}
	r.gen++
	r.generation.Set(float64(r.gen))
	r.lastOK.SetToCurrentTime()
	r.reloads.WithLabelValues("success").Inc()
	r.log.Info("configuration reloaded", "trigger", why, "file", r.path, "generation", r.gen, "summary", cfg.Summary())
}

func (r *reloader) fail(why string, err error) {
	r.reloads.WithLabelValues("error").Inc()
	var buf bytes.Buffer
	printConfigError(&buf, r.path, err)
	r.log.Error("configuration reload refused; the configuration in force is unchanged", "trigger", why, "generation", r.gen, "err", buf.String())
}

// apply makes cfg the configuration in force.
func (r *reloader) apply(cfg *Config) error {
	engine, err := r.d.buildEngine(cfg)
	if err != nil {
		return err
	}
	// Issuers first: a new issuer starts fetching its keys, so that its
	// tokens verify as soon as it has them; a removed one is no longer in
	// the new engine's configuration, so nothing verifies with it.
	if err := r.d.keys.SetIssuers(cfg.jwksIssuers()); err != nil {
		return fmt.Errorf("issuers: %w", err)
	}
	for _, w := range restartOnly(r.current, cfg) {
		r.log.Warn("configuration change needs a restart to take effect; the running value is kept", "key", w)
	}
	logRouteWarnings(r.log, cfg)
	if r.d.sink != nil {
		r.d.sink.setIssuers(cfg)
	}
	r.m.InitRoutes(cfg.policy.RouteNames())
	r.srv.SetEngine(engine)
	r.current = cfg
	return nil
}

// restartBound are the top-level sections bound at start. The chart's
// checksum/config-restart annotation hashes the same list, so that editing
// one of them rolls the pods while the rest applies live.
var restartBound = []string{"listen", "revocation", "metrics", "debug", "jwks", "reload"}

// restartSections are c's restartBound sections, by key.
func restartSections(c *Config) map[string]any {
	var interval time.Duration
	if c.Reload.Interval != nil {
		interval = c.Reload.Interval.D()
	}
	return map[string]any{
		"listen": c.Listen, "revocation": c.Revocation, "metrics": c.Metrics,
		"debug": c.Debug, "jwks": c.JWKS, "reload": interval,
	}
}

// restartOnly lists the settings that differ between old and new but are
// bound at start.
func restartOnly(old, new *Config) []string {
	o, n := restartSections(old), restartSections(new)
	var out []string
	for _, key := range restartBound {
		if !reflect.DeepEqual(o[key], n[key]) {
			out = append(out, key)
		}
	}
	return out
}
