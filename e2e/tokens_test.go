package e2e

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sidegate/sidegate/jwks/jwkstest"
)

const (
	audience   = "orders-api"
	cookieName = "ll_session_token"
)

// algs are the algorithms every allow case runs with.
var algs = []string{"RS256", "ES256", "EdDSA"}

// idp is the identity provider of a test: one key per algorithm, published
// by a real HTTP JWKS server in the test process.
type idp struct {
	srv  *jwkstest.Server
	keys map[string]*jwkstest.Key // by alg
}

func newIDP(t *testing.T) *idp {
	t.Helper()
	p := &idp{keys: map[string]*jwkstest.Key{}}
	var keys []*jwkstest.Key
	for _, alg := range algs {
		k := jwkstest.NewKey(t, alg, strings.ToLower(alg)+"-1")
		p.keys[alg] = k
		keys = append(keys, k)
	}
	p.srv = jwkstest.NewServer(t, keys...)
	return p
}

// config is the serve configuration trusting this provider.
func (p *idp) config() serveConfig {
	return serveConfig{Issuer: p.srv.Issuer(), JWKSURI: p.srv.JWKSURI()}
}

// claims are valid claims for sub, good for ten minutes.
func (p *idp) claims(sub string) map[string]any {
	return jwkstest.Claims(p.srv.Issuer(), audience, sub, time.Now(), 10*time.Minute)
}

// token signs claims with the provider's key for alg.
func (p *idp) token(t *testing.T, alg string, claims map[string]any) string {
	t.Helper()
	return p.keys[alg].Sign(t, claims, nil)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// hostile is one class of bad token and the denial it must get.
type hostile struct {
	name   string
	token  func(t *testing.T, p *idp) string
	cookie bool // present it as the cookie instead of a bearer token
	want   denial
}

func invalid(reason string) denial { return denial{status: 401, err: "invalid_token", reason: reason} }

// hostileTokens are the token classes every transport must deny. Each is
// built from scratch with real keys; none is a fixed string.
var hostileTokens = []hostile{
	{name: "expired", want: invalid("expired"), token: func(t *testing.T, p *idp) string {
		c := jwkstest.Claims(p.srv.Issuer(), audience, "alice", time.Now().Add(-2*time.Hour), time.Hour)
		return p.token(t, "ES256", c)
	}},
	{name: "expired cookie", cookie: true, want: invalid("expired"), token: func(t *testing.T, p *idp) string {
		c := jwkstest.Claims(p.srv.Issuer(), audience, "alice", time.Now().Add(-2*time.Hour), time.Hour)
		return p.token(t, "RS256", c)
	}},
	{name: "wrong audience", want: invalid("audience_mismatch"), token: func(t *testing.T, p *idp) string {
		return p.token(t, "EdDSA", jwkstest.Claims(p.srv.Issuer(), "billing-api", "alice", time.Now(), 10*time.Minute))
	}},
	{name: "alg none, no signature", want: invalid("malformed_token"), token: func(t *testing.T, p *idp) string {
		h := mustJSON(t, map[string]any{"alg": "none", "kid": "es256-1", "typ": "JWT"})
		return b64(h) + "." + b64(mustJSON(t, p.claims("alice"))) + "."
	}},
	{name: "alg none with a signature", want: invalid("algorithm_not_allowed"), token: func(t *testing.T, p *idp) string {
		h := mustJSON(t, map[string]any{"alg": "none", "kid": "es256-1", "typ": "JWT"})
		return b64(h) + "." + b64(mustJSON(t, p.claims("alice"))) + "." + b64([]byte("not a signature"))
	}},
	{name: "alg NoNe", want: invalid("algorithm_not_allowed"), token: func(t *testing.T, p *idp) string {
		h := mustJSON(t, map[string]any{"alg": "NoNe", "kid": "es256-1"})
		return b64(h) + "." + b64(mustJSON(t, p.claims("alice"))) + "." + b64([]byte("x"))
	}},
	{name: "bad signature (another key, same kid)", want: invalid("bad_signature"), token: func(t *testing.T, p *idp) string {
		return jwkstest.NewKey(t, "ES256", "es256-1").Sign(t, p.claims("alice"), nil)
	}},
	{name: "bad signature (payload swapped)", want: invalid("bad_signature"), token: func(t *testing.T, p *idp) string {
		good := strings.Split(p.token(t, "RS256", p.claims("alice")), ".")
		good[1] = b64(mustJSON(t, p.claims("admin")))
		return strings.Join(good, ".")
	}},
	{name: "unknown kid", want: invalid("unknown_key"), token: func(t *testing.T, p *idp) string {
		return jwkstest.NewKey(t, "ES256", "not-published").Sign(t, p.claims("alice"), nil)
	}},
	{name: "HS256 keyed with the public key", want: invalid("algorithm_not_allowed"), token: func(t *testing.T, p *idp) string {
		pub, err := x509.MarshalPKIXPublicKey(p.keys["RS256"].Private.Public())
		if err != nil {
			t.Fatal(err)
		}
		h := mustJSON(t, map[string]any{"alg": "HS256", "kid": "rs256-1", "typ": "JWT"})
		return jwkstest.SignHMAC("HS256", pub, h, mustJSON(t, p.claims("alice")))
	}},
	{name: "jku in header", want: invalid("forbidden_header"), token: func(t *testing.T, p *idp) string {
		return p.keys["ES256"].Sign(t, p.claims("alice"), map[string]any{"jku": p.srv.JWKSURI()})
	}},
	{name: "JWS JSON serialization (cookie)", cookie: true, want: invalid("malformed_token"), token: jsonSerialization},
	// A JSON serialization is not an RFC 6750 b64token, so in the
	// Authorization header it is a malformed request, not a token.
	{name: "JWS JSON serialization (bearer)", want: denial{status: 401, err: "invalid_request", reason: "bad_authorization_header"}, token: jsonSerialization},
}

// jsonSerialization is a genuinely signed token re-encoded as a flattened
// JWS JSON serialization with an unprotected header.
func jsonSerialization(t *testing.T, p *idp) string {
	parts := strings.Split(p.token(t, "ES256", p.claims("alice")), ".")
	return string(mustJSON(t, map[string]any{
		"protected": parts[0],
		"header":    map[string]any{"kid": "es256-1"},
		"payload":   parts[1],
		"signature": parts[2],
	}))
}
