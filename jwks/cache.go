package jwks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// IssuerConfig says where one issuer's keys come from.
type IssuerConfig struct {
	Issuer string
	// JWKSURI is fetched directly; with Discovery it is read from the
	// issuer's OpenID configuration instead.
	JWKSURI   string
	Discovery bool
}

// Options tune the cache. Zero values take the defaults.
type Options struct {
	RefreshInterval time.Duration // default 5m
	Timeout         time.Duration // per HTTP request, default 10s
	MaxBodyBytes    int64         // per document, default 1 MiB
	Client          *http.Client  // default: a client with Timeout
	Logger          *slog.Logger
	Registerer      prometheus.Registerer
	Now             func() time.Time
}

const (
	defaultRefreshInterval = 5 * time.Minute
	defaultTimeout         = 10 * time.Second
	defaultMaxBodyBytes    = 1 << 20
	firstRetry             = time.Second
)

// Cache holds the key sets of every configured issuer.
type Cache struct {
	opts    Options
	log     *slog.Logger
	m       *metrics
	issuers map[string]*issuer
	order   []string
}

type issuer struct {
	cfg     IssuerConfig
	set     atomic.Pointer[Set]
	jwksURI atomic.Pointer[string] // configured, or last good discovery result
	mu      sync.Mutex             // one refresh at a time
}

// New builds a cache for the issuers. It fetches nothing until Run or Refresh.
func New(issuers []IssuerConfig, opts Options) (*Cache, error) {
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = defaultRefreshInterval
	}
	if opts.Timeout <= 0 {
		opts.Timeout = defaultTimeout
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = defaultMaxBodyBytes
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: opts.Timeout, CheckRedirect: noDowngrade}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Cache{opts: opts, log: opts.Logger, issuers: make(map[string]*issuer, len(issuers))}
	for _, ic := range issuers {
		if _, dup := c.issuers[ic.Issuer]; dup {
			return nil, fmt.Errorf("jwks: issuer %q configured twice", ic.Issuer)
		}
		is := &issuer{cfg: ic}
		if !ic.Discovery {
			uri := ic.JWKSURI
			is.jwksURI.Store(&uri)
		}
		c.issuers[ic.Issuer] = is
		c.order = append(c.order, ic.Issuer)
	}
	m, err := newMetrics(opts.Registerer, c)
	if err != nil {
		return nil, err
	}
	c.m = m
	return c, nil
}

// Lookup returns the issuer's key with exactly this kid. It never fetches:
// keys named or linked from a token are never used, and a token cannot make
// sidegate contact anything.
func (c *Cache) Lookup(_ context.Context, iss, kid string) (*Key, error) {
	is, ok := c.issuers[iss]
	if !ok {
		return nil, ErrUnknownIssuer
	}
	set := is.set.Load()
	if set == nil {
		return nil, ErrKeysUnavailable
	}
	k, ok := set.Keys[kid]
	if !ok {
		return nil, ErrUnknownKey
	}
	return k, nil
}

// Unready lists the issuers that have no usable key set yet, in
// configuration order. Empty means ready.
func (c *Cache) Unready() []string {
	var out []string
	for _, name := range c.order {
		if c.issuers[name].set.Load() == nil {
			out = append(out, name)
		}
	}
	return out
}

// Run fetches every issuer's keys now and then every RefreshInterval (with
// jitter), retrying failures sooner with capped exponential backoff, until
// ctx ends. A failed fetch never replaces a good key set.
func (c *Cache) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, name := range c.order {
		is := c.issuers[name]
		wg.Go(func() { c.loop(ctx, is) })
	}
	wg.Wait()
	return nil
}

func (c *Cache) loop(ctx context.Context, is *issuer) {
	retry := firstRetry
	for {
		var wait time.Duration
		if err := c.refresh(ctx, is); err != nil {
			if ctx.Err() != nil {
				return
			}
			wait = jitter(retry)
			retry = min(retry*2, c.opts.RefreshInterval)
			c.log.Warn("jwks refresh failed; keeping the previous key set", "issuer", is.cfg.Issuer, "err", err, "retry_in", wait.Round(time.Millisecond))
		} else {
			retry = firstRetry
			wait = jitter(c.opts.RefreshInterval)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// jitter spreads d over [0.9d, 1.1d) so that many sidecars do not fetch in step.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.9 + 0.2*rand.Float64()))
}

// Refresh fetches one issuer's keys now. It is what Run calls on its schedule.
func (c *Cache) Refresh(ctx context.Context, iss string) error {
	is, ok := c.issuers[iss]
	if !ok {
		return ErrUnknownIssuer
	}
	return c.refresh(ctx, is)
}

func (c *Cache) refresh(ctx context.Context, is *issuer) error {
	is.mu.Lock()
	defer is.mu.Unlock()
	err := c.fetch(ctx, is)
	outcome := "success"
	if err != nil {
		outcome = "error"
	}
	c.m.refreshes.WithLabelValues(is.cfg.Issuer, outcome).Inc()
	return err
}

func (c *Cache) fetch(ctx context.Context, is *issuer) error {
	if is.cfg.Discovery {
		if err := c.discover(ctx, is); err != nil {
			if is.jwksURI.Load() == nil {
				return err
			}
			c.log.Warn("oidc discovery failed; using the last discovered jwks_uri", "issuer", is.cfg.Issuer, "err", err)
		}
	}
	uri := *is.jwksURI.Load()
	body, err := c.get(ctx, uri)
	if err != nil {
		return err
	}
	set, dropped, err := ParseSet(body)
	for _, d := range dropped {
		c.log.Warn("jwks key refused", "issuer", is.cfg.Issuer, "uri", uri, "key", d.String())
	}
	if err != nil {
		return fmt.Errorf("jwks: %s: %w", uri, err)
	}
	set.FetchedAt = c.opts.Now()
	is.set.Store(set)
	c.log.Debug("jwks refreshed", "issuer", is.cfg.Issuer, "keys", len(set.Keys))
	return nil
}

// discover reads the issuer's OpenID configuration (OpenID Connect
// Discovery 1.0 §4) and records its jwks_uri. The document's issuer must
// equal the configured one exactly (§4.3).
func (c *Cache) discover(ctx context.Context, is *issuer) error {
	uri := strings.TrimSuffix(is.cfg.Issuer, "/") + "/.well-known/openid-configuration"
	body, err := c.get(ctx, uri)
	if err != nil {
		return err
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return fmt.Errorf("jwks: discovery %s: %w", uri, err)
	}
	if doc.Issuer != is.cfg.Issuer {
		return fmt.Errorf("jwks: discovery %s: issuer %q does not equal the configured %q", uri, doc.Issuer, is.cfg.Issuer)
	}
	if !strings.HasPrefix(doc.JWKSURI, "https://") && !strings.HasPrefix(doc.JWKSURI, "http://") {
		return fmt.Errorf("jwks: discovery %s: jwks_uri %q is not an http(s) URL", uri, doc.JWKSURI)
	}
	if strings.HasPrefix(uri, "https://") && !strings.HasPrefix(doc.JWKSURI, "https://") {
		return fmt.Errorf("jwks: discovery %s: jwks_uri %q would downgrade https to http", uri, doc.JWKSURI)
	}
	is.jwksURI.Store(&doc.JWKSURI)
	return nil
}

func (c *Cache) get(ctx context.Context, uri string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks: fetch %s: %w", uri, err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := c.opts.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks: fetch %s: %w", uri, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("jwks: fetch %s: HTTP %d", uri, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, c.opts.MaxBodyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("jwks: fetch %s: %w", uri, err)
	}
	if int64(len(body)) > c.opts.MaxBodyBytes {
		return nil, fmt.Errorf("jwks: fetch %s: %w", uri, errTooLarge{c.opts.MaxBodyBytes})
	}
	return body, nil
}

// noDowngrade follows at most 5 redirects and never from https to http:
// keys fetched in clear text could be swapped by anyone on the path.
func noDowngrade(req *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return errors.New("jwks: more than 5 redirects")
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("jwks: refusing redirect from https to %s", req.URL.Redacted())
	}
	return nil
}

type errTooLarge struct{ limit int64 }

func (e errTooLarge) Error() string { return fmt.Sprintf("body over %d bytes", e.limit) }
