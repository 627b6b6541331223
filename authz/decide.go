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
	// Policy is the compiled routes (CompilePolicy); nil is one default
	// route needing a good token.
	Policy *Policy
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
	// policy is cfg.Policy, or defaultPolicy.
	policy *Policy
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
	if e.policy = cfg.Policy; e.policy == nil {
		e.policy = defaultPolicy
	}
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
	// Method, Host and Path are the client's request line as the upstream
	// will see it: Path as sent, query and all.
	Method, Host, Path string
	// Route is the route the proxy chose (Envoy's
	// context_extensions["sidegate.route"]); "" to match by path.
	Route string
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
	// Route is the name of the route that decided.
	Route string
	// Shadow is set on a denial that was not enforced (a shadow route,
	// or a CSRF failure in report mode): Allowed is true, Reason and Err
	// say what would have happened.
	Shadow bool
	// cached is the verified-token cache entry of the deciding token, when
	// the cache is on: the gRPC adapter keeps its response there.
	cached *verified
}

// Decide answers whether the request may pass. It never fails: every
// problem is a denial with a reason.
//
// The route comes first: it says whether a token is looked at at all. Then
// the tokens are verified and checked against the denylist; then the
// route's rules (issuers, CSRF for cookie tokens, required scopes and
// claims) are applied to the verified claims. A shadow route records the
// outcome and allows.
func (e *Engine) Decide(ctx context.Context, in Input) Decision {
	if err := ctx.Err(); err != nil {
		return deny(err, nil)
	}
	rt, err := e.route(in)
	var d Decision
	switch {
	case err != nil:
		d = deny(err, nil)
	case rt.Auth == AuthNone:
		d = e.anonymous(in)
	default:
		d = e.decideToken(ctx, in, rt)
	}
	d.Route = rt.Name
	if !d.Allowed && rt.Shadow && !errors.Is(d.Err, ErrCanceled) && ctx.Err() == nil {
		return e.shadow(d, in)
	}
	return d
}

// route selects the request's route. Without configured routes every
// request is on the default route, whatever its path: the path is not
// looked at, as before routes existed.
func (e *Engine) route(in Input) (*Route, error) {
	if len(e.policy.routes) == 0 && in.Route == "" {
		return e.policy.def, nil
	}
	return e.policy.Select(RouteRequest{Method: in.Method, Host: in.Host, Path: in.Path, Name: in.Route})
}

// anonymous allows a request without identity: no identity header is set,
// and every one the client sent is removed.
func (e *Engine) anonymous(in Input) Decision {
	d := Decision{Allowed: true, Reason: ReasonOK}
	d.Remove = e.sentIdentity(in, nil)
	return d
}

// shadow turns a denial into an allow that says what would have happened.
// The identity headers are set when the token itself was good (the denial
// was the route's rules); otherwise the request goes on anonymous.
func (e *Engine) shadow(d Decision, in Input) Decision {
	d.Allowed, d.Shadow = true, true
	d.Headers, d.Remove, d.cached = nil, nil, nil
	if d.Claims != nil && isRuleDenial(d.Err) {
		d.Headers = e.identityHeaders(d.Claims)
	}
	d.Remove = e.sentIdentity(in, d.Headers)
	return d
}

// isRuleDenial reports whether err is a route rule failing on a good token.
func isRuleDenial(err error) bool {
	return errors.Is(err, ErrInsufficientScope) || errors.Is(err, ErrClaimMismatch) ||
		errors.Is(err, ErrCSRF) || errors.Is(err, ErrRouteIssuer)
}

// sentIdentity lists the identity headers the client sent that set does
// not replace.
func (e *Engine) sentIdentity(in Input, set []Header) []string {
	var out []string
	for _, name := range e.identity {
		if _, sent := in.Headers[name]; sent && !hasHeader(set, name) {
			out = append(out, name)
		}
	}
	return out
}

// decideToken decides a request on a route that looks at tokens.
func (e *Engine) decideToken(ctx context.Context, in Input, rt *Route) Decision {
	st := e.startStages()
	cands, err := Extract(in.Headers, e.extract)
	st.lap("extract")
	if err != nil {
		if rt.Auth == AuthOptional && errors.Is(err, ErrNoToken) {
			return e.anonymous(in)
		}
		return deny(err, nil)
	}
	// Every token presented must be good: no falling back from a bad one to
	// another. With both a header and a cookie, they must be the same user.
	now := e.now()
	var claims *Claims
	var first string
	var cached *verified
	var csrfReport error
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
		if !rt.AllowsIssuer(c.Issuer) {
			return deny(fmt.Errorf("%s: %w: route %s does not accept %q", cand.Source, ErrRouteIssuer, rt.Name, c.Issuer), c)
		}
		// A browser attaches cookies by itself, whichever site sends the
		// request; it never attaches a bearer header.
		if strings.HasPrefix(cand.Source, "cookie:") && rt.CSRF != CSRFOff {
			if err := e.policy.checkCSRF(in); err != nil {
				err = fmt.Errorf("%s: %w", cand.Source, err)
				if rt.CSRF == CSRFEnforce {
					return deny(err, c)
				}
				csrfReport = err
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
	var values claimValues
	if claims.values != nil {
		values = *claims.values
	}
	if err := rt.check(values); err != nil {
		return deny(err, claims)
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
	d.Remove = e.sentIdentity(in, d.Headers)
	if csrfReport != nil {
		// Report mode: allowed, recorded as the denial it would have been.
		d.Reason, d.Err, d.Shadow, d.cached = ReasonFor(csrfReport), csrfReport, true, nil
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
