package authz

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/sidegate/sidegate/jwks"
	"github.com/sidegate/sidegate/jwks/jwkstest"
)

// Shared test fixture for the authz package. Test files add their own
// helpers with names prefixed by their file's subject to avoid clashes.

const (
	testIss = "https://issuer.test/"
	testAud = "orders-api"
)

// testNow is the fixed clock of every engine built by newFixture.
var testNow = time.Unix(1_800_000_000, 0)

// staticKeys is a KeySource over fixed key sets, keyed by issuer.
type staticKeys map[string]*jwks.Set

func (s staticKeys) Lookup(_ context.Context, iss, kid string) (*jwks.Key, error) {
	set, ok := s[iss]
	if !ok {
		return nil, jwks.ErrKeysUnavailable
	}
	k, ok := set.Keys[kid]
	if !ok {
		return nil, jwks.ErrUnknownKey
	}
	return k, nil
}

// keySetOf runs keys' public JWKs through the real ingest (jwks.ParseSet).
func keySetOf(tb testing.TB, keys ...*jwkstest.Key) *jwks.Set {
	tb.Helper()
	jwk := make([]any, len(keys))
	for i, k := range keys {
		jwk[i] = k.JWK()
	}
	body, err := json.Marshal(map[string]any{"keys": jwk})
	if err != nil {
		tb.Fatal(err)
	}
	set, dropped, err := jwks.ParseSet(body)
	if err != nil || len(dropped) > 0 {
		tb.Fatalf("ParseSet: %v (dropped %v)", err, dropped)
	}
	return set
}

type fixture struct {
	keys   map[string]*jwkstest.Key // by alg; kid is "kid-" + alg
	set    *jwks.Set
	cfg    Config
	engine *Engine
	deny   Denylist
}

var fixtureAlgs = []string{"RS256", "PS256", "ES256", "ES384", "EdDSA"}

// newFixture builds an engine for issuer testIss trusting one key per
// algorithm in fixtureAlgs, with bearer and cookie "session" on, x-user-id
// from sub, payload header x-jwt-payload, leeway 30s, max lifetime 24h.
// mutate may change the config before the engine is built.
func newFixture(tb testing.TB, mutate func(*Config)) *fixture {
	tb.Helper()
	f := &fixture{keys: map[string]*jwkstest.Key{}}
	var list []*jwkstest.Key
	for _, alg := range fixtureAlgs {
		k := jwkstest.NewKey(tb, alg, "kid-"+alg)
		f.keys[alg] = k
		list = append(list, k)
	}
	f.set = keySetOf(tb, list...)
	f.cfg = Config{
		Issuers:       []Issuer{{Issuer: testIss, Audiences: []string{testAud}, Algorithms: fixtureAlgs}},
		Bearer:        true,
		Cookies:       []string{"session"},
		Leeway:        30 * time.Second,
		MaxSize:       8 << 10,
		MaxLifetime:   24 * time.Hour,
		ForwardClaims: []ForwardClaim{{Header: "x-user-id", Claim: "sub"}},
		PayloadHeader: "x-jwt-payload",
	}
	if mutate != nil {
		mutate(&f.cfg)
	}
	f.build(tb)
	return f
}

// build (re)creates the engine from f.cfg, f.set and f.deny.
func (f *fixture) build(tb testing.TB) {
	tb.Helper()
	e, err := NewEngine(f.cfg, staticKeys{testIss: f.set}, f.deny, func() time.Time { return testNow })
	if err != nil {
		tb.Fatal(err)
	}
	f.engine = e
}

// claims are valid claims for the fixture's issuer and audience.
func (f *fixture) claims() map[string]any {
	return jwkstest.Claims(testIss, testAud, "user-1", testNow, time.Hour)
}

// token signs claims with the fixture key for alg, merging extra into the header.
func (f *fixture) token(tb testing.TB, alg string, claims, extraHeader map[string]any) string {
	tb.Helper()
	return f.keys[alg].Sign(tb, claims, extraHeader)
}

func (f *fixture) decide(headers map[string]string) Decision {
	return f.engine.Decide(context.Background(), Input{Headers: headers, Method: "GET", Path: "/"})
}

func bearer(tok string) map[string]string {
	return map[string]string{"authorization": "Bearer " + tok}
}
