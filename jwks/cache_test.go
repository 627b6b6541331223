package jwks

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sidegate/sidegate/jwks/jwkstest"
)

// testNow is the clock of every cache built by testNewCache.
var testNow = time.Unix(1_800_000_000, 500_000_000)

// testNewCache builds a cache with its own registry and a fixed clock.
// opts may set anything else.
func testNewCache(t *testing.T, issuers []IssuerConfig, opts Options) (*Cache, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	if opts.Now == nil {
		opts.Now = func() time.Time { return testNow }
	}
	c, err := New(issuers, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c, reg
}

// testDirect is the configuration of an issuer fetched straight from s.
func testDirect(s *jwkstest.Server) IssuerConfig {
	return IssuerConfig{Issuer: s.Issuer(), JWKSURI: s.JWKSURI()}
}

// testWantKey asserts that Lookup finds kid and that it is want's key.
func testWantKey(t *testing.T, c *Cache, iss string, want *jwkstest.Key) {
	t.Helper()
	k, err := c.Lookup(context.Background(), iss, want.Kid)
	if err != nil {
		t.Fatalf("Lookup(%q): %v", want.Kid, err)
	}
	if k.ID != want.Kid {
		t.Errorf("Lookup(%q).ID = %q", want.Kid, k.ID)
	}
	testCheckPublic(t, want.Kid, k.Public, testPublic(want))
}

// testClock is an adjustable clock for Options.Now.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testHasKid reports whether the issuer's current set holds kid, without
// a Lookup (which could refetch).
func testHasKid(c *Cache, iss, kid string) bool {
	is, ok := c.issuers.Load().byName[iss]
	if !ok {
		return false
	}
	set := is.set.Load()
	if set == nil {
		return false
	}
	_, ok = set.Keys[kid]
	return ok
}

// testWantErr asserts that Lookup of kid fails with want.
func testWantErr(t *testing.T, c *Cache, iss, kid string, want error) {
	t.Helper()
	k, err := c.Lookup(context.Background(), iss, kid)
	if !errors.Is(err, want) {
		t.Errorf("Lookup(%q, %q) = %v, %v; want %v", iss, kid, k, err, want)
	}
	if err != nil && k != nil {
		t.Errorf("Lookup(%q, %q) returned a key with error %v", iss, kid, err)
	}
}

// testEventually polls cond until it holds or 10s pass. The deadline only
// bounds a broken test; nothing here depends on timing.
func testEventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestCacheFirstFetch(t *testing.T) {
	es := jwkstest.NewKey(t, "ES256", "es-1")
	rs := jwkstest.NewKey(t, "RS256", "rs-1")
	s := jwkstest.NewServer(t, es, rs)
	c, _ := testNewCache(t, []IssuerConfig{testDirect(s)}, Options{})
	ctx := context.Background()

	if got := c.Unready(); !slices.Equal(got, []string{s.Issuer()}) {
		t.Errorf("Unready before fetch = %q", got)
	}
	testWantErr(t, c, s.Issuer(), "es-1", ErrKeysUnavailable)
	if n := s.Fetches(); n != 0 {
		t.Fatalf("New or Lookup fetched %d times; want 0", n)
	}

	if err := c.Refresh(ctx, s.Issuer()); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	if got := c.Unready(); len(got) != 0 {
		t.Errorf("Unready after fetch = %q", got)
	}
	testWantKey(t, c, s.Issuer(), es)
	testWantKey(t, c, s.Issuer(), rs)

	// Exact kid only: no case folding, trimming or prefix matching.
	for _, kid := range []string{"ES-1", "es-1 ", " es-1", "es-", "es-10", "", "es-1\x00"} {
		testWantErr(t, c, s.Issuer(), kid, ErrUnknownKey)
	}
	testWantErr(t, c, "https://other.test/", "es-1", ErrUnknownIssuer)
	testWantErr(t, c, s.Issuer()+"/", "es-1", ErrUnknownIssuer)
	if err := c.Refresh(ctx, "https://other.test/"); !errors.Is(err, ErrUnknownIssuer) {
		t.Errorf("Refresh(unknown issuer) = %v, want ErrUnknownIssuer", err)
	}

	// Unknown kids cost one refetch (the first); the rest are rate-limited
	// (the clock stands still) or remembered as not found.
	if n := s.Fetches(); n != 2 {
		t.Errorf("fetches = %d, want the Refresh and one unknown-kid refetch", n)
	}
}

func TestCacheUnreadyInConfigOrder(t *testing.T) {
	// Ten issuers, so that map order cannot pass for config order by luck.
	names := []string{"z", "a", "m", "b", "y", "c", "x", "d", "w", "e"}
	var cfg []IssuerConfig
	for i, n := range names {
		names[i] = "https://" + n + ".test/"
		s := jwkstest.NewServer(t, jwkstest.NewKey(t, "ES256", n))
		cfg = append(cfg, IssuerConfig{Issuer: names[i], JWKSURI: s.JWKSURI()})
	}
	c, _ := testNewCache(t, cfg, Options{})

	if got := c.Unready(); !slices.Equal(got, names) {
		t.Fatalf("Unready = %q, want %q", got, names)
	}
	ready := map[string]bool{}
	for _, i := range []int{1, 4, 7, 0, 9, 2, 3, 5, 6, 8} {
		if err := c.Refresh(context.Background(), names[i]); err != nil {
			t.Fatal(err)
		}
		ready[names[i]] = true
		var want []string
		for _, n := range names {
			if !ready[n] {
				want = append(want, n)
			}
		}
		if got := c.Unready(); !slices.Equal(got, want) {
			t.Errorf("after refreshing %s: Unready = %q, want %q", names[i], got, want)
		}
	}
	// Each issuer's keys are its own.
	testWantErr(t, c, "https://a.test/", "z", ErrUnknownKey)
	if _, err := c.Lookup(context.Background(), "https://a.test/", "a"); err != nil {
		t.Error(err)
	}
}

func TestCacheFailedRefreshKeepsPreviousSet(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		breakIt func(t *testing.T, s *jwkstest.Server)
		check   func(t *testing.T, err error)
	}{
		{
			name:    "HTTP 500",
			breakIt: func(_ *testing.T, s *jwkstest.Server) { s.SetStatus(http.StatusInternalServerError) },
			check:   testErrContains("HTTP 500"),
		},
		{
			name:    "HTTP 404",
			breakIt: func(_ *testing.T, s *jwkstest.Server) { s.SetStatus(http.StatusNotFound) },
			check:   testErrContains("HTTP 404"),
		},
		{
			name:    "HTTP 204",
			breakIt: func(_ *testing.T, s *jwkstest.Server) { s.SetStatus(http.StatusNoContent) },
			check:   testErrContains("HTTP 204"),
		},
		{
			name:    "invalid JSON",
			breakIt: func(_ *testing.T, s *jwkstest.Server) { s.SetBody([]byte(`{"keys":[`)) },
			check:   testErrContains("not a JWKS document"),
		},
		{
			name:    "empty body",
			breakIt: func(_ *testing.T, s *jwkstest.Server) { s.SetBody(nil) },
			check:   testErrContains("not a JWKS document"),
		},
		{
			name:    "no keys member",
			breakIt: func(_ *testing.T, s *jwkstest.Server) { s.SetBody([]byte(`{"issuer":"x"}`)) },
			check:   testErrContains("not a JWKS document"),
		},
		{
			name:    "empty key list",
			breakIt: func(_ *testing.T, s *jwkstest.Server) { s.SetBody([]byte(`{"keys":[]}`)) },
			check:   testErrIs(ErrNoUsableKeys),
		},
		{
			name: "every key unusable",
			breakIt: func(t *testing.T, s *jwkstest.Server) {
				s.SetJWKs(
					map[string]any{"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
					testJWK(testRSA(t, 1024), "small", nil),
					testJWK(jwkstest.NewKey(t, "ES256", ""), "enc", map[string]any{"use": "enc"}))
			},
			check: testErrIs(ErrNoUsableKeys),
		},
		{
			name: "body larger than MaxBodyBytes",
			opts: Options{MaxBodyBytes: 4096},
			breakIt: func(t *testing.T, s *jwkstest.Server) {
				// A valid document, a byte too long.
				s.SetBody(testPad(t, testDoc(t, testJWK(jwkstest.NewKey(t, "ES256", ""), "big", nil)), 4097))
			},
			check: testErrContains("over 4096 bytes"),
		},
		{
			name:    "timeout",
			opts:    Options{Timeout: 250 * time.Millisecond},
			breakIt: func(_ *testing.T, s *jwkstest.Server) { s.SetDelay(time.Minute) },
			check: func(t *testing.T, err error) {
				t.Helper()
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Errorf("err = %v, want a timeout", err)
				}
			},
		},
		{
			name:    "connection refused",
			breakIt: func(_ *testing.T, s *jwkstest.Server) { s.Close() },
			check: func(t *testing.T, err error) {
				t.Helper()
				var oe *net.OpError
				if !errors.As(err, &oe) {
					t.Errorf("err = %v, want a network error", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good := jwkstest.NewKey(t, "ES256", "good")
			s := jwkstest.NewServer(t, good)
			c, reg := testNewCache(t, []IssuerConfig{testDirect(s)}, tt.opts)
			ctx := context.Background()
			if err := c.Refresh(ctx, s.Issuer()); err != nil {
				t.Fatalf("first Refresh: %v", err)
			}

			tt.breakIt(t, s)
			// A new key that a broken refresh must not bring in either.
			err := c.Refresh(ctx, s.Issuer())
			if err == nil {
				t.Fatal("Refresh succeeded; want an error")
			}
			if !strings.HasPrefix(err.Error(), "jwks: ") {
				t.Errorf("err = %q, want the package prefix", err)
			}
			tt.check(t, err)

			testWantKey(t, c, s.Issuer(), good)
			if got := c.Unready(); len(got) != 0 {
				t.Errorf("Unready = %q after a failed refresh of a good set", got)
			}
			testMetric(t, reg, "sidegate_jwks_refresh_total", map[string]string{"issuer": s.Issuer(), "outcome": "success"}, 1)
			testMetric(t, reg, "sidegate_jwks_refresh_total", map[string]string{"issuer": s.Issuer(), "outcome": "error"}, 1)
			testMetric(t, reg, "sidegate_jwks_keys", map[string]string{"issuer": s.Issuer()}, 1)
		})
	}
}

// A failure before any success leaves the issuer unready, and the next
// good fetch makes it ready.
func TestCacheFailedFirstRefresh(t *testing.T) {
	k := jwkstest.NewKey(t, "EdDSA", "ed")
	s := jwkstest.NewServer(t, k)
	s.SetStatus(http.StatusBadGateway)
	c, _ := testNewCache(t, []IssuerConfig{testDirect(s)}, Options{})
	if err := c.Refresh(context.Background(), s.Issuer()); err == nil {
		t.Fatal("Refresh succeeded against a 502")
	}
	if got := c.Unready(); !slices.Equal(got, []string{s.Issuer()}) {
		t.Errorf("Unready = %q", got)
	}
	testWantErr(t, c, s.Issuer(), "ed", ErrKeysUnavailable)

	s.SetStatus(http.StatusOK)
	if err := c.Refresh(context.Background(), s.Issuer()); err != nil {
		t.Fatal(err)
	}
	testWantKey(t, c, s.Issuer(), k)
}

func TestCacheBodyLimit(t *testing.T) {
	k := jwkstest.NewKey(t, "ES256", "k")
	s := jwkstest.NewServer(t)
	const limit = 2048
	c, _ := testNewCache(t, []IssuerConfig{testDirect(s)}, Options{MaxBodyBytes: limit})

	s.SetBody(testPad(t, testDoc(t, k.JWK()), limit))
	if err := c.Refresh(context.Background(), s.Issuer()); err != nil {
		t.Fatalf("body of exactly MaxBodyBytes: %v", err)
	}
	testWantKey(t, c, s.Issuer(), k)

	s.SetBody(testPad(t, testDoc(t, k.JWK()), limit+1))
	if err := c.Refresh(context.Background(), s.Issuer()); err == nil {
		t.Fatal("body of MaxBodyBytes+1 accepted")
	}
}

func TestCacheRotation(t *testing.T) {
	old := jwkstest.NewKey(t, "ES256", "2025-a")
	next := jwkstest.NewKey(t, "ES256", "2025-b")
	s := jwkstest.NewServer(t, old)
	c, reg := testNewCache(t, []IssuerConfig{testDirect(s)}, Options{})
	ctx := context.Background()
	refresh := func() {
		t.Helper()
		if err := c.Refresh(ctx, s.Issuer()); err != nil {
			t.Fatalf("Refresh: %v", err)
		}
	}
	refresh()
	testWantKey(t, c, s.Issuer(), old)
	testWantErr(t, c, s.Issuer(), next.Kid, ErrUnknownKey)

	// Overlap: both published.
	s.SetKeys(old, next)
	refresh()
	testWantKey(t, c, s.Issuer(), old)
	testWantKey(t, c, s.Issuer(), next)
	testMetric(t, reg, "sidegate_jwks_keys", map[string]string{"issuer": s.Issuer()}, 2)

	// The old key is retired: it is gone at once.
	s.SetKeys(next)
	refresh()
	testWantKey(t, c, s.Issuer(), next)
	testWantErr(t, c, s.Issuer(), old.Kid, ErrUnknownKey)
	testMetric(t, reg, "sidegate_jwks_keys", map[string]string{"issuer": s.Issuer()}, 1)

	// A bad key published beside the good one is refused alone.
	s.SetJWKs(next.JWK(), map[string]any{"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"})
	refresh()
	testWantKey(t, c, s.Issuer(), next)
	testWantErr(t, c, s.Issuer(), "hmac", ErrUnknownKey)

	// Same kid, new material: the new material wins.
	reused := jwkstest.NewKey(t, "ES256", next.Kid)
	s.SetKeys(reused)
	refresh()
	testWantKey(t, c, s.Issuer(), reused)
}

// testOIDC is an OpenID provider whose discovery document the test
// controls, with its JWKS on a separate jwkstest.Server.
type testOIDC struct {
	*httptest.Server
	mu      sync.Mutex
	status  int
	issuer  string // "" means the server's own URL
	jwksURI string
	body    []byte // when set, served verbatim
	hits    atomic.Int64
}

func testNewOIDC(t *testing.T, jwksURI string) *testOIDC {
	t.Helper()
	o := &testOIDC{status: http.StatusOK, jwksURI: jwksURI}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/openid-configuration" {
			http.NotFound(w, r)
			return
		}
		o.hits.Add(1)
		o.mu.Lock()
		status, iss, uri, body := o.status, o.issuer, o.jwksURI, o.body
		o.mu.Unlock()
		if iss == "" {
			iss = o.URL
		}
		if body == nil {
			body, _ = json.Marshal(map[string]string{"issuer": iss, "jwks_uri": uri})
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(o.Close)
	return o
}

func (o *testOIDC) set(f func(o *testOIDC)) {
	o.mu.Lock()
	defer o.mu.Unlock()
	f(o)
}

func TestCacheDiscovery(t *testing.T) {
	k := jwkstest.NewKey(t, "ES256", "k")
	s := jwkstest.NewServer(t, k)
	// jwkstest.Server's discovery document names itself as the issuer.
	c, _ := testNewCache(t, []IssuerConfig{{Issuer: s.Issuer(), Discovery: true}}, Options{})
	if err := c.Refresh(context.Background(), s.Issuer()); err != nil {
		t.Fatal(err)
	}
	testWantKey(t, c, s.Issuer(), k)
	if n := s.Fetches(); n != 1 {
		t.Errorf("jwks fetches = %d, want 1", n)
	}
}

func TestCacheDiscoveryRefused(t *testing.T) {
	k := jwkstest.NewKey(t, "ES256", "k")
	tests := []struct {
		name string
		// issuer is the configured issuer; "" means the provider's URL.
		issuer string
		edit   func(o *testOIDC, jwks *jwkstest.Server)
	}{
		{
			name: "issuer mismatch",
			edit: func(o *testOIDC, _ *jwkstest.Server) { o.issuer = "https://evil.test" },
		},
		{
			name: "issuer differs by a trailing slash",
			edit: func(o *testOIDC, _ *jwkstest.Server) { o.issuer = o.URL + "/" },
		},
		{
			name: "issuer differs in case",
			edit: func(o *testOIDC, _ *jwkstest.Server) { o.issuer = strings.ToUpper(o.URL) },
		},
		{
			name: "issuer missing",
			edit: func(o *testOIDC, jwks *jwkstest.Server) {
				o.body = []byte(fmt.Sprintf(`{"jwks_uri":%q}`, jwks.JWKSURI()))
			},
		},
		{
			name: "jwks_uri missing",
			edit: func(o *testOIDC, _ *jwkstest.Server) { o.jwksURI = "" },
		},
		{
			name: "jwks_uri not http(s)",
			edit: func(o *testOIDC, _ *jwkstest.Server) { o.jwksURI = "file:///etc/passwd" },
		},
		{
			name: "not JSON",
			edit: func(o *testOIDC, _ *jwkstest.Server) { o.body = []byte("<html>") },
		},
		{
			name: "HTTP 500",
			edit: func(o *testOIDC, _ *jwkstest.Server) { o.status = http.StatusInternalServerError },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jwks := jwkstest.NewServer(t, k)
			o := testNewOIDC(t, jwks.JWKSURI())
			o.set(func(o *testOIDC) { tt.edit(o, jwks) })
			c, reg := testNewCache(t, []IssuerConfig{{Issuer: o.URL, Discovery: true}}, Options{})

			err := c.Refresh(context.Background(), o.URL)
			if err == nil {
				t.Fatal("Refresh succeeded")
			}
			if o.hits.Load() != 1 {
				t.Errorf("discovery hits = %d, want 1", o.hits.Load())
			}
			if n := jwks.Fetches(); n != 0 {
				t.Errorf("the JWKS was fetched %d times after a refused discovery", n)
			}
			if got := c.Unready(); !slices.Equal(got, []string{o.URL}) {
				t.Errorf("Unready = %q", got)
			}
			testWantErr(t, c, o.URL, "k", ErrKeysUnavailable)
			testMetric(t, reg, "sidegate_jwks_refresh_total", map[string]string{"issuer": o.URL, "outcome": "error"}, 1)
		})
	}
}

func TestCacheDiscoveryIssuerWithPath(t *testing.T) {
	k := jwkstest.NewKey(t, "ES256", "k")
	jwks := jwkstest.NewServer(t, k)
	var o *httptest.Server
	o = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// OpenID Connect Discovery §4: issuer + "/.well-known/openid-configuration".
		if r.URL.Path != "/realms/main/.well-known/openid-configuration" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"issuer": o.URL + "/realms/main/", "jwks_uri": jwks.JWKSURI()})
	}))
	t.Cleanup(o.Close)
	iss := o.URL + "/realms/main/"
	c, _ := testNewCache(t, []IssuerConfig{{Issuer: iss, Discovery: true}}, Options{})
	if err := c.Refresh(context.Background(), iss); err != nil {
		t.Fatal(err)
	}
	testWantKey(t, c, iss, k)
}

func TestCacheDiscoveryKeepsLastGoodJWKSURI(t *testing.T) {
	first := jwkstest.NewKey(t, "ES256", "first")
	second := jwkstest.NewKey(t, "ES256", "second")
	jwks := jwkstest.NewServer(t, first)
	o := testNewOIDC(t, jwks.JWKSURI())
	clock := &testClock{t: testNow}
	c, reg := testNewCache(t, []IssuerConfig{{Issuer: o.URL, Discovery: true}}, Options{Now: clock.Now})
	ctx := context.Background()
	if err := c.Refresh(ctx, o.URL); err != nil {
		t.Fatal(err)
	}
	testWantKey(t, c, o.URL, first)
	// Discovery is redone once RefreshInterval has passed since the last.
	refresh := func() error {
		clock.Advance(defaultRefreshInterval)
		return c.Refresh(ctx, o.URL)
	}

	// Discovery breaks in each of these ways; the JWKS rotates meanwhile.
	// Each refresh still reaches the last good jwks_uri.
	jwks.SetKeys(second)
	for i, breakIt := range []func(o *testOIDC){
		func(o *testOIDC) { o.status = http.StatusServiceUnavailable },
		func(o *testOIDC) { o.status = http.StatusOK; o.issuer = "https://evil.test" },
		func(o *testOIDC) { o.issuer = ""; o.jwksURI = "ftp://elsewhere/" },
		func(o *testOIDC) { o.body = []byte("{") },
	} {
		o.set(breakIt)
		if err := refresh(); err != nil {
			t.Fatalf("break %d: Refresh = %v; want the last good jwks_uri to be used", i, err)
		}
		testWantKey(t, c, o.URL, second)
		if testHasKid(c, o.URL, first.Kid) {
			t.Errorf("break %d: the rotated-out key is still held", i)
		}
	}
	if n := jwks.Fetches(); n != 5 {
		t.Errorf("jwks fetches = %d, want 5", n)
	}
	testMetric(t, reg, "sidegate_jwks_refresh_total", map[string]string{"issuer": o.URL, "outcome": "success"}, 5)

	// Discovery recovers and moves the JWKS: the new location is used.
	third := jwkstest.NewKey(t, "ES256", "third")
	moved := jwkstest.NewServer(t, third)
	o.set(func(o *testOIDC) { o.body = nil; o.jwksURI = moved.JWKSURI() })
	if err := refresh(); err != nil {
		t.Fatal(err)
	}
	testWantKey(t, c, o.URL, third)

	// A refused discovery (issuer mismatch) pointing somewhere else does
	// not redirect the cache there.
	evil := jwkstest.NewServer(t, jwkstest.NewKey(t, "ES256", "evil"))
	o.set(func(o *testOIDC) { o.issuer = "https://evil.test"; o.jwksURI = evil.JWKSURI() })
	if err := refresh(); err != nil {
		t.Fatal(err)
	}
	if n := evil.Fetches(); n != 0 {
		t.Errorf("a refused discovery document redirected the cache (%d fetches)", n)
	}
	if testHasKid(c, o.URL, "evil") {
		t.Error("the refused discovery's keys are held")
	}
}

func TestRunRefreshesUntilCancelled(t *testing.T) {
	k1 := jwkstest.NewKey(t, "ES256", "k1")
	k2 := jwkstest.NewKey(t, "EdDSA", "k2")
	s1 := jwkstest.NewServer(t, k1)
	s2 := jwkstest.NewServer(t, k2)
	c, _ := testNewCache(t, []IssuerConfig{testDirect(s1), testDirect(s2)}, Options{RefreshInterval: 50 * time.Millisecond})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	testEventually(t, "both issuers ready", func() bool { return len(c.Unready()) == 0 })
	testWantKey(t, c, s1.Issuer(), k1)
	testWantKey(t, c, s2.Issuer(), k2)

	testEventually(t, "repeated refreshes", func() bool { return s1.Fetches() >= 4 && s2.Fetches() >= 4 })

	// Rotation is picked up without anyone calling Refresh.
	k3 := jwkstest.NewKey(t, "ES256", "k3")
	s1.SetKeys(k3)
	testEventually(t, "rotated key", func() bool {
		_, err := c.Lookup(ctx, s1.Issuer(), "k3")
		return err == nil
	})
	testWantErr(t, c, s1.Issuer(), "k1", ErrUnknownKey)

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil after cancellation", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
	// Run has returned, so nothing is left to fetch: the counts are final.
	n1, n2 := s1.Fetches(), s2.Fetches()
	if err := c.Refresh(context.Background(), s1.Issuer()); err != nil {
		t.Fatal(err)
	}
	if s1.Fetches() != n1+1 || s2.Fetches() != n2 {
		t.Errorf("fetches after Run returned: %d, %d; want %d, %d", s1.Fetches(), s2.Fetches(), n1+1, n2)
	}
}

func TestRunRetriesUntilServerRecovers(t *testing.T) {
	k := jwkstest.NewKey(t, "ES256", "k")
	s := jwkstest.NewServer(t, k)
	s.SetStatus(http.StatusServiceUnavailable)
	c, reg := testNewCache(t, []IssuerConfig{testDirect(s)}, Options{RefreshInterval: 50 * time.Millisecond})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	testEventually(t, "a retry after the first failure", func() bool { return s.Fetches() >= 2 })
	if got := c.Unready(); !slices.Equal(got, []string{s.Issuer()}) {
		t.Errorf("Unready while the server fails = %q", got)
	}
	testWantErr(t, c, s.Issuer(), "k", ErrKeysUnavailable)

	s.SetStatus(http.StatusOK)
	testEventually(t, "ready after recovery", func() bool { return len(c.Unready()) == 0 })
	testWantKey(t, c, s.Issuer(), k)
	if v := testMetricValue(t, reg, "sidegate_jwks_refresh_total", map[string]string{"issuer": s.Issuer(), "outcome": "error"}); v < 2 {
		t.Errorf("error refreshes = %v, want at least 2", v)
	}
}

func TestRunWithCancelledContextReturns(t *testing.T) {
	s := jwkstest.NewServer(t, jwkstest.NewKey(t, "ES256", "k"))
	s.SetDelay(time.Minute)
	c, _ := testNewCache(t, []IssuerConfig{testDirect(s)}, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	testEventually(t, "the first fetch to start", func() bool { return s.Fetches() == 1 })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return while a fetch was in flight")
	}
}

func TestMetrics(t *testing.T) {
	s1 := jwkstest.NewServer(t, jwkstest.NewKey(t, "ES256", "a"), jwkstest.NewKey(t, "EdDSA", "b"))
	s2 := jwkstest.NewServer(t, jwkstest.NewKey(t, "ES256", "c"))
	iss1, iss2 := "https://one.test/", "https://two.test/"
	now := testNow
	var mu sync.Mutex
	c, reg := testNewCache(t, []IssuerConfig{
		{Issuer: iss1, JWKSURI: s1.JWKSURI()},
		{Issuer: iss2, JWKSURI: s2.JWKSURI()},
	}, Options{Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }})
	names := []string{"sidegate_jwks_refresh_total", "sidegate_jwks_keys", "sidegate_jwks_last_success_timestamp_seconds"}
	compare := func(want string) {
		t.Helper()
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
			t.Error(err)
		}
	}
	const help = `
# HELP sidegate_jwks_keys Usable keys in the issuer's current key set (0 when it has none).
# TYPE sidegate_jwks_keys gauge
# HELP sidegate_jwks_last_success_timestamp_seconds Unix time of the issuer's last successful JWKS fetch (absent before the first).
# TYPE sidegate_jwks_last_success_timestamp_seconds gauge
# HELP sidegate_jwks_refresh_total JWKS fetches per issuer, by outcome (success, error).
# TYPE sidegate_jwks_refresh_total counter
`

	// Before any fetch: every issuer at zero, no timestamp.
	compare(help + `
sidegate_jwks_keys{issuer="https://one.test/"} 0
sidegate_jwks_keys{issuer="https://two.test/"} 0
sidegate_jwks_refresh_total{issuer="https://one.test/",outcome="error"} 0
sidegate_jwks_refresh_total{issuer="https://one.test/",outcome="success"} 0
sidegate_jwks_refresh_total{issuer="https://two.test/",outcome="error"} 0
sidegate_jwks_refresh_total{issuer="https://two.test/",outcome="success"} 0
`)

	ctx := context.Background()
	if err := c.Refresh(ctx, iss1); err != nil {
		t.Fatal(err)
	}
	s2.SetStatus(http.StatusInternalServerError)
	if err := c.Refresh(ctx, iss2); err == nil {
		t.Fatal("Refresh of a failing issuer succeeded")
	}
	compare(help + `
sidegate_jwks_keys{issuer="https://one.test/"} 2
sidegate_jwks_keys{issuer="https://two.test/"} 0
sidegate_jwks_last_success_timestamp_seconds{issuer="https://one.test/"} 1.8000000005e+09
sidegate_jwks_refresh_total{issuer="https://one.test/",outcome="error"} 0
sidegate_jwks_refresh_total{issuer="https://one.test/",outcome="success"} 1
sidegate_jwks_refresh_total{issuer="https://two.test/",outcome="error"} 1
sidegate_jwks_refresh_total{issuer="https://two.test/",outcome="success"} 0
`)

	// Later: issuer one fails (its timestamp stays), issuer two recovers.
	mu.Lock()
	now = now.Add(90 * time.Second)
	mu.Unlock()
	s1.SetBody([]byte(`{"keys":[]}`))
	if err := c.Refresh(ctx, iss1); err == nil {
		t.Fatal("Refresh of an empty key set succeeded")
	}
	s2.SetStatus(http.StatusOK)
	if err := c.Refresh(ctx, iss2); err != nil {
		t.Fatal(err)
	}
	compare(help + `
sidegate_jwks_keys{issuer="https://one.test/"} 2
sidegate_jwks_keys{issuer="https://two.test/"} 1
sidegate_jwks_last_success_timestamp_seconds{issuer="https://one.test/"} 1.8000000005e+09
sidegate_jwks_last_success_timestamp_seconds{issuer="https://two.test/"} 1.8000000905e+09
sidegate_jwks_refresh_total{issuer="https://one.test/",outcome="error"} 1
sidegate_jwks_refresh_total{issuer="https://one.test/",outcome="success"} 1
sidegate_jwks_refresh_total{issuer="https://two.test/",outcome="error"} 1
sidegate_jwks_refresh_total{issuer="https://two.test/",outcome="success"} 1
`)

	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

func TestNewErrors(t *testing.T) {
	reg := prometheus.NewRegistry()
	_, err := New([]IssuerConfig{
		{Issuer: "https://a.test/", JWKSURI: "https://a.test/jwks"},
		{Issuer: "https://b.test/", JWKSURI: "https://b.test/jwks"},
		{Issuer: "https://a.test/", JWKSURI: "https://a.test/other"},
	}, Options{Registerer: reg})
	if err == nil || !strings.Contains(err.Error(), "https://a.test/") {
		t.Errorf("New with a duplicate issuer = %v, want an error naming it", err)
	}

	// The refused configuration registered nothing, so the registry is
	// still free for the corrected one.
	if _, err := New([]IssuerConfig{{Issuer: "https://a.test/", JWKSURI: "https://a.test/jwks"}}, Options{Registerer: reg}); err != nil {
		t.Fatalf("New after a refused New: %v", err)
	}
	// A second cache on the same registry is an error, not a panic.
	if _, err := New([]IssuerConfig{{Issuer: "https://c.test/", JWKSURI: "https://c.test/jwks"}}, Options{Registerer: reg}); err == nil {
		t.Error("two caches registered on one registry")
	}
}

// Many readers look keys up while refreshes swap the set underneath them;
// run with -race. Every lookup sees one whole snapshot or another.
func TestLookupDuringRefresh(t *testing.T) {
	stable := jwkstest.NewKey(t, "ES256", "stable")
	a := jwkstest.NewKey(t, "ES256", "rot")
	b := jwkstest.NewKey(t, "EdDSA", "rot")
	s := jwkstest.NewServer(t, stable, a)
	c, reg := testNewCache(t, []IssuerConfig{testDirect(s)}, Options{})
	ctx := context.Background()
	if err := c.Refresh(ctx, s.Issuer()); err != nil {
		t.Fatal(err)
	}

	lookup := func() error {
		k, err := c.Lookup(ctx, s.Issuer(), "stable")
		if err != nil || k.ID != "stable" {
			return fmt.Errorf("Lookup(stable) = %v, %v", k, err)
		}
		k, err = c.Lookup(ctx, s.Issuer(), "rot")
		if err != nil {
			return fmt.Errorf("Lookup(rot): %v", err)
		}
		// Whichever snapshot, its algorithms match its key type.
		if alg := k.Algorithms[0].String(); !(alg == "ES256" && testPublicEqual(k.Public, a)) && !(alg == "EdDSA" && testPublicEqual(k.Public, b)) {
			return fmt.Errorf("Lookup(rot) mixes snapshots: alg %s with %T", alg, k.Public)
		}
		_ = c.Unready()
		return nil
	}
	// Two refreshers race each other as well (refreshes are serialised).
	refresh := func(w int) error {
		for i := range 10 {
			if (i+w)%2 == 0 {
				s.SetKeys(stable, b)
			} else {
				s.SetKeys(stable, a)
			}
			if err := c.Refresh(ctx, s.Issuer()); err != nil {
				return err
			}
		}
		return nil
	}
	testReadWhileWriting(t, reg, 4, lookup, 2, refresh)
}

// testReadWhileWriting runs read over and over in each of readers
// goroutines, and gathers reg's metrics likewise, while write runs once in
// each of writers goroutines (numbered from 0); when the writers are done
// it stops the readers and fails the test with every error, or if no read
// completed. A reader stops at its first error.
func testReadWhileWriting(t *testing.T, reg *prometheus.Registry, readers int, read func() error, writers int, write func(w int) error) {
	t.Helper()
	stop := make(chan struct{})
	errs := make(chan error, readers+writers+1)
	var reads atomic.Int64
	var readersDone, writersDone sync.WaitGroup
	repeat := func(f func() error, count *atomic.Int64) {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := f(); err != nil {
				errs <- err
				return
			}
			count.Add(1)
			runtime.Gosched() // let the writers run on a small machine
		}
	}
	for range readers {
		readersDone.Go(func() { repeat(read, &reads) })
	}
	readersDone.Go(func() {
		repeat(func() error {
			_, err := reg.Gather()
			return err
		}, new(atomic.Int64))
	})
	for w := range writers {
		writersDone.Go(func() {
			if err := write(w); err != nil {
				errs <- err
			}
		})
	}
	writersDone.Wait()
	close(stop)
	readersDone.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if reads.Load() == 0 {
		t.Error("no reads ran")
	}
}

func testPublicEqual(got any, want *jwkstest.Key) bool {
	return testPublic(want).(interface{ Equal(crypto.PublicKey) bool }).Equal(got)
}

// testPad pads a JSON document with trailing spaces to exactly n bytes.
func testPad(t *testing.T, doc []byte, n int) []byte {
	t.Helper()
	if len(doc) > n {
		t.Fatalf("document is %d bytes, over %d", len(doc), n)
	}
	return append(doc, strings.Repeat(" ", n-len(doc))...)
}

func testErrContains(s string) func(*testing.T, error) {
	return func(t *testing.T, err error) {
		t.Helper()
		if !strings.Contains(err.Error(), s) {
			t.Errorf("err = %q, want it to contain %q", err, s)
		}
	}
}

func testErrIs(target error) func(*testing.T, error) {
	return func(t *testing.T, err error) {
		t.Helper()
		if !errors.Is(err, target) {
			t.Errorf("err = %v, want %v", err, target)
		}
	}
}

// testMetricValue reads one sample from the registry by name and labels.
func testMetricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	v, ok := testMetricSample(t, reg, name, labels)
	if !ok {
		t.Fatalf("no sample %s%v", name, labels)
	}
	return v
}

// testMetricSample reads one sample, if the registry has it.
func testMetricSample(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue(), true
			case m.Gauge != nil:
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

func testMetric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string, want float64) {
	t.Helper()
	if got := testMetricValue(t, reg, name, labels); got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

// TestNoRedirectDowngrade: a JWKS served over https is never fetched from a
// plain-http redirect target.
func TestNoRedirectDowngrade(t *testing.T) {
	plain := jwkstest.NewServer(t, jwkstest.NewKey(t, "ES256", "k"))
	tlsSrv := httptest.NewTLSServer(http.RedirectHandler(plain.JWKSURI(), http.StatusFound))
	t.Cleanup(tlsSrv.Close)
	client := tlsSrv.Client()
	client.CheckRedirect = sameHostNoDowngrade
	c, err := New([]IssuerConfig{{Issuer: "https://iss.test/", JWKSURI: tlsSrv.URL + "/jwks"}}, Options{Client: client})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Refresh(context.Background(), "https://iss.test/"); err == nil || !strings.Contains(err.Error(), "redirect") {
		t.Fatalf("Refresh = %v, want a refused redirect", err)
	}
	if plain.Fetches() != 0 {
		t.Fatalf("the plain-http target was fetched %d times", plain.Fetches())
	}
}

// TestCacheKeyIdentity: a refresh keeps the very *Key of every key it
// serves unchanged, so the verified-token cache, which trusts a token only
// while its key is current, is not emptied by each refresh; new material
// under a kid is a new *Key. Current answers without fetching.
func TestCacheKeyIdentity(t *testing.T) {
	a := jwkstest.NewKey(t, "ES256", "a")
	b := jwkstest.NewKey(t, "EdDSA", "b")
	s := jwkstest.NewServer(t, a, b)
	s.SetHeader("ETag", "") // every refresh a 200 with a body to parse
	c, _ := testNewCache(t, []IssuerConfig{testDirect(s)}, Options{MaxStale: time.Hour})
	ctx := context.Background()
	refresh := func() {
		t.Helper()
		if err := c.Refresh(ctx, s.Issuer()); err != nil {
			t.Fatalf("Refresh: %v", err)
		}
	}
	current := func(kid string) *Key {
		t.Helper()
		k, ok := c.Current(s.Issuer(), kid, testNow)
		if !ok {
			t.Fatalf("Current(%q): not served", kid)
		}
		return k
	}
	refresh()
	ka, kb := current("a"), current("b")
	fetches := s.Fetches()

	refresh()
	if current("a") != ka || current("b") != kb {
		t.Fatal("an unchanged refresh replaced the keys")
	}
	s.SetKeys(a)
	refresh()
	if current("a") != ka {
		t.Fatal("dropping b replaced a")
	}
	if _, ok := c.Current(s.Issuer(), "b", testNow); ok {
		t.Fatal("b still current after it was dropped")
	}
	s.SetKeys(jwkstest.NewKey(t, "ES256", "a"))
	refresh()
	if current("a") == ka {
		t.Fatal("new material under kid a kept the old key")
	}
	if got := s.Fetches() - fetches; got != 3 {
		t.Fatalf("%d fetches for 3 refreshes: Current must not fetch", got)
	}
	if _, ok := c.Current(s.Issuer(), "a", testNow.Add(2*time.Hour)); ok {
		t.Fatal("Current served a key past max_stale")
	}
	if _, ok := c.Current("https://unknown.test/", "a", testNow); ok {
		t.Fatal("Current served an unknown issuer")
	}
}
