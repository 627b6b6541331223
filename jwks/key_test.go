package jwks

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/sidegate/sidegate/jwks/jwkstest"
)

// Test helpers for the jwks package. Names are prefixed with "test" so the
// three test files can share them without clashing with production code.

var (
	testRSAMu   sync.Mutex
	testRSAKeys = map[int]*jwkstest.Key{}
)

// testRSA returns an RSA key of the given size, generated once per size
// for the whole package (large or odd sizes are slow to generate).
func testRSA(tb testing.TB, bits int) *jwkstest.Key {
	tb.Helper()
	testRSAMu.Lock()
	defer testRSAMu.Unlock()
	if k, ok := testRSAKeys[bits]; ok {
		return k
	}
	k := jwkstest.NewRSAKey(tb, "RS256", "rsa", bits)
	testRSAKeys[bits] = k
	return k
}

// testJWK returns k's public JWK under kid, with edits applied: a nil value
// deletes that member.
func testJWK(k *jwkstest.Key, kid string, edits map[string]any) map[string]any {
	m := k.JWK()
	m["kid"] = kid
	for name, v := range edits {
		if v == nil {
			delete(m, name)
		} else {
			m[name] = v
		}
	}
	return m
}

// testPrivateJWK is k's JWK including the private members, as a
// misconfigured identity provider would publish it.
func testPrivateJWK(tb testing.TB, k *jwkstest.Key, kid string) map[string]any {
	tb.Helper()
	m := testJWK(k, kid, nil)
	b := base64.RawURLEncoding.EncodeToString
	switch p := k.Private.(type) {
	case *rsa.PrivateKey:
		m["d"] = b(p.D.Bytes())
		m["p"] = b(p.Primes[0].Bytes())
		m["q"] = b(p.Primes[1].Bytes())
		m["dp"] = b(p.Precomputed.Dp.Bytes())
		m["dq"] = b(p.Precomputed.Dq.Bytes())
		m["qi"] = b(p.Precomputed.Qinv.Bytes())
	case *ecdsa.PrivateKey:
		d, err := p.Bytes()
		if err != nil {
			tb.Fatal(err)
		}
		m["d"] = b(d)
	case ed25519.PrivateKey:
		m["d"] = b(p.Seed())
	default:
		tb.Fatalf("no private JWK for %T", p)
	}
	return m
}

// testDoc marshals a JWKS document with these entries.
func testDoc(tb testing.TB, keys ...any) []byte {
	tb.Helper()
	body, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		tb.Fatal(err)
	}
	return body
}

func testPublic(k *jwkstest.Key) crypto.PublicKey { return k.Private.Public() }

// testOffCurve moves a P-256 JWK's point off the curve by changing y.
func testOffCurve(tb testing.TB, m map[string]any) map[string]any {
	tb.Helper()
	y, err := base64.RawURLEncoding.DecodeString(m["y"].(string))
	if err != nil {
		tb.Fatal(err)
	}
	y[len(y)-1] ^= 1
	out := maps.Clone(m)
	out["y"] = base64.RawURLEncoding.EncodeToString(y)
	return out
}

var rsaAlgs = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}

func TestParseSet(t *testing.T) {
	rsa2048 := jwkstest.NewKey(t, "RS256", "rsa2048")
	rsa4096 := testRSA(t, 4096)
	rsa1024 := testRSA(t, 1024)
	rsa2047 := testRSA(t, 2047)
	es256 := jwkstest.NewKey(t, "ES256", "es256")
	es384 := jwkstest.NewKey(t, "ES384", "es384")
	es512 := jwkstest.NewKey(t, "ES512", "es512")
	ed := jwkstest.NewKey(t, "EdDSA", "ed")

	rsaWithE := func(kid string, e int64) map[string]any {
		return testJWK(rsa2048, kid, map[string]any{"e": base64.RawURLEncoding.EncodeToString(big.NewInt(e).Bytes())})
	}
	good := testJWK(es256, "good", nil)

	type wantKey struct {
		algs []string
		pub  crypto.PublicKey
	}
	type wantDrop struct {
		index  int
		kid    string
		reason string // substring of Dropped.Reason
	}
	tests := []struct {
		name string
		body []byte
		keep map[string]wantKey // exactly the kids kept
		drop []wantDrop         // exactly the entries dropped, in order
		err  error              // errors.Is; nil means success
	}{
		{
			name: "one key of each supported type, alg given",
			body: testDoc(t,
				testJWK(rsa2048, "rs", nil),
				testJWK(es256, "es256", nil),
				testJWK(es384, "es384", nil),
				testJWK(es512, "es512", nil),
				testJWK(ed, "ed", nil)),
			keep: map[string]wantKey{
				"rs":    {[]string{"RS256"}, testPublic(rsa2048)},
				"es256": {[]string{"ES256"}, testPublic(es256)},
				"es384": {[]string{"ES384"}, testPublic(es384)},
				"es512": {[]string{"ES512"}, testPublic(es512)},
				"ed":    {[]string{"EdDSA"}, testPublic(ed)},
			},
		},
		{
			name: "oct key dropped",
			body: testDoc(t, good, map[string]any{"kty": "oct", "kid": "hmac", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA", "alg": "HS256"}),
			keep: map[string]wantKey{"good": {[]string{"ES256"}, testPublic(es256)}},
			drop: []wantDrop{{1, "hmac", "symmetric (oct)"}},
		},
		{
			name: "RSA 1024 and 2047 bits dropped, 2048 and 4096 kept",
			body: testDoc(t,
				testJWK(rsa1024, "rsa1024", nil),
				testJWK(rsa2047, "rsa2047", nil),
				testJWK(rsa2048, "rsa2048", nil),
				testJWK(rsa4096, "rsa4096", nil)),
			keep: map[string]wantKey{
				"rsa2048": {[]string{"RS256"}, testPublic(rsa2048)},
				"rsa4096": {[]string{"RS256"}, testPublic(rsa4096)},
			},
			drop: []wantDrop{{0, "rsa1024", "2048"}, {1, "rsa2047", "2048"}},
		},
		{
			name: "RSA exponent other than 65537 dropped",
			body: testDoc(t, rsaWithE("e3", 3), rsaWithE("e65539", 65539), rsaWithE("e65537", 65537)),
			keep: map[string]wantKey{"e65537": {[]string{"RS256"}, testPublic(rsa2048)}},
			drop: []wantDrop{{0, "e3", "exponent"}, {1, "e65539", "exponent"}},
		},
		{
			name: "EC point not on the curve dropped",
			body: testDoc(t, testOffCurve(t, testJWK(es256, "off", nil)), good),
			keep: map[string]wantKey{"good": {[]string{"ES256"}, testPublic(es256)}},
			drop: []wantDrop{{0, "off", "curve"}},
		},
		{
			name: "EC P-256 with P-384 coordinates dropped",
			body: testDoc(t, testJWK(es384, "mixed", map[string]any{"crv": "P-256", "alg": nil}), good),
			keep: map[string]wantKey{"good": {[]string{"ES256"}, testPublic(es256)}},
			drop: []wantDrop{{0, "mixed", "P-256"}},
		},
		{
			name: "EC with an unknown curve dropped",
			body: testDoc(t, testJWK(es256, "k1", map[string]any{"crv": "secp256k1", "alg": nil}), good),
			keep: map[string]wantKey{"good": {[]string{"ES256"}, testPublic(es256)}},
			drop: []wantDrop{{0, "k1", "crv"}},
		},
		{
			name: "use other than sig dropped, use absent and sig kept",
			body: testDoc(t,
				testJWK(es256, "enc", map[string]any{"use": "enc"}),
				testJWK(es256, "upper", map[string]any{"use": "SIG"}),
				testJWK(es256, "custom", map[string]any{"use": "tls"}),
				testJWK(es256, "nouse", map[string]any{"use": nil}),
				testJWK(es256, "sig", map[string]any{"use": "sig"})),
			keep: map[string]wantKey{
				"nouse": {[]string{"ES256"}, testPublic(es256)},
				"sig":   {[]string{"ES256"}, testPublic(es256)},
			},
			drop: []wantDrop{{0, "enc", `use "enc"`}, {1, "upper", "use"}, {2, "custom", "use"}},
		},
		{
			name: "key_ops without verify dropped",
			body: testDoc(t,
				testJWK(es256, "sign", map[string]any{"key_ops": []string{"sign"}}),
				testJWK(es256, "encrypt", map[string]any{"key_ops": []string{"encrypt", "wrapKey"}}),
				testJWK(es256, "empty", map[string]any{"key_ops": []string{}}),
				testJWK(es256, "verify", map[string]any{"key_ops": []string{"verify"}}),
				testJWK(es256, "both", map[string]any{"key_ops": []string{"sign", "verify"}})),
			keep: map[string]wantKey{
				"verify": {[]string{"ES256"}, testPublic(es256)},
				"both":   {[]string{"ES256"}, testPublic(es256)},
			},
			drop: []wantDrop{{0, "sign", "key_ops"}, {1, "encrypt", "key_ops"}, {2, "empty", "key_ops"}},
		},
		{
			name: "kid missing, empty or not a string dropped",
			body: testDoc(t,
				testJWK(es256, "", map[string]any{"kid": nil}),
				testJWK(es256, "", nil),
				testJWK(es256, "", map[string]any{"kid": 42}),
				testJWK(es256, "", map[string]any{"kid": []string{"a"}}),
				testJWK(es256, "", map[string]any{"kid": true}),
				good),
			keep: map[string]wantKey{"good": {[]string{"ES256"}, testPublic(es256)}},
			drop: []wantDrop{{0, "", "kid"}, {1, "", "kid"}, {2, "", "kid"}, {3, "", "kid"}, {4, "", "kid"}},
		},
		{
			// Member names are case-sensitive (RFC 7517 §4): "KID" is not a
			// kid, and must not file a key under another name.
			name: "kid in another case is not the kid",
			body: testDoc(t,
				testWithMember(t, testJWK(es256, "", map[string]any{"kid": nil}), `"KID":"upper"`),
				testWithMember(t, testJWK(es256, "real", nil), `"KID":"evil"`),
				testWithMember(t, testJWK(es256, "real2", nil), `"Kid":"evil2"`),
				testWithMember(t, testJWK(ed, "ed", nil), `"KID":"ed"`)),
			keep: map[string]wantKey{"ed": {[]string{"EdDSA"}, testPublic(ed)}},
			drop: []wantDrop{{0, "upper", "ambiguous kid"}, {1, "evil", "ambiguous kid"}, {2, "evil2", "ambiguous kid"}},
		},
		{
			name: "duplicate kid: the first is kept",
			body: testDoc(t, testJWK(es256, "dup", nil), testJWK(ed, "dup", nil), testJWK(rsa2048, "dup", nil)),
			keep: map[string]wantKey{"dup": {[]string{"ES256"}, testPublic(es256)}},
			drop: []wantDrop{{1, "dup", "duplicate"}, {2, "dup", "duplicate"}},
		},
		{
			name: "an unusable first key does not claim its kid",
			body: testDoc(t, testJWK(rsa1024, "dup", nil), testJWK(ed, "dup", nil)),
			keep: map[string]wantKey{"dup": {[]string{"EdDSA"}, testPublic(ed)}},
			drop: []wantDrop{{0, "dup", "2048"}},
		},
		{
			name: "alg that does not fit the key dropped",
			body: testDoc(t,
				testJWK(rsa2048, "rsa-es256", map[string]any{"alg": "ES256"}),
				testJWK(es256, "p256-es384", map[string]any{"alg": "ES384"}),
				testJWK(es384, "p384-es256", map[string]any{"alg": "ES256"}),
				testJWK(rsa2048, "rsa-hs256", map[string]any{"alg": "HS256"}),
				testJWK(es256, "ec-hs256", map[string]any{"alg": "HS256"}),
				testJWK(rsa2048, "rsa-none", map[string]any{"alg": "none"}),
				testJWK(es256, "ec-none", map[string]any{"alg": "none"}),
				testJWK(ed, "ed-none", map[string]any{"alg": "none"}),
				testJWK(ed, "ed-es256", map[string]any{"alg": "ES256"}),
				testJWK(rsa2048, "rsa-oaep", map[string]any{"alg": "RSA-OAEP"}),
				testJWK(rsa2048, "rsa-lower", map[string]any{"alg": "rs256"}),
				testJWK(rsa2048, "rsa-empty", map[string]any{"alg": ""}),
				testJWK(rsa2048, "rsa-num", map[string]any{"alg": 256}),
				good),
			keep: map[string]wantKey{"good": {[]string{"ES256"}, testPublic(es256)}},
			drop: []wantDrop{
				{0, "rsa-es256", "alg"}, {1, "p256-es384", "alg"}, {2, "p384-es256", "alg"},
				{3, "rsa-hs256", "alg"}, {4, "ec-hs256", "alg"}, {5, "rsa-none", "alg"},
				{6, "ec-none", "alg"}, {7, "ed-none", "alg"}, {8, "ed-es256", "alg"},
				{9, "rsa-oaep", "alg"}, {10, "rsa-lower", "alg"}, {11, "rsa-empty", "alg"},
				{12, "rsa-num", "alg"},
			},
		},
		{
			name: "alg absent: algorithms inferred from key type and curve",
			body: testDoc(t,
				testJWK(rsa2048, "rs", map[string]any{"alg": nil}),
				testJWK(es256, "es256", map[string]any{"alg": nil}),
				testJWK(es384, "es384", map[string]any{"alg": nil}),
				testJWK(es512, "es512", map[string]any{"alg": nil}),
				testJWK(ed, "ed", map[string]any{"alg": nil})),
			keep: map[string]wantKey{
				"rs":    {rsaAlgs, testPublic(rsa2048)},
				"es256": {[]string{"ES256"}, testPublic(es256)},
				"es384": {[]string{"ES384"}, testPublic(es384)},
				"es512": {[]string{"ES512"}, testPublic(es512)},
				"ed":    {[]string{"EdDSA"}, testPublic(ed)},
			},
		},
		{
			name: "alg present: exactly that algorithm",
			body: testDoc(t,
				testJWK(rsa2048, "ps384", map[string]any{"alg": "PS384"}),
				testJWK(rsa2048, "rs512", map[string]any{"alg": "RS512"})),
			keep: map[string]wantKey{
				"ps384": {[]string{"PS384"}, testPublic(rsa2048)},
				"rs512": {[]string{"RS512"}, testPublic(rsa2048)},
			},
		},
		{
			name: "X25519 OKP dropped",
			body: testDoc(t, map[string]any{
				"kty": "OKP", "crv": "X25519", "kid": "x25519",
				"x": base64.RawURLEncoding.EncodeToString(mustX25519(t).Bytes()),
			}, good),
			keep: map[string]wantKey{"good": {[]string{"ES256"}, testPublic(es256)}},
			drop: []wantDrop{{0, "x25519", "unsupported"}},
		},
		{
			name: "unknown or missing kty dropped",
			body: testDoc(t,
				map[string]any{"kty": "foo", "kid": "foo"},
				map[string]any{"kid": "nokty", "n": "AQAB", "e": "AQAB"},
				map[string]any{"kty": "rsa", "kid": "lower"},
				good),
			keep: map[string]wantKey{"good": {[]string{"ES256"}, testPublic(es256)}},
			drop: []wantDrop{{0, "foo", "key type"}, {1, "nokty", "key type"}, {2, "lower", "key type"}},
		},
		{
			name: "private keys published in the JWKS are refused (leaked: anyone can sign)",
			body: testDoc(t,
				testPrivateJWK(t, rsa2048, "rsa"),
				testPrivateJWK(t, es256, "ec"),
				testPrivateJWK(t, ed, "okp"),
				good),
			keep: map[string]wantKey{"good": {[]string{"ES256"}, testPublic(es256)}},
			drop: []wantDrop{{0, "rsa", "private key"}, {1, "ec", "private key"}, {2, "okp", "private key"}},
		},
		{
			name: "malformed keys among good ones: the good ones are kept",
			body: []byte(`{"keys":[
				"not an object",
				42,
				null,
				{"kty":"RSA","kid":"badn","n":"!!not base64!!","e":"AQAB"},
				{"kty":"EC","kid":"noy","crv":"P-256","x":"` + testJWK(es256, "", nil)["x"].(string) + `"},
				{"kty":"OKP","kid":"shorted","crv":"Ed25519","x":"AQAB"},
				{"kty":"RSA","kid":"nonum","n":42,"e":"AQAB"},
				` + string(mustJSON(t, good)) + `
			]}`),
			keep: map[string]wantKey{"good": {[]string{"ES256"}, testPublic(es256)}},
			drop: []wantDrop{
				{0, "", "not a JSON object"}, {1, "", "not a JSON object"}, {2, "", "key type"},
				{3, "badn", "invalid JWK"}, {4, "noy", "invalid JWK"}, {5, "shorted", "invalid JWK"},
				{6, "nonum", "invalid JWK"},
			},
		},
		{
			name: "every key unusable",
			body: testDoc(t, testJWK(rsa1024, "small", nil), testJWK(es256, "enc", map[string]any{"use": "enc"})),
			drop: []wantDrop{{0, "small", "2048"}, {1, "enc", "use"}},
			err:  ErrNoUsableKeys,
		},
		{
			name: "empty key list",
			body: []byte(`{"keys":[]}`),
			err:  ErrNoUsableKeys,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, dropped, err := ParseSet(tt.body)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				if set != nil {
					t.Errorf("set = %v, want nil with an error", set)
				}
			} else if err != nil {
				t.Fatalf("err = %v (dropped %v)", err, dropped)
			}

			if len(dropped) != len(tt.drop) {
				t.Errorf("dropped %d entries, want %d: %v", len(dropped), len(tt.drop), dropped)
			}
			for i, d := range dropped {
				if i >= len(tt.drop) {
					break
				}
				w := tt.drop[i]
				if d.Index != w.index || d.KeyID != w.kid || !strings.Contains(d.Reason, w.reason) || d.Reason == "" {
					t.Errorf("dropped[%d] = %s, want keys[%d] (kid %q) with reason containing %q", i, d, w.index, w.kid, w.reason)
				}
			}

			if set == nil {
				return
			}
			if got, want := slices.Sorted(maps.Keys(set.Keys)), slices.Sorted(maps.Keys(tt.keep)); !slices.Equal(got, want) {
				t.Fatalf("kept kids %q, want %q", got, want)
			}
			for kid, w := range tt.keep {
				k := set.Keys[kid]
				if k.ID != kid {
					t.Errorf("Keys[%q].ID = %q", kid, k.ID)
				}
				var algs []string
				for _, a := range k.Algorithms {
					algs = append(algs, a.String())
				}
				if !slices.Equal(algs, w.algs) {
					t.Errorf("Keys[%q].Algorithms = %q, want %q", kid, algs, w.algs)
				}
				testCheckPublic(t, kid, k.Public, w.pub)
			}
		})
	}
}

// testCheckPublic asserts that got is the public (never private) form of want.
func testCheckPublic(t *testing.T, kid string, got any, want crypto.PublicKey) {
	t.Helper()
	switch got.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
	default:
		t.Errorf("Keys[%q].Public is %T, want a public key type", kid, got)
		return
	}
	if !want.(interface{ Equal(crypto.PublicKey) bool }).Equal(got) {
		t.Errorf("Keys[%q].Public is not the published key", kid)
	}
}

// testWithMember appends a raw member to a JWK, after all the others, so
// that it is the last one a case-insensitive decoder sees.
func testWithMember(tb testing.TB, m map[string]any, member string) json.RawMessage {
	tb.Helper()
	b := mustJSON(tb, m)
	return json.RawMessage(string(b[:len(b)-1]) + "," + member + "}")
}

func mustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestParseSetNotAJWKS(t *testing.T) {
	for _, body := range []string{
		``,
		`not json`,
		`{"keys":[`,
		`[]`,
		`"keys"`,
		`null`,
		`{}`,
		`{"keys":null}`,
		`{"keys":{}}`,
		`{"keys":"x"}`,
		`{"keys":42}`,
		`{"other":[{"kty":"OKP"}]}`,
	} {
		t.Run(body, func(t *testing.T) {
			set, dropped, err := ParseSet([]byte(body))
			if err == nil {
				t.Fatalf("ParseSet(%q) = %v, %v, nil; want an error", body, set, dropped)
			}
			if errors.Is(err, ErrNoUsableKeys) {
				t.Errorf("err = %v; a document that is not a JWKS is not ErrNoUsableKeys", err)
			}
			if set != nil || dropped != nil {
				t.Errorf("set, dropped = %v, %v; want nil, nil", set, dropped)
			}
			if !strings.HasPrefix(err.Error(), "jwks: ") {
				t.Errorf("err = %q, want the package prefix", err)
			}
		})
	}
}

func TestKeyAlgorithm(t *testing.T) {
	set, _, err := ParseSet(testDoc(t, testJWK(jwkstest.NewKey(t, "RS256", ""), "rs", map[string]any{"alg": nil})))
	if err != nil {
		t.Fatal(err)
	}
	k := set.Keys["rs"]
	for _, tt := range []struct {
		alg string
		ok  bool
	}{
		{"RS256", true}, {"RS384", true}, {"RS512", true},
		{"PS256", true}, {"PS384", true}, {"PS512", true},
		{"rs256", false}, {"ES256", false}, {"HS256", false},
		{"none", false}, {"", false}, {"RS256 ", false},
	} {
		a, ok := k.Algorithm(tt.alg)
		if ok != tt.ok {
			t.Errorf("Algorithm(%q) ok = %v, want %v", tt.alg, ok, tt.ok)
		}
		if ok && a.String() != tt.alg {
			t.Errorf("Algorithm(%q) = %q", tt.alg, a)
		}
	}

	es, _, err := ParseSet(testDoc(t, testJWK(jwkstest.NewKey(t, "ES256", ""), "es", nil)))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := es.Keys["es"].Algorithm("ES256"); !ok {
		t.Error(`ES256 key: Algorithm("ES256") not found`)
	}
	if _, ok := es.Keys["es"].Algorithm("ES384"); ok {
		t.Error(`ES256 key: Algorithm("ES384") found`)
	}
}

// jwx already refuses most weak keys while parsing; these are sidegate's own
// checks behind it, so that a jwx change cannot quietly let one through.
func TestAlgorithmsForRefusesWeakKeys(t *testing.T) {
	rsa1024 := testRSA(t, 1024).Private.(*rsa.PrivateKey)
	rsa2048 := jwkstest.NewKey(t, "RS256", "").Private.(*rsa.PrivateKey)
	p256 := jwkstest.NewKey(t, "ES256", "").Private.(*ecdsa.PrivateKey)
	offCurve := &ecdsa.PublicKey{Curve: p256.Curve, X: p256.X, Y: new(big.Int).Add(p256.Y, big.NewInt(1))}
	infinity := &ecdsa.PublicKey{Curve: p256.Curve, X: new(big.Int), Y: new(big.Int)}
	edPub := jwkstest.NewKey(t, "EdDSA", "").Private.Public().(ed25519.PublicKey)

	for name, pub := range map[string]any{
		"RSA 1024":          &rsa.PublicKey{N: rsa1024.N, E: 65537},
		"RSA no modulus":    &rsa.PublicKey{E: 65537},
		"RSA e=3":           &rsa.PublicKey{N: rsa2048.N, E: 3},
		"RSA e=65539":       &rsa.PublicKey{N: rsa2048.N, E: 65539},
		"EC off the curve":  offCurve,
		"EC at infinity":    infinity,
		"Ed25519 truncated": edPub[:31],
		"Ed25519 too long":  append(slices.Clone(edPub), 0),
		"X25519":            mustX25519(t),
		"private RSA as-is": rsa2048,
		"symmetric []byte":  []byte("secret"),
		"nil":               nil,
	} {
		if algs, err := algorithmsFor(pub); err == nil {
			t.Errorf("%s: algorithmsFor = %v, nil; want an error", name, algs)
		}
	}
	for name, pub := range map[string]any{
		"RSA 2048": &rsa2048.PublicKey,
		"P-256":    &p256.PublicKey,
		"Ed25519":  edPub,
	} {
		if _, err := algorithmsFor(pub); err != nil {
			t.Errorf("%s: algorithmsFor: %v", name, err)
		}
	}
}

func mustX25519(tb testing.TB) *ecdh.PublicKey {
	tb.Helper()
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k.PublicKey()
}
