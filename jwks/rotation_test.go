package jwks

// Issue 3: keys that survive rotation and identity-provider outages. Every
// case runs against a real jwkstest.Server over loopback HTTP(S); time that
// the cache measures (max_stale, rate limits, remembered kids, discovery
// age, snapshot age) comes from a testClock, and background work is awaited
// by polling, never by sleeping for an expiry.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sidegate/sidegate/jwks/jwkstest"
)

// testClockCache builds a cache on a testClock starting at testNow. Unless
// the test sets one, KidWait is long: whether a refetch for an unknown kid
// finishes in time should not depend on how busy the machine is.
func testClockCache(t *testing.T, issuers []IssuerConfig, opts Options) (*Cache, *prometheus.Registry, *testClock) {
	t.Helper()
	clock := &testClock{t: testNow}
	opts.Now = clock.Now
	setDefault(&opts.KidWait, 30*time.Second)
	c, reg := testNewCache(t, issuers, opts)
	return c, reg, clock
}

func testRefresh(t *testing.T, c *Cache, iss string) {
	t.Helper()
	if err := c.Refresh(context.Background(), iss); err != nil {
		t.Fatalf("Refresh(%s): %v", iss, err)
	}
}

func testRefreshFails(t *testing.T, c *Cache, iss string) error {
	t.Helper()
	err := c.Refresh(context.Background(), iss)
	if err == nil {
		t.Fatalf("Refresh(%s) succeeded; want an error", iss)
	}
	return err
}

// testKidMetric asserts sidegate_jwks_unknown_kid_total for one outcome.
func testKidMetric(t *testing.T, reg *prometheus.Registry, iss, outcome string, want float64) {
	t.Helper()
	testMetric(t, reg, "sidegate_jwks_unknown_kid_total", map[string]string{"issuer": iss, "outcome": outcome}, want)
}

func testKidMetricValue(t *testing.T, reg *prometheus.Registry, iss, outcome string) float64 {
	t.Helper()
	return testMetricValue(t, reg, "sidegate_jwks_unknown_kid_total", map[string]string{"issuer": iss, "outcome": outcome})
}

func testRefreshMetric(t *testing.T, reg *prometheus.Registry, iss, outcome string, want float64) {
	t.Helper()
	testMetric(t, reg, "sidegate_jwks_refresh_total", map[string]string{"issuer": iss, "outcome": outcome}, want)
}

var testKidOutcomes = []string{"found", "not_found", "timeout", "rate_limited", "remembered"}

// testRemembered is how many kids the issuer remembers as not found.
func testRemembered(c *Cache, iss string) int {
	is := c.issuers.Load().byName[iss]
	is.mu.Lock()
	defer is.mu.Unlock()
	return len(is.notFound)
}

// testStatus is the issuer's entry in c.Status().
func testStatus(t *testing.T, c *Cache, iss string) IssuerStatus {
	t.Helper()
	for _, st := range c.Status() {
		if st.Issuer == iss {
			return st
		}
	}
	t.Fatalf("Status() has no entry for %s", iss)
	return IssuerStatus{}
}

// testWantUnavailable asserts that the issuer's keys are refused as stale
// or missing everywhere: Lookup (known and unknown kids), Unready (unless
// optional) and Status.
func testWantUnavailable(t *testing.T, c *Cache, iss, kid, problem string) {
	t.Helper()
	testWantErr(t, c, iss, kid, ErrKeysUnavailable)
	testWantErr(t, c, iss, "never-published", ErrKeysUnavailable)
	st := testStatus(t, c, iss)
	if st.Ready {
		t.Errorf("Status(%s).Ready = true", iss)
	}
	if !strings.Contains(st.Problem, problem) {
		t.Errorf("Status(%s).Problem = %q, want it to mention %q", iss, st.Problem, problem)
	}
	if got := slices.Contains(c.Unready(), iss); got == st.Optional {
		t.Errorf("issuer %s (optional %v) in Unready() = %v", iss, st.Optional, got)
	}
}

// testVerifies signs a token with signer and verifies it with the key the
// cache returned, using the standard library: the cache hands out keys
// that verify the identity provider's tokens, not merely keys with the
// right kid.
func testVerifies(t *testing.T, k *Key, signer *jwkstest.Key) {
	t.Helper()
	tok := signer.Sign(t, map[string]any{"sub": "alice"}, nil)
	dot := strings.LastIndexByte(tok, '.')
	input := []byte(tok[:dot])
	sig, err := base64.RawURLEncoding.DecodeString(tok[dot+1:])
	if err != nil {
		t.Fatal(err)
	}
	var ok bool
	switch pub := k.Public.(type) {
	case *ecdsa.PublicKey:
		h := sha256.Sum256(input)
		n := len(sig) / 2
		ok = ecdsa.Verify(pub, h[:], new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:]))
	case ed25519.PublicKey:
		ok = ed25519.Verify(pub, input, sig)
	default:
		t.Fatalf("testVerifies: unsupported key %T", pub)
	}
	if !ok {
		t.Errorf("a token signed by %q does not verify with the cached key", signer.Kid)
	}
}

// testLookupVerifies looks signer's kid up and verifies a token with it.
func testLookupVerifies(t *testing.T, c *Cache, iss string, signer *jwkstest.Key) {
	t.Helper()
	k, err := c.Lookup(context.Background(), iss, signer.Kid)
	if err != nil {
		t.Fatalf("Lookup(%q): %v", signer.Kid, err)
	}
	testVerifies(t, k, signer)
}

// testRun runs c until the test ends and returns Run's result channel.
func testRun(t *testing.T, c *Cache) <-chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancellation")
		}
	})
	return done
}

// testLogBuffer collects a cache's log lines.
type testLogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *testLogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *testLogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *testLogBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// ---------------------------------------------------------------------
// 1. Rotation within one fetch.

func TestRotationWithinOneFetch(t *testing.T) {
	tests := []struct {
		name string
		// overlap publishes the old and the new key together (the usual
		// rotation); otherwise the new key replaces the old at once.
		overlap bool
	}{
		{name: "new key published beside the old", overlap: true},
		{name: "new key replaces the old", overlap: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := jwkstest.NewKey(t, "ES256", "2025-a")
			b := jwkstest.NewKey(t, "EdDSA", "2025-b")
			s := jwkstest.NewServer(t, a)
			iss := s.Issuer()
			c, reg, _ := testClockCache(t, []IssuerConfig{testDirect(s)}, Options{})
			testRefresh(t, c, iss)
			testLookupVerifies(t, c, iss, a)

			if tt.overlap {
				s.SetKeys(a, b)
			} else {
				s.SetKeys(b)
			}
			// The first token signed with the new key is accepted after
			// exactly one refetch, without Refresh or Run.
			testLookupVerifies(t, c, iss, b)
			if n := s.Fetches(); n != 2 {
				t.Fatalf("fetches = %d, want the first fetch and one refetch", n)
			}
			testKidMetric(t, reg, iss, "found", 1)
			for _, o := range []string{"not_found", "timeout", "rate_limited", "remembered"} {
				testKidMetric(t, reg, iss, o, 0)
			}
			testRefreshMetric(t, reg, iss, "success", 2)
			// Later tokens with the new kid are answered from memory.
			testLookupVerifies(t, c, iss, b)
			if n := s.Fetches(); n != 2 {
				t.Errorf("fetches = %d after a second lookup, want 2", n)
			}

			if !tt.overlap {
				// The refetch was the next successful refresh: the old
				// key went with it.
				testWantErr(t, c, iss, a.Kid, ErrUnknownKey)
				return
			}
			testLookupVerifies(t, c, iss, a)

			// The old key is removed. Until the next successful refresh
			// it still verifies; a failed refresh does not remove it...
			s.SetKeys(b)
			testLookupVerifies(t, c, iss, a)
			s.SetStatus(http.StatusInternalServerError)
			testRefreshFails(t, c, iss)
			testLookupVerifies(t, c, iss, a)
			// ...and the next good one does.
			s.SetStatus(http.StatusOK)
			testRefresh(t, c, iss)
			fetches := s.Fetches()
			testWantErr(t, c, iss, a.Kid, ErrUnknownKey)
			testLookupVerifies(t, c, iss, b)
			// Its kid is now unknown, and looking it up again is
			// rate-limited (the clock has not moved), not refetched.
			if n := s.Fetches(); n != fetches {
				t.Errorf("looking up the removed kid fetched %d times", n-fetches)
			}
			testKidMetric(t, reg, iss, "rate_limited", 1)
			testMetric(t, reg, "sidegate_jwks_keys", map[string]string{"issuer": iss}, 1)
		})
	}
}

// ---------------------------------------------------------------------
// 2. Unknown-kid floods.

func TestUnknownKidFlood(t *testing.T) {
	const minRefresh = time.Minute
	k := jwkstest.NewKey(t, "ES256", "k")
	s := jwkstest.NewServer(t, k)
	iss := s.Issuer()
	c, reg, clock := testClockCache(t, []IssuerConfig{testDirect(s)}, Options{MinRefreshInterval: minRefresh})
	ctx := context.Background()
	testRefresh(t, c, iss)

	lookups := 0
	wantUnknown := func(kid string) {
		t.Helper()
		lookups++
		testWantErr(t, c, iss, kid, ErrUnknownKey)
	}
	kidsTotal := func() float64 {
		t.Helper()
		var sum float64
		for _, o := range testKidOutcomes {
			sum += testKidMetricValue(t, reg, iss, o)
		}
		return sum
	}

	// 1,000 concurrent lookups of random kids: one refetch in all.
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for range 1000 {
		wg.Go(func() {
			if key, err := c.Lookup(ctx, iss, rand.Text()); !errors.Is(err, ErrUnknownKey) || key != nil {
				errs <- fmt.Errorf("Lookup(random kid) = %v, %v; want ErrUnknownKey", key, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	lookups += 1000
	if n := s.Fetches(); n != 2 {
		t.Fatalf("fetches after 1,000 concurrent random kids = %d, want 2 (the first fetch and one refetch)", n)
	}

	// 1,000 more, one after another, within the same MinRefreshInterval:
	// no fetch at all.
	for range 1000 {
		wantUnknown(rand.Text())
	}
	if n := s.Fetches(); n != 2 {
		t.Fatalf("fetches after 1,000 sequential random kids = %d, want still 2", n)
	}
	if v := kidsTotal(); v != float64(lookups) {
		t.Errorf("unknown-kid outcomes sum to %v, want one per lookup (%d)", v, lookups)
	}
	testKidMetric(t, reg, iss, "found", 0)
	testKidMetric(t, reg, iss, "timeout", 0)
	if v := testKidMetricValue(t, reg, iss, "not_found"); v < 1 {
		t.Errorf("not_found = %v, want at least the caller whose kid triggered the refetch", v)
	}

	// Just short of MinRefreshInterval: still no fetch.
	clock.Advance(minRefresh - time.Second)
	wantUnknown("still-limited")
	if n := s.Fetches(); n != 2 {
		t.Fatalf("fetches = %d before MinRefreshInterval had passed, want 2", n)
	}

	// Once MinRefreshInterval has passed, one more refetch, and only one.
	clock.Advance(time.Second)
	wantUnknown("x1")
	if n := s.Fetches(); n != 3 {
		t.Fatalf("fetches = %d after MinRefreshInterval, want 3", n)
	}
	before := testKidMetricValue(t, reg, iss, "rate_limited")
	for range 100 {
		wantUnknown(rand.Text())
	}
	if n := s.Fetches(); n != 3 {
		t.Fatalf("fetches = %d, want 3", n)
	}
	testKidMetric(t, reg, iss, "rate_limited", before+100)

	// A kid just looked up and not found is remembered: no fetch, outcome
	// remembered, until MinRefreshInterval has passed.
	remembered := testKidMetricValue(t, reg, iss, "remembered")
	wantUnknown("x1")
	testKidMetric(t, reg, iss, "remembered", remembered+1)
	clock.Advance(minRefresh - time.Second)
	wantUnknown("x1")
	testKidMetric(t, reg, iss, "remembered", remembered+2)
	if n := s.Fetches(); n != 3 {
		t.Fatalf("fetches = %d after looking up a remembered kid, want 3", n)
	}
	clock.Advance(time.Second)
	wantUnknown("x1")
	if n := s.Fetches(); n != 4 {
		t.Fatalf("fetches = %d after x1 was forgotten, want 4", n)
	}

	// 20,000 distinct kids: what the cache remembers stays bounded.
	for range 20_000 {
		lookups++
		if _, err := c.Lookup(ctx, iss, rand.Text()); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("Lookup(random kid) = %v", err)
		}
	}
	if n := testRemembered(c, iss); n > maxRememberedKids {
		t.Errorf("%d kids remembered, over the bound of %d", n, maxRememberedKids)
	}
	if n := s.Fetches(); n != 4 {
		t.Errorf("fetches = %d after 20,000 random kids at one instant, want 4", n)
	}
	if v := kidsTotal(); v != float64(lookups) {
		t.Errorf("unknown-kid outcomes sum to %v, want one per lookup (%d)", v, lookups)
	}
	// The real key was never disturbed.
	testLookupVerifies(t, c, iss, k)
}

// A rotated kid that arrives while the rate limit is closed is refused,
// but is fetched as soon as the limit opens again: being rate-limited is
// not being "looked up and not found".
func TestUnknownKidRateLimitedThenRotated(t *testing.T) {
	const minRefresh = time.Minute
	old := jwkstest.NewKey(t, "ES256", "old")
	next := jwkstest.NewKey(t, "ES256", "next")
	s := jwkstest.NewServer(t, old)
	iss := s.Issuer()
	c, reg, clock := testClockCache(t, []IssuerConfig{testDirect(s)}, Options{MinRefreshInterval: minRefresh})
	testRefresh(t, c, iss)

	// A stray kid spends the unknown-kid refetch.
	testWantErr(t, c, iss, "stray", ErrUnknownKey)
	if n := s.Fetches(); n != 2 {
		t.Fatalf("fetches = %d, want 2", n)
	}

	// Half an interval later the identity provider rotates; the first
	// token with the new kid is rate-limited.
	clock.Advance(minRefresh / 2)
	s.SetKeys(old, next)
	testWantErr(t, c, iss, next.Kid, ErrUnknownKey)
	testKidMetric(t, reg, iss, "rate_limited", 1)

	// When the interval since the last refetch is over, the new kid is
	// fetched and accepted.
	clock.Advance(minRefresh / 2)
	testLookupVerifies(t, c, iss, next)
	if n := s.Fetches(); n != 3 {
		t.Errorf("fetches = %d, want 3", n)
	}
	testKidMetric(t, reg, iss, "found", 1)
}

// remember's bound: expired entries go first; if none have expired, all go.
func TestRememberedKidsBounded(t *testing.T) {
	is := &issuer{}
	now := testNow
	for i := range 20_000 {
		is.remember(fmt.Sprint("kid-", i), now, now.Add(time.Minute))
		if len(is.notFound) > maxRememberedKids {
			t.Fatalf("after %d kids, %d remembered: over the bound", i+1, len(is.notFound))
		}
	}
	if _, ok := is.notFound[kidHash("kid-19999")]; !ok {
		t.Error("the latest kid is not remembered")
	}

	// Half the entries expire; filling up evicts those, not the live ones.
	is = &issuer{}
	for i := range maxRememberedKids / 2 {
		is.remember(fmt.Sprint("old-", i), now, now.Add(time.Second))
	}
	now = now.Add(time.Minute)
	for i := range maxRememberedKids - maxRememberedKids/2 {
		is.remember(fmt.Sprint("live-", i), now, now.Add(time.Minute))
	}
	is.remember("one-more", now, now.Add(time.Minute))
	if want := maxRememberedKids - maxRememberedKids/2 + 1; len(is.notFound) != want {
		t.Errorf("after evicting expired kids: %d remembered, want %d", len(is.notFound), want)
	}
	if _, ok := is.notFound[kidHash("live-0")]; !ok {
		t.Error("an unexpired kid was evicted while expired ones were there to go")
	}
	if _, ok := is.notFound[kidHash("old-0")]; ok {
		t.Error("an expired kid survived the eviction")
	}
}

// ---------------------------------------------------------------------
// 3. Single flight.

func TestUnknownKidSingleFlight(t *testing.T) {
	setup := func(t *testing.T, opts Options) (*jwkstest.Server, *Cache, *prometheus.Registry, *jwkstest.Key) {
		t.Helper()
		a := jwkstest.NewKey(t, "ES256", "a")
		b := jwkstest.NewKey(t, "EdDSA", "b")
		s := jwkstest.NewServer(t, a)
		c, reg, _ := testClockCache(t, []IssuerConfig{testDirect(s)}, opts)
		testRefresh(t, c, s.Issuer())
		s.SetKeys(a, b)
		// The identity provider is slow: every fetch waits until the test
		// releases it.
		s.Hold()
		return s, c, reg, b
	}

	t.Run("concurrent callers share one fetch", func(t *testing.T) {
		s, c, reg, b := setup(t, Options{})
		iss := s.Issuer()
		const callers = 200
		var wg sync.WaitGroup
		errs := make(chan error, callers)
		for range callers {
			wg.Go(func() {
				k, err := c.Lookup(context.Background(), iss, b.Kid)
				if err != nil {
					errs <- err
					return
				}
				if k.ID != b.Kid {
					errs <- fmt.Errorf("got kid %q", k.ID)
				}
			})
		}
		testEventually(t, "the refetch to reach the server", func() bool { return s.Fetches() == 2 })
		s.Release()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("Lookup of the new kid: %v", err)
		}
		if n := s.Fetches(); n != 2 {
			t.Errorf("fetches = %d, want the first fetch and exactly one refetch", n)
		}
		// Callers that arrived after the fetch found the key in the set and
		// are not counted; every other one found it through the refetch.
		if v := testKidMetricValue(t, reg, iss, "found"); v < 1 || v > callers {
			t.Errorf("found = %v, want between 1 and %d", v, callers)
		}
		for _, o := range []string{"not_found", "timeout", "rate_limited", "remembered"} {
			testKidMetric(t, reg, iss, o, 0)
		}
		testRefreshMetric(t, reg, iss, "success", 2)
	})

	t.Run("KidWait bounds the wait; the fetch still lands", func(t *testing.T) {
		s, c, reg, b := setup(t, Options{KidWait: 50 * time.Millisecond})
		iss := s.Issuer()
		const callers = 10
		var wg sync.WaitGroup
		errs := make(chan error, callers)
		for range callers {
			wg.Go(func() {
				if k, err := c.Lookup(context.Background(), iss, b.Kid); !errors.Is(err, ErrUnknownKey) || k != nil {
					errs <- fmt.Errorf("Lookup while the refetch is held = %v, %v; want ErrUnknownKey", k, err)
				}
			})
		}
		// Every caller gave up while the server still holds the fetch.
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		testKidMetric(t, reg, iss, "timeout", callers)
		if testHasKid(c, iss, b.Kid) {
			t.Fatal("the new key is installed while its fetch is held")
		}

		// The fetch outlives its callers, installs the key, and later
		// lookups need no fetch of their own.
		s.Release()
		testEventually(t, "the abandoned refetch to install the key", func() bool { return testHasKid(c, iss, b.Kid) })
		testLookupVerifies(t, c, iss, b)
		if n := s.Fetches(); n != 2 {
			t.Errorf("fetches = %d, want 2", n)
		}
		testEventually(t, "the refetch to be counted", func() bool {
			return testMetricValue(t, reg, "sidegate_jwks_refresh_total", map[string]string{"issuer": iss, "outcome": "success"}) == 2
		})
		testKidMetric(t, reg, iss, "found", 0)
	})

	t.Run("the caller's deadline bounds the wait", func(t *testing.T) {
		s, c, _, b := setup(t, Options{KidWait: time.Hour})
		iss := s.Issuer()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		k, err := c.Lookup(ctx, iss, b.Kid)
		// Deadline and wait end together; either error denies the token.
		if k != nil || !(errors.Is(err, ErrUnknownKey) || errors.Is(err, context.DeadlineExceeded)) {
			t.Fatalf("Lookup = %v, %v; want ErrUnknownKey or DeadlineExceeded", k, err)
		}
		if testHasKid(c, iss, b.Kid) {
			t.Fatal("Lookup returned after the fetch, not at its deadline")
		}

		// A cancelled caller returns at once, with its context's error.
		cctx, ccancel := context.WithCancel(context.Background())
		ccancel()
		if k, err := c.Lookup(cctx, iss, b.Kid); k != nil || !errors.Is(err, context.Canceled) {
			t.Errorf("Lookup with a cancelled context = %v, %v", k, err)
		}

		s.Release()
		testEventually(t, "the refetch to install the key", func() bool { return testHasKid(c, iss, b.Kid) })
		if n := s.Fetches(); n != 2 {
			t.Errorf("fetches = %d, want 2: callers that gave up shared one refetch", n)
		}
	})
}

// ---------------------------------------------------------------------
// 4. Stale-while-error.

func TestStaleWhileError(t *testing.T) {
	const maxStale = time.Hour
	tests := []struct {
		name    string
		breakIt func(t *testing.T, s *jwkstest.Server)
	}{
		{name: "HTTP 500", breakIt: func(_ *testing.T, s *jwkstest.Server) { s.SetStatus(http.StatusInternalServerError) }},
		{name: "HTTP 503", breakIt: func(_ *testing.T, s *jwkstest.Server) { s.SetStatus(http.StatusServiceUnavailable) }},
		{name: "garbage", breakIt: func(_ *testing.T, s *jwkstest.Server) { s.SetBody([]byte("<html>upstream error</html>")) }},
		{name: "empty key set", breakIt: func(_ *testing.T, s *jwkstest.Server) { s.SetBody([]byte(`{"keys":[]}`)) }},
		{name: "only unusable keys", breakIt: func(_ *testing.T, s *jwkstest.Server) {
			s.SetJWKs(map[string]any{"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"})
		}},
		{name: "oversized", breakIt: func(t *testing.T, s *jwkstest.Server) {
			s.SetBody(testPad(t, testDoc(t, jwkstest.NewKey(t, "ES256", "big").JWK()), 4097))
		}},
		{name: "timeout", breakIt: func(_ *testing.T, s *jwkstest.Server) { s.Hold() }},
		{name: "server down", breakIt: func(_ *testing.T, s *jwkstest.Server) { s.Down() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good := jwkstest.NewKey(t, "ES256", "good")
			s := jwkstest.NewServer(t, good)
			iss := s.Issuer()
			c, reg, clock := testClockCache(t, []IssuerConfig{testDirect(s)}, Options{
				MaxStale: maxStale, MaxBodyBytes: 4096, Timeout: 300 * time.Millisecond,
			})
			testRefresh(t, c, iss)
			fetchedAt := clock.Now()

			tt.breakIt(t, s)
			clock.Advance(maxStale / 2)
			testRefreshFails(t, c, iss)
			testLookupVerifies(t, c, iss, good)
			if got := c.Unready(); len(got) != 0 {
				t.Errorf("Unready = %q while the keys are within max_stale", got)
			}

			// Served up to max_stale after the last good fetch...
			clock.Advance(maxStale / 2)
			testRefreshFails(t, c, iss)
			testLookupVerifies(t, c, iss, good)
			if st := testStatus(t, c, iss); !st.Ready || !st.FetchedAt.Equal(fetchedAt) {
				t.Errorf("Status at max_stale = %+v, want ready since %v", st, fetchedAt)
			}

			// ...and not a moment longer.
			clock.Advance(time.Second)
			fetches := s.Fetches()
			testWantUnavailable(t, c, iss, good.Kid, "max_stale")
			if !slices.Equal(c.Unready(), []string{iss}) {
				t.Errorf("Unready = %q, want %q", c.Unready(), iss)
			}
			if st := testStatus(t, c, iss); st.Keys != 1 || !st.FetchedAt.Equal(fetchedAt) {
				t.Errorf("Status past max_stale = %+v, want the stale set still described", st)
			}
			if n := s.Fetches(); n != fetches {
				t.Errorf("lookups of stale keys fetched %d times; Run retries, requests do not", n-fetches)
			}
			testRefreshMetric(t, reg, iss, "success", 1)
			testRefreshMetric(t, reg, iss, "error", 2)
			testMetric(t, reg, "sidegate_jwks_last_success_timestamp_seconds", map[string]string{"issuer": iss}, float64(fetchedAt.UnixNano())/1e9)

			// The server recovers: the next good fetch makes it ready.
			s.Release()
			s.Up()
			s.SetStatus(http.StatusOK)
			s.SetKeys(good)
			testRefresh(t, c, iss)
			testLookupVerifies(t, c, iss, good)
			if got := c.Unready(); len(got) != 0 {
				t.Errorf("Unready = %q after recovery", got)
			}
		})
	}
}

// An optional issuer never holds back readiness, but its tokens are still
// denied when it has no usable keys.
func TestOptionalIssuerDoesNotGateReadiness(t *testing.T) {
	const maxStale = time.Hour
	req := jwkstest.NewKey(t, "ES256", "req")
	opt := jwkstest.NewKey(t, "ES256", "opt")
	sReq := jwkstest.NewServer(t, req)
	sOpt := jwkstest.NewServer(t, opt)
	optCfg := testDirect(sOpt)
	optCfg.Optional = true
	c, _, clock := testClockCache(t, []IssuerConfig{testDirect(sReq), optCfg}, Options{MaxStale: maxStale})

	// Before any fetch: only the required issuer is missing.
	if got := c.Unready(); !slices.Equal(got, []string{sReq.Issuer()}) {
		t.Errorf("Unready before any fetch = %q", got)
	}
	testWantUnavailable(t, c, sOpt.Issuer(), opt.Kid, "no usable key set")
	if st := testStatus(t, c, sOpt.Issuer()); !st.Optional {
		t.Error("Status does not mark the optional issuer")
	}

	testRefresh(t, c, sReq.Issuer())
	testRefresh(t, c, sOpt.Issuer())
	if got := c.Unready(); len(got) != 0 {
		t.Errorf("Unready = %q", got)
	}

	// Both go down past max_stale.
	sReq.Down()
	sOpt.Down()
	clock.Advance(maxStale + time.Second)
	testRefreshFails(t, c, sReq.Issuer())
	testRefreshFails(t, c, sOpt.Issuer())
	if got := c.Unready(); !slices.Equal(got, []string{sReq.Issuer()}) {
		t.Errorf("Unready = %q, want only the required issuer", got)
	}
	testWantUnavailable(t, c, sReq.Issuer(), req.Kid, "max_stale")
	testWantUnavailable(t, c, sOpt.Issuer(), opt.Kid, "max_stale")
}

// ---------------------------------------------------------------------
// 5. Cold start during an outage, and an outage after start, under Run.

func TestColdStartDuringOutage(t *testing.T) {
	tests := []struct {
		name    string
		breakIt func(s *jwkstest.Server)
		fix     func(s *jwkstest.Server)
	}{
		{
			name:    "HTTP 500",
			breakIt: func(s *jwkstest.Server) { s.SetStatus(http.StatusInternalServerError) },
			fix:     func(s *jwkstest.Server) { s.SetStatus(http.StatusOK) },
		},
		{
			name:    "server down",
			breakIt: (*jwkstest.Server).Down,
			fix:     (*jwkstest.Server).Up,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := jwkstest.NewKey(t, "ES256", "k")
			s := jwkstest.NewServer(t, k)
			iss := s.Issuer()
			tt.breakIt(s)
			// A short RefreshInterval caps the backoff quickly; the clock
			// only matters for key age, and stands still.
			c, reg := testNewCache(t, []IssuerConfig{testDirect(s)}, Options{RefreshInterval: 300 * time.Millisecond})
			done := testRun(t, c)

			testEventually(t, "two failed fetches", func() bool {
				return testMetricValue(t, reg, "sidegate_jwks_refresh_total", map[string]string{"issuer": iss, "outcome": "error"}) >= 2
			})
			select {
			case err := <-done:
				t.Fatalf("Run returned %v during the outage; want it to keep retrying", err)
			default:
			}
			if got := c.Unready(); !slices.Equal(got, []string{iss}) {
				t.Errorf("Unready during the outage = %q", got)
			}
			testWantUnavailable(t, c, iss, k.Kid, "no usable key set")
			testRefreshMetric(t, reg, iss, "success", 0)

			// Backoff retries keep going, and the recovery is picked up
			// without a restart.
			tt.fix(s)
			testEventually(t, "ready after the server recovers", func() bool { return len(c.Unready()) == 0 })
			testLookupVerifies(t, c, iss, k)
			if st := testStatus(t, c, iss); !st.Ready || st.Problem != "" || st.Keys != 1 {
				t.Errorf("Status after recovery = %+v", st)
			}
		})
	}
}

func TestOutageAfterStartUnderRun(t *testing.T) {
	old := jwkstest.NewKey(t, "ES256", "old")
	next := jwkstest.NewKey(t, "EdDSA", "next")
	s := jwkstest.NewServer(t, old)
	iss := s.Issuer()
	c, reg := testNewCache(t, []IssuerConfig{testDirect(s)}, Options{RefreshInterval: 100 * time.Millisecond})
	testRun(t, c)
	testEventually(t, "ready", func() bool { return len(c.Unready()) == 0 })

	s.Down()
	errorsBefore := testMetricValue(t, reg, "sidegate_jwks_refresh_total", map[string]string{"issuer": iss, "outcome": "error"})
	testEventually(t, "failed fetches while the server is down", func() bool {
		return testMetricValue(t, reg, "sidegate_jwks_refresh_total", map[string]string{"issuer": iss, "outcome": "error"}) >= errorsBefore+2
	})
	testLookupVerifies(t, c, iss, old)
	if got := c.Unready(); len(got) != 0 {
		t.Errorf("Unready = %q during an outage within max_stale", got)
	}

	// The server comes back, rotated while it was away.
	s.SetKeys(next)
	s.Up()
	testEventually(t, "the rotated key after the outage", func() bool { return testHasKid(c, iss, next.Kid) })
	testLookupVerifies(t, c, iss, next)
	testEventually(t, "the retired key to go", func() bool { return !testHasKid(c, iss, old.Kid) })
}

// ---------------------------------------------------------------------
// 6. Cache-Control and Expires, and conditional requests.

func TestCacheForBounds(t *testing.T) {
	const lo, hi = time.Minute, 5 * time.Minute
	c, _ := testNewCache(t, nil, Options{MinRefreshInterval: lo, RefreshInterval: hi})
	date := testNow.Add(-time.Hour) // the server's clock, an hour behind ours
	at := func(d time.Duration) string { return date.Add(d).UTC().Format(http.TimeFormat) }
	expires := testNow.Add(4 * time.Minute).UTC().Truncate(time.Second)
	tests := []struct {
		name   string
		header map[string][]string
		want   time.Duration
	}{
		{"no caching headers", nil, hi},
		{"max-age below the minimum", map[string][]string{"Cache-Control": {"max-age=30"}}, lo},
		{"max-age=0", map[string][]string{"Cache-Control": {"max-age=0"}}, lo},
		{"max-age between the bounds", map[string][]string{"Cache-Control": {"max-age=120"}}, 2 * time.Minute},
		{"max-age at the minimum", map[string][]string{"Cache-Control": {"max-age=60"}}, lo},
		{"max-age at the maximum", map[string][]string{"Cache-Control": {"max-age=300"}}, hi},
		{"max-age above the maximum", map[string][]string{"Cache-Control": {"max-age=86400"}}, hi},
		{"max-age that overflows a Duration", map[string][]string{"Cache-Control": {"max-age=10000000000"}}, hi},
		{"max-age beyond int64", map[string][]string{"Cache-Control": {"max-age=99999999999999999999"}}, hi},
		{"among other directives", map[string][]string{"Cache-Control": {"public, max-age=120, must-revalidate"}}, 2 * time.Minute},
		{"quoted", map[string][]string{"Cache-Control": {`max-age="120"`}}, 2 * time.Minute},
		{"directive name in capitals", map[string][]string{"Cache-Control": {"Public, MAX-AGE=120"}}, 2 * time.Minute},
		{"split over two header lines", map[string][]string{"Cache-Control": {"public", "max-age=120"}}, 2 * time.Minute},
		{"invalid max-age", map[string][]string{"Cache-Control": {"max-age=soon"}}, lo},
		{"max-age with trailing junk", map[string][]string{"Cache-Control": {"max-age=120abc"}}, lo},
		{"negative max-age", map[string][]string{"Cache-Control": {"max-age=-1"}}, lo},
		{"no-cache", map[string][]string{"Cache-Control": {"no-cache"}}, lo},
		{"no-store", map[string][]string{"Cache-Control": {"no-store"}}, lo},
		{"no-cache after max-age", map[string][]string{"Cache-Control": {"max-age=300, no-cache"}}, lo},
		{"no-store before max-age", map[string][]string{"Cache-Control": {"no-store, max-age=300"}}, lo},
		{"no-cache on another line", map[string][]string{"Cache-Control": {"max-age=300", "no-cache"}}, lo},
		{"Expires between the bounds, from Date", map[string][]string{"Date": {at(0)}, "Expires": {at(3 * time.Minute)}}, 3 * time.Minute},
		{"Expires beyond the maximum", map[string][]string{"Date": {at(0)}, "Expires": {at(24 * time.Hour)}}, hi},
		{"Expires below the minimum", map[string][]string{"Date": {at(0)}, "Expires": {at(10 * time.Second)}}, lo},
		{"Expires in the past", map[string][]string{"Date": {at(0)}, "Expires": {at(-time.Hour)}}, lo},
		{"invalid Expires", map[string][]string{"Date": {at(0)}, "Expires": {"0"}}, lo},
		{"Expires without Date, from our clock", map[string][]string{"Expires": {expires.Format(http.TimeFormat)}}, expires.Sub(testNow)},
		{"max-age wins over Expires", map[string][]string{"Cache-Control": {"max-age=120"}, "Date": {at(0)}, "Expires": {at(4 * time.Minute)}}, 2 * time.Minute},
		{"Cache-Control without max-age leaves Expires", map[string][]string{"Cache-Control": {"public"}, "Date": {at(0)}, "Expires": {at(4 * time.Minute)}}, 4 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.cacheFor(http.Header(tt.header)); got != tt.want {
				t.Errorf("cacheFor(%v) = %v, want %v", tt.header, got, tt.want)
			}
		})
	}
}

// The bounds reach cacheFor from a real response too.
func TestCacheForFromServer(t *testing.T) {
	s := jwkstest.NewServer(t, jwkstest.NewKey(t, "ES256", "k"))
	c, _, _ := testClockCache(t, []IssuerConfig{testDirect(s)}, Options{MinRefreshInterval: time.Minute, RefreshInterval: 5 * time.Minute})
	for _, tt := range []struct {
		cc   string
		want time.Duration
	}{{"max-age=1", time.Minute}, {"max-age=180", 3 * time.Minute}, {"max-age=3600", 5 * time.Minute}, {"", 5 * time.Minute}} {
		s.SetHeader("Cache-Control", tt.cc)
		r := <-c.startFetch(context.Background(), c.issuers.Load().byName[s.Issuer()])
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		if got := r.Val.(time.Duration); got != tt.want {
			t.Errorf("Cache-Control %q: next fetch in %v, want %v", tt.cc, got, tt.want)
		}
	}
}

func TestConditionalRefresh(t *testing.T) {
	const maxStale = time.Hour
	a := jwkstest.NewKey(t, "ES256", "a")
	b := jwkstest.NewKey(t, "ES256", "b")
	s := jwkstest.NewServer(t, a)
	iss := s.Issuer()
	lastModified := testNow.Add(-24 * time.Hour).UTC().Format(http.TimeFormat)
	s.SetHeader("ETag", `"v1"`)
	s.SetHeader("Last-Modified", lastModified)
	c, reg, clock := testClockCache(t, []IssuerConfig{testDirect(s)}, Options{MaxStale: maxStale})

	testRefresh(t, c, iss)
	if h := s.LastRequestHeader(); h.Get("If-None-Match") != "" || h.Get("If-Modified-Since") != "" {
		t.Errorf("the first fetch was conditional: %v", h)
	}

	// The next refresh asks conditionally; the 304 is a success that keeps
	// the keys and counts as a confirmation of them.
	clock.Advance(50 * time.Minute)
	testRefresh(t, c, iss)
	h := s.LastRequestHeader()
	if got := h.Get("If-None-Match"); got != `"v1"` {
		t.Errorf("If-None-Match = %q, want the ETag", got)
	}
	if got := h.Get("If-Modified-Since"); got != lastModified {
		t.Errorf("If-Modified-Since = %q, want %q", got, lastModified)
	}
	if n := s.NotModified(); n != 1 {
		t.Fatalf("304 answers = %d, want 1", n)
	}
	testRefreshMetric(t, reg, iss, "success", 2)
	testRefreshMetric(t, reg, iss, "error", 0)
	testLookupVerifies(t, c, iss, a)
	confirmed := clock.Now()
	if st := testStatus(t, c, iss); !st.FetchedAt.Equal(confirmed) || st.Keys != 1 {
		t.Errorf("Status after a 304 = %+v, want FetchedAt %v", st, confirmed)
	}
	testMetric(t, reg, "sidegate_jwks_last_success_timestamp_seconds", map[string]string{"issuer": iss}, float64(confirmed.UnixNano())/1e9)

	// max_stale runs from the 304: 65 minutes after the 200, 15 after the
	// 304, the keys are fresh; a max_stale after the 304 they are not.
	s.SetStatus(http.StatusInternalServerError)
	clock.Advance(15 * time.Minute)
	testRefreshFails(t, c, iss)
	testLookupVerifies(t, c, iss, a)
	clock.Advance(maxStale - 15*time.Minute + time.Second)
	testWantUnavailable(t, c, iss, a.Kid, "max_stale")

	// A 304 revives keys that had gone stale: the server vouches for them.
	s.SetStatus(http.StatusOK)
	testRefresh(t, c, iss)
	testLookupVerifies(t, c, iss, a)
	if n := s.NotModified(); n != 2 {
		t.Errorf("304 answers = %d, want 2", n)
	}

	// A new ETag: the conditional request gets the new document.
	s.SetKeys(b)
	s.SetHeader("ETag", `"v2"`)
	testRefresh(t, c, iss)
	if got := s.LastRequestHeader().Get("If-None-Match"); got != `"v1"` {
		t.Errorf("If-None-Match = %q, want the previous ETag", got)
	}
	testLookupVerifies(t, c, iss, b)
	// The retired kid's refetch is conditional too, and not modified.
	testWantErr(t, c, iss, a.Kid, ErrUnknownKey)
	if got := s.LastRequestHeader().Get("If-None-Match"); got != `"v2"` {
		t.Errorf("If-None-Match = %q, want the new ETag", got)
	}
	testRefresh(t, c, iss)
	if n := s.NotModified(); n != 4 {
		t.Errorf("304 answers = %d, want 4", n)
	}

	// Last-Modified alone is a validator too.
	s.SetHeader("ETag", "")
	s.SetKeys(a, b)
	s.SetHeader("Last-Modified", testNow.UTC().Format(http.TimeFormat))
	testRefresh(t, c, iss)
	testLookupVerifies(t, c, iss, a)
	testRefresh(t, c, iss)
	if h := s.LastRequestHeader(); h.Get("If-None-Match") != "" || h.Get("If-Modified-Since") != testNow.UTC().Format(http.TimeFormat) {
		t.Errorf("conditional headers with only Last-Modified = %v", h)
	}
	if n := s.NotModified(); n != 5 {
		t.Errorf("304 answers = %d, want 5", n)
	}
	testLookupVerifies(t, c, iss, b)
	if n, total := s.Conditional(), s.Fetches(); n != total-1 {
		t.Errorf("%d of %d fetches were conditional; want all but the first", n, total)
	}
}

// ---------------------------------------------------------------------
// 7. Discovery.

func TestDiscoveryRedoneAfterRefreshInterval(t *testing.T) {
	const refresh = 5 * time.Minute
	k := jwkstest.NewKey(t, "ES256", "k")
	jwks := jwkstest.NewServer(t, k)
	o := testNewOIDC(t, jwks.JWKSURI())
	c, _, clock := testClockCache(t, []IssuerConfig{{Issuer: o.URL, Discovery: true}}, Options{RefreshInterval: refresh})
	step := func(advance time.Duration, wantHits int64, wantOK bool) {
		t.Helper()
		clock.Advance(advance)
		err := c.Refresh(context.Background(), o.URL)
		if (err == nil) != wantOK {
			t.Fatalf("Refresh = %v, want success %v", err, wantOK)
		}
		if got := o.hits.Load(); got != wantHits {
			t.Fatalf("discovery documents fetched = %d, want %d", got, wantHits)
		}
	}
	step(0, 1, true)
	step(0, 1, true)
	step(refresh-time.Second, 1, true)
	step(time.Second, 2, true)

	// A failed rediscovery keeps the last jwks_uri and is retried at the
	// next fetch, not a RefreshInterval later.
	o.set(func(o *testOIDC) { o.status = http.StatusBadGateway })
	step(refresh, 3, true)
	step(0, 4, true)
	o.set(func(o *testOIDC) { o.status = http.StatusOK })
	step(0, 5, true)
	step(0, 5, true)
	testLookupVerifies(t, c, o.URL, k)
	if n := jwks.Fetches(); n != 8 {
		t.Errorf("JWKS fetches = %d, want one per Refresh (8)", n)
	}
}

// Under Run, a discovery document naming another issuer keeps the issuer
// unready; its jwks_uri is never fetched.
func TestDiscoveryMismatchUnderRun(t *testing.T) {
	k := jwkstest.NewKey(t, "ES256", "k")
	jwks := jwkstest.NewServer(t, k)
	o := testNewOIDC(t, jwks.JWKSURI())
	o.set(func(o *testOIDC) { o.issuer = "https://accounts.evil.test" })
	c, reg := testNewCache(t, []IssuerConfig{{Issuer: o.URL, Discovery: true}}, Options{RefreshInterval: 100 * time.Millisecond})
	testRun(t, c)
	testEventually(t, "failed discoveries", func() bool {
		return testMetricValue(t, reg, "sidegate_jwks_refresh_total", map[string]string{"issuer": o.URL, "outcome": "error"}) >= 2
	})
	testWantUnavailable(t, c, o.URL, k.Kid, "no usable key set")
	if n := jwks.Fetches(); n != 0 {
		t.Errorf("the jwks_uri of a refused discovery document was fetched %d times", n)
	}

	// Fixed at the provider: ready without a restart.
	o.set(func(o *testOIDC) { o.issuer = "" })
	testEventually(t, "ready after the discovery document is fixed", func() bool { return len(c.Unready()) == 0 })
	testLookupVerifies(t, c, o.URL, k)
}

// ---------------------------------------------------------------------
// 8. Snapshots.

// testSnapshotFile returns the only file in dir, failing if anything else
// (such as a temporary file) is there.
func testSnapshotFile(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 1 || !strings.HasPrefix(names[0], "jwks-") || !strings.HasSuffix(names[0], ".json") {
		t.Fatalf("snapshot dir holds %q, want one jwks-*.json", names)
	}
	return filepath.Join(dir, names[0])
}

// testReadSnapshot reads the snapshot in dir as generic JSON.
func testReadSnapshot(t *testing.T, dir string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(testSnapshotFile(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("snapshot is not JSON: %v\n%s", err, data)
	}
	return m
}

func testSnapshotFetchedAt(t *testing.T, dir string) time.Time {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(testReadSnapshot(t, dir)["fetched_at"]))
	if err != nil {
		t.Fatal(err)
	}
	return at
}

func TestSnapshotRestartDuringOutage(t *testing.T) {
	const maxStale = 24 * time.Hour
	a := jwkstest.NewKey(t, "ES256", "a")
	b := jwkstest.NewKey(t, "EdDSA", "b")
	s := jwkstest.NewServer(t, a, b)
	iss := s.Issuer()
	dir := t.TempDir()
	first, _, clock := testClockCache(t, []IssuerConfig{testDirect(s)}, Options{SnapshotDir: dir, MaxStale: maxStale})
	if n := len(testDirEntries(t, dir)); n != 0 {
		t.Fatalf("New wrote %d files before any fetch", n)
	}
	testRefresh(t, first, iss)
	fetchedAt := clock.Now()

	snap := testReadSnapshot(t, dir)
	if snap["issuer"] != iss || snap["uri"] != s.JWKSURI() {
		t.Errorf("snapshot issuer, uri = %v, %v", snap["issuer"], snap["uri"])
	}
	if at := testSnapshotFetchedAt(t, dir); !at.Equal(fetchedAt) {
		t.Errorf("snapshot fetched_at = %v, want %v", at, fetchedAt)
	}
	if keys, _ := snap["jwks"].(map[string]any)["keys"].([]any); len(keys) != 2 {
		t.Errorf("snapshot jwks = %v, want the fetched document with 2 keys", snap["jwks"])
	}

	// A failed fetch leaves the snapshot alone.
	before, err := os.ReadFile(testSnapshotFile(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	s.SetStatus(http.StatusInternalServerError)
	clock.Advance(time.Hour)
	testRefreshFails(t, first, iss)
	if after, _ := os.ReadFile(testSnapshotFile(t, dir)); !bytes.Equal(before, after) {
		t.Error("a failed fetch rewrote the snapshot")
	}

	// The identity provider is down when the pod restarts, 23 hours on.
	s.Down()
	fetches := s.Fetches()
	clock.Advance(22 * time.Hour)
	reg := prometheus.NewRegistry()
	var logs testLogBuffer
	second, err := New([]IssuerConfig{testDirect(s)}, Options{SnapshotDir: dir, MaxStale: maxStale, Now: clock.Now, Registerer: reg, Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	if got := second.Unready(); len(got) != 0 {
		t.Fatalf("Unready after loading the snapshot = %q", got)
	}
	testLookupVerifies(t, second, iss, a)
	testLookupVerifies(t, second, iss, b)
	if st := testStatus(t, second, iss); !st.Ready || st.Keys != 2 || !st.FetchedAt.Equal(fetchedAt) {
		t.Errorf("Status from the snapshot = %+v, want 2 keys fetched at %v", st, fetchedAt)
	}
	testMetric(t, reg, "sidegate_jwks_keys", map[string]string{"issuer": iss}, 2)
	testRefreshMetric(t, reg, iss, "success", 0)
	if n := s.Fetches(); n != fetches {
		t.Errorf("New fetched %d times", n-fetches)
	}
	if !strings.Contains(logs.String(), "jwks snapshot loaded") {
		t.Errorf("no log line for the loaded snapshot:\n%s", logs.String())
	}

	// Run keeps failing against the dead server; the snapshot carries on
	// until max_stale from the original fetch.
	testRefreshFails(t, second, iss)
	testLookupVerifies(t, second, iss, a)
	clock.Advance(time.Hour + time.Second)
	testWantUnavailable(t, second, iss, a.Kid, "max_stale")
}

func testDirEntries(t *testing.T, dir string) []os.DirEntry {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

func TestSnapshotIgnored(t *testing.T) {
	const maxStale = 24 * time.Hour
	tests := []struct {
		name string
		// edit changes the snapshot: it edits m, the file decoded, or
		// returns bytes to write instead.
		edit    func(t *testing.T, m map[string]any, raw []byte) (newRaw []byte)
		advance time.Duration // of the clock before the restart
		other   bool          // the restart configures another jwks_uri for the issuer
	}{
		{name: "older than max_stale", advance: maxStale + time.Second},
		{name: "garbage bytes", edit: func(*testing.T, map[string]any, []byte) []byte { return []byte("\x00\xff\xfe garbage") }},
		{name: "empty file", edit: func(*testing.T, map[string]any, []byte) []byte { return []byte{} }},
		{name: "truncated JSON", edit: func(_ *testing.T, _ map[string]any, raw []byte) []byte { return raw[:len(raw)/2] }},
		{name: "JSON of the wrong shape", edit: func(*testing.T, map[string]any, []byte) []byte { return []byte(`["jwks"]`) }},
		{name: "another issuer", edit: func(_ *testing.T, m map[string]any, _ []byte) []byte {
			m["issuer"] = "https://accounts.evil.test"
			return nil
		}},
		{name: "another jwks_uri", other: true},
		{name: "only unusable keys", edit: func(_ *testing.T, m map[string]any, _ []byte) []byte {
			m["jwks"] = map[string]any{"keys": []any{map[string]any{"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}}}
			return nil
		}},
		{name: "no keys member", edit: func(_ *testing.T, m map[string]any, _ []byte) []byte {
			m["jwks"] = map[string]any{}
			return nil
		}},
		{name: "jwks not an object", edit: func(_ *testing.T, m map[string]any, _ []byte) []byte {
			m["jwks"] = "keys"
			return nil
		}},
		{name: "fetched_at missing", edit: func(_ *testing.T, m map[string]any, _ []byte) []byte {
			delete(m, "fetched_at")
			return nil
		}},
		{name: "fetched_at in the future", edit: func(_ *testing.T, m map[string]any, _ []byte) []byte {
			m["fetched_at"] = testNow.Add(48 * time.Hour).Format(time.RFC3339Nano)
			return nil
		}},
		{name: "fetched_at not a time", edit: func(_ *testing.T, m map[string]any, _ []byte) []byte {
			m["fetched_at"] = "yesterday"
			return nil
		}},
		{name: "more keys than MaxKeys", edit: func(t *testing.T, m map[string]any, _ []byte) []byte {
			var keys []any
			for i := range 4 {
				keys = append(keys, jwkstest.NewKey(t, "ES256", fmt.Sprint("k", i)).JWK())
			}
			m["jwks"] = map[string]any{"keys": keys}
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := jwkstest.NewKey(t, "ES256", "k")
			s := jwkstest.NewServer(t, k)
			iss := s.Issuer()
			dir := t.TempDir()
			opts := Options{SnapshotDir: dir, MaxStale: maxStale, MaxKeys: 3}
			first, _, clock := testClockCache(t, []IssuerConfig{testDirect(s)}, opts)
			testRefresh(t, first, iss)
			path := testSnapshotFile(t, dir)
			if tt.edit != nil {
				raw, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				var m map[string]any
				if err := json.Unmarshal(raw, &m); err != nil {
					t.Fatal(err)
				}
				out := tt.edit(t, m, raw)
				if out == nil {
					out = mustJSON(t, m)
				}
				if err := os.WriteFile(path, out, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			clock.Advance(tt.advance)
			s.Down()

			cfg := testDirect(s)
			if tt.other {
				cfg.JWKSURI = jwkstest.NewServer(t, k).JWKSURI()
			}
			var logs testLogBuffer
			opts.Now, opts.Registerer, opts.Logger = clock.Now, prometheus.NewRegistry(), logs.logger()
			c, err := New([]IssuerConfig{cfg}, opts)
			if err != nil {
				t.Fatalf("New with a bad snapshot: %v", err)
			}
			if got := c.Unready(); !slices.Equal(got, []string{iss}) {
				t.Errorf("Unready = %q, want the issuer: the snapshot should have been ignored", got)
			}
			testWantUnavailable(t, c, iss, k.Kid, "no usable key set")
			if !strings.Contains(logs.String(), "jwks snapshot ignored") {
				t.Errorf("no warning for the ignored snapshot:\n%s", logs.String())
			}

			// The next good fetch replaces the bad snapshot.
			if tt.other {
				testRefresh(t, c, iss)
			} else {
				s.Up()
				testRefresh(t, c, iss)
			}
			testLookupVerifies(t, c, iss, k)
			if got := testReadSnapshot(t, dir)["uri"]; got != cfg.JWKSURI {
				t.Errorf("snapshot uri after a good fetch = %v, want %s", got, cfg.JWKSURI)
			}
		})
	}
}

// A snapshot exactly max_stale old is still used.
func TestSnapshotAtMaxStale(t *testing.T) {
	const maxStale = time.Hour
	k := jwkstest.NewKey(t, "ES256", "k")
	s := jwkstest.NewServer(t, k)
	dir := t.TempDir()
	first, _, clock := testClockCache(t, []IssuerConfig{testDirect(s)}, Options{SnapshotDir: dir, MaxStale: maxStale})
	testRefresh(t, first, s.Issuer())
	s.Down()
	clock.Advance(maxStale)
	c, err := New([]IssuerConfig{testDirect(s)}, Options{SnapshotDir: dir, MaxStale: maxStale, Now: clock.Now, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	testLookupVerifies(t, c, s.Issuer(), k)
}

func TestSnapshotMovesForwardOn304(t *testing.T) {
	const maxStale = time.Hour
	k := jwkstest.NewKey(t, "ES256", "k")
	s := jwkstest.NewServer(t, k)
	s.SetHeader("ETag", `"v1"`)
	dir := t.TempDir()
	c, _, clock := testClockCache(t, []IssuerConfig{testDirect(s)}, Options{SnapshotDir: dir, MaxStale: maxStale})
	testRefresh(t, c, s.Issuer())
	before := testReadSnapshot(t, dir)

	clock.Advance(50 * time.Minute)
	testRefresh(t, c, s.Issuer())
	if s.NotModified() != 1 {
		t.Fatalf("304 answers = %d, want 1", s.NotModified())
	}
	after := testReadSnapshot(t, dir)
	if at := testSnapshotFetchedAt(t, dir); !at.Equal(clock.Now()) {
		t.Errorf("snapshot fetched_at after a 304 = %v, want %v", at, clock.Now())
	}
	if !bytes.Equal(mustJSON(t, before["jwks"]), mustJSON(t, after["jwks"])) || after["etag"] != `"v1"` {
		t.Errorf("a 304 changed the snapshot's keys or ETag: %v", after)
	}

	// A restart 30 minutes later (80 after the 200) loads it: max_stale
	// counts from the 304. Its ETag makes the first fetch conditional.
	clock.Advance(30 * time.Minute)
	restarted, err := New([]IssuerConfig{testDirect(s)}, Options{SnapshotDir: dir, MaxStale: maxStale, Now: clock.Now, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	testLookupVerifies(t, restarted, s.Issuer(), k)
	testRefresh(t, restarted, s.Issuer())
	if got := s.LastRequestHeader().Get("If-None-Match"); got != `"v1"` {
		t.Errorf("the first fetch after loading a snapshot sent If-None-Match %q", got)
	}
	if s.NotModified() != 2 {
		t.Errorf("304 answers = %d, want 2", s.NotModified())
	}
	testLookupVerifies(t, restarted, s.Issuer(), k)
}

func TestSnapshotWithDiscovery(t *testing.T) {
	k := jwkstest.NewKey(t, "ES256", "k")
	s := jwkstest.NewServer(t, k)
	iss := s.Issuer()
	cfg := IssuerConfig{Issuer: iss, Discovery: true}
	dir := t.TempDir()
	first, _, clock := testClockCache(t, []IssuerConfig{cfg}, Options{SnapshotDir: dir})
	testRefresh(t, first, iss)
	if got := testReadSnapshot(t, dir)["uri"]; got != s.JWKSURI() {
		t.Errorf("snapshot uri = %v, want the discovered %s", got, s.JWKSURI())
	}

	// Restart with the provider down: the discovered jwks_uri and keys
	// come from the snapshot.
	s.Down()
	second, err := New([]IssuerConfig{cfg}, Options{SnapshotDir: dir, Now: clock.Now, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	testLookupVerifies(t, second, iss, k)

	// A snapshot pointing at a plain-http host that the configuration
	// would not allow is ignored.
	path := testSnapshotFile(t, dir)
	m := testReadSnapshot(t, dir)
	m["uri"] = "http://keys.example.com/jwks"
	if err := os.WriteFile(path, mustJSON(t, m), 0o600); err != nil {
		t.Fatal(err)
	}
	third, err := New([]IssuerConfig{cfg}, Options{SnapshotDir: dir, Now: clock.Now, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	testWantUnavailable(t, third, iss, k.Kid, "no usable key set")
}

// A snapshot that cannot be written changes nothing in memory.
func TestSnapshotWriteFailure(t *testing.T) {
	k := jwkstest.NewKey(t, "ES256", "k")
	s := jwkstest.NewServer(t, k)
	var logs testLogBuffer
	missing := filepath.Join(t.TempDir(), "does-not-exist")
	c, reg, _ := testClockCache(t, []IssuerConfig{testDirect(s)}, Options{SnapshotDir: missing, Logger: logs.logger()})
	testRefresh(t, c, s.Issuer())
	testLookupVerifies(t, c, s.Issuer(), k)
	testRefreshMetric(t, reg, s.Issuer(), "success", 1)
	if !strings.Contains(logs.String(), "jwks snapshot not written") {
		t.Errorf("no warning for the unwritable snapshot:\n%s", logs.String())
	}
}

// Refreshes racing on several issuers each leave one whole snapshot and no
// temporary file behind (run with -race).
func TestSnapshotConcurrentWrites(t *testing.T) {
	dir := t.TempDir()
	var cfg []IssuerConfig
	var servers []*jwkstest.Server
	for i := range 4 {
		s := jwkstest.NewServer(t, jwkstest.NewKey(t, "ES256", fmt.Sprint("k", i)))
		servers = append(servers, s)
		cfg = append(cfg, testDirect(s))
	}
	c, _, _ := testClockCache(t, cfg, Options{SnapshotDir: dir})
	var wg sync.WaitGroup
	for range 5 {
		for _, s := range servers {
			wg.Go(func() {
				if err := c.Refresh(context.Background(), s.Issuer()); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	entries := testDirEntries(t, dir)
	if len(entries) != len(servers) {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("snapshot dir holds %q, want one snapshot per issuer", names)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(data) {
			t.Errorf("%s is not valid JSON", e.Name())
		}
	}
}

// ---------------------------------------------------------------------
// 9. HTTP client hygiene.

// testCAFile writes cert as a PEM file and returns its path.
func testCAFile(t *testing.T, cert *x509.Certificate) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// testOtherCA is a self-signed CA that signed nothing the servers use.
func testOtherCA(t *testing.T) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "other test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestTLSVerification(t *testing.T) {
	k := jwkstest.NewKey(t, "ES256", "k")
	s := jwkstest.NewTLSServer(t, k)
	iss := s.Issuer()

	t.Run("verification is on", func(t *testing.T) {
		c, _, _ := testClockCache(t, []IssuerConfig{testDirect(s)}, Options{})
		err := testRefreshFails(t, c, iss)
		var unknownCA x509.UnknownAuthorityError
		if !errors.As(err, &unknownCA) {
			t.Errorf("Refresh = %v, want a certificate signed by an unknown authority", err)
		}
		testWantUnavailable(t, c, iss, k.Kid, "no usable key set")
	})
	t.Run("CA file trusted", func(t *testing.T) {
		c, _, _ := testClockCache(t, []IssuerConfig{testDirect(s)}, Options{CAFile: testCAFile(t, s.Certificate())})
		testRefresh(t, c, iss)
		testLookupVerifies(t, c, iss, k)
	})
	t.Run("CA file of another CA", func(t *testing.T) {
		c, _, _ := testClockCache(t, []IssuerConfig{testDirect(s)}, Options{CAFile: testCAFile(t, testOtherCA(t))})
		err := testRefreshFails(t, c, iss)
		var unknownCA x509.UnknownAuthorityError
		if !errors.As(err, &unknownCA) {
			t.Errorf("Refresh = %v, want a certificate signed by an unknown authority", err)
		}
	})
	if n := s.Fetches(); n != 1 {
		t.Errorf("the JWKS was served %d times; want once, to the client that trusts its CA", n)
	}

	for _, tt := range []struct {
		name, content, want string
	}{
		{"CA file without PEM", "not a certificate\n", "no PEM certificate"},
		{"CA file with a PEM key only", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "no PEM certificate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ca.pem")
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := New([]IssuerConfig{testDirect(s)}, Options{CAFile: path, Registerer: prometheus.NewRegistry()})
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "jwks: ") {
				t.Errorf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	t.Run("CA file missing", func(t *testing.T) {
		_, err := New([]IssuerConfig{testDirect(s)}, Options{CAFile: filepath.Join(t.TempDir(), "nope.pem"), Registerer: prometheus.NewRegistry()})
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("New = %v, want a missing-file error", err)
		}
	})
}

func TestRedirects(t *testing.T) {
	k := jwkstest.NewKey(t, "ES256", "k")

	t.Run("to another host", func(t *testing.T) {
		target := jwkstest.NewServer(t, k)
		redirector := jwkstest.NewServer(t)
		redirector.SetHeader("Location", target.JWKSURI())
		redirector.SetStatus(http.StatusFound)
		c, _, _ := testClockCache(t, []IssuerConfig{testDirect(redirector)}, Options{})
		if err := testRefreshFails(t, c, redirector.Issuer()); !strings.Contains(err.Error(), "another host") {
			t.Errorf("Refresh = %v, want a refused redirect", err)
		}
		if n := target.Fetches(); n != 0 {
			t.Errorf("the redirect target was fetched %d times", n)
		}
	})
	t.Run("to the same address under another name", func(t *testing.T) {
		s := jwkstest.NewServer(t, k)
		_, port, _ := net.SplitHostPort(s.Listener.Addr().String())
		s.SetHeader("Location", "http://localhost:"+port+"/jwks")
		s.SetStatus(http.StatusMovedPermanently)
		c, _, _ := testClockCache(t, []IssuerConfig{testDirect(s)}, Options{})
		testRefreshFails(t, c, s.Issuer())
		if n := s.Fetches(); n != 1 {
			t.Errorf("fetches = %d, want 1: the redirect was followed", n)
		}
	})
	t.Run("from https to http", func(t *testing.T) {
		plain := jwkstest.NewServer(t, k)
		secure := jwkstest.NewTLSServer(t)
		secure.SetHeader("Location", plain.JWKSURI())
		secure.SetStatus(http.StatusTemporaryRedirect)
		c, _, _ := testClockCache(t, []IssuerConfig{testDirect(secure)}, Options{CAFile: testCAFile(t, secure.Certificate())})
		testRefreshFails(t, c, secure.Issuer())
		if n := plain.Fetches(); n != 0 {
			t.Errorf("the plain-http target was fetched %d times", n)
		}
	})
	t.Run("within the host", func(t *testing.T) {
		var hops []string
		var mu sync.Mutex
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			hops = append(hops, r.URL.Path)
			mu.Unlock()
			switch r.URL.Path {
			case "/old":
				http.Redirect(w, r, "/new", http.StatusMovedPermanently)
			case "/new":
				w.Write(testDoc(t, k.JWK()))
			default:
				// Endless redirects within the host.
				http.Redirect(w, r, r.URL.Path+"x", http.StatusFound)
			}
		}))
		t.Cleanup(srv.Close)
		c, _, _ := testClockCache(t, []IssuerConfig{
			{Issuer: "https://followed.test/", JWKSURI: srv.URL + "/old"},
			{Issuer: "https://loop.test/", JWKSURI: srv.URL + "/loop"},
		}, Options{})
		testRefresh(t, c, "https://followed.test/")
		testLookupVerifies(t, c, "https://followed.test/", k)
		if err := testRefreshFails(t, c, "https://loop.test/"); !strings.Contains(err.Error(), "redirects") {
			t.Errorf("Refresh = %v, want too many redirects", err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(hops) != 2+6 {
			t.Errorf("requests = %q, want 2 for the move and 6 for the loop (5 redirects)", hops)
		}
	})
}

func TestSameHostNoDowngrade(t *testing.T) {
	req := func(raw string) *http.Request {
		r, err := http.NewRequest(http.MethodGet, raw, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	tests := []struct {
		from, to string
		ok       bool
	}{
		{"https://idp.test/jwks", "https://idp.test/keys", true},
		{"http://127.0.0.1:8080/jwks", "http://127.0.0.1:8080/keys", true},
		{"http://idp.test/jwks", "https://idp.test/keys", true}, // an upgrade
		{"https://idp.test/jwks", "https://cdn.idp.test/keys", false},
		{"https://idp.test/jwks", "https://idp.test:8443/keys", false},
		{"https://idp.test:443/jwks", "http://idp.test:443/keys", false}, // same host, downgraded
	}
	for _, tt := range tests {
		err := sameHostNoDowngrade(req(tt.to), []*http.Request{req(tt.from)})
		if (err == nil) != tt.ok {
			t.Errorf("redirect %s -> %s: %v, want allowed %v", tt.from, tt.to, err, tt.ok)
		}
	}
	// via holds the requests made so far: the first and each redirect.
	via := []*http.Request{req("https://idp.test/0")}
	for i := range 6 {
		err := sameHostNoDowngrade(req(fmt.Sprint("https://idp.test/", i+1)), via)
		if ok := i < 5; (err == nil) != ok {
			t.Errorf("redirect %d: %v, want allowed %v (at most 5)", i+1, err, ok)
		}
		via = append(via, req(fmt.Sprint("https://idp.test/", i+1)))
	}
}

func TestCheckURL(t *testing.T) {
	tests := []struct {
		url      string
		insecure bool
		ok       bool
	}{
		{"https://idp.example.com/jwks", false, true},
		{"https://idp.example.com:8443/.well-known/jwks.json", false, true},
		{"http://127.0.0.1/", false, true},
		{"http://127.0.0.1:8080/jwks", false, true},
		{"http://127.9.9.9/jwks", false, true},
		{"http://localhost/", false, true},
		{"http://keys.localhost:8080/", false, true},
		{"http://[::1]/", false, true},
		{"http://[::1]:8080/jwks", false, true},
		{"http://example.com/", false, false},
		{"http://example.com/", true, true},
		{"http://10.0.0.1/jwks", false, false},
		{"http://127.0.0.1.example.com/", false, false},
		{"http://localhost.example.com/", false, false},
		{"ftp://example.com/jwks", false, false},
		{"ftp://127.0.0.1/jwks", true, false},
		{"file:///etc/jwks.json", true, false},
		{"//example.com/jwks", false, false},
		{"/jwks", false, false},
		{"https://", false, false},
		{"", false, false},
		{"https://exa mple.com/", false, false},
	}
	for _, tt := range tests {
		err := CheckURL(tt.url, tt.insecure)
		if (err == nil) != tt.ok {
			t.Errorf("CheckURL(%q, insecure %v) = %v, want ok %v", tt.url, tt.insecure, err, tt.ok)
		}
	}
}

func TestNewRefusesInsecureURLs(t *testing.T) {
	tests := []struct {
		name string
		cfg  IssuerConfig
		ok   bool
	}{
		{"jwks_uri over http to another host", IssuerConfig{Issuer: "https://idp.test/", JWKSURI: "http://idp.test/jwks"}, false},
		{"jwks_uri over http with insecure_http", IssuerConfig{Issuer: "https://idp.test/", JWKSURI: "http://idp.test/jwks", InsecureHTTP: true}, true},
		{"jwks_uri over http to loopback", IssuerConfig{Issuer: "https://idp.test/", JWKSURI: "http://127.0.0.1:9/jwks"}, true},
		{"jwks_uri not http", IssuerConfig{Issuer: "https://idp.test/", JWKSURI: "ftp://idp.test/jwks", InsecureHTTP: true}, false},
		{"no jwks_uri and no discovery", IssuerConfig{Issuer: "https://idp.test/"}, false},
		{"discovery over http to another host", IssuerConfig{Issuer: "http://idp.test/", Discovery: true}, false},
		{"discovery over http with insecure_http", IssuerConfig{Issuer: "http://idp.test/", Discovery: true, InsecureHTTP: true}, true},
		{"discovery of an issuer that is no URL", IssuerConfig{Issuer: "idp", Discovery: true}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New([]IssuerConfig{tt.cfg}, Options{Registerer: prometheus.NewRegistry()})
			if (err == nil) != tt.ok {
				t.Errorf("New = %v, want ok %v", err, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), tt.cfg.Issuer) {
				t.Errorf("error %q does not name the issuer", err)
			}
		})
	}
}

// A discovery document fetched over https may not move the keys to http.
func TestDiscoveryRefusesDowngrade(t *testing.T) {
	k := jwkstest.NewKey(t, "ES256", "k")
	plain := jwkstest.NewServer(t, k)
	var o *httptest.Server
	o = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": o.URL, "jwks_uri": plain.JWKSURI()})
	}))
	t.Cleanup(o.Close)
	c, _, _ := testClockCache(t, []IssuerConfig{{Issuer: o.URL, Discovery: true}}, Options{CAFile: testCAFile(t, o.Certificate())})
	if err := testRefreshFails(t, c, o.URL); !strings.Contains(err.Error(), "downgrade") {
		t.Errorf("Refresh = %v, want a refused downgrade", err)
	}
	if n := plain.Fetches(); n != 0 {
		t.Errorf("the plain-http jwks_uri was fetched %d times", n)
	}
}

func TestMaxKeys(t *testing.T) {
	var keys []*jwkstest.Key
	for i := range 4 {
		keys = append(keys, jwkstest.NewKey(t, "ES256", fmt.Sprint("k", i)))
	}
	s := jwkstest.NewServer(t, keys[:3]...)
	iss := s.Issuer()
	c, reg, _ := testClockCache(t, []IssuerConfig{testDirect(s)}, Options{MaxKeys: 3})
	testRefresh(t, c, iss)
	for _, k := range keys[:3] {
		testLookupVerifies(t, c, iss, k)
	}

	s.SetKeys(keys...)
	if err := testRefreshFails(t, c, iss); !strings.Contains(err.Error(), "more than the 3 allowed") {
		t.Errorf("Refresh = %v, want the key count refused", err)
	}
	for _, k := range keys[:3] {
		testLookupVerifies(t, c, iss, k)
	}
	if testHasKid(c, iss, keys[3].Kid) {
		t.Error("a key from the refused document is held")
	}
	testMetric(t, reg, "sidegate_jwks_keys", map[string]string{"issuer": iss}, 3)
	testRefreshMetric(t, reg, iss, "error", 1)
}

func TestConnectTimeout(t *testing.T) {
	t.Run("TLS handshake that never completes", func(t *testing.T) {
		// Accepts connections and never says a word: the handshake is
		// bounded by ConnectTimeout, not the overall Timeout.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var conns []net.Conn
		var mu sync.Mutex
		go func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns = append(conns, conn)
				mu.Unlock()
			}
		}()
		t.Cleanup(func() {
			l.Close()
			mu.Lock()
			defer mu.Unlock()
			for _, c := range conns {
				c.Close()
			}
		})
		iss := "https://silent.test/"
		c, _, _ := testClockCache(t, []IssuerConfig{{Issuer: iss, JWKSURI: "https://" + l.Addr().String() + "/jwks"}},
			Options{ConnectTimeout: 200 * time.Millisecond, Timeout: time.Minute})
		err = testRefreshFails(t, c, iss)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || !strings.Contains(err.Error(), "TLS handshake timeout") {
			t.Errorf("Refresh = %v, want a TLS handshake timeout", err)
		}
	})
	t.Run("TCP connect to a black hole", func(t *testing.T) {
		// 10.255.255.1 usually drops SYNs. Where the sandbox has no route
		// at all, the dial fails at once and there is nothing to time.
		iss := "https://blackhole.test/"
		c, _, _ := testClockCache(t, []IssuerConfig{{Issuer: iss, JWKSURI: "https://10.255.255.1/jwks"}},
			Options{ConnectTimeout: 200 * time.Millisecond, Timeout: time.Minute})
		err := testRefreshFails(t, c, iss)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Skipf("dialling 10.255.255.1 did not time out here (%v); cannot test ConnectTimeout with it", err)
		}
		var oe *net.OpError
		if !errors.As(err, &oe) || oe.Op != "dial" {
			t.Errorf("Refresh = %v, want the dial to time out (ConnectTimeout), not the request", err)
		}
	})
}

// ---------------------------------------------------------------------
// 10. Metrics.

func TestUnknownKidMetrics(t *testing.T) {
	a := jwkstest.NewKey(t, "ES256", "a")
	b := jwkstest.NewKey(t, "ES256", "b")
	s := jwkstest.NewServer(t, a)
	other := jwkstest.NewServer(t, a)
	iss, iss2 := s.Issuer(), "https://two.test/"
	c, reg, clock := testClockCache(t, []IssuerConfig{testDirect(s), {Issuer: iss2, JWKSURI: other.JWKSURI()}},
		Options{MinRefreshInterval: time.Minute, KidWait: time.Second})
	const help = `
# HELP sidegate_jwks_unknown_kid_total Lookups of a kid missing from the issuer's key set, by outcome: found (after a refetch), not_found (after a refetch), timeout (the refetch outlasted kid_wait), rate_limited, remembered (recently not found).
# TYPE sidegate_jwks_unknown_kid_total counter
`
	compare := func(counts map[string]int) {
		t.Helper()
		var want strings.Builder
		want.WriteString(help)
		for _, name := range []string{iss, iss2} {
			for _, o := range []string{"found", "not_found", "rate_limited", "remembered", "timeout"} {
				n := 0
				if name == iss {
					n = counts[o]
				}
				fmt.Fprintf(&want, "sidegate_jwks_unknown_kid_total{issuer=%q,outcome=%q} %d\n", name, o, n)
			}
		}
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want.String()), "sidegate_jwks_unknown_kid_total"); err != nil {
			t.Error(err)
		}
	}
	// Every issuer and outcome is there at zero from the start.
	compare(nil)

	testRefresh(t, c, iss)
	testRefresh(t, c, iss2)
	s.SetKeys(a, b)
	testLookupVerifies(t, c, iss, b) // found
	compare(map[string]int{"found": 1})
	testWantErr(t, c, iss, "x", ErrUnknownKey) // rate_limited
	compare(map[string]int{"found": 1, "rate_limited": 1})
	clock.Advance(time.Minute)
	testWantErr(t, c, iss, "x", ErrUnknownKey) // not_found
	testWantErr(t, c, iss, "x", ErrUnknownKey) // remembered
	compare(map[string]int{"found": 1, "rate_limited": 1, "not_found": 1, "remembered": 1})
	clock.Advance(time.Minute)
	s.Hold()
	testWantErr(t, c, iss, "y", ErrUnknownKey) // timeout
	compare(map[string]int{"found": 1, "rate_limited": 1, "not_found": 1, "remembered": 1, "timeout": 1})
	s.Release()

	testEventually(t, "the held refetch to be counted", func() bool {
		return testMetricValue(t, reg, "sidegate_jwks_refresh_total", map[string]string{"issuer": iss, "outcome": "success"}) == 4
	})
	testRefreshMetric(t, reg, iss, "error", 0)
	testRefreshMetric(t, reg, iss2, "success", 1)
	if n := s.Fetches(); n != 4 {
		t.Errorf("fetches = %d, want 4 (one per success)", n)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// TestNewKidJoinsStaleFetch: the identity provider adds a key and signs
// with it while a scheduled refresh is in flight, one that asked for the
// JWKS before the key was there. A token with the new kid joins that
// fetch; when it ends without the kid, the lookup fetches once more
// instead of remembering the kid as unknown (which denied every token of
// the new key for min_refresh_interval).
func TestNewKidJoinsStaleFetch(t *testing.T) {
	a := jwkstest.NewKey(t, "ES256", "2025-a")
	b := jwkstest.NewKey(t, "EdDSA", "2025-b")
	s := jwkstest.NewServer(t, a)
	iss := s.Issuer()
	c, reg, _ := testClockCache(t, []IssuerConfig{testDirect(s)}, Options{KidWait: 20 * time.Second})
	testRefresh(t, c, iss)

	s.Hold()
	refreshed := make(chan error, 1)
	go func() { refreshed <- c.Refresh(context.Background(), iss) }()
	testEventually(t, "the scheduled refresh to reach the server", func() bool { return s.Fetches() == 2 })
	s.SetKeys(a, b) // after that fetch read the key set

	found := make(chan error, 1)
	go func() {
		_, err := c.Lookup(context.Background(), iss, b.Kid)
		found <- err
	}()
	// Let the lookup join the held fetch. Without the join the lookup
	// fetches by itself and finds the key anyway: the test then proves
	// nothing, but cannot fail.
	time.Sleep(100 * time.Millisecond)
	s.Release()
	if err := <-refreshed; err != nil {
		t.Fatalf("the scheduled refresh: %v", err)
	}
	if err := <-found; err != nil {
		t.Fatalf("Lookup of the new kid after a stale fetch: %v", err)
	}
	testKidMetric(t, reg, iss, "found", 1)
	testKidMetric(t, reg, iss, "not_found", 0)
	if n := s.Fetches(); n != 3 {
		t.Errorf("fetches = %d: the first, the scheduled one joined, and the lookup's own", n)
	}
}
