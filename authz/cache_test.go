package authz

import (
	"context"
	"fmt"
	"google.golang.org/protobuf/proto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidegate/sidegate/jwks"
	"github.com/sidegate/sidegate/jwks/jwkstest"
)

// cacheKeys is a key source whose keys can change under the engine, and
// which counts the lookups that reach it: a verification does one, a
// cache hit none (it asks Current).
type cacheKeys struct {
	mu      sync.Mutex
	set     *jwks.Set
	stale   bool // Current answers nothing, as for keys past max_stale
	lookups atomic.Int64
}

func (k *cacheKeys) Lookup(_ context.Context, iss, kid string) (*jwks.Key, error) {
	k.lookups.Add(1)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stale {
		return nil, jwks.ErrKeysUnavailable
	}
	key, ok := k.set.Keys[kid]
	if iss != testIss || !ok {
		return nil, jwks.ErrUnknownKey
	}
	return key, nil
}

func (k *cacheKeys) Current(iss, kid string, _ time.Time) (*jwks.Key, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stale || iss != testIss {
		return nil, false
	}
	key, ok := k.set.Keys[kid]
	return key, ok
}

func (k *cacheKeys) setKeys(s *jwks.Set) {
	k.mu.Lock()
	k.set = s
	k.mu.Unlock()
}

// cacheClock is an engine clock tests move.
type cacheClock struct{ ns atomic.Int64 }

func (c *cacheClock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *cacheClock) add(d time.Duration) { c.ns.Add(int64(d)) }

// cacheMutableDeny revokes the jtis put into it, at any time.
type cacheMutableDeny struct{ jti sync.Map }

func (d *cacheMutableDeny) Check(c *Claims, _ time.Time) error {
	if _, ok := d.jti.Load(c.ID); ok {
		return ErrRevoked
	}
	return nil
}

type cacheFixture struct {
	*fixture
	keys  *cacheKeys
	clock *cacheClock
	deny  *cacheMutableDeny
}

// newCacheFixture is the fixture with the cache on (1000 entries, 5m; 100
// failures, 10s), over cacheKeys, a movable clock and a mutable denylist.
func newCacheFixture(t *testing.T, mutate func(*Config)) *cacheFixture {
	t.Helper()
	f := newFixture(t, func(c *Config) {
		c.Cache = CacheConfig{MaxEntries: 1000, MaxTTL: 5 * time.Minute, NegativeEntries: 100, NegativeTTL: 10 * time.Second}
		if mutate != nil {
			mutate(c)
		}
	})
	cf := &cacheFixture{fixture: f, keys: &cacheKeys{set: f.set}, clock: &cacheClock{}, deny: &cacheMutableDeny{}}
	cf.clock.ns.Store(testNow.UnixNano())
	e, err := NewEngine(f.cfg, cf.keys, cf.deny, cf.clock.now)
	if err != nil {
		t.Fatal(err)
	}
	f.engine = e
	return cf
}

// expect decides headers and checks the reason and how many key lookups
// (full verifications) it took.
func (cf *cacheFixture) expect(t *testing.T, headers map[string]string, reason string, lookups int64) Decision {
	t.Helper()
	before := cf.keys.lookups.Load()
	d := cf.decide(headers)
	if d.Reason.Code != reason {
		t.Fatalf("reason %q (%v), want %q", d.Reason.Code, d.Err, reason)
	}
	if d.Allowed != (reason == "ok") {
		t.Fatalf("allowed = %v for reason %q", d.Allowed, reason)
	}
	if got := cf.keys.lookups.Load() - before; got != lookups {
		t.Fatalf("%d key lookups, want %d (1 = verified in full, 0 = from a cache)", got, lookups)
	}
	return d
}

func TestCacheHitSkipsVerification(t *testing.T) {
	cf := newCacheFixture(t, nil)
	tok := cf.token(t, "RS256", cf.claims(), nil)
	first := cf.expect(t, bearer(tok), "ok", 1)
	for range 3 {
		d := cf.expect(t, bearer(tok), "ok", 0)
		if d.Claims.Subject != "user-1" || d.Claims.Issuer != testIss || d.Claims.claims != nil ||
			fmt.Sprint(d.Headers) != fmt.Sprint(first.Headers) {
			t.Fatalf("hit: claims %+v, headers %v (first %v)", d.Claims, d.Headers, first.Headers)
		}
	}
	// The same token as the cookie is the same bytes: a hit too.
	cf.expect(t, map[string]string{"cookie": "session=" + tok}, "ok", 0)
	if st := cf.engine.cache.stats(); st.hits != 4 || st.misses != 1 || st.entries != 1 {
		t.Fatalf("stats %+v, want 4 hits, 1 miss, 1 entry", st)
	}
	// Client-sent identity headers are still stripped on a hit.
	h := bearer(tok)
	h["x-user-id"] = "admin"
	if d := cf.expect(t, h, "ok", 0); decideHeaderMap(d.Headers)["x-user-id"] != "user-1" {
		t.Fatalf("headers %v", d.Headers)
	}
}

// TestCacheRevocationCheckedOnEveryHit: a cached token revoked after it was
// cached is denied on the next request, without being verified again.
func TestCacheRevocationCheckedOnEveryHit(t *testing.T) {
	cf := newCacheFixture(t, nil)
	c := cf.claims()
	c["jti"] = "jti-1"
	tok := cf.token(t, "ES256", c, nil)
	cf.expect(t, bearer(tok), "ok", 1)
	cf.expect(t, bearer(tok), "ok", 0)
	cf.deny.jti.Store("jti-1", true)
	cf.expect(t, bearer(tok), "revoked", 0)
	cf.expect(t, bearer(tok), "revoked", 0)
}

// TestCacheExpiry: an entry ends at the token's exp plus leeway, with the
// reason a fresh verification gives, and at MaxTTL, after which the token
// is verified again.
func TestCacheExpiry(t *testing.T) {
	cf := newCacheFixture(t, nil)
	c := cf.claims()
	c["exp"] = testNow.Add(2 * time.Minute).Unix()
	short := cf.token(t, "ES256", c, nil)
	long := cf.token(t, "EdDSA", cf.claims(), nil) // exp in an hour
	cf.expect(t, bearer(short), "ok", 1)
	cf.expect(t, bearer(long), "ok", 1)

	cf.clock.add(2*time.Minute + 29*time.Second) // within the 30s leeway
	cf.expect(t, bearer(short), "ok", 0)
	cf.clock.add(time.Second) // exp + leeway: expired, from the verification
	cf.expect(t, bearer(short), "expired", 1)
	// Expired is remembered: the same bytes fail again without verifying.
	cf.expect(t, bearer(short), "expired", 0)

	cf.expect(t, bearer(long), "ok", 0)
	cf.clock.add(5*time.Minute - 2*time.Minute - 30*time.Second) // MaxTTL since it was cached
	cf.expect(t, bearer(long), "ok", 1)
	cf.expect(t, bearer(long), "ok", 0)
}

// TestCacheKeyChange: a cached token is trusted only while its issuer
// serves the very key that verified it.
func TestCacheKeyChange(t *testing.T) {
	cf := newCacheFixture(t, nil)
	rs := cf.token(t, "RS256", cf.claims(), nil)
	es := cf.token(t, "ES256", cf.claims(), nil)
	cf.expect(t, bearer(rs), "ok", 1)
	cf.expect(t, bearer(es), "ok", 1)

	// A refresh that serves the same keys again (new *Key values parsed
	// from the same bytes, as jwks does before Set.keep) costs one
	// verification each, and then hits again.
	cf.keys.setKeys(keySetOf(t, cf.jwkKeys("RS256", "PS256", "ES256", "ES384", "EdDSA")...))
	cf.expect(t, bearer(rs), "ok", 1)
	cf.expect(t, bearer(rs), "ok", 0)

	// The RS256 key rotated out: its cached token is refused at once.
	cf.keys.setKeys(keySetOf(t, cf.jwkKeys("ES256")...))
	cf.expect(t, bearer(rs), "unknown_key", 1)
	cf.expect(t, bearer(es), "ok", 1)

	// Keys past max_stale: no cached token passes.
	cf.keys.mu.Lock()
	cf.keys.stale = true
	cf.keys.mu.Unlock()
	cf.expect(t, bearer(es), "keys_unavailable", 1)
}

// jwkKeys are the fixture's keys for algs.
func (cf *cacheFixture) jwkKeys(algs ...string) []*jwkstest.Key {
	out := make([]*jwkstest.Key, len(algs))
	for i, a := range algs {
		out[i] = cf.fixture.keys[a]
	}
	return out
}

// TestCacheNegative: failures that lie in the token's bytes are remembered
// for NegativeTTL; failures that can heal (an unknown kid, keys
// unavailable, not yet valid) are not.
func TestCacheNegative(t *testing.T) {
	cf := newCacheFixture(t, nil)
	good := cf.token(t, "RS256", cf.claims(), nil)
	badSig := good[:len(good)-4] + "AAAA"
	wrongAud := cf.token(t, "RS256", decideClaims(cf.fixture, "user-1", map[string]any{"aud": "other"}), nil)
	cf.expect(t, bearer(badSig), "bad_signature", 1)
	cf.expect(t, bearer(badSig), "bad_signature", 0)
	cf.expect(t, bearer(wrongAud), "audience_mismatch", 1)
	cf.expect(t, bearer(wrongAud), "audience_mismatch", 0)
	cf.clock.add(10 * time.Second)
	cf.expect(t, bearer(badSig), "bad_signature", 1)

	// Unknown kid: the key may be published any moment.
	unknown := cf.token(t, "RS256", cf.claims(), map[string]any{"kid": "kid-next"})
	cf.expect(t, bearer(unknown), "unknown_key", 1)
	cf.expect(t, bearer(unknown), "unknown_key", 1)

	// Not yet valid: heals with time.
	c := cf.claims()
	c["nbf"] = cf.clock.now().Add(time.Minute).Unix()
	early := cf.token(t, "RS256", c, nil)
	cf.expect(t, bearer(early), "not_yet_valid", 1)
	cf.expect(t, bearer(early), "not_yet_valid", 1)
	cf.clock.add(time.Minute)
	cf.expect(t, bearer(early), "ok", 1)

	// A malformed token is answered before any key lookup anyway; it is
	// remembered all the same.
	cf.expect(t, bearer("not.a.jwt"), "malformed_token", 0)
	cf.expect(t, bearer("not.a.jwt"), "malformed_token", 0)
	if st := cf.engine.neg.stats(); st.hits < 3 {
		t.Fatalf("negative cache stats %+v", st)
	}
}

// TestCacheHostileTraffic: unique garbage and bad-signature tokens never
// enter the verified cache, and cannot push a good token out of it.
func TestCacheHostileTraffic(t *testing.T) {
	cf := newCacheFixture(t, func(c *Config) {
		c.Cache.MaxEntries = 64
		c.Cache.NegativeEntries = 64
	})
	good := cf.token(t, "EdDSA", cf.claims(), nil)
	cf.expect(t, bearer(good), "ok", 1)
	for i := range 2000 {
		garbage := fmt.Sprintf("eyJhbGciOiJSUzI1NiJ9.%s.c2ln", strings.Repeat("A", 10+i%50))
		cf.decide(bearer(garbage))
		forged := good[:len(good)-8] + fmt.Sprintf("%08x", i)
		cf.decide(bearer(forged))
	}
	if n := cf.engine.cache.len(); n != 1 {
		t.Fatalf("verified cache holds %d entries after hostile traffic, want 1", n)
	}
	if n := cf.engine.neg.len(); n > 64+cacheShards {
		t.Fatalf("negative cache holds %d entries, bound 64 (+ rounding per shard)", n)
	}
	cf.expect(t, bearer(good), "ok", 0)
}

// TestCacheBound: valid tokens past MaxEntries evict, by CLOCK: a token
// in use survives a stream of one-off tokens.
func TestCacheBound(t *testing.T) {
	cf := newCacheFixture(t, func(c *Config) { c.Cache.MaxEntries = cacheShards * 2 })
	hot := cf.token(t, "EdDSA", cf.claims(), nil)
	cf.expect(t, bearer(hot), "ok", 1)
	for i := range 1000 {
		c := cf.claims()
		c["jti"] = fmt.Sprintf("one-off-%d", i)
		cf.expect(t, bearer(cf.token(t, "EdDSA", c, nil)), "ok", 1)
		cf.expect(t, bearer(hot), "ok", 0)
	}
	if n := cf.engine.cache.len(); n > cacheShards*2 {
		t.Fatalf("cache holds %d entries, bound %d", n, cacheShards*2)
	}
	if st := cf.engine.cache.stats(); st.evictions == 0 {
		t.Fatalf("no evictions: %+v", st)
	}
}

// TestCacheSameDecisions: with the cache on, every decision of the
// bearer-and-cookie table is what it is with the cache off, on the first
// request and on repeats.
func TestCacheSameDecisions(t *testing.T) {
	cf := newCacheFixture(t, nil)
	off := newFixture(t, nil)
	off.set = cf.set
	off.deny = cf.deny
	off.build(t)
	off.engine.keys = cf.keys
	cf.deny.jti.Store("revoked-jti", true)
	tok := func(alg string, c map[string]any) string { return cf.token(t, alg, c, nil) }
	user1 := tok("ES256", decideClaims(cf.fixture, "user-1", nil))
	user2 := tok("EdDSA", decideClaims(cf.fixture, "user-2", nil))
	revoked := tok("RS256", decideClaims(cf.fixture, "user-1", map[string]any{"jti": "revoked-jti"}))
	expired := tok("PS256", decideClaims(cf.fixture, "user-1", map[string]any{"iat": testNow.Add(-2 * time.Hour).Unix(), "exp": testNow.Add(-time.Hour).Unix()}))
	both := func(b, c string) map[string]string {
		return map[string]string{"authorization": "Bearer " + b, "cookie": "session=" + c}
	}
	for _, h := range []map[string]string{
		bearer(user1), both(user1, user1), both(user1, user2), both(user2, user1), both(user1, revoked),
		both(revoked, user1), bearer(expired), both(user1, expired), bearer(user1[:20]), both(user1, "x"),
		{"cookie": "session=" + user2, "x-user-id": "spoofed"},
	} {
		want := off.decide(h)
		for round := range 3 {
			got := cf.decide(h)
			if got.Allowed != want.Allowed || got.Reason != want.Reason ||
				fmt.Sprint(decideHeaderMap(got.Headers)) != fmt.Sprint(decideHeaderMap(want.Headers)) ||
				fmt.Sprint(got.Remove) != fmt.Sprint(want.Remove) {
				t.Fatalf("round %d: cached %v %s %v remove %v, uncached %v %s %v remove %v", round,
					got.Allowed, got.Reason.Code, got.Headers, got.Remove, want.Allowed, want.Reason.Code, want.Headers, want.Remove)
			}
		}
	}
}

// TestCacheConcurrent: many goroutines deciding the same and different
// tokens while keys change and tokens are revoked (run with -race).
func TestCacheConcurrent(t *testing.T) {
	cf := newCacheFixture(t, func(c *Config) { c.Cache.MaxEntries = 128 })
	var toks []string
	for i := range 32 {
		c := cf.claims()
		c["jti"] = fmt.Sprintf("c-%d", i)
		toks = append(toks, cf.token(t, "EdDSA", c, nil))
	}
	var wg sync.WaitGroup
	var wrong atomic.Int64
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				n := (g*7 + i) % len(toks)
				// Revocations only grow: one made before the decision
				// started must deny it.
				_, revokedBefore := cf.deny.jti.Load(fmt.Sprintf("c-%d", n))
				d := cf.decide(bearer(toks[n]))
				if (revokedBefore && d.Allowed) || (!d.Allowed && d.Reason.Code != "revoked") {
					wrong.Add(1)
				}
			}
		}()
	}
	for i := range 8 {
		cf.deny.jti.Store(fmt.Sprintf("c-%d", i), true)
		cf.keys.setKeys(keySetOf(t, cf.jwkKeys("EdDSA", "ES256")...))
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	if wrong.Load() != 0 {
		t.Fatalf("%d wrong decisions", wrong.Load())
	}
}

// TestCacheGRPCResponseFromFirstHit: the allowed gRPC response of a cached
// token is kept from its first hit on and shared by every later one; the
// check that verified the token keeps none (a token used once never needs
// it), and the responses are equal either way.
func TestCacheGRPCResponseFromFirstHit(t *testing.T) {
	f := newFixture(t, benchCacheConfig)
	tok := f.token(t, "ES256", f.claims(), nil)
	first := f.decide(bearer(tok))
	if first.cached == nil || first.Claims == first.cached.claims {
		t.Fatal("the verifying decision should carry the new entry and its own claims")
	}
	r1 := checkResponse(&first)
	if first.cached.grpcOK.Load() != nil {
		t.Error("the verifying check stored its response in the entry")
	}
	hit := f.decide(bearer(tok))
	r2 := checkResponse(&hit)
	r3 := checkResponse(&hit)
	if hit.cached.grpcOK.Load() != r2 || r2 != r3 {
		t.Error("hits do not share one stored response")
	}
	if !proto.Equal(r1, r2) {
		t.Errorf("responses differ:\n%v\n%v", r1, r2)
	}
}
