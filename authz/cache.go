package authz

import (
	"context"
	"crypto/sha256"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sidegate/sidegate/jwks"
)

// CacheConfig bounds the verified-token cache and the negative cache.
type CacheConfig struct {
	// MaxEntries bounds the verified tokens held; 0 turns the cache off.
	MaxEntries int
	// MaxTTL is the longest a verified token is trusted without verifying
	// it again; its exp (plus leeway) ends it sooner.
	MaxTTL time.Duration
	// NegativeEntries bounds the failures remembered for repeated identical
	// bad tokens; 0 turns the negative cache off.
	NegativeEntries int
	// NegativeTTL is how long such a failure is remembered.
	NegativeTTL time.Duration
}

// A token's cache key is the SHA-256 of its exact bytes. A cheaper hash
// would need the token itself stored beside it (about 700 bytes an entry)
// to rule out collisions, which a keyed but non-cryptographic hash cannot
// promise against someone crafting tokens: a collision with a cached token
// would be that token's identity for free. SHA-256 costs 0.5 µs for a
// 700-byte token here (with SHA-NI), against 36 µs for one RS256
// verification, and 32 bytes an entry.
type tokenKey [sha256.Size]byte

// cacheShards spreads the lock: a request takes one shard's mutex for a map
// lookup, so with this many shards two cores almost never meet on one.
const cacheShards = 64

// entry is what the two caches' entries share: their key, when they stop
// counting, and the CLOCK state.
type entry struct {
	key tokenKey
	// until is when the entry stops counting (unix ns).
	until int64
	// ref is the CLOCK bit: set on every hit, cleared as the hand passes.
	ref atomic.Bool
	// gone is set (under the shard's lock) when the entry is removed, so
	// the hand reuses its slot.
	gone bool
}

func (e *entry) base() *entry { return e }

// verified is a cache entry: everything a decision needs about a token that
// verified, so that a later request with the same bytes skips parsing and
// the signature. It is immutable once published, but for its reference
// bit and the response built for it on first use. Its until is the
// token's exp plus leeway, or MaxTTL after it verified, whichever is
// sooner.
type verified struct {
	entry
	claims *Claims
	// jwk is the key that verified it: if the issuer's JWKS no longer
	// serves this exact key for the kid, the entry is dropped.
	jwk *jwks.Key
	// headers are the identity headers the allowed response sets.
	headers []Header
	// grpcOK is the allowed gRPC response, built on first use and shared
	// (proto messages may be marshaled concurrently).
	grpcOK atomic.Pointer[authv3.CheckResponse]
}

// failure is a negative-cache entry: a token that failed for a reason that
// lies in its bytes alone, so that the same bytes sent again fail the same
// way without parsing them again.
type failure struct {
	entry
	err error
}

type cacheEntry interface {
	*verified | *failure
	base() *entry
}

// clockCache is a sharded map from token keys to entries, bounded per
// shard and evicting by CLOCK (second chance): the hand passes over entries
// used since it last came by, so tokens in use stay while one-off ones go.
// A lookup is a mutex and a map read; an insert into a full shard moves the
// hand until it finds an entry not used since its last pass.
type clockCache[E cacheEntry] struct {
	shards [cacheShards]clockShard[E]
	// base is what the caches this one replaced counted (a reload), so
	// that the exported counters never go backwards. Set before use.
	base cacheStats
}

type clockShard[E cacheEntry] struct {
	mu   sync.Mutex
	m    map[tokenKey]E
	ring []E // insertion slots, swept by hand
	hand int
	max  int
	// counted under mu, for the metrics
	hits, misses, evictions uint64
	// pad keeps two shards' mutexes off one cache line.
	_ [40]byte
}

func newClockCache[E cacheEntry](maxEntries int) *clockCache[E] {
	if maxEntries <= 0 {
		return nil
	}
	c := &clockCache[E]{}
	per := max((maxEntries+cacheShards-1)/cacheShards, 1)
	for i := range c.shards {
		c.shards[i].m = make(map[tokenKey]E)
		c.shards[i].max = per
	}
	return c
}

func (c *clockCache[E]) shard(k tokenKey) *clockShard[E] {
	return &c.shards[k[0]%cacheShards]
}

// get returns the live entry for k, marking it used; an expired one is
// removed and not returned.
func (c *clockCache[E]) get(k tokenKey, now int64) (E, bool) {
	var zero E
	if c == nil {
		return zero, false
	}
	s := c.shard(k)
	s.mu.Lock()
	e, ok := s.m[k]
	if ok && now >= e.base().until {
		delete(s.m, k)
		e.base().gone = true
		ok = false
	}
	if ok {
		s.hits++
	} else {
		s.misses++
	}
	s.mu.Unlock()
	if !ok {
		return zero, false
	}
	e.base().ref.Store(true)
	return e, true
}

// put adds e, replacing any entry with its key.
func (c *clockCache[E]) put(e E) {
	if c == nil {
		return
	}
	k := e.base().key
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.m[k]; ok {
		old.base().gone = true
	}
	s.m[k] = e
	if len(s.ring) < s.max {
		s.ring = append(s.ring, e)
		return
	}
	// Find a slot: a removed entry's, or one not used since the hand last
	// passed. Every pass clears the bits it passes, so this ends within
	// two turns.
	for {
		victim := s.ring[s.hand].base()
		if victim.gone || !victim.ref.Swap(false) {
			if !victim.gone {
				delete(s.m, victim.key)
				victim.gone = true
				s.evictions++
			}
			s.ring[s.hand] = e
			s.hand = (s.hand + 1) % len(s.ring)
			return
		}
		s.hand = (s.hand + 1) % len(s.ring)
	}
}

// remove drops k's entry if it is e.
func (c *clockCache[E]) remove(e E) {
	if c == nil {
		return
	}
	k := e.base().key
	s := c.shard(k)
	s.mu.Lock()
	if cur, ok := s.m[k]; ok && cur == e {
		delete(s.m, k)
		e.base().gone = true
	}
	s.mu.Unlock()
}

// cacheStats are a clockCache's counts.
type cacheStats struct {
	entries, hits, misses, evictions uint64
}

// inherit starts c's counters where old's are now. Call it before c is
// in use.
func (c *clockCache[E]) inherit(old *clockCache[E]) {
	if c == nil || old == nil {
		return
	}
	c.base = old.stats()
	c.base.entries = 0
}

// stats sums the shards' counts.
func (c *clockCache[E]) stats() cacheStats {
	if c == nil {
		return cacheStats{}
	}
	st := c.base
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		st.entries += uint64(len(s.m))
		st.hits += s.hits
		st.misses += s.misses
		st.evictions += s.evictions
		s.mu.Unlock()
	}
	return st
}

// len is the number of entries held.
func (c *clockCache[E]) len() int { return int(c.stats().entries) }

// CacheCollector exports the caches' state, read at scrape time:
// sidegate_token_cache_entries, sidegate_token_cache_lookups_total{result}
// and sidegate_token_cache_evictions_total, each with cache="verified" or
// "negative". Nothing is counted on the request path beyond what the
// shard's lock already covers.
func (e *Engine) CacheCollector() prometheus.Collector {
	return cacheCollector{func() *Engine { return e }}
}

type cacheCollector struct{ engine func() *Engine }

var (
	cacheEntriesDesc = prometheus.NewDesc("sidegate_token_cache_entries",
		"Tokens held by the verified-token cache (cache=verified) and failures held by the negative cache (cache=negative).", []string{"cache"}, nil)
	cacheLookupsDesc = prometheus.NewDesc("sidegate_token_cache_lookups_total",
		"Cache lookups by result: hit, or miss (absent or expired).", []string{"cache", "result"}, nil)
	cacheEvictionsDesc = prometheus.NewDesc("sidegate_token_cache_evictions_total",
		"Live entries evicted to make room (a bound too small for the traffic shows here).", []string{"cache"}, nil)
)

func (c cacheCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- cacheEntriesDesc
	ch <- cacheLookupsDesc
	ch <- cacheEvictionsDesc
}

func (c cacheCollector) Collect(ch chan<- prometheus.Metric) {
	e := c.engine()
	for _, x := range []struct {
		name string
		st   cacheStats
	}{{"verified", e.cache.stats()}, {"negative", e.neg.stats()}} {
		ch <- prometheus.MustNewConstMetric(cacheEntriesDesc, prometheus.GaugeValue, float64(x.st.entries), x.name)
		ch <- prometheus.MustNewConstMetric(cacheLookupsDesc, prometheus.CounterValue, float64(x.st.hits), x.name, "hit")
		ch <- prometheus.MustNewConstMetric(cacheLookupsDesc, prometheus.CounterValue, float64(x.st.misses), x.name, "miss")
		ch <- prometheus.MustNewConstMetric(cacheEvictionsDesc, prometheus.CounterValue, float64(x.st.evictions), x.name)
	}
}

// check verifies a token through the caches: a token verified before (the
// same bytes) is answered from the cache while its exp, MaxTTL and the key
// that verified it all hold; a token that failed before for a reason in
// its bytes fails again the same way for NegativeTTL. Anything else is
// verified in full, and remembered. The returned entry is nil when the
// cache is off.
func (e *Engine) check(ctx context.Context, tok string, now time.Time) (*Claims, *verified, error) {
	if (e.cache == nil && e.neg == nil) || len(tok) > e.cfg.MaxSize {
		c, err := e.verify(ctx, tok, now)
		return c, nil, err
	}
	// Sum256 only reads the bytes: no copy of the token.
	k := tokenKey(sha256.Sum256(unsafe.Slice(unsafe.StringData(tok), len(tok))))
	ns := now.UnixNano()
	if v, ok := e.cache.get(k, ns); ok {
		if e.keyCurrent(ctx, v.claims, now) {
			return v.claims, v, nil
		}
		// The issuer no longer serves that key (rotated out, replaced,
		// or its keys went stale): verify again, which says why.
		e.cache.remove(v)
	}
	if f, ok := e.neg.get(k, ns); ok {
		return nil, nil, f.err
	}
	c, err := e.verify(ctx, tok, now)
	if err != nil {
		if e.neg != nil && negativeCacheable(err) {
			e.neg.put(&failure{entry: entry{key: k, until: ns + int64(e.cfg.Cache.NegativeTTL)}, err: err})
		}
		return nil, nil, err
	}
	if e.cache == nil {
		return c, nil, nil
	}
	kept, headers := e.compact(c)
	v := &verified{entry: entry{key: k, until: e.cacheUntil(c, ns)}, claims: kept, jwk: c.jwk, headers: headers}
	e.cache.put(v)
	return c, v, nil
}

// compact is what a cache entry keeps of verified claims, and their
// identity headers. Verification leaves claims that are substrings of the
// decoded header and payload, which hold the whole token, and a payload
// segment that is a substring of the request's header, which holds the
// request: kept as they are, an entry would hold all that. So the entry
// gets its own copy of the payload segment (payload_header forwards it),
// strings it can share with the configuration (issuer, kid, algorithm),
// small copies of the rest, and no claim members: the identity headers,
// their one use on a hit, are built here.
func (e *Engine) compact(c *Claims) (*Claims, []Header) {
	kept := *c
	kept.claims = nil
	kept.payload = strings.Clone(c.payload)
	if is, ok := e.issuers[c.Issuer]; ok {
		kept.Issuer = is.Issuer
	}
	if c.jwk != nil && c.jwk.ID == c.KeyID {
		kept.KeyID = c.jwk.ID
	} else {
		kept.KeyID = strings.Clone(c.KeyID)
	}
	kept.Algorithm = internAlgorithm(c.Algorithm)
	kept.Subject, kept.ID = strings.Clone(c.Subject), strings.Clone(c.ID)
	kept.Audience = make([]string, len(c.Audience))
	for i, a := range c.Audience {
		kept.Audience[i] = strings.Clone(a)
	}
	headers := e.identityHeaders(c)
	for i := range headers {
		if headers[i].Value == c.payload {
			headers[i].Value = kept.payload
		} else {
			headers[i].Value = strings.Clone(headers[i].Value)
		}
	}
	return &kept, headers
}

// algorithms are the JWS algorithm names, to share.
var algorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

func internAlgorithm(alg string) string {
	for _, a := range algorithms {
		if a == alg {
			return a
		}
	}
	return strings.Clone(alg)
}

// cacheUntil is when a token verified at ns stops being trusted from the
// cache: when checkClaims would call it expired (exp + leeway), or MaxTTL
// from now, whichever comes first.
func (e *Engine) cacheUntil(c *Claims, ns int64) int64 {
	limit := ns + int64(e.cfg.Cache.MaxTTL)
	// In float seconds first: exp can be any positive finite number.
	if exp := c.Expiry + e.cfg.Leeway.Seconds(); exp < float64(limit)/1e9 {
		return int64(exp * 1e9)
	}
	return limit
}

// keyCurrent reports whether the issuer still serves the key that verified
// c, unchanged.
func (e *Engine) keyCurrent(ctx context.Context, c *Claims, now time.Time) bool {
	if e.current != nil {
		k, ok := e.current.Current(c.Issuer, c.KeyID, now)
		return ok && k == c.jwk
	}
	k, err := e.keys.Lookup(ctx, c.Issuer, c.KeyID)
	return err == nil && k == c.jwk
}

// negativeCacheable reports whether a verification failure lies in the
// token's bytes alone, against this engine's configuration, so that the
// same bytes would fail the same way on the next try. Failures that depend
// on the time (not yet valid, a lifetime judged from now), on the key set
// (an unknown kid may be published any moment) or on the request (its
// context) are not remembered. Expired is: it never heals.
func negativeCacheable(err error) bool {
	for _, target := range []error{
		ErrMalformed, ErrForbiddenHeader, ErrAlgorithm, ErrMissingKeyID, ErrUnknownIssuer,
		ErrTokenType, ErrBadSignature, ErrInvalidClaims, ErrAudience, ErrExpired,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}
