package authz

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	mathrand "math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sidegate/sidegate/jwks/jwkstest"
)

// Fuzz targets for everything in verification that reads client input.
//
// A fuzzer cannot forge a signature, so the central property is: a token
// is only ever allowed if it is byte-identical to one of the validly
// signed seeds. For that to hold across the fuzzing engine's worker
// processes, the seeds' keys and signatures are deterministic (fixed key
// material, RFC 6979 ECDSA, PKCS #1 v1.5, Ed25519).

// verifyFuzzRSA is a fixed 2048-bit RSA key derived from a fixed seed.
// (rsa.GenerateKey ignores its reader since Go 1.26, and a key committed as
// PEM would trip secret scanners.)
var verifyFuzzRSA = sync.OnceValues(func() (*rsa.PrivateKey, error) {
	r := mathrand.NewChaCha8([32]byte([]byte("sidegate authz fuzz RSA key seed")))
	e := big.NewInt(65537)
	prime := func() *big.Int {
		b := make([]byte, 128)
		r.Read(b)
		b[0] |= 0xc0 // two top bits: p*q has exactly 2048 bits
		b[len(b)-1] |= 1
		p := new(big.Int).SetBytes(b)
		one, two := big.NewInt(1), big.NewInt(2)
		for !p.ProbablyPrime(20) || new(big.Int).GCD(nil, nil, new(big.Int).Sub(p, one), e).Cmp(one) != 0 {
			p.Add(p, two)
		}
		return p
	}
	p, q := prime(), prime()
	one := big.NewInt(1)
	phi := new(big.Int).Mul(new(big.Int).Sub(p, one), new(big.Int).Sub(q, one))
	k := &rsa.PrivateKey{
		PublicKey: rsa.PublicKey{N: new(big.Int).Mul(p, q), E: 65537},
		D:         new(big.Int).ModInverse(e, phi),
		Primes:    []*big.Int{p, q},
	}
	k.Precompute()
	return k, k.Validate()
})

// verifyFuzzKeys are deterministic keys for RS256, ES256, ES384 and EdDSA.
// (PS256 signatures are randomized, so it has no fuzz seed.)
func verifyFuzzKeys(tb testing.TB) []*jwkstest.Key {
	tb.Helper()
	rk, err := verifyFuzzRSA()
	if err != nil {
		tb.Fatal(err)
	}
	s256 := sha256.Sum256([]byte("sidegate authz fuzz ES256"))
	es256, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), s256[:])
	if err != nil {
		tb.Fatal(err)
	}
	s384 := sha512.Sum384([]byte("sidegate authz fuzz ES384"))
	es384, err := ecdsa.ParseRawPrivateKey(elliptic.P384(), s384[:])
	if err != nil {
		tb.Fatal(err)
	}
	sed := sha256.Sum256([]byte("sidegate authz fuzz EdDSA"))
	return []*jwkstest.Key{
		{Kid: "kid-RS256", Alg: "RS256", Private: rk},
		{Kid: "kid-ES256", Alg: "ES256", Private: es256},
		{Kid: "kid-ES384", Alg: "ES384", Private: es384},
		{Kid: "kid-EdDSA", Alg: "EdDSA", Private: ed25519.NewKeyFromSeed(sed[:])},
	}
}

// verifyFuzzClaims are fixed valid claims (the fixture clock is fixed too).
func verifyFuzzClaims(set map[string]any) map[string]any {
	c := map[string]any{
		"iss": testIss, "aud": testAud, "sub": "user-1", "jti": "fuzz-1",
		"iat": testNow.Unix(), "exp": testNow.Add(time.Hour).Unix(),
	}
	for k, v := range set {
		if v == verifyAbsent {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// verifyFuzzSign deterministically signs header and claims (values, or
// exact JSON text when given as strings) with k under alg.
func verifyFuzzSign(tb testing.TB, k *jwkstest.Key, alg string, header, claims any) string {
	tb.Helper()
	text := func(v any) string {
		if s, ok := v.(string); ok {
			return s
		}
		return verifyJSON(tb, v)
	}
	return verifySign(tb, k, alg, verifyEnc([]byte(text(header)))+"."+verifyEnc([]byte(text(claims))))
}

// verifyFuzzFixture is the fixture with deterministic keys, and the tokens
// it allows: one per key.
func verifyFuzzFixture(tb testing.TB) (*fixture, map[string]bool) {
	tb.Helper()
	f := newFixture(tb, nil)
	keys := verifyFuzzKeys(tb)
	f.keys = map[string]*jwkstest.Key{}
	for _, k := range keys {
		f.keys[k.Alg] = k
	}
	f.set = keySetOf(tb, keys...)
	f.build(tb)
	valid := map[string]bool{}
	for _, k := range keys {
		tok := verifyFuzzSign(tb, k, k.Alg, map[string]any{"alg": k.Alg, "kid": k.Kid, "typ": "JWT"}, verifyFuzzClaims(nil))
		if d := f.decide(bearer(tok)); !d.Allowed {
			tb.Fatalf("%s seed is not allowed: %v", k.Alg, d.Err)
		}
		valid[tok] = true
	}
	return f, valid
}

// verifyFuzzHostile derives hostile tokens from the valid ones and signs
// hostile headers and claims with the trusted keys.
func verifyFuzzHostile(tb testing.TB, f *fixture, valid map[string]bool) []string {
	tb.Helper()
	var out []string
	for tok := range valid {
		h, p, s := verifySegs(tb, tok)
		out = append(out,
			h+"."+p, h+"."+p+".", tok+"."+s, "."+tok, tok+".",
			h+"."+p+"."+verifyNonCanonical(tb, verifyCut4(s)),
			tok+strings.Repeat("=", (4-len(s)%4)%4),
			strings.NewReplacer("-", "+", "_", "/").Replace(tok),
			h+"."+p+"."+s[:len(s)/2]+"\n"+s[len(s)/2:],
			h+" ."+p+"."+s,
			verifyJSON(tb, map[string]any{"protected": h, "payload": p, "signature": s}),
			verifyJSON(tb, map[string]any{"payload": p, "signatures": []any{map[string]any{"protected": h, "header": map[string]any{"kid": "x"}, "signature": s}}}),
			h+"."+p+"."+s+"."+s+"."+s,
		)
	}
	es, rs := f.keys["ES256"], f.keys["RS256"]
	hdr := func(extra map[string]any) map[string]any {
		h := map[string]any{"alg": "ES256", "kid": "kid-ES256", "typ": "JWT"}
		for k, v := range extra {
			if v == nil {
				delete(h, k)
			} else {
				h[k] = v
			}
		}
		return h
	}
	claims := verifyFuzzClaims(nil)
	for _, h := range []any{
		hdr(map[string]any{"alg": "none"}),
		hdr(map[string]any{"alg": "nOnE"}),
		hdr(map[string]any{"alg": "es256"}),
		hdr(map[string]any{"kid": nil}),
		hdr(map[string]any{"kid": 1}),
		hdr(map[string]any{"kid": "kid-RS256"}),
		hdr(map[string]any{"kid": "unknown"}),
		hdr(map[string]any{"jwk": es.JWK()}),
		hdr(map[string]any{"jku": "https://attacker.test/jwks"}),
		hdr(map[string]any{"x5u": "https://attacker.test/x5u"}),
		hdr(map[string]any{"x5c": []any{"MIIB"}}),
		hdr(map[string]any{"crit": []any{"b64"}, "b64": false}),
		hdr(map[string]any{"b64": true}),
		`{"alg":"ES256","kid":"kid-ES256","alg":"none"}`,
		`{"alg":"ES256","kid":"kid-ES256","\u006bid":"kid-RS256"}`,
		`{"alg":"ES256","kid":"kid-ES256"}{}`,
		`[{"alg":"ES256","kid":"kid-ES256"}]`,
	} {
		out = append(out, verifyFuzzSign(tb, es, "ES256", h, claims))
	}
	for _, c := range []any{
		verifyFuzzClaims(map[string]any{"exp": verifyAbsent}),
		verifyFuzzClaims(map[string]any{"exp": "1800003600"}),
		verifyFuzzClaims(map[string]any{"exp": 0}),
		verifyFuzzClaims(map[string]any{"exp": testNow.Add(-time.Hour).Unix()}),
		verifyFuzzClaims(map[string]any{"nbf": testNow.Add(time.Hour).Unix()}),
		verifyFuzzClaims(map[string]any{"iat": testNow.Add(time.Hour).Unix()}),
		verifyFuzzClaims(map[string]any{"exp": testNow.Add(48 * time.Hour).Unix()}),
		verifyFuzzClaims(map[string]any{"iss": "https://issuer.test"}),
		verifyFuzzClaims(map[string]any{"iss": 1}),
		verifyFuzzClaims(map[string]any{"aud": []any{}}),
		verifyFuzzClaims(map[string]any{"aud": []any{testAud, 1}}),
		verifyFuzzClaims(map[string]any{"sub": 1}),
		`{"iss":"https://issuer.test/","aud":"orders-api","exp":1e400}`,
		`{"iss":"https://issuer.test/","aud":"orders-api","exp":1800003600,"exp":"x"}`,
		`[]`, `null`, `"x"`, `{}`,
	} {
		out = append(out, verifyFuzzSign(tb, es, "ES256", hdr(nil), c))
	}
	der, err := x509.MarshalPKIXPublicKey(&rs.Private.(*rsa.PrivateKey).PublicKey)
	if err != nil {
		tb.Fatal(err)
	}
	for _, secret := range [][]byte{pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), der} {
		out = append(out, jwkstest.SignHMAC("HS256", secret, []byte(`{"alg":"HS256","kid":"kid-RS256"}`), []byte(verifyJSON(tb, claims))))
	}
	out = append(out,
		verifyFuzzSign(tb, rs, "PS256", map[string]any{"alg": "PS256", "kid": "kid-RS256"}, claims),
		verifyFuzzSign(tb, f.keys["ES384"], "ES384", map[string]any{"alg": "ES384", "kid": "kid-ES256"}, claims),
		verifyEnc([]byte(`{"alg":"RSA-OAEP","enc":"A256GCM"}`))+".AAAA.AAAA.AAAA.AAAA",
		"", ".", "..", "...", "a.b.c", "{}", strings.Repeat("A", 8<<10+1),
	)
	return out
}

// verifyCut4 trims a segment whose length leaves no unused bits, so that
// verifyNonCanonical has a bit to set.
func verifyCut4(s string) string {
	if len(s)%4 == 0 {
		return s[:len(s)-2]
	}
	return s
}

// FuzzCheckShape compares the pre-parse gate with an independent oracle:
// at most maxSize bytes, and exactly three non-empty segments that are
// each the canonical base64url (no padding) encoding of some bytes.
func FuzzCheckShape(f *testing.F) {
	fx, valid := verifyFuzzFixture(f)
	for tok := range valid {
		f.Add(tok, uint16(8<<10))
		f.Add(tok, uint16(len(tok)))
		f.Add(tok, uint16(len(tok)-1))
	}
	for _, tok := range verifyFuzzHostile(f, fx, valid) {
		f.Add(tok, uint16(8<<10))
	}
	f.Add("YQ.YQ.YQ", uint16(8))
	f.Add("YR.YQ.YQ", uint16(8))
	f.Add("YQ.YQ.Y", uint16(8))
	f.Fuzz(func(t *testing.T, tok string, maxSize uint16) {
		err := checkShape(tok, int(maxSize))
		if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTokenTooLarge) {
			t.Fatalf("checkShape(%q): unexpected error class: %v", tok, err)
		}
		if len(tok) > int(maxSize) {
			if !errors.Is(err, ErrTokenTooLarge) {
				t.Fatalf("checkShape(%q, %d): %v, want token too large", tok, maxSize, err)
			}
			return
		}
		want := true
		parts := strings.Split(tok, ".")
		if len(parts) != 3 {
			want = false
		}
		for _, p := range parts {
			b, derr := base64.RawURLEncoding.DecodeString(p)
			// The standard decoder skips \r and \n, so compare the
			// re-encoding: it is the one canonical form.
			if p == "" || derr != nil || base64.RawURLEncoding.EncodeToString(b) != p {
				want = false
			}
		}
		if got := err == nil; got != want {
			t.Fatalf("checkShape(%q) = %v, oracle says accepted=%v", tok, err, want)
		}
	})
}

// FuzzDecide runs full decisions on arbitrary tokens as a bearer token, as
// the cookie, and as both.
func FuzzDecide(f *testing.F) {
	fx, valid := verifyFuzzFixture(f)
	for tok := range valid {
		f.Add(tok)
	}
	for _, tok := range verifyFuzzHostile(f, fx, valid) {
		f.Add(tok)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := fx.engine.verify(context.Background(), tok, fx.engine.now())
		if err == nil && !valid[tok] {
			t.Fatalf("verify accepted a token that was never signed: %q (claims %+v)", tok, c)
		}
		if err != nil && ReasonFor(err).Code == reasonInternal.Code {
			t.Fatalf("verify: denial without a reason code: %v", err)
		}
		for _, headers := range []map[string]string{
			bearer(tok),
			{"cookie": "session=" + tok},
			{"authorization": "Bearer " + tok, "cookie": "theme=dark; session=" + tok},
		} {
			d := fx.decide(headers)
			if d.Allowed != (d.Reason.Code == "ok") {
				t.Fatalf("%v: allowed=%v with reason %q", headers, d.Allowed, d.Reason.Code)
			}
			if !d.Allowed && (d.Err == nil || d.Reason.Code == reasonInternal.Code) {
				t.Fatalf("%v: denial %q without a reason (%v)", headers, d.Reason.Code, d.Err)
			}
			if !d.Allowed {
				continue
			}
			cands, err := Extract(headers, fx.engine.extract)
			if err != nil || len(cands) == 0 {
				t.Fatalf("%v: allowed, but Extract says %v", headers, err)
			}
			for _, c := range cands {
				if !valid[c.Token] {
					t.Fatalf("%v: allowed a %s token that was never signed: %q", headers, c.Source, c.Token)
				}
			}
		}
	})
}

// FuzzVerifySigned signs arbitrary header and payload text with the
// trusted EdDSA key, so that the fuzzer explores everything behind the
// signature check: header rules and every claim rule. An allowed token
// must satisfy the policy as read by an independent parse.
func FuzzVerifySigned(f *testing.F) {
	fx, _ := verifyFuzzFixture(f)
	key := fx.keys["EdDSA"]
	good := `{"alg":"EdDSA","kid":"kid-EdDSA","typ":"JWT"}`
	claims := verifyJSON(f, verifyFuzzClaims(nil))
	for _, h := range []string{
		good,
		`{"alg":"EdDSA","kid":"kid-EdDSA"}`,
		`{"alg":"EdDSA","kid":"kid-EdDSA","alg":"EdDSA"}`,
		`{"alg":"EdDSA","kid":"kid-EdDSA","\u0061lg":"none"}`,
		`{"alg":"EdDSA","kid":"kid-EdDSA","jwk":{"kty":"OKP"}}`,
		`{"alg":"EdDSA","kid":"kid-EdDSA","jku":"https://attacker.test/"}`,
		`{"alg":"EdDSA","kid":"kid-EdDSA","crit":["b64"],"b64":false}`,
		`{"alg":"none","kid":"kid-EdDSA"}`,
		`{"alg":"EdDSA"}`,
		`{"alg":"EdDSA","kid":null}`,
		`{"alg":"EdDSA","kid":"kid-ES256"}`,
		`{"alg":"Ed25519","kid":"kid-EdDSA"}`,
		`{"alg":"EdDSA","kid":"kid-EdDSA"} `,
		`{"alg":"EdDSA","kid":"kid-EdDSA"}x`,
	} {
		f.Add(h, claims)
	}
	now := testNow.Unix()
	for _, p := range []string{
		fmt.Sprintf(`{"iss":%q,"aud":%q,"exp":%d}`, testIss, testAud, now+60),
		fmt.Sprintf(`{"iss":%q,"aud":[%q,"x"],"exp":%d.5,"nbf":%d,"iat":%d}`, testIss, testAud, now+60, now-1, now-1),
		fmt.Sprintf(`{"iss":%q,"aud":%q,"exp":"%d"}`, testIss, testAud, now+60),
		fmt.Sprintf(`{"iss":%q,"aud":%q,"exp":%d,"exp":%d}`, testIss, testAud, now-3600, now+60),
		fmt.Sprintf(`{"iss":%q,"aud":%q,"exp":1e400}`, testIss, testAud),
		fmt.Sprintf(`{"iss":%q,"aud":%q,"exp":-0}`, testIss, testAud),
		fmt.Sprintf(`{"iss":%q,"aud":%q,"exp":%d,"nbf":"x"}`, testIss, testAud, now+60),
		fmt.Sprintf(`{"iss":%q,"aud":[],"exp":%d}`, testIss, now+60),
		fmt.Sprintf(`{"iss":%q,"aud":[1],"exp":%d}`, testIss, now+60),
		fmt.Sprintf(`{"iss":%q,"aud":%q,"exp":%d,"sub":{}}`, testIss, testAud, now+60),
		fmt.Sprintf(`{"iss":"https://issuer.test","aud":%q,"exp":%d}`, testAud, now+60),
		fmt.Sprintf(`{"iss":%q,"aud":%q,"exp":%d}{}`, testIss, testAud, now+60),
		`[]`, `null`, `{}`, "\uFEFF{}",
	} {
		f.Add(good, p)
	}
	f.Fuzz(func(t *testing.T, header, payload string) {
		tok := verifyFuzzSign(t, key, "EdDSA", header, payload)
		c, err := fx.engine.verify(context.Background(), tok, fx.engine.now())
		if err != nil {
			if ReasonFor(err).Code == reasonInternal.Code {
				t.Fatalf("denial without a reason code: %v", err)
			}
			return
		}
		if problem := verifyPolicy(header, payload); problem != "" {
			t.Fatalf("allowed header %q payload %q: %s", header, payload, problem)
		}
		if c.Issuer != testIss || c.Algorithm != "EdDSA" || c.KeyID != "kid-EdDSA" {
			t.Fatalf("allowed with claims %+v", c)
		}
		d := fx.decide(bearer(tok))
		if !d.Allowed {
			t.Fatalf("verify allowed but Decide denied: %v", d.Err)
		}
	})
}

// verifyPolicy is an independent reading of the verification rules for
// an EdDSA token signed with kid-EdDSA: "" when header and payload satisfy
// them, otherwise what is wrong.
func verifyPolicy(header, payload string) string {
	var h map[string]any
	if err := json.Unmarshal([]byte(header), &h); err != nil || h == nil {
		return "header is not a JSON object"
	}
	if h["alg"] != "EdDSA" || h["kid"] != "kid-EdDSA" {
		return "alg or kid is not EdDSA / kid-EdDSA"
	}
	for _, name := range []string{"jwk", "jku", "x5u", "x5c", "crit", "b64"} {
		if _, ok := h[name]; ok {
			return "header has " + name
		}
	}
	dec := json.NewDecoder(strings.NewReader(payload))
	dec.UseNumber()
	var p map[string]any
	if err := dec.Decode(&p); err != nil || p == nil {
		return "payload is not a JSON object"
	}
	if dec.More() || dec.InputOffset() != int64(len(bytes.TrimRight([]byte(payload), " \t\r\n"))) {
		return "data after the payload"
	}
	if p["iss"] != testIss {
		return "iss is not the issuer"
	}
	now, leeway := float64(testNow.Unix()), 30.0
	num := func(name string, required bool) (float64, string) {
		v, ok := p[name]
		if !ok {
			if required {
				return 0, name + " missing"
			}
			return 0, ""
		}
		n, ok := v.(json.Number)
		if !ok {
			return 0, name + " is not a number"
		}
		x, err := strconv.ParseFloat(string(n), 64)
		if err != nil || !(x > 0) {
			return 0, name + " is not a positive number"
		}
		return x, ""
	}
	exp, bad := num("exp", true)
	if bad != "" {
		return bad
	}
	if exp+leeway <= now {
		return "expired"
	}
	if nbf, bad := num("nbf", false); bad != "" || nbf > now+leeway {
		return "nbf: " + bad
	}
	iat, bad := num("iat", false)
	if bad != "" || iat > now+leeway {
		return "iat: " + bad
	}
	if iat != 0 && exp-iat > 24*3600 || iat == 0 && exp-now > 24*3600+leeway {
		return "lifetime too long"
	}
	for _, name := range []string{"sub", "jti"} {
		if v, ok := p[name]; ok {
			if _, ok := v.(string); !ok {
				return name + " is not a string"
			}
		}
	}
	switch aud := p["aud"].(type) {
	case string:
		if aud != testAud {
			return "aud does not match"
		}
	case []any:
		found := false
		for _, a := range aud {
			s, ok := a.(string)
			if !ok {
				return "aud holds a non-string"
			}
			found = found || s == testAud
		}
		if !found {
			return "aud does not contain the audience"
		}
	default:
		return "aud is missing or of the wrong type"
	}
	return ""
}
