// Package authz decides whether a request's JWT is good: it extracts the
// token from a bearer header or cookie, verifies it against its issuer's
// keys, checks its claims and the revocation denylist, and produces the
// identity headers for the upstream. The gRPC (Envoy ext_authz) and HTTP
// adapters translate that one decision into their wire formats.
package authz

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/sidegate/sidegate/jwks"
)

// KeySource returns an issuer's verification key by exact kid.
// *jwks.Cache is the production implementation.
type KeySource interface {
	Lookup(ctx context.Context, issuer, kid string) (*jwks.Key, error)
}

// Denylist checks verified claims against revocations at now, the
// decision's clock reading. It returns nil, or the denial: an error
// wrapping ErrRevoked, or ErrRevocationUnavailable when revocations cannot
// be trusted to be current (fail closed). It is asked on every decision,
// for cached tokens too.
type Denylist interface {
	Check(c *Claims, now time.Time) error
}

// CurrentKeys is what a KeySource can add for the verified-token cache:
// the key an issuer serves now for kid, if any, without fetching and
// without reading the clock (now is given). A cached token is trusted only
// while its issuer still serves the very key that verified it.
// *jwks.Cache implements it; without it, Lookup is asked instead.
type CurrentKeys interface {
	Current(issuer, kid string, now time.Time) (*jwks.Key, bool)
}

// Issuer is the verification policy of one trusted issuer.
type Issuer struct {
	Issuer     string   // exact iss
	Audiences  []string // aud must contain one of these
	Algorithms []string // allowed JWS algorithms
	// TokenTypes, when set, is the allowlist for the header's typ
	// (e.g. "at+jwt"); empty means typ is not checked.
	TokenTypes []string
}

// ForwardClaim sets upstream header Header from claim Claim.
type ForwardClaim struct {
	Header string // lower-case
	Claim  string
}

// Config is everything the engine decides with.
type Config struct {
	Issuers     []Issuer
	Bearer      bool
	Cookies     []string
	Leeway      time.Duration
	MaxSize     int
	MaxLifetime time.Duration
	// RequireIssuedAt refuses tokens without iat: without it neither the
	// lifetime limit nor a subject revocation can be held to account.
	RequireIssuedAt bool
	ForwardClaims   []ForwardClaim
	PayloadHeader   string // lower-case; "" for none
	// Cache bounds the verified-token and negative caches; the zero value
	// caches nothing.
	Cache CacheConfig
}

// Engine makes decisions. It is safe for concurrent use.
type Engine struct {
	cfg      Config
	issuers  map[string]Issuer
	keys     KeySource
	current  CurrentKeys // keys, when it can answer without fetching
	deny     Denylist
	now      func() time.Time
	extract  ExtractOptions
	identity []string // every identity header name, for stripping
	// stage, when set (SetStageObserver), times extract, verify and
	// denylist on every decision. Off by default: each lap reads the clock.
	stage func(stage string, d time.Duration)
	// cache holds verified tokens; neg, failures of repeated bad ones. nil
	// when off.
	cache *clockCache[*verified]
	neg   *clockCache[*failure]
}

// SetStageObserver makes the engine report how long each stage of every
// decision took. Call it before the engine is used.
func (e *Engine) SetStageObserver(f func(stage string, d time.Duration)) { e.stage = f }

// stages times consecutive stages of one decision; the zero value (stage
// timing off) does nothing and reads no clock.
type stages struct {
	f    func(string, time.Duration)
	last time.Time
}

func (e *Engine) startStages() stages {
	if e.stage == nil {
		return stages{}
	}
	return stages{f: e.stage, last: time.Now()}
}

func (s *stages) lap(name string) {
	if s.f == nil {
		return
	}
	now := time.Now()
	s.f(name, now.Sub(s.last))
	s.last = now
}

// NewEngine builds an engine. deny may be nil (no revocation); now may be
// nil (time.Now).
func NewEngine(cfg Config, keys KeySource, deny Denylist, now func() time.Time) (*Engine, error) {
	if keys == nil {
		return nil, errors.New("authz: no key source")
	}
	if cfg.MaxSize <= 0 {
		return nil, errors.New("authz: MaxSize must be positive")
	}
	if now == nil {
		now = time.Now
	}
	e := &Engine{
		cfg:     cfg,
		issuers: make(map[string]Issuer, len(cfg.Issuers)),
		keys:    keys,
		deny:    deny,
		now:     now,
		extract: ExtractOptions{Bearer: cfg.Bearer, Cookies: cfg.Cookies},
		cache:   newClockCache[*verified](cfg.Cache.MaxEntries),
		neg:     newClockCache[*failure](cfg.Cache.NegativeEntries),
	}
	e.current, _ = keys.(CurrentKeys)
	if cfg.Cache.MaxEntries > 0 && cfg.Cache.MaxTTL <= 0 {
		return nil, errors.New("authz: Cache.MaxTTL must be positive when the cache is on")
	}
	if cfg.Cache.NegativeEntries > 0 && cfg.Cache.NegativeTTL <= 0 {
		return nil, errors.New("authz: Cache.NegativeTTL must be positive when the negative cache is on")
	}
	for _, is := range cfg.Issuers {
		e.issuers[is.Issuer] = is
	}
	for _, f := range cfg.ForwardClaims {
		e.identity = append(e.identity, f.Header)
	}
	if cfg.PayloadHeader != "" {
		e.identity = append(e.identity, cfg.PayloadHeader)
	}
	return e, nil
}

// Input is what a request brings to a decision.
type Input struct {
	// Headers maps lower-case header names to values; repeated headers are
	// joined with "," (Cookie with "; "), as Envoy sends them.
	Headers map[string]string
}

// Header is one header to set on the upstream request.
type Header struct {
	Name, Value string
}

// Decision is the answer for one request.
type Decision struct {
	Allowed bool
	Reason  Reason
	// Err is the denial with its detail, for the log; nil when allowed.
	Err error
	// Claims of the token that decided, when one verified.
	Claims *Claims
	// Headers to set on the upstream request (overwriting), and identity
	// headers the client sent that no verified value replaces. Claims and
	// Headers may be shared with other decisions: read them, never change
	// them.
	Headers []Header
	Remove  []string
	// cached is the verified-token cache entry of the deciding token, when
	// the cache is on: the gRPC adapter keeps its response there.
	cached *verified
}

// Decide answers whether the request may pass. It never fails: every
// problem is a denial with a reason.
func (e *Engine) Decide(ctx context.Context, in Input) Decision {
	if err := ctx.Err(); err != nil {
		return deny(err, nil)
	}
	st := e.startStages()
	cands, err := Extract(in.Headers, e.extract)
	st.lap("extract")
	if err != nil {
		return deny(err, nil)
	}
	// Every token presented must be good: no falling back from a bad one to
	// another. With both a header and a cookie, they must be the same user.
	now := e.now()
	var claims *Claims
	var first string
	var cached *verified
	for _, cand := range cands {
		c, v, err := e.check(ctx, cand.Token, now)
		st.lap("verify")
		if err != nil {
			return deny(fmt.Errorf("%s: %w", cand.Source, err), c)
		}
		if e.deny != nil {
			err := e.deny.Check(c, now)
			st.lap("denylist")
			if err != nil {
				return deny(fmt.Errorf("%s: %w", cand.Source, err), c)
			}
		}
		switch {
		case claims == nil:
			claims, first, cached = c, cand.Token, v
		case c.Issuer != claims.Issuer || c.Subject != claims.Subject:
			return deny(ErrTokenMismatch, claims)
		case c.Subject == "" && cand.Token != first:
			// Without a subject nothing shows the two name the same user.
			return deny(fmt.Errorf("%w: different tokens without sub", ErrTokenMismatch), claims)
		}
	}
	if err := ctx.Err(); err != nil {
		return deny(err, claims)
	}
	d := Decision{Allowed: true, Reason: ReasonOK, Claims: claims, cached: cached}
	if cached != nil {
		d.Headers = cached.headers
	} else {
		d.Headers = e.identityHeaders(claims)
	}
	for _, name := range e.identity {
		if _, sent := in.Headers[name]; sent && !hasHeader(d.Headers, name) {
			d.Remove = append(d.Remove, name)
		}
	}
	return d
}

func deny(err error, c *Claims) Decision {
	return Decision{Reason: ReasonFor(err), Err: err, Claims: c}
}

func hasHeader(hs []Header, name string) bool {
	for _, h := range hs {
		if h.Name == name {
			return true
		}
	}
	return false
}

// Challenge is the WWW-Authenticate value for a denial (RFC 6750 §3).
func (r Reason) Challenge() string {
	if r.Error == "" {
		return `Bearer realm="sidegate"`
	}
	return fmt.Sprintf(`Bearer realm="sidegate", error=%q, error_description=%q`, r.Error, r.Description)
}

// Body is the small JSON body of a denial:
// {"error":"invalid_token","reason":"expired","description":"…"}.
func (r Reason) Body() string {
	code := r.Error
	if code == "" {
		code = strings.ReplaceAll(strings.ToLower(http.StatusText(r.Status)), " ", "_")
	}
	desc := r.Description
	if desc == "" {
		desc = http.StatusText(r.Status)
	}
	return fmt.Sprintf(`{"error":%q,"reason":%q,"description":%q}`, code, r.Code, desc)
}
