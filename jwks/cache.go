package jwks

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
)

// IssuerConfig says where one issuer's keys come from.
type IssuerConfig struct {
	Issuer string
	// JWKSURI is fetched directly; with Discovery it is read from the
	// issuer's OpenID configuration instead.
	JWKSURI   string
	Discovery bool
	// Optional issuers do not hold back readiness while they have no keys.
	Optional bool
	// InsecureHTTP allows plain-http URLs to hosts other than loopback.
	InsecureHTTP bool
}

// Options tune the cache. Zero values take the defaults.
type Options struct {
	// RefreshInterval is the longest time between fetches (default 5m);
	// MinRefreshInterval the shortest (default 1m): Cache-Control max-age
	// and Expires are honoured between the two. MinRefreshInterval also
	// rate-limits refetches for unknown kids.
	RefreshInterval    time.Duration
	MinRefreshInterval time.Duration
	// KidWait bounds how long a request with an unknown kid waits for the
	// refetch it triggered or joined (default 500ms).
	KidWait time.Duration
	// MaxStale is how long keys are served after the last good fetch while
	// fetches fail (default 24h). Past it the issuer's tokens are denied.
	MaxStale time.Duration
	// SnapshotDir, when set, keeps the last good key set of every issuer on
	// disk and loads it at start, so a restart during an identity-provider
	// outage keeps verifying.
	SnapshotDir    string
	Timeout        time.Duration // whole HTTP request, default 10s
	ConnectTimeout time.Duration // TCP connect, default 5s
	MaxBodyBytes   int64         // per document, default 1 MiB
	MaxKeys        int           // per JWKS, default 100
	CAFile         string        // PEM bundle trusted besides the system roots
	Client         *http.Client  // default: built from the settings above
	Logger         *slog.Logger
	Registerer     prometheus.Registerer
	Now            func() time.Time
}

const (
	defaultRefreshInterval    = 5 * time.Minute
	defaultMinRefreshInterval = time.Minute
	defaultKidWait            = 500 * time.Millisecond
	defaultMaxStale           = 24 * time.Hour
	defaultTimeout            = 10 * time.Second
	defaultConnectTimeout     = 5 * time.Second
	defaultMaxBodyBytes       = 1 << 20
	firstRetry                = time.Second
	maxRememberedKids         = 10_000
)

// Cache holds the key sets of every configured issuer.
type Cache struct {
	opts Options
	log  *slog.Logger
	m    *metrics
	// issuers is read without a lock by the request path; SetIssuers
	// replaces it whole.
	issuers atomic.Pointer[issuerSet]

	mu  sync.Mutex // serializes SetIssuers, and Run's start and end
	run *runner    // while Run runs; guarded by mu
}

// issuerSet is one configuration's issuers. It is never changed once
// published: SetIssuers builds a new one (copy on write), reusing the
// *issuer of every issuer whose configuration is unchanged.
type issuerSet struct {
	byName map[string]*issuer
	order  []*issuer // configuration order
}

type issuer struct {
	cfg IssuerConfig
	set atomic.Pointer[Set]
	// jwksURI is the configured URI, or the last good discovery result.
	jwksURI atomic.Pointer[string]

	fetches singleflight.Group // one fetch at a time; callers share it

	mu sync.Mutex // guards what follows
	// fetching is true exactly while fetches holds a call: it is set when
	// a fetch is started or joined and cleared, together with Forget, when
	// the fetch ends, both under mu. So an unknown-kid lookup that decides
	// under mu to join a fetch does join one, and one that finds none
	// starts its own only through the rate limit.
	fetching     bool
	discoveredAt time.Time
	lastKidFetch time.Time
	// notFound remembers unknown kids until a time, keyed by a hash: a kid
	// comes from a token before its signature is checked and may be kilobytes.
	notFound map[uint64]time.Time

	// retired is set when SetIssuers drops the issuer (or replaces it with
	// a changed configuration). A fetch still under way then finishes into
	// this forgotten value: it writes no snapshot, and one that ends after
	// retirement (most likely cut short by it) is not counted.
	retired atomic.Bool
	// snapMu orders snapshot writes with retirement, so that once retire
	// returns no write of this issuer is running or will start. The
	// request path never takes it.
	snapMu sync.Mutex
}

// New builds a cache for the issuers and loads their snapshots when
// SnapshotDir is set. It fetches nothing until Run, Refresh or a Lookup of
// an unknown kid.
func New(issuers []IssuerConfig, opts Options) (*Cache, error) {
	setDefault(&opts.RefreshInterval, defaultRefreshInterval)
	setDefault(&opts.MinRefreshInterval, min(defaultMinRefreshInterval, opts.RefreshInterval))
	setDefault(&opts.KidWait, defaultKidWait)
	setDefault(&opts.MaxStale, defaultMaxStale)
	setDefault(&opts.Timeout, defaultTimeout)
	setDefault(&opts.ConnectTimeout, defaultConnectTimeout)
	setDefault(&opts.MaxBodyBytes, defaultMaxBodyBytes)
	setDefault(&opts.MaxKeys, DefaultMaxKeys)
	if opts.MinRefreshInterval > opts.RefreshInterval {
		return nil, fmt.Errorf("jwks: min refresh interval %v is over the refresh interval %v", opts.MinRefreshInterval, opts.RefreshInterval)
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
	if opts.Client == nil {
		client, err := newClient(opts)
		if err != nil {
			return nil, err
		}
		opts.Client = client
	}
	set, err := newIssuerSet(issuers, &issuerSet{})
	if err != nil {
		return nil, err
	}
	c := &Cache{opts: opts, log: opts.Logger}
	c.issuers.Store(set)
	m, err := newMetrics(opts.Registerer, c)
	if err != nil {
		return nil, err
	}
	c.m = m
	for _, is := range set.order {
		c.admit(is)
	}
	return c, nil
}

// newIssuerSet checks a configuration and builds its issuer set, reusing
// prev's *issuer wherever the configuration is unchanged. It changes
// nothing, so a refused configuration leaves no trace.
func newIssuerSet(issuers []IssuerConfig, prev *issuerSet) (*issuerSet, error) {
	next := &issuerSet{byName: make(map[string]*issuer, len(issuers)), order: make([]*issuer, 0, len(issuers))}
	for _, ic := range issuers {
		if _, dup := next.byName[ic.Issuer]; dup {
			return nil, fmt.Errorf("jwks: issuer %q configured twice", ic.Issuer)
		}
		is := prev.byName[ic.Issuer]
		if is == nil || is.cfg != ic {
			var err error
			if is, err = newIssuer(ic); err != nil {
				return nil, err
			}
		}
		next.byName[ic.Issuer] = is
		next.order = append(next.order, is)
	}
	return next, nil
}

func newIssuer(ic IssuerConfig) (*issuer, error) {
	is := &issuer{cfg: ic}
	if ic.Discovery {
		if err := CheckURL(ic.Issuer, ic.InsecureHTTP); err != nil {
			return nil, fmt.Errorf("jwks: issuer %q: discovery: %w", ic.Issuer, err)
		}
		return is, nil
	}
	if err := CheckURL(ic.JWKSURI, ic.InsecureHTTP); err != nil {
		return nil, fmt.Errorf("jwks: issuer %q: %w", ic.Issuer, err)
	}
	uri := ic.JWKSURI
	is.jwksURI.Store(&uri)
	return is, nil
}

// admit readies an issuer before it is published: its counters show at
// zero, and its snapshot is loaded when SnapshotDir is set.
func (c *Cache) admit(is *issuer) {
	c.m.zero(is.cfg.Issuer)
	if c.opts.SnapshotDir != "" {
		c.loadSnapshot(is)
	}
}

// SetIssuers replaces the configured issuers. Issuers whose IssuerConfig is
// unchanged keep their key sets, refresh loops and state untouched; new
// ones are added (snapshot loaded when SnapshotDir is set, and their
// refresh loop started at once if Run is running; otherwise Run starts it);
// removed ones stop their refresh loop and are forgotten (Lookup/Current
// answer ErrUnknownIssuer / false for them). An issuer whose config changed
// (e.g. jwks_uri) is replaced as new. It validates everything first
// (duplicate issuers, URLs via CheckURL) and changes nothing on error.
//
// A fetch under way for a removed issuer finishes into the forgotten
// issuer: it writes no snapshot and is not served. The gauges of a removed
// issuer go; its counters stay (see metrics.go).
func (c *Cache) SetIssuers(issuers []IssuerConfig) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.issuers.Load()
	next, err := newIssuerSet(issuers, prev)
	if err != nil {
		return err
	}
	var added, removed []string
	for _, is := range prev.order {
		if next.byName[is.cfg.Issuer] != is {
			is.retire()
			c.run.stop(is)
			removed = append(removed, is.cfg.Issuer)
		}
	}
	var fresh []*issuer
	for _, is := range next.order {
		if prev.byName[is.cfg.Issuer] != is {
			c.admit(is) // disk I/O, under c.mu only: the request path never takes it
			fresh = append(fresh, is)
			added = append(added, is.cfg.Issuer)
		}
	}
	c.issuers.Store(next)
	for _, is := range fresh {
		c.run.start(is)
	}
	if len(added)+len(removed) > 0 {
		// A changed issuer is in both lists.
		c.log.Info("jwks issuers changed", "added", added, "removed", removed)
	}
	return nil
}

// retire marks an issuer SetIssuers drops. Once it returns, no snapshot
// write of the issuer is running or will start.
func (is *issuer) retire() {
	is.snapMu.Lock()
	defer is.snapMu.Unlock()
	is.retired.Store(true)
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// newClient builds the HTTP client: connect and overall timeouts, TLS
// verification on (with CAFile added to the system roots), and redirects
// only within the same host and never from https to http.
func newClient(opts Options) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DialContext = (&net.Dialer{Timeout: opts.ConnectTimeout, KeepAlive: 30 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = opts.ConnectTimeout
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("jwks: ca_file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("jwks: ca_file %s: no PEM certificate in it", opts.CAFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	return &http.Client{Timeout: opts.Timeout, Transport: tr, CheckRedirect: sameHostNoDowngrade}, nil
}

// sameHostNoDowngrade follows at most 5 redirects, only within the host
// first asked, and never from https to http: keys fetched in clear text, or
// from wherever a redirect points, could be anyone's.
func sameHostNoDowngrade(req *http.Request, via []*http.Request) error {
	if len(via) > 5 {
		return errors.New("jwks: more than 5 redirects")
	}
	if req.URL.Host != via[0].URL.Host {
		return fmt.Errorf("jwks: refusing redirect to another host: %s", req.URL.Redacted())
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("jwks: refusing redirect from https to %s", req.URL.Redacted())
	}
	return nil
}

// CheckURL accepts https URLs, and http URLs to loopback hosts (or to any
// host when insecureHTTP is set).
func CheckURL(raw string, insecureHTTP bool) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if insecureHTTP || isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%q: https is required (http only to loopback, or with insecure_http: true)", raw)
	}
	return fmt.Errorf("%q is not an http(s) URL", raw)
}

func isLoopback(host string) bool {
	if host = strings.ToLower(host); host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Lookup returns the issuer's key with exactly this kid.
//
// Keys named or linked from a token are never used. A kid missing from the
// current set triggers one refetch of the issuer's own JWKS (so a key
// rotation works at once): concurrent requests share that fetch and wait at
// most KidWait or their own deadline; refetches for unknown kids happen at
// most once per MinRefreshInterval, and kids still missing afterwards are
// remembered for that long, so a flood of random kids costs a handful of
// fetches.
func (c *Cache) Lookup(ctx context.Context, iss, kid string) (*Key, error) {
	is, ok := c.issuers.Load().byName[iss]
	if !ok {
		return nil, ErrUnknownIssuer
	}
	now := c.opts.Now()
	set, err := c.usable(is, now)
	if err != nil {
		return nil, err
	}
	if k, ok := set.Keys[kid]; ok {
		return k, nil
	}
	return c.unknownKid(ctx, is, kid, now)
}

// Current returns the key iss serves now for kid, if its key set is usable
// at now (not older than MaxStale), without fetching: the check a cached
// verification is held to on every use.
func (c *Cache) Current(iss, kid string, now time.Time) (*Key, bool) {
	is, ok := c.issuers.Load().byName[iss]
	if !ok {
		return nil, false
	}
	set, err := c.usable(is, now)
	if err != nil {
		return nil, false
	}
	k, ok := set.Keys[kid]
	return k, ok
}

// usable returns the issuer's key set unless it has none or it is older
// than MaxStale.
func (c *Cache) usable(is *issuer, now time.Time) (*Set, error) {
	set := is.set.Load()
	if set == nil {
		return nil, ErrKeysUnavailable
	}
	if age := now.Sub(set.FetchedAt); age > c.opts.MaxStale {
		return nil, fmt.Errorf("%w: the last good fetch was %s ago, over max_stale %s", ErrKeysUnavailable, age.Round(time.Second), c.opts.MaxStale)
	}
	return set, nil
}

func (c *Cache) unknownKid(ctx context.Context, is *issuer, kid string, now time.Time) (*Key, error) {
	count := func(outcome string) { c.m.unknownKid.WithLabelValues(is.cfg.Issuer, outcome).Inc() }
	is.mu.Lock()
	// A fetch that ended since Lookup looked may have brought the kid.
	if k, ok := is.set.Load().Keys[kid]; ok {
		is.mu.Unlock()
		return k, nil
	}
	if until, ok := is.notFound[kidHash(kid)]; ok && now.Before(until) {
		is.mu.Unlock()
		count("remembered")
		return nil, ErrUnknownKey
	}
	// A caller whose own deadline comes first gets its context's error
	// (reason canceled), not a timeout: one outcome per cause.
	wait := c.opts.KidWait
	timer := time.NewTimer(wait)
	defer timer.Stop()
	// Joining a fetch already under way costs nothing; starting one is
	// rate-limited. A rate-limited kid is not remembered: it was never
	// looked for, and may be fetched as soon as the limit allows.
	//
	// A fetch joined may have asked for the JWKS before the key was
	// published (a scheduled refresh in flight when the identity provider
	// adds a key and signs with it at once): its answer does not settle
	// the kid. Once it ends without it, the lookup looks once more: it
	// joins the fetch under way then, which began after the first ended,
	// or starts one of its own under the same rate limit. That second
	// answer settles the kid either way.
	for retry := false; ; retry = true {
		joined := is.fetching
		if !joined {
			if now.Sub(is.lastKidFetch) < c.opts.MinRefreshInterval {
				is.mu.Unlock()
				count("rate_limited")
				return nil, ErrUnknownKey
			}
			is.lastKidFetch = now
		}
		fetched := c.startFetchLocked(context.WithoutCancel(ctx), is)
		is.mu.Unlock()
		select {
		case <-fetched:
		case <-timer.C:
			count("timeout")
			return nil, fmt.Errorf("%w: refetch for kid still running after %s", ErrUnknownKey, wait)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if set, err := c.usable(is, c.opts.Now()); err == nil {
			if k, ok := set.Keys[kid]; ok {
				count("found")
				return k, nil
			}
		}
		if !joined || retry {
			break
		}
		now = c.opts.Now()
		is.mu.Lock()
	}
	now = c.opts.Now()
	is.mu.Lock()
	is.remember(kid, now, now.Add(c.opts.MinRefreshInterval))
	is.mu.Unlock()
	count("not_found")
	return nil, ErrUnknownKey
}

// remember notes a kid as not found until a time. is.mu must be held. The
// map is bounded: when full, expired entries go, and if none have, all do.
func (is *issuer) remember(kid string, now, until time.Time) {
	if is.notFound == nil {
		is.notFound = map[uint64]time.Time{}
	}
	if len(is.notFound) >= maxRememberedKids {
		for k, u := range is.notFound {
			if !u.After(now) {
				delete(is.notFound, k)
			}
		}
		if len(is.notFound) >= maxRememberedKids {
			clear(is.notFound)
		}
	}
	is.notFound[kidHash(kid)] = until
}

// kidSeed keys kidHash; it is random per process, so no one can aim for a
// collision (which would only delay one kid's lookup by an interval).
var kidSeed = maphash.MakeSeed()

func kidHash(kid string) uint64 { return maphash.String(kidSeed, kid) }

// Unready lists the issuers that hold back readiness, in configuration
// order: those without a usable key set (none yet, or older than
// MaxStale), unless optional. Empty means ready.
func (c *Cache) Unready() []string {
	var out []string
	now := c.opts.Now()
	for _, is := range c.issuers.Load().order {
		if _, err := c.usable(is, now); err != nil && !is.cfg.Optional {
			out = append(out, is.cfg.Issuer)
		}
	}
	return out
}

// IssuerStatus describes one issuer's keys, for /readyz.
type IssuerStatus struct {
	Issuer    string
	Optional  bool
	Ready     bool
	Keys      int
	FetchedAt time.Time // zero when never fetched
	Problem   string    // why not ready, when not
}

// Status reports every issuer, in configuration order.
func (c *Cache) Status() []IssuerStatus {
	now := c.opts.Now()
	issuers := c.issuers.Load().order
	out := make([]IssuerStatus, 0, len(issuers))
	for _, is := range issuers {
		st := IssuerStatus{Issuer: is.cfg.Issuer, Optional: is.cfg.Optional}
		if set := is.set.Load(); set != nil {
			st.Keys, st.FetchedAt = len(set.Keys), set.FetchedAt
		}
		if _, err := c.usable(is, now); err != nil {
			st.Problem = err.Error()
		} else {
			st.Ready = true
		}
		out = append(out, st)
	}
	return out
}

// Run keeps every issuer's keys fresh until ctx ends: a fetch now, then
// again after the server's Cache-Control max-age or Expires, bounded by
// MinRefreshInterval and RefreshInterval, with jitter. Failures are retried
// with exponential backoff and jitter, from 1s up to RefreshInterval, and
// never replace a good key set.
//
// Issuers that SetIssuers adds meanwhile get their loop at once; those it
// removes lose theirs. Run returns when ctx ends and every loop has
// stopped; a second Run while one runs is an error.
func (c *Cache) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.run != nil {
		c.mu.Unlock()
		return errors.New("jwks: Run is already running")
	}
	r := &runner{ctx: ctx, loop: c.loop, stops: map[*issuer]context.CancelFunc{}}
	for _, is := range c.issuers.Load().order {
		r.start(is)
	}
	c.run = r
	c.mu.Unlock()

	<-ctx.Done()
	c.mu.Lock()
	c.run = nil // no loop starts after this, so none after Wait begins
	c.mu.Unlock()
	r.wg.Wait()
	return nil
}

// runner is one Run: the context its loops run under, and each loop's own
// cancel, so that SetIssuers can stop one. A nil *runner (Run not
// running) starts and stops nothing. Its methods are called under c.mu.
type runner struct {
	ctx   context.Context
	loop  func(context.Context, *issuer)
	wg    sync.WaitGroup
	stops map[*issuer]context.CancelFunc
}

func (r *runner) start(is *issuer) {
	if r == nil {
		return
	}
	ctx, cancel := context.WithCancel(r.ctx)
	r.stops[is] = cancel
	r.wg.Go(func() {
		defer cancel()
		r.loop(ctx, is)
	})
}

// stop ends the issuer's loop and cancels the fetch it is waiting for. It
// does not wait: Run does, before it returns.
func (r *runner) stop(is *issuer) {
	if r == nil {
		return
	}
	if cancel, ok := r.stops[is]; ok {
		cancel()
		delete(r.stops, is)
	}
}

func (c *Cache) loop(ctx context.Context, is *issuer) {
	retry := min(firstRetry, c.opts.RefreshInterval)
	for {
		var wait time.Duration
		select {
		case <-ctx.Done():
			return
		case r := <-c.startFetch(ctx, is):
			if r.Err != nil {
				// Full jitter between half and all of the backoff step.
				wait = retry/2 + time.Duration(rand.Int64N(int64(retry/2)+1))
				retry = min(retry*2, c.opts.RefreshInterval)
				c.log.Warn("jwks refresh failed; keeping the previous key set", "issuer", is.cfg.Issuer, "err", r.Err, "retry_in", wait.Round(time.Millisecond))
			} else {
				retry = min(firstRetry, c.opts.RefreshInterval)
				wait = jitter(r.Val.(time.Duration))
			}
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

// Refresh fetches one issuer's keys now (joining a fetch under way).
func (c *Cache) Refresh(ctx context.Context, iss string) error {
	is, ok := c.issuers.Load().byName[iss]
	if !ok {
		return ErrUnknownIssuer
	}
	// The fetch may be shared with waiting lookups: a caller that gives up
	// stops waiting, without cancelling it for them.
	select {
	case r := <-c.startFetch(context.WithoutCancel(ctx), is):
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// startFetch starts a fetch of the issuer's keys under ctx (and the fetch
// timeout), or joins the one under way. Requests pass a context of their
// own (not their request's), so one that gives up does not spoil the fetch
// for the others; Run passes its own, so no fetch outlives it.
func (c *Cache) startFetch(ctx context.Context, is *issuer) <-chan singleflight.Result {
	is.mu.Lock()
	defer is.mu.Unlock()
	return c.startFetchLocked(ctx, is)
}

// startFetchLocked is startFetch with is.mu held. DoChan does no I/O: it
// starts the fetch in a goroutine or joins the one under way.
func (c *Cache) startFetchLocked(ctx context.Context, is *issuer) <-chan singleflight.Result {
	is.fetching = true
	return is.fetches.DoChan("fetch", func() (any, error) {
		ttl, err := c.fetch(ctx, is)
		outcome := "success" // a 304 too: the keys are confirmed fresh
		if err != nil {
			outcome = "error"
		}
		// SetIssuers retires an issuer before it cancels its loop, so a
		// fetch cut short by the removal is not counted as a failure.
		if !is.retired.Load() {
			c.m.refreshes.WithLabelValues(is.cfg.Issuer, outcome).Inc()
		}
		// From here on, callers start a new fetch rather than join this
		// finished one.
		is.mu.Lock()
		is.fetching = false
		is.fetches.Forget("fetch")
		is.mu.Unlock()
		return ttl, err
	})
}

// fetch gets the issuer's JWKS (rediscovering its URI when due) and swaps
// in the new set. It returns how long the answer may be cached.
func (c *Cache) fetch(ctx context.Context, is *issuer) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	if is.cfg.Discovery {
		is.mu.Lock()
		due := is.jwksURI.Load() == nil || c.opts.Now().Sub(is.discoveredAt) >= c.opts.RefreshInterval
		is.mu.Unlock()
		if due {
			if err := c.discover(ctx, is); err != nil {
				if is.jwksURI.Load() == nil {
					return 0, err
				}
				c.log.Warn("oidc discovery failed; using the last discovered jwks_uri", "issuer", is.cfg.Issuer, "err", err)
			}
		}
	}
	uri := *is.jwksURI.Load()
	cur := is.set.Load()
	var conditional *Set
	if cur != nil && cur.URI == uri {
		conditional = cur
	}
	resp, body, err := c.get(ctx, uri, conditional)
	if err != nil {
		return 0, err
	}
	ttl := c.cacheFor(resp.Header)
	now := c.opts.Now()
	if resp.StatusCode == http.StatusNotModified {
		fresh := *conditional
		fresh.FetchedAt = now
		if etag := resp.Header.Get("ETag"); etag != "" {
			fresh.ETag = etag
		}
		is.set.Store(&fresh)
		c.writeSnapshot(is, &fresh)
		c.log.Debug("jwks not modified", "issuer", is.cfg.Issuer, "next_in", ttl)
		return ttl, nil
	}
	set, dropped, err := parseSet(body, c.opts.MaxKeys)
	for _, d := range dropped {
		c.log.Warn("jwks key refused", "issuer", is.cfg.Issuer, "uri", uri, "key", d.String())
	}
	if err != nil {
		return 0, fmt.Errorf("jwks: %s: %w", uri, err)
	}
	if cur != nil {
		set.keep(cur)
	}
	set.FetchedAt, set.URI = now, uri
	set.ETag, set.LastModified = resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	set.raw = body
	is.set.Store(set)
	c.writeSnapshot(is, set)
	c.log.Debug("jwks refreshed", "issuer", is.cfg.Issuer, "keys", len(set.Keys), "next_in", ttl)
	return ttl, nil
}

// cacheFor reads Cache-Control max-age (or no-cache/no-store) and Expires,
// and bounds the result by MinRefreshInterval and RefreshInterval. Without
// either header the keys are refetched every RefreshInterval.
func (c *Cache) cacheFor(h http.Header) time.Duration {
	lo, hi := c.opts.MinRefreshInterval, c.opts.RefreshInterval
	ttl := hi
	var maxAge *time.Duration
	for _, line := range h.Values("Cache-Control") {
		for dir := range strings.SplitSeq(line, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(dir), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "no-cache", "no-store":
				// Wherever it stands, the most restrictive directive wins
				// (RFC 9111 §4.2.1).
				return lo
			case "max-age":
				if maxAge == nil { // the first one counts
					d := deltaSeconds(val)
					maxAge = &d
				}
			}
		}
	}
	if maxAge != nil {
		return min(max(*maxAge, lo), hi)
	}
	if exp := h.Get("Expires"); exp != "" {
		t, err := http.ParseTime(exp)
		if err != nil {
			return lo // RFC 9111 §5.3: an invalid Expires means already expired
		}
		base := c.opts.Now()
		if d, err := http.ParseTime(h.Get("Date")); err == nil {
			base = d
		}
		ttl = t.Sub(base)
	}
	return min(max(ttl, lo), hi)
}

// deltaSeconds reads a max-age value (RFC 9111 §1.2.2). An invalid one
// counts as 0, already stale (§4.2.1, like an invalid Expires); one too
// large for a Duration as the largest.
func deltaSeconds(v string) time.Duration {
	v = strings.Trim(strings.TrimSpace(v), `"`)
	if v == "" || strings.Trim(v, "0123456789") != "" {
		return 0
	}
	secs, err := strconv.ParseInt(v, 10, 64)
	if err != nil || secs > int64(math.MaxInt64/time.Second) {
		return math.MaxInt64 // only digits, so only too large
	}
	return time.Duration(secs) * time.Second
}

// discover reads the issuer's OpenID configuration (OpenID Connect
// Discovery 1.0 §4) and records its jwks_uri. The document's issuer must
// equal the configured one exactly (§4.3).
func (c *Cache) discover(ctx context.Context, is *issuer) error {
	uri := strings.TrimSuffix(is.cfg.Issuer, "/") + "/.well-known/openid-configuration"
	_, body, err := c.get(ctx, uri, nil)
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
	if err := CheckURL(doc.JWKSURI, is.cfg.InsecureHTTP); err != nil {
		return fmt.Errorf("jwks: discovery %s: jwks_uri: %w", uri, err)
	}
	if strings.HasPrefix(uri, "https://") && !strings.HasPrefix(doc.JWKSURI, "https://") {
		return fmt.Errorf("jwks: discovery %s: jwks_uri %q would downgrade https to http", uri, doc.JWKSURI)
	}
	is.jwksURI.Store(&doc.JWKSURI)
	is.mu.Lock()
	is.discoveredAt = c.opts.Now()
	is.mu.Unlock()
	return nil
}

// get fetches uri. With prev, it asks conditionally (If-None-Match,
// If-Modified-Since); a 304 then comes back with a nil body.
func (c *Cache) get(ctx context.Context, uri string, prev *Set) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("jwks: fetch %s: %w", uri, err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	if prev != nil {
		if prev.ETag != "" {
			req.Header.Set("If-None-Match", prev.ETag)
		}
		if prev.LastModified != "" {
			req.Header.Set("If-Modified-Since", prev.LastModified)
		}
	}
	resp, err := c.opts.Client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("jwks: fetch %s: %w", uri, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotModified && prev != nil {
		return resp, nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, nil, fmt.Errorf("jwks: fetch %s: HTTP %d", uri, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, c.opts.MaxBodyBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("jwks: fetch %s: %w", uri, err)
	}
	if int64(len(body)) > c.opts.MaxBodyBytes {
		return nil, nil, fmt.Errorf("jwks: fetch %s: body over %d bytes", uri, c.opts.MaxBodyBytes)
	}
	return resp, body, nil
}
