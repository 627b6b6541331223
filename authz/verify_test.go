package authz

import (
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidegate/sidegate/jwks"
	"github.com/sidegate/sidegate/jwks/jwkstest"
)

// Verification tests (issue 2, "Verification"). Every case builds its
// token with real keys and asserts the decision and the exact reason code,
// three ways: Engine.verify itself, and Decide with the token as a cookie
// and as a bearer token. Hostile tokens are signed by a real key whenever
// that matters, so that the rule under test, not a bad signature, is what
// refuses them.

// verifyNotBearer is the reason when the Authorization header parser
// refuses the token before verification (RFC 6750 b64token grammar).
const verifyNotBearer = "bad_authorization_header"

type verifyCase struct {
	name  string
	cfg   func(*Config) // optional change to the fixture's configuration
	token func(testing.TB, *fixture) string
	want  string // reason code; "ok" means allowed
	// bearer is the reason through "Authorization: Bearer", when the
	// header parser refuses first; "" means want.
	bearer string
}

func verifyRun(t *testing.T, cases []verifyCase) {
	t.Helper()
	seen := map[string]bool{}
	for _, c := range cases {
		if seen[c.name] {
			t.Fatalf("duplicate case name %q", c.name)
		}
		seen[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, c.cfg)
			verifyExpect(t, f, c.token(t, f), c.want, cmp.Or(c.bearer, c.want))
		})
	}
}

// verifyExpect asserts the reason of tok through verify, and through Decide
// as the "session" cookie and as a bearer token.
func verifyExpect(t *testing.T, f *fixture, tok, want, wantBearer string) {
	t.Helper()
	c, err := f.engine.verify(context.Background(), tok, f.engine.now())
	if got := ReasonFor(err).Code; got != want {
		t.Errorf("verify: reason %q (%v), want %q", got, err, want)
	}
	if (err == nil) != (c != nil) {
		t.Errorf("verify: claims %v with error %v", c, err)
	}
	for _, via := range []struct {
		name    string
		headers map[string]string
		want    string
	}{
		{"cookie", map[string]string{"cookie": "session=" + tok}, want},
		{"bearer", bearer(tok), wantBearer},
	} {
		d := f.decide(via.headers)
		if d.Allowed != (via.want == "ok") || d.Reason.Code != via.want {
			t.Errorf("%s: allowed=%v reason %q (%v), want %q", via.name, d.Allowed, d.Reason.Code, d.Err, via.want)
			continue
		}
		if d.Allowed && (d.Claims == nil || d.Claims.Issuer != testIss) {
			t.Errorf("%s: allowed with claims %+v", via.name, d.Claims)
		}
		if !d.Allowed && d.Err == nil {
			t.Errorf("%s: denied without an error", via.name)
		}
	}
}

func verifyEnc(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func verifyDec(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func verifyJSON(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// verifySegs splits a compact token into its three segments.
func verifySegs(tb testing.TB, tok string) (h, p, s string) {
	tb.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		tb.Fatalf("not a compact token: %q", tok)
	}
	return parts[0], parts[1], parts[2]
}

// signInput signs input with key under alg using the standard
// library: PKCS#1 v1.5, PSS, ECDSA (deterministic, RFC 6979, as r||s) or
// Ed25519. It lets a test sign any signing input, including ones whose
// segments are not canonical base64url.
func signInput(tb testing.TB, key crypto.Signer, alg string, input []byte) []byte {
	tb.Helper()
	if alg == "EdDSA" {
		return ed25519.Sign(key.(ed25519.PrivateKey), input)
	}
	var h crypto.Hash
	var digest []byte
	switch alg[2:] {
	case "256":
		d := sha256.Sum256(input)
		h, digest = crypto.SHA256, d[:]
	case "384":
		d := sha512.Sum384(input)
		h, digest = crypto.SHA384, d[:]
	case "512":
		d := sha512.Sum512(input)
		h, digest = crypto.SHA512, d[:]
	default:
		tb.Fatalf("signInput: alg %q", alg)
	}
	var sig []byte
	var err error
	switch alg[:2] {
	case "RS":
		sig, err = rsa.SignPKCS1v15(nil, key.(*rsa.PrivateKey), h, digest)
	case "PS":
		sig, err = rsa.SignPSS(rand.Reader, key.(*rsa.PrivateKey), h, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case "ES":
		ek := key.(*ecdsa.PrivateKey)
		var der []byte
		if der, err = ek.Sign(nil, digest, h); err == nil {
			sig = verifyDERToRaw(tb, der, (ek.Curve.Params().BitSize+7)/8)
		}
	default:
		tb.Fatalf("signInput: alg %q", alg)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return sig
}

type verifyECDSASig struct{ R, S *big.Int }

func verifyDERToRaw(tb testing.TB, der []byte, size int) []byte {
	tb.Helper()
	var rs verifyECDSASig
	if rest, err := asn1.Unmarshal(der, &rs); err != nil || len(rest) > 0 {
		tb.Fatalf("ECDSA signature: %v", err)
	}
	out := make([]byte, 2*size)
	rs.R.FillBytes(out[:size])
	rs.S.FillBytes(out[size:])
	return out
}

func verifyRawToDER(tb testing.TB, raw []byte) []byte {
	tb.Helper()
	size := len(raw) / 2
	der, err := asn1.Marshal(verifyECDSASig{new(big.Int).SetBytes(raw[:size]), new(big.Int).SetBytes(raw[size:])})
	if err != nil {
		tb.Fatal(err)
	}
	return der
}

// verifySign returns input "." signature, signing input exactly as given.
func verifySign(tb testing.TB, k *jwkstest.Key, alg, input string) string {
	tb.Helper()
	return input + "." + verifyEnc(signInput(tb, k.Private, alg, []byte(input)))
}

// verifyRaw signs exact header and payload JSON text with the fixture key for alg.
func verifyRaw(tb testing.TB, f *fixture, alg, header, payload string) string {
	tb.Helper()
	return f.keys[alg].SignRaw(tb, []byte(header), []byte(payload))
}

// verifyHeader is the fixture's header JSON for alg with extra merged in
// (a nil value removes a member).
func verifyHeader(tb testing.TB, alg string, extra map[string]any) string {
	tb.Helper()
	h := map[string]any{"alg": alg, "kid": "kid-" + alg, "typ": "JWT"}
	for k, v := range extra {
		if v == nil {
			delete(h, k)
		} else {
			h[k] = v
		}
	}
	return verifyJSON(tb, h)
}

// verifyAbsent, as a value in verifyClaims, removes the claim (nil sets null).
var verifyAbsent = &struct{ absent bool }{true}

// verifyClaims returns the fixture's valid claims with set merged in.
func verifyClaims(f *fixture, set map[string]any) map[string]any {
	c := f.claims()
	for k, v := range set {
		if v == verifyAbsent {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// verifyWith builds an ES256 token with the fixture claims changed by set.
func verifyWith(set map[string]any) func(testing.TB, *fixture) string {
	return verifyWithAlg("ES256", set, nil)
}

func verifyWithAlg(alg string, set, header map[string]any) func(testing.TB, *fixture) string {
	return func(tb testing.TB, f *fixture) string {
		return f.token(tb, alg, verifyClaims(f, set), header)
	}
}

// verifyRawPayload builds an ES256 token over exact payload JSON text.
func verifyRawPayload(payload string) func(testing.TB, *fixture) string {
	return func(tb testing.TB, f *fixture) string {
		return verifyRaw(tb, f, "ES256", verifyHeader(tb, "ES256", nil), payload)
	}
}

// verifyPayloadExp is valid payload JSON text with exp as given (raw JSON).
func verifyPayloadExp(exp string) string {
	return fmt.Sprintf(`{"iss":%q,"aud":%q,"sub":"user-1","iat":%d,"exp":%s}`, testIss, testAud, testNow.Unix(), exp)
}

// verifyRawHeader builds an ES256-signed token over exact header JSON text.
func verifyRawHeader(header string) func(testing.TB, *fixture) string {
	return func(tb testing.TB, f *fixture) string {
		return verifyRaw(tb, f, "ES256", header, verifyJSON(tb, f.claims()))
	}
}

const verifyAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// verifyNonCanonical sets an unused trailing bit of a base64url segment,
// which a lenient decoder maps to the same bytes.
func verifyNonCanonical(tb testing.TB, seg string) string {
	tb.Helper()
	if len(seg)%4 != 2 && len(seg)%4 != 3 {
		tb.Fatalf("segment of length %d has no unused bits", len(seg))
	}
	last := strings.IndexByte(verifyAlphabet, seg[len(seg)-1])
	return seg[:len(seg)-1] + string(verifyAlphabet[last^1])
}

// verifyPadded finds a claims filler for which enc(header) and
// enc(payload) have the lengths wanted by ok, and returns that JSON.
func verifyPadded(tb testing.TB, f *fixture, ok func(payloadLen int) bool) string {
	tb.Helper()
	for n := 0; n < 8; n++ {
		p := verifyJSON(tb, verifyClaims(f, map[string]any{"pad": strings.Repeat("p", n)}))
		if ok(len(p)) {
			return p
		}
	}
	tb.Fatal("no filler length fits")
	return ""
}

// verifyTokenOfLen builds a valid token of exactly n bytes for alg, by
// padding a claim (and, where base64 cannot reach n, a header member).
func verifyTokenOfLen(tb testing.TB, f *fixture, alg string, n int) string {
	tb.Helper()
	_, _, sig := verifySegs(tb, f.token(tb, alg, f.claims(), nil))
	sigLen := len(sig)
	claims := verifyClaims(f, map[string]any{"pad": ""})
	base := len(verifyJSON(tb, claims))
	enc := base64.RawURLEncoding
	for hx := range 4 {
		extra := map[string]any{"x": strings.Repeat("h", hx)}
		hlen := enc.EncodedLen(len(verifyHeader(tb, alg, extra)))
		for pad := 0; hlen+1+enc.EncodedLen(base+pad)+1+sigLen <= n; pad++ {
			if hlen+1+enc.EncodedLen(base+pad)+1+sigLen == n {
				claims["pad"] = strings.Repeat("p", pad)
				tok := f.token(tb, alg, claims, extra)
				if len(tok) != n {
					tb.Fatalf("built %d bytes, want %d", len(tok), n)
				}
				return tok
			}
		}
	}
	tb.Fatalf("cannot build a %s token of %d bytes", alg, n)
	return ""
}

func TestVerifyValid(t *testing.T) {
	var cases []verifyCase
	for _, alg := range fixtureAlgs {
		cases = append(cases,
			verifyCase{name: alg, token: verifyWithAlg(alg, nil, nil), want: "ok"},
			verifyCase{name: alg + "/no typ", token: verifyWithAlg(alg, nil, map[string]any{"typ": nil}), want: "ok"},
		)
	}
	cases = append(cases,
		// Unknown non-critical header parameters are ignored (RFC 7515 §4),
		// and so are certificate thumbprints: they name no key or URL.
		verifyCase{name: "unknown header member", token: verifyWithAlg("ES256", nil, map[string]any{"foo": []any{1, "x"}}), want: "ok"},
		verifyCase{name: "x5t thumbprint", token: verifyWithAlg("ES256", nil, map[string]any{"x5t#S256": "dGh1bWJwcmludA"}), want: "ok"},
		verifyCase{name: "only iss aud exp", token: verifyWith(map[string]any{"sub": verifyAbsent, "jti": verifyAbsent, "iat": verifyAbsent}), want: "ok"},
		verifyCase{name: "extra claims of every type", token: verifyWith(map[string]any{"roles": []any{"a", "b"}, "n": 1.5, "o": map[string]any{"x": nil}}), want: "ok"},
	)
	verifyRun(t, cases)
}

func TestVerifyShape(t *testing.T) {
	valid := func(tb testing.TB, f *fixture) (h, p, s string) {
		return verifySegs(tb, f.token(tb, "ES256", f.claims(), nil))
	}
	jsonSer := func(build func(h, p, s string) any) func(testing.TB, *fixture) string {
		return func(tb testing.TB, f *fixture) string {
			h, p, s := valid(tb, f)
			return verifyJSON(tb, build(h, p, s))
		}
	}
	insert := func(at func(h, p, s string) string) func(testing.TB, *fixture) string {
		return func(tb testing.TB, f *fixture) string { return at(valid(tb, f)) }
	}
	cases := []verifyCase{
		// JWS JSON serialization, built around a genuinely signed token.
		{name: "json/flattened", token: jsonSer(func(h, p, s string) any {
			return map[string]any{"protected": h, "payload": p, "signature": s}
		}), want: "malformed_token", bearer: verifyNotBearer},
		{name: "json/flattened with unprotected header and smuggled members", token: jsonSer(func(h, p, s string) any {
			return map[string]any{"protected": h, "header": map[string]any{"kid": "kid-ES256", "alg": "none"},
				"payload": p, "signature": s, "iss": testIss, "sub": "admin", "claims": map[string]any{"sub": "admin"}}
		}), want: "malformed_token", bearer: verifyNotBearer},
		{name: "json/flattened with kid only in the unprotected header", token: func(tb testing.TB, f *fixture) string {
			h := verifyEnc([]byte(verifyHeader(tb, "ES256", map[string]any{"kid": nil})))
			tok := verifySign(tb, f.keys["ES256"], "ES256", h+"."+verifyEnc([]byte(verifyJSON(tb, f.claims()))))
			_, p, s := verifySegs(tb, tok)
			return verifyJSON(tb, map[string]any{"protected": h, "header": map[string]any{"kid": "kid-ES256"}, "payload": p, "signature": s})
		}, want: "malformed_token", bearer: verifyNotBearer},
		{name: "json/general", token: jsonSer(func(h, p, s string) any {
			return map[string]any{"payload": p, "signatures": []any{map[string]any{"protected": h, "header": map[string]any{"kid": "kid-ES256"}, "signature": s}}}
		}), want: "malformed_token", bearer: verifyNotBearer},
		{name: "json/general with a forged second signature", token: jsonSer(func(h, p, s string) any {
			return map[string]any{"payload": p, "signatures": []any{
				map[string]any{"protected": h, "signature": s},
				map[string]any{"protected": verifyEnc([]byte(`{"alg":"none"}`)), "signature": ""},
			}}
		}), want: "malformed_token", bearer: verifyNotBearer},
		{name: "json/after whitespace", token: func(tb testing.TB, f *fixture) string {
			h, p, s := valid(tb, f)
			return "\n" + `{"protected":"` + h + `","payload":"` + p + `","signature":"` + s + `"}`
		}, want: "malformed_token", bearer: verifyNotBearer},

		// Segment counts.
		{name: "segments/1", token: insert(func(h, p, s string) string { return h }), want: "malformed_token"},
		{name: "segments/2 header.payload", token: insert(func(h, p, s string) string { return h + "." + p }), want: "malformed_token"},
		{name: "segments/4", token: insert(func(h, p, s string) string { return h + "." + p + "." + s + "." + s }), want: "malformed_token"},
		{name: "segments/5 JWE-like", token: func(tb testing.TB, f *fixture) string {
			seg := func(n int) string { return verifyEnc(make([]byte, n)) }
			return verifyEnc([]byte(`{"alg":"RSA-OAEP-256","enc":"A256GCM","kid":"kid-RS256"}`)) + "." + seg(256) + "." + seg(12) + "." + seg(40) + "." + seg(16)
		}, want: "malformed_token"},
		{name: "segments/5 JWE-like direct", token: func(tb testing.TB, f *fixture) string {
			return verifyEnc([]byte(`{"alg":"dir","enc":"A128GCM","kid":"kid-ES256"}`)) + "..AAAAAAAAAAAAAAAA.AAAA.AAAAAAAAAAAAAAAAAAAAAA"
		}, want: "malformed_token"},
		{name: "segments/6", token: insert(func(h, p, s string) string { return strings.Join([]string{h, p, s, h, p, s}, ".") }), want: "malformed_token"},

		// Empty segments.
		{name: "empty/header", token: insert(func(h, p, s string) string { return "." + p + "." + s }), want: "malformed_token"},
		{name: "empty/payload, genuinely signed", token: func(tb testing.TB, f *fixture) string {
			h, _, _ := valid(tb, f)
			return verifySign(tb, f.keys["ES256"], "ES256", h+".")
		}, want: "malformed_token"},
		{name: "empty/signature", token: insert(func(h, p, s string) string { return h + "." + p + "." }), want: "malformed_token"},
		{name: "empty/all", token: insert(func(h, p, s string) string { return ".." }), want: "malformed_token"},
		{name: "empty/trailing dot", token: insert(func(h, p, s string) string { return h + "." + p + "." + s + "." }), want: "malformed_token"},
		{name: "empty/leading dot", token: insert(func(h, p, s string) string { return "." + h + "." + p + "." + s }), want: "malformed_token"},
		{name: "empty/double dot", token: insert(func(h, p, s string) string { return h + ".." + p + "." + s }), want: "malformed_token"},

		// Characters outside base64url.
		{name: "chars/space after a dot", token: insert(func(h, p, s string) string { return h + ". " + p + "." + s }), want: "malformed_token", bearer: verifyNotBearer},
		{name: "chars/newline in signature", token: insert(func(h, p, s string) string { return h + "." + p + "." + s[:40] + "\n" + s[40:] }), want: "malformed_token", bearer: verifyNotBearer},
		{name: "chars/CRLF in payload", token: insert(func(h, p, s string) string { return h + "." + p[:20] + "\r\n" + p[20:] + "." + s }), want: "malformed_token", bearer: verifyNotBearer},
		{name: "chars/tab in header", token: insert(func(h, p, s string) string { return h[:10] + "\t" + h[10:] + "." + p + "." + s }), want: "malformed_token", bearer: verifyNotBearer},
		{name: "chars/newline, genuinely signed", token: func(tb testing.TB, f *fixture) string {
			h, p, _ := valid(tb, f)
			return verifySign(tb, f.keys["ES256"], "ES256", h+"."+p[:20]+"\n"+p[20:])
		}, want: "malformed_token", bearer: verifyNotBearer},
		{name: "chars/percent-encoded dot", token: insert(func(h, p, s string) string { return h + "%2E" + p + "." + s }), want: "malformed_token", bearer: verifyNotBearer},
		{name: "chars/asterisk", token: insert(func(h, p, s string) string { return h + "." + p + "*." + s }), want: "malformed_token", bearer: verifyNotBearer},
		{name: "chars/non-ASCII", token: insert(func(h, p, s string) string { return h + "." + p + "é." + s }), want: "malformed_token", bearer: verifyNotBearer},
		{name: "chars/NUL", token: insert(func(h, p, s string) string { return h + "." + p + "." + s + "\x00" }), want: "malformed_token", bearer: verifyNotBearer},
		{name: "chars/tilde", token: insert(func(h, p, s string) string { return h + "." + p + "." + s + "~" }), want: "malformed_token"},
		{name: "chars/std alphabet + and /, genuinely signed", token: func(tb testing.TB, f *fixture) string {
			// "~~~~~~" encodes to a run holding both 62 and 63 in any
			// alignment, so the standard alphabet shows '+' or '/'.
			std := base64.RawStdEncoding
			in := std.EncodeToString([]byte(verifyHeader(tb, "ES256", nil))) + "." +
				std.EncodeToString([]byte(verifyJSON(tb, verifyClaims(f, map[string]any{"x": "~~~~~~??????"}))))
			if !strings.ContainsAny(in, "+/") {
				tb.Fatal("no + or / in the signing input")
			}
			return verifySign(tb, f.keys["ES256"], "ES256", in)
		}, want: "malformed_token"},
		{name: "chars/std alphabet in signature", token: func(tb testing.TB, f *fixture) string {
			for {
				tok := f.token(tb, "ES256", f.claims(), nil)
				if i := strings.LastIndexByte(tok, '.'); strings.ContainsAny(tok[i:], "-_") {
					return tok[:i] + strings.NewReplacer("-", "+", "_", "/").Replace(tok[i:])
				}
			}
		}, want: "malformed_token"},

		// Padding.
		{name: "padding/signature", token: insert(func(h, p, s string) string { return h + "." + p + "." + s + strings.Repeat("=", (4-len(s)%4)%4) }), want: "malformed_token"},
		{name: "padding/payload, genuinely signed", token: func(tb testing.TB, f *fixture) string {
			h, _, _ := valid(tb, f)
			p := verifyPadded(tb, f, func(n int) bool { return n%3 != 0 })
			return verifySign(tb, f.keys["ES256"], "ES256", h+"."+base64.URLEncoding.EncodeToString([]byte(p)))
		}, want: "malformed_token", bearer: verifyNotBearer},
		{name: "padding/header, genuinely signed", token: func(tb testing.TB, f *fixture) string {
			hj := verifyHeader(tb, "ES256", map[string]any{"x": "y"})
			if len(hj)%3 == 0 {
				hj = verifyHeader(tb, "ES256", map[string]any{"x": "yy"})
			}
			return verifySign(tb, f.keys["ES256"], "ES256", base64.URLEncoding.EncodeToString([]byte(hj))+"."+verifyEnc([]byte(verifyJSON(tb, f.claims()))))
		}, want: "malformed_token", bearer: verifyNotBearer},
		{name: "padding/bare =", token: insert(func(h, p, s string) string { return h + "." + p + "." + s + "=" }), want: "malformed_token"},

		// Non-canonical base64url: set unused trailing bits, so the
		// segment decodes to the same bytes as the canonical one.
		{name: "noncanonical/header, genuinely signed", token: func(tb testing.TB, f *fixture) string {
			p := verifyEnc([]byte(verifyJSON(tb, f.claims())))
			for n := 0; ; n++ {
				h := verifyEnc([]byte(verifyHeader(tb, "ES256", map[string]any{"x": strings.Repeat("y", n)})))
				if len(h)%4 != 0 {
					return verifySign(tb, f.keys["ES256"], "ES256", verifyNonCanonical(tb, h)+"."+p)
				}
			}
		}, want: "malformed_token"},
		{name: "noncanonical/payload, genuinely signed", token: func(tb testing.TB, f *fixture) string {
			h, _, _ := valid(tb, f)
			p := verifyPadded(tb, f, func(n int) bool { return n%3 != 0 })
			return verifySign(tb, f.keys["ES256"], "ES256", h+"."+verifyNonCanonical(tb, verifyEnc([]byte(p))))
		}, want: "malformed_token"},
		{name: "noncanonical/signature length 4k+1", token: insert(func(h, p, s string) string { return h + "." + p + "." + s + strings.Repeat("A", (5-len(s)%4)%4) }), want: "malformed_token"},
	}
	for _, alg := range []string{"RS256", "PS256", "ES256", "EdDSA"} {
		cases = append(cases, verifyCase{name: "noncanonical/signature " + alg, token: func(tb testing.TB, f *fixture) string {
			h, p, s := verifySegs(tb, f.token(tb, alg, f.claims(), nil))
			return h + "." + p + "." + verifyNonCanonical(tb, s)
		}, want: "malformed_token"})
	}
	verifyRun(t, cases)
}

func TestVerifySize(t *testing.T) {
	verifyRun(t, []verifyCase{
		{name: "exactly MaxSize, ES256", token: func(tb testing.TB, f *fixture) string { return verifyTokenOfLen(tb, f, "ES256", 8<<10) }, want: "ok"},
		{name: "exactly MaxSize, RS256", token: func(tb testing.TB, f *fixture) string { return verifyTokenOfLen(tb, f, "RS256", 8<<10) }, want: "ok"},
		{name: "one byte over MaxSize, validly signed", token: func(tb testing.TB, f *fixture) string { return verifyTokenOfLen(tb, f, "ES256", 8<<10+1) }, want: "token_too_large"},
		{name: "far over MaxSize", token: func(testing.TB, *fixture) string { return strings.Repeat("A", 1<<20) }, want: "token_too_large"},
		{name: "over MaxSize, JSON serialization", token: func(testing.TB, *fixture) string { return `{"payload":"` + strings.Repeat("A", 9000) + `"}` }, want: "token_too_large", bearer: verifyNotBearer},
		{name: "over MaxSize, dots only", token: func(testing.TB, *fixture) string { return strings.Repeat(".", 8<<10+1) }, want: "token_too_large"},
		{name: "configured MaxSize, at the limit", cfg: func(c *Config) { c.MaxSize = 1000 }, token: func(tb testing.TB, f *fixture) string { return verifyTokenOfLen(tb, f, "RS256", 1000) }, want: "ok"},
		{name: "configured MaxSize, over the limit", cfg: func(c *Config) { c.MaxSize = 1000 }, token: func(tb testing.TB, f *fixture) string { return verifyTokenOfLen(tb, f, "EdDSA", 1001) }, want: "token_too_large"},
	})
}

func TestVerifyHeader(t *testing.T) {
	h := func(members string) func(testing.TB, *fixture) string { return verifyRawHeader(members) }
	cases := []verifyCase{
		// Not a JSON object.
		{name: "json/not JSON", token: h(`alg=ES256`), want: "malformed_token"},
		{name: "json/truncated", token: h(`{"alg":"ES256","kid":"kid-ES256"`), want: "malformed_token"},
		{name: "json/array", token: h(`[{"alg":"ES256","kid":"kid-ES256"}]`), want: "malformed_token"},
		{name: "json/string", token: h(`"ES256"`), want: "malformed_token"},
		{name: "json/null", token: h(`null`), want: "malformed_token"},
		{name: "json/number", token: h(`42`), want: "malformed_token"},
		{name: "json/empty", token: h(` `), want: "malformed_token"},
		{name: "json/trailing object", token: h(`{"alg":"ES256","kid":"kid-ES256"}{"alg":"none"}`), want: "malformed_token"},
		{name: "json/trailing garbage", token: h(`{"alg":"ES256","kid":"kid-ES256"}x`), want: "malformed_token"},
		{name: "json/single quotes", token: h(`{'alg':'ES256','kid':'kid-ES256'}`), want: "malformed_token"},
		{name: "json/trailing comma", token: h(`{"alg":"ES256","kid":"kid-ES256",}`), want: "malformed_token"},

		// Duplicate member names (RFC 7515 §5.2): no two parsers may read
		// different values from the same header.
		{name: "duplicate/alg, allowed one first", token: h(`{"alg":"ES256","kid":"kid-ES256","alg":"none"}`), want: "malformed_token"},
		{name: "duplicate/alg, allowed one last", token: h(`{"alg":"none","kid":"kid-ES256","alg":"ES256"}`), want: "malformed_token"},
		{name: "duplicate/alg, same value", token: h(`{"alg":"ES256","alg":"ES256","kid":"kid-ES256"}`), want: "malformed_token"},
		{name: "duplicate/alg, escaped name", token: h(`{"alg":"ES256","kid":"kid-ES256","\u0061lg":"HS256"}`), want: "malformed_token"},
		{name: "duplicate/kid", token: h(`{"alg":"ES256","kid":"kid-ES256","kid":"kid-RS256"}`), want: "malformed_token"},
		{name: "duplicate/kid, escaped name", token: h(`{"alg":"ES256","k\u0069d":"kid-RS256","kid":"kid-ES256"}`), want: "malformed_token"},
		{name: "duplicate/typ", token: h(`{"alg":"ES256","kid":"kid-ES256","typ":"JWT","typ":"JWT"}`), want: "malformed_token"},
		{name: "duplicate/jku hidden by escaping", token: h(`{"alg":"ES256","kid":"kid-ES256","j\u006bu":"https://evil.test/"}`), want: "forbidden_header"},

		// alg.
		{name: "alg/missing", token: h(`{"kid":"kid-ES256"}`), want: "malformed_token"},
		{name: "alg/empty object header", token: h(`{}`), want: "malformed_token"},
		{name: "alg/empty string", token: h(`{"alg":"","kid":"kid-ES256"}`), want: "malformed_token"},
		{name: "alg/null", token: h(`{"alg":null,"kid":"kid-ES256"}`), want: "malformed_token"},
		{name: "alg/number", token: h(`{"alg":256,"kid":"kid-ES256"}`), want: "malformed_token"},
		{name: "alg/bool", token: h(`{"alg":true,"kid":"kid-ES256"}`), want: "malformed_token"},
		{name: "alg/array", token: h(`{"alg":["ES256"],"kid":"kid-ES256"}`), want: "malformed_token"},
		{name: "alg/object", token: h(`{"alg":{"name":"ES256"},"kid":"kid-ES256"}`), want: "malformed_token"},

		// kid.
		{name: "kid/missing", token: h(`{"alg":"ES256"}`), want: "missing_kid"},
		{name: "kid/empty", token: h(`{"alg":"ES256","kid":""}`), want: "missing_kid"},
		{name: "kid/number", token: h(`{"alg":"ES256","kid":1}`), want: "missing_kid"},
		{name: "kid/null", token: h(`{"alg":"ES256","kid":null}`), want: "missing_kid"},
		{name: "kid/bool", token: h(`{"alg":"ES256","kid":false}`), want: "missing_kid"},
		{name: "kid/array", token: h(`{"alg":"ES256","kid":["kid-ES256"]}`), want: "missing_kid"},
		{name: "kid/object", token: h(`{"alg":"ES256","kid":{"id":"kid-ES256"}}`), want: "missing_kid"},
		{name: "kid/unknown", token: h(`{"alg":"ES256","kid":"kid-nope"}`), want: "unknown_key"},
		{name: "kid/differs in case", token: h(`{"alg":"ES256","kid":"KID-ES256"}`), want: "unknown_key"},
		{name: "kid/trailing space", token: h(`{"alg":"ES256","kid":"kid-ES256 "}`), want: "unknown_key"},
		{name: "kid/with NUL", token: h(`{"alg":"ES256","kid":"kid-ES256\u0000"}`), want: "unknown_key"},
		{name: "kid/path traversal", token: h(`{"alg":"ES256","kid":"../../kid-ES256"}`), want: "unknown_key"},
		{name: "kid/unknown, signed by a stranger", token: func(tb testing.TB, f *fixture) string {
			return jwkstest.NewKey(tb, "ES256", "stranger").Sign(tb, f.claims(), nil)
		}, want: "unknown_key"},

		// crit and b64: no extension is understood.
		{name: "crit/registered name", token: verifyWithAlg("ES256", nil, map[string]any{"crit": []any{"exp"}, "exp": 1}), want: "forbidden_header"},
		{name: "crit/extension present", token: verifyWithAlg("ES256", nil, map[string]any{"crit": []any{"https://ext.test/x"}, "https://ext.test/x": true}), want: "forbidden_header"},
		{name: "crit/extension absent", token: verifyWithAlg("ES256", nil, map[string]any{"crit": []any{"nope"}}), want: "forbidden_header"},
		{name: "crit/empty array", token: verifyWithAlg("ES256", nil, map[string]any{"crit": []any{}}), want: "forbidden_header"},
		{name: "crit/string", token: verifyWithAlg("ES256", nil, map[string]any{"crit": "b64"}), want: "forbidden_header"},
		{name: "crit/null", token: h(`{"alg":"ES256","kid":"kid-ES256","crit":null}`), want: "forbidden_header"},
		{name: "crit/b64 false", token: verifyWithAlg("ES256", nil, map[string]any{"crit": []any{"b64"}, "b64": false}), want: "forbidden_header"},
		{name: "b64/false without crit", token: verifyWithAlg("ES256", nil, map[string]any{"b64": false}), want: "forbidden_header"},
		{name: "b64/true", token: verifyWithAlg("ES256", nil, map[string]any{"b64": true}), want: "forbidden_header"},
		{name: "b64/string", token: verifyWithAlg("ES256", nil, map[string]any{"b64": "false"}), want: "forbidden_header"},
		{name: "b64/false over an unencoded payload", token: func(tb testing.TB, f *fixture) string {
			// RFC 7797: the signing input is header "." raw payload.
			hs := verifyEnc([]byte(verifyHeader(tb, "ES256", map[string]any{"crit": []any{"b64"}, "b64": false})))
			sig := signInput(tb, f.keys["ES256"].Private, "ES256", []byte(hs+"."+"eyJzdWIiOiJhZG1pbiJ9"))
			return hs + ".eyJzdWIiOiJhZG1pbiJ9." + verifyEnc(sig)
		}, want: "forbidden_header"},
	}

	// alg none in any casing, with and without a signature.
	for _, none := range []string{"none", "None", "NONE", "nOnE", "NoNe"} {
		hdr := fmt.Sprintf(`{"alg":%q,"kid":"kid-ES256","typ":"JWT"}`, none)
		cases = append(cases,
			verifyCase{name: "none/" + none + " with a signature", token: h(hdr), want: "algorithm_not_allowed"},
			verifyCase{name: "none/" + none + " without kid", token: h(fmt.Sprintf(`{"alg":%q}`, none)), want: "algorithm_not_allowed"},
			verifyCase{name: "none/" + none + " with an empty signature", token: func(tb testing.TB, f *fixture) string {
				return verifyEnc([]byte(hdr)) + "." + verifyEnc([]byte(verifyJSON(tb, f.claims()))) + "."
			}, want: "malformed_token"},
			verifyCase{name: "none/" + none + " even when the allowlist names it", cfg: func(c *Config) {
				c.Issuers[0].Algorithms = append(c.Issuers[0].Algorithms, none)
			}, token: h(hdr), want: "algorithm_not_allowed"},
		)
	}

	// Keys, certificates and URLs in the header are refused, whoever
	// signed, whatever kid is named.
	attacker := func(tb testing.TB, alg, kid string) *jwkstest.Key { return jwkstest.NewKey(tb, alg, kid) }
	for _, alg := range []string{"ES256", "EdDSA"} {
		cases = append(cases,
			verifyCase{name: "jwk/" + alg + " attacker's own key and kid", token: func(tb testing.TB, f *fixture) string {
				a := attacker(tb, alg, "attacker")
				return a.Sign(tb, f.claims(), map[string]any{"jwk": a.JWK()})
			}, want: "forbidden_header"},
			verifyCase{name: "jwk/" + alg + " attacker's key under the trusted kid", token: func(tb testing.TB, f *fixture) string {
				a := attacker(tb, alg, "kid-"+alg)
				return a.Sign(tb, f.claims(), map[string]any{"jwk": a.JWK()})
			}, want: "forbidden_header"},
			verifyCase{name: "jwk/" + alg + " attacker's key, no kid", token: func(tb testing.TB, f *fixture) string {
				a := attacker(tb, alg, "attacker")
				return a.Sign(tb, f.claims(), map[string]any{"jwk": a.JWK(), "kid": nil})
			}, want: "forbidden_header"},
			verifyCase{name: "jwk/" + alg + " the trusted key itself, validly signed", token: func(tb testing.TB, f *fixture) string {
				return f.token(tb, alg, f.claims(), map[string]any{"jwk": f.keys[alg].JWK()})
			}, want: "forbidden_header"},
		)
	}
	forbidden := map[string]func(tb testing.TB, a *jwkstest.Key) any{
		"jku":       func(testing.TB, *jwkstest.Key) any { return "https://attacker.test/jwks" },
		"jku local": func(testing.TB, *jwkstest.Key) any { return "http://127.0.0.1:1/jwks" },
		"x5u":       func(testing.TB, *jwkstest.Key) any { return "https://attacker.test/cert.pem" },
		"x5c":       func(tb testing.TB, a *jwkstest.Key) any { return []any{verifyCert(tb, a)} },
		"x5c empty": func(testing.TB, *jwkstest.Key) any { return []any{} },
		"jwk null":  func(testing.TB, *jwkstest.Key) any { return json.RawMessage("null") },
		"jwk oct":   func(testing.TB, *jwkstest.Key) any { return map[string]any{"kty": "oct", "k": "c2VjcmV0"} },
	}
	for what, value := range forbidden {
		name := strings.Fields(what)[0]
		cases = append(cases,
			verifyCase{name: name + "/" + what + ", attacker-signed", token: func(tb testing.TB, f *fixture) string {
				a := attacker(tb, "ES256", "attacker")
				return a.Sign(tb, f.claims(), map[string]any{name: value(tb, a)})
			}, want: "forbidden_header"},
			verifyCase{name: name + "/" + what + ", attacker-signed under the trusted kid", token: func(tb testing.TB, f *fixture) string {
				a := attacker(tb, "ES256", "kid-ES256")
				return a.Sign(tb, f.claims(), map[string]any{name: value(tb, a)})
			}, want: "forbidden_header"},
			verifyCase{name: name + "/" + what + ", validly signed", token: func(tb testing.TB, f *fixture) string {
				return f.token(tb, "ES256", f.claims(), map[string]any{name: value(tb, f.keys["ES256"])})
			}, want: "forbidden_header"},
		)
	}
	cases = append(cases,
		verifyCase{name: "precedence/jwk with alg none", token: h(`{"alg":"none","jwk":{"kty":"oct","k":"c2VjcmV0"}}`), want: "forbidden_header"},
		verifyCase{name: "precedence/jku with unknown kid", token: h(`{"alg":"ES256","kid":"rotated","jku":"https://issuer.test/jwks"}`), want: "forbidden_header"},
	)
	verifyRun(t, cases)
}

// verifyCert is a base64 (standard, padded, as x5c wants) self-signed
// certificate for k.
func verifyCert(tb testing.TB, k *jwkstest.Key) string {
	tb.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "issuer.test"},
		NotBefore:    testNow.Add(-time.Hour),
		NotAfter:     testNow.Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Private.Public(), k.Private)
	if err != nil {
		tb.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(der)
}

func TestVerifyAlgorithms(t *testing.T) {
	// signAs signs the fixture claims under header alg/kid with the
	// fixture key of keyAlg, using algorithm sigAlg.
	signAs := func(alg, kid, keyAlg, sigAlg string) func(testing.TB, *fixture) string {
		return func(tb testing.TB, f *fixture) string {
			hdr := verifyHeader(tb, alg, map[string]any{"kid": kid})
			in := verifyEnc([]byte(hdr)) + "." + verifyEnc([]byte(verifyJSON(tb, f.claims())))
			return verifySign(tb, f.keys[keyAlg], sigAlg, in)
		}
	}
	only := func(algs ...string) func(*Config) {
		return func(c *Config) { c.Issuers[0].Algorithms = algs }
	}
	plus := func(algs ...string) func(*Config) {
		return func(c *Config) { c.Issuers[0].Algorithms = append(c.Issuers[0].Algorithms, algs...) }
	}
	cases := []verifyCase{
		// The issuer's allowlist.
		{name: "allowlist/RS256 only, RS256 token", cfg: only("RS256"), token: verifyWithAlg("RS256", nil, nil), want: "ok"},
		{name: "allowlist/RS256 only, ES256 token", cfg: only("RS256"), token: verifyWithAlg("ES256", nil, nil), want: "algorithm_not_allowed"},
		{name: "allowlist/RS256 only, PS256 token", cfg: only("RS256"), token: verifyWithAlg("PS256", nil, nil), want: "algorithm_not_allowed"},
		{name: "allowlist/RS256 only, EdDSA token", cfg: only("RS256"), token: verifyWithAlg("EdDSA", nil, nil), want: "algorithm_not_allowed"},
		{name: "allowlist/ES256 only, ES384 token", cfg: only("ES256"), token: verifyWithAlg("ES384", nil, nil), want: "algorithm_not_allowed"},
		{name: "allowlist/empty", cfg: only(), token: verifyWithAlg("ES256", nil, nil), want: "algorithm_not_allowed"},

		// The header alg must be the key's algorithm.
		{name: "key/RS384 header, RS256 key", token: signAs("RS384", "kid-RS256", "RS256", "RS384"), want: "algorithm_not_allowed"},
		{name: "key/RS384 header, RS256 key, RS384 allowed", cfg: plus("RS384"), token: signAs("RS384", "kid-RS256", "RS256", "RS384"), want: "algorithm_not_allowed"},
		{name: "key/RS512 header, RS256 key, RS512 allowed", cfg: plus("RS512"), token: signAs("RS512", "kid-RS256", "RS256", "RS512"), want: "algorithm_not_allowed"},
		{name: "key/PS256 header, RS256 key (same RSA key, valid PSS)", token: signAs("PS256", "kid-RS256", "RS256", "PS256"), want: "algorithm_not_allowed"},
		{name: "key/RS256 header, PS256 key (same RSA key, valid PKCS1)", token: signAs("RS256", "kid-PS256", "PS256", "RS256"), want: "algorithm_not_allowed"},
		{name: "key/ES256 header, RSA key", token: signAs("ES256", "kid-RS256", "ES256", "ES256"), want: "algorithm_not_allowed"},
		{name: "key/ES384 header, ES256 key", token: signAs("ES384", "kid-ES256", "ES384", "ES384"), want: "algorithm_not_allowed"},
		{name: "key/ES256 header, ES384 key", token: signAs("ES256", "kid-ES384", "ES256", "ES256"), want: "algorithm_not_allowed"},
		{name: "key/EdDSA header, ES256 key", token: signAs("EdDSA", "kid-ES256", "EdDSA", "EdDSA"), want: "algorithm_not_allowed"},
		{name: "key/ES256 header, EdDSA key", token: signAs("ES256", "kid-EdDSA", "ES256", "ES256"), want: "algorithm_not_allowed"},
		{name: "key/RS256 header, EdDSA key", token: signAs("RS256", "kid-EdDSA", "RS256", "RS256"), want: "algorithm_not_allowed"},

		// Names that only look like an allowed algorithm.
		{name: "name/rs256", token: signAs("rs256", "kid-RS256", "RS256", "RS256"), want: "algorithm_not_allowed"},
		{name: "name/Rs256", token: signAs("Rs256", "kid-RS256", "RS256", "RS256"), want: "algorithm_not_allowed"},
		{name: "name/es256", token: signAs("es256", "kid-ES256", "ES256", "ES256"), want: "algorithm_not_allowed"},
		{name: "name/eddsa", token: signAs("eddsa", "kid-EdDSA", "EdDSA", "EdDSA"), want: "algorithm_not_allowed"},
		{name: "name/rs256 with rs256 in the allowlist", cfg: plus("rs256"), token: signAs("rs256", "kid-RS256", "RS256", "RS256"), want: "algorithm_not_allowed"},
		{name: "name/trailing space", token: signAs("RS256 ", "kid-RS256", "RS256", "RS256"), want: "algorithm_not_allowed"},
		{name: "name/trailing NUL", token: signAs("ES256\x00", "kid-ES256", "ES256", "ES256"), want: "algorithm_not_allowed"},
		{name: "name/Ed25519 (fully specified)", token: signAs("Ed25519", "kid-EdDSA", "EdDSA", "EdDSA"), want: "algorithm_not_allowed"},
		{name: "name/Ed25519 in the allowlist", cfg: plus("Ed25519"), token: signAs("Ed25519", "kid-EdDSA", "EdDSA", "EdDSA"), want: "algorithm_not_allowed"},
		{name: "name/ES256K", token: signAs("ES256K", "kid-ES256", "ES256", "ES256"), want: "algorithm_not_allowed"},
	}

	// HMAC with a public key as the secret (CVE-2015-9235 and kin).
	type secret struct {
		name, kid string
		bytes     func(testing.TB, *fixture) []byte
	}
	rsaPub := func(f *fixture) *rsa.PublicKey { return &f.keys["RS256"].Private.(*rsa.PrivateKey).PublicKey }
	secrets := []secret{
		{"RSA PKIX PEM", "kid-RS256", func(tb testing.TB, f *fixture) []byte {
			der, err := x509.MarshalPKIXPublicKey(rsaPub(f))
			if err != nil {
				tb.Fatal(err)
			}
			return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
		}},
		{"RSA PKCS1 PEM", "kid-RS256", func(tb testing.TB, f *fixture) []byte {
			return pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(rsaPub(f))})
		}},
		{"RSA PKIX DER", "kid-RS256", func(tb testing.TB, f *fixture) []byte {
			der, err := x509.MarshalPKIXPublicKey(rsaPub(f))
			if err != nil {
				tb.Fatal(err)
			}
			return der
		}},
		{"RSA PKCS1 DER", "kid-RS256", func(tb testing.TB, f *fixture) []byte { return x509.MarshalPKCS1PublicKey(rsaPub(f)) }},
		{"RSA modulus bytes", "kid-RS256", func(tb testing.TB, f *fixture) []byte { return rsaPub(f).N.Bytes() }},
		{"RSA JWK n text", "kid-RS256", func(tb testing.TB, f *fixture) []byte { return []byte(f.keys["RS256"].JWK()["n"].(string)) }},
		{"RSA JWK JSON", "kid-RS256", func(tb testing.TB, f *fixture) []byte { return []byte(verifyJSON(tb, f.keys["RS256"].JWK())) }},
		{"PS256 key PEM", "kid-PS256", func(tb testing.TB, f *fixture) []byte {
			return pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(rsaPub(f))})
		}},
		{"EC SEC1 point", "kid-ES256", func(tb testing.TB, f *fixture) []byte {
			b, err := f.keys["ES256"].Private.(*ecdsa.PrivateKey).PublicKey.Bytes()
			if err != nil {
				tb.Fatal(err)
			}
			return b
		}},
		{"EC JWK x text", "kid-ES256", func(tb testing.TB, f *fixture) []byte { return []byte(f.keys["ES256"].JWK()["x"].(string)) }},
		{"Ed25519 public key", "kid-EdDSA", func(tb testing.TB, f *fixture) []byte {
			return f.keys["EdDSA"].Private.Public().(ed25519.PublicKey)
		}},
	}
	for _, hs := range []string{"HS256", "HS384", "HS512"} {
		for _, s := range secrets {
			tok := func(tb testing.TB, f *fixture) string {
				return jwkstest.SignHMAC(hs, s.bytes(tb, f), []byte(verifyHeader(tb, hs, map[string]any{"kid": s.kid})), []byte(verifyJSON(tb, f.claims())))
			}
			cases = append(cases,
				verifyCase{name: "hmac/" + hs + " with " + s.name, token: tok, want: "algorithm_not_allowed"},
				// Even a configuration mistake that allows HMAC cannot
				// pair it with an asymmetric key.
				verifyCase{name: "hmac/" + hs + " with " + s.name + ", HMAC in the allowlist", cfg: plus(hs), token: tok, want: "algorithm_not_allowed"},
			)
		}
	}
	verifyRun(t, cases)
}

// verifyOtherRSA is a second RSA key, distinct from jwkstest's shared one.
var verifyOtherRSA = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func TestVerifySignature(t *testing.T) {
	// mutate rebuilds a valid alg token with its segments changed.
	mutate := func(alg string, fn func(tb testing.TB, f *fixture, h, p string, sig []byte) string) func(testing.TB, *fixture) string {
		return func(tb testing.TB, f *fixture) string {
			h, p, s := verifySegs(tb, f.token(tb, alg, f.claims(), nil))
			return fn(tb, f, h, p, verifyDec(tb, s))
		}
	}
	var cases []verifyCase
	for _, alg := range fixtureAlgs {
		cases = append(cases,
			verifyCase{name: alg + "/tampered payload", token: mutate(alg, func(tb testing.TB, f *fixture, h, _ string, sig []byte) string {
				return h + "." + verifyEnc([]byte(verifyJSON(tb, verifyClaims(f, map[string]any{"sub": "admin"})))) + "." + verifyEnc(sig)
			}), want: "bad_signature"},
			verifyCase{name: alg + "/tampered expiry", token: mutate(alg, func(tb testing.TB, f *fixture, h, p string, sig []byte) string {
				var c map[string]any
				if err := json.Unmarshal(verifyDec(tb, p), &c); err != nil {
					tb.Fatal(err)
				}
				c["exp"] = testNow.Add(2 * time.Hour).Unix()
				return h + "." + verifyEnc([]byte(verifyJSON(tb, c))) + "." + verifyEnc(sig)
			}), want: "bad_signature"},
			verifyCase{name: alg + "/tampered header", token: mutate(alg, func(tb testing.TB, f *fixture, _, p string, sig []byte) string {
				return verifyEnc([]byte(verifyHeader(tb, alg, map[string]any{"typ": "at+jwt"}))) + "." + p + "." + verifyEnc(sig)
			}), want: "bad_signature"},
			verifyCase{name: alg + "/header re-encoded without typ", token: mutate(alg, func(tb testing.TB, f *fixture, _, p string, sig []byte) string {
				return verifyEnc([]byte(verifyHeader(tb, alg, map[string]any{"typ": nil}))) + "." + p + "." + verifyEnc(sig)
			}), want: "bad_signature"},
			verifyCase{name: alg + "/flipped bit", token: mutate(alg, func(tb testing.TB, f *fixture, h, p string, sig []byte) string {
				sig[len(sig)/2] ^= 1
				return h + "." + p + "." + verifyEnc(sig)
			}), want: "bad_signature"},
			verifyCase{name: alg + "/truncated by one byte", token: mutate(alg, func(tb testing.TB, f *fixture, h, p string, sig []byte) string {
				return h + "." + p + "." + verifyEnc(sig[:len(sig)-1])
			}), want: "bad_signature"},
			verifyCase{name: alg + "/first half", token: mutate(alg, func(tb testing.TB, f *fixture, h, p string, sig []byte) string {
				return h + "." + p + "." + verifyEnc(sig[:len(sig)/2])
			}), want: "bad_signature"},
			verifyCase{name: alg + "/one byte", token: mutate(alg, func(tb testing.TB, f *fixture, h, p string, sig []byte) string {
				return h + "." + p + "." + verifyEnc(sig[:1])
			}), want: "bad_signature"},
			verifyCase{name: alg + "/extended by a zero byte", token: mutate(alg, func(tb testing.TB, f *fixture, h, p string, sig []byte) string {
				return h + "." + p + "." + verifyEnc(append(sig, 0))
			}), want: "bad_signature"},
			verifyCase{name: alg + "/leading zero byte", token: mutate(alg, func(tb testing.TB, f *fixture, h, p string, sig []byte) string {
				return h + "." + p + "." + verifyEnc(append([]byte{0}, sig...))
			}), want: "bad_signature"},
			verifyCase{name: alg + "/all zero", token: mutate(alg, func(tb testing.TB, f *fixture, h, p string, sig []byte) string {
				return h + "." + p + "." + verifyEnc(make([]byte, len(sig)))
			}), want: "bad_signature"},
			verifyCase{name: alg + "/all ones", token: mutate(alg, func(tb testing.TB, f *fixture, h, p string, sig []byte) string {
				return h + "." + p + "." + verifyEnc([]byte(strings.Repeat("\xff", len(sig))))
			}), want: "bad_signature"},
			verifyCase{name: alg + "/empty", token: mutate(alg, func(tb testing.TB, f *fixture, h, p string, sig []byte) string {
				return h + "." + p + "."
			}), want: "malformed_token"},
			verifyCase{name: alg + "/spliced from another token", token: mutate(alg, func(tb testing.TB, f *fixture, h, p string, _ []byte) string {
				_, _, s := verifySegs(tb, f.token(tb, alg, verifyClaims(f, map[string]any{"sub": "admin"}), nil))
				return h + "." + p + "." + s
			}), want: "bad_signature"},
			verifyCase{name: alg + "/another key under the same kid", token: func(tb testing.TB, f *fixture) string {
				k := &jwkstest.Key{Kid: "kid-" + alg, Alg: alg}
				switch alg {
				case "RS256", "PS256":
					k.Private = verifyOtherRSA()
				default:
					k.Private = jwkstest.NewKey(tb, alg, k.Kid).Private
				}
				return k.Sign(tb, f.claims(), nil)
			}, want: "bad_signature"},
		)
	}
	for _, alg := range []string{"ES256", "ES384"} {
		cases = append(cases,
			verifyCase{name: alg + "/ASN.1 DER instead of r||s", token: mutate(alg, func(tb testing.TB, f *fixture, h, p string, sig []byte) string {
				return h + "." + p + "." + verifyEnc(verifyRawToDER(tb, sig))
			}), want: "bad_signature"},
			verifyCase{name: alg + "/r and s swapped", token: mutate(alg, func(tb testing.TB, f *fixture, h, p string, sig []byte) string {
				n := len(sig) / 2
				return h + "." + p + "." + verifyEnc(append(append([]byte{}, sig[n:]...), sig[:n]...))
			}), want: "bad_signature"},
			verifyCase{name: alg + "/r = s = 0", token: mutate(alg, func(tb testing.TB, f *fixture, h, p string, sig []byte) string {
				return h + "." + p + "." + verifyEnc(make([]byte, len(sig)))
			}), want: "bad_signature"},
			verifyCase{name: alg + "/s replaced by the curve order", token: mutate(alg, func(tb testing.TB, f *fixture, h, p string, sig []byte) string {
				n := f.keys[alg].Private.(*ecdsa.PrivateKey).Curve.Params().N
				n.FillBytes(sig[len(sig)/2:])
				return h + "." + p + "." + verifyEnc(sig)
			}), want: "bad_signature"},
		)
	}
	cases = append(cases,
		verifyCase{name: "EdDSA/non-canonical S (S + L)", token: mutate("EdDSA", func(tb testing.TB, f *fixture, h, p string, sig []byte) string {
			// S is little-endian; S + L still fits in 32 bytes and is the
			// classic Ed25519 malleability, which RFC 8032 verifiers refuse.
			l, _ := new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)
			le := func(b []byte) []byte {
				out := make([]byte, len(b))
				for i := range b {
					out[i] = b[len(b)-1-i]
				}
				return out
			}
			s := new(big.Int).SetBytes(le(sig[32:]))
			s.Add(s, l)
			copy(sig[32:], le(s.FillBytes(make([]byte, 32))))
			return h + "." + p + "." + verifyEnc(sig)
		}), want: "bad_signature"},
		verifyCase{name: "RS256/signature plus the modulus", token: mutate("RS256", func(tb testing.TB, f *fixture, h, p string, sig []byte) string {
			n := f.keys["RS256"].Private.(*rsa.PrivateKey).N
			v := new(big.Int).Add(new(big.Int).SetBytes(sig), n)
			return h + "." + p + "." + verifyEnc(v.Bytes())
		}), want: "bad_signature"},
	)
	verifyRun(t, cases)
}

func TestVerifyClaims(t *testing.T) {
	now := testNow.Unix()
	ago := func(d time.Duration) int64 { return testNow.Add(-d).Unix() }
	in := func(d time.Duration) int64 { return testNow.Add(d).Unix() }
	cases := []verifyCase{
		// exp: required, a positive JSON number.
		{name: "exp/missing", token: verifyWith(map[string]any{"exp": verifyAbsent}), want: "invalid_claims"},
		{name: "exp/zero", token: verifyWith(map[string]any{"exp": 0}), want: "invalid_claims"},
		{name: "exp/negative", token: verifyWith(map[string]any{"exp": -1}), want: "invalid_claims"},
		{name: "exp/large negative", token: verifyWith(map[string]any{"exp": -in(time.Hour)}), want: "invalid_claims"},
		{name: "exp/numeric string", token: verifyWith(map[string]any{"exp": fmt.Sprint(in(time.Hour))}), want: "invalid_claims"},
		{name: "exp/RFC 3339 string", token: verifyWith(map[string]any{"exp": testNow.Add(time.Hour).Format(time.RFC3339)}), want: "invalid_claims"},
		{name: "exp/empty string", token: verifyWith(map[string]any{"exp": ""}), want: "invalid_claims"},
		{name: "exp/bool", token: verifyWith(map[string]any{"exp": true}), want: "invalid_claims"},
		{name: "exp/null", token: verifyWith(map[string]any{"exp": nil}), want: "invalid_claims"},
		{name: "exp/array", token: verifyWith(map[string]any{"exp": []any{in(time.Hour)}}), want: "invalid_claims"},
		{name: "exp/object", token: verifyWith(map[string]any{"exp": map[string]any{"t": in(time.Hour)}}), want: "invalid_claims"},
		{name: "exp/negative zero", token: verifyRawPayload(verifyPayloadExp("-0")), want: "invalid_claims"},
		{name: "exp/overflows float64", token: verifyRawPayload(verifyPayloadExp("1e400")), want: "invalid_claims"},
		{name: "exp/underflows to zero", token: verifyRawPayload(verifyPayloadExp("1e-400")), want: "invalid_claims"},
		{name: "exp/huge with iat", token: verifyRawPayload(verifyPayloadExp("1e300")), want: "lifetime_too_long"},
		{name: "exp/fraction", token: verifyWith(map[string]any{"exp": float64(in(time.Hour)) + 0.5}), want: "ok"},
		{name: "exp/exponent notation", token: verifyRawPayload(verifyPayloadExp("1.8000036e9")), want: "ok"},
		{name: "exp/with trailing zeros", token: verifyRawPayload(verifyPayloadExp(fmt.Sprintf("%d.000", in(time.Hour)))), want: "ok"},

		// exp against the clock, with leeway 30s.
		{name: "expiry/long ago", token: verifyWith(map[string]any{"iat": ago(2 * time.Hour), "exp": ago(time.Hour)}), want: "expired"},
		{name: "expiry/just past leeway", token: verifyWith(map[string]any{"iat": ago(time.Hour), "exp": ago(31 * time.Second)}), want: "expired"},
		{name: "expiry/at leeway", token: verifyWith(map[string]any{"iat": ago(time.Hour), "exp": ago(30 * time.Second)}), want: "expired"},
		{name: "expiry/within leeway", token: verifyWith(map[string]any{"iat": ago(time.Hour), "exp": ago(29 * time.Second)}), want: "ok"},
		{name: "expiry/now", token: verifyWith(map[string]any{"iat": ago(time.Hour), "exp": now}), want: "ok"},
		{name: "expiry/no leeway, now", cfg: func(c *Config) { c.Leeway = 0 }, token: verifyWith(map[string]any{"iat": ago(time.Hour), "exp": now}), want: "expired"},
		{name: "expiry/no leeway, one second left", cfg: func(c *Config) { c.Leeway = 0 }, token: verifyWith(map[string]any{"iat": ago(time.Hour), "exp": in(time.Second)}), want: "ok"},
		{name: "expiry/wide leeway", cfg: func(c *Config) { c.Leeway = 5 * time.Minute }, token: verifyWith(map[string]any{"iat": ago(time.Hour), "exp": ago(4 * time.Minute)}), want: "ok"},

		// nbf.
		{name: "nbf/beyond leeway", token: verifyWith(map[string]any{"nbf": in(31 * time.Second)}), want: "not_yet_valid"},
		{name: "nbf/far future", token: verifyWith(map[string]any{"nbf": in(30 * time.Minute)}), want: "not_yet_valid"},
		{name: "nbf/at leeway", token: verifyWith(map[string]any{"nbf": in(30 * time.Second)}), want: "ok"},
		{name: "nbf/within leeway", token: verifyWith(map[string]any{"nbf": in(29 * time.Second)}), want: "ok"},
		{name: "nbf/past", token: verifyWith(map[string]any{"nbf": ago(time.Minute)}), want: "ok"},
		{name: "nbf/no leeway, one second ahead", cfg: func(c *Config) { c.Leeway = 0 }, token: verifyWith(map[string]any{"nbf": in(time.Second)}), want: "not_yet_valid"},
		{name: "nbf/string", token: verifyWith(map[string]any{"nbf": fmt.Sprint(ago(time.Minute))}), want: "invalid_claims"},
		{name: "nbf/RFC 3339 string", token: verifyWith(map[string]any{"nbf": testNow.Format(time.RFC3339)}), want: "invalid_claims"},
		{name: "nbf/null", token: verifyWith(map[string]any{"nbf": nil}), want: "invalid_claims"},
		{name: "nbf/bool", token: verifyWith(map[string]any{"nbf": false}), want: "invalid_claims"},
		{name: "nbf/array", token: verifyWith(map[string]any{"nbf": []any{now}}), want: "invalid_claims"},
		{name: "nbf/negative", token: verifyWith(map[string]any{"nbf": -1}), want: "invalid_claims"},
		{name: "nbf/zero", token: verifyWith(map[string]any{"nbf": 0}), want: "invalid_claims"},

		// iat.
		{name: "iat/beyond leeway", token: verifyWith(map[string]any{"iat": in(31 * time.Second)}), want: "not_yet_valid"},
		{name: "iat/far future", token: verifyWith(map[string]any{"iat": in(30 * time.Minute)}), want: "not_yet_valid"},
		{name: "iat/within leeway", token: verifyWith(map[string]any{"iat": in(29 * time.Second)}), want: "ok"},
		{name: "iat/string", token: verifyWith(map[string]any{"iat": fmt.Sprint(now)}), want: "invalid_claims"},
		{name: "iat/null", token: verifyWith(map[string]any{"iat": nil}), want: "invalid_claims"},
		{name: "iat/bool", token: verifyWith(map[string]any{"iat": true}), want: "invalid_claims"},
		{name: "iat/object", token: verifyWith(map[string]any{"iat": map[string]any{}}), want: "invalid_claims"},
		{name: "iat/negative", token: verifyWith(map[string]any{"iat": -5}), want: "invalid_claims"},

		// Maximum lifetime, 24h.
		{name: "lifetime/exp-iat over the maximum", token: verifyWith(map[string]any{"iat": ago(time.Hour), "exp": in(23*time.Hour + time.Second)}), want: "lifetime_too_long"},
		{name: "lifetime/exp-iat exactly the maximum", token: verifyWith(map[string]any{"iat": ago(time.Hour), "exp": in(23 * time.Hour)}), want: "ok"},
		{name: "lifetime/a year", token: verifyWith(map[string]any{"exp": in(365 * 24 * time.Hour)}), want: "lifetime_too_long"},
		{name: "lifetime/iat long ago", token: verifyWith(map[string]any{"iat": ago(48 * time.Hour)}), want: "lifetime_too_long"},
		{name: "lifetime/no iat, exp too far", token: verifyWith(map[string]any{"iat": verifyAbsent, "exp": in(24*time.Hour + 31*time.Second)}), want: "lifetime_too_long"},
		{name: "lifetime/no iat, exp a year away", token: verifyWith(map[string]any{"iat": verifyAbsent, "exp": in(365 * 24 * time.Hour)}), want: "lifetime_too_long"},
		{name: "lifetime/no iat, exp within the maximum", token: verifyWith(map[string]any{"iat": verifyAbsent, "exp": in(24 * time.Hour)}), want: "ok"},
		{name: "lifetime/configured 1h", cfg: func(c *Config) { c.MaxLifetime = time.Hour }, token: verifyWith(map[string]any{"exp": in(2 * time.Hour)}), want: "lifetime_too_long"},
		{name: "lifetime/no iat, nbf does not count", token: verifyWith(map[string]any{"iat": verifyAbsent, "nbf": in(20 * time.Second), "exp": in(48 * time.Hour)}), want: "lifetime_too_long"},

		// iss: exactly a configured issuer.
		{name: "iss/missing", token: verifyWith(map[string]any{"iss": verifyAbsent}), want: "invalid_claims"},
		{name: "iss/number", token: verifyWith(map[string]any{"iss": 1}), want: "invalid_claims"},
		{name: "iss/null", token: verifyWith(map[string]any{"iss": nil}), want: "invalid_claims"},
		{name: "iss/array", token: verifyWith(map[string]any{"iss": []any{testIss}}), want: "invalid_claims"},
		{name: "iss/object", token: verifyWith(map[string]any{"iss": map[string]any{"url": testIss}}), want: "invalid_claims"},
		{name: "iss/unknown", token: verifyWith(map[string]any{"iss": "https://evil.test/"}), want: "unknown_issuer"},
		{name: "iss/empty", token: verifyWith(map[string]any{"iss": ""}), want: "unknown_issuer"},
		{name: "iss/without trailing slash", token: verifyWith(map[string]any{"iss": strings.TrimSuffix(testIss, "/")}), want: "unknown_issuer"},
		{name: "iss/double trailing slash", token: verifyWith(map[string]any{"iss": testIss + "/"}), want: "unknown_issuer"},
		{name: "iss/host in upper case", token: verifyWith(map[string]any{"iss": "https://ISSUER.test/"}), want: "unknown_issuer"},
		{name: "iss/scheme in upper case", token: verifyWith(map[string]any{"iss": "HTTPS://issuer.test/"}), want: "unknown_issuer"},
		{name: "iss/http", token: verifyWith(map[string]any{"iss": "http://issuer.test/"}), want: "unknown_issuer"},
		{name: "iss/surrounding space", token: verifyWith(map[string]any{"iss": " " + testIss}), want: "unknown_issuer"},
		{name: "iss/with port", token: verifyWith(map[string]any{"iss": "https://issuer.test:443/"}), want: "unknown_issuer"},
		{name: "iss/prefix of the issuer", token: verifyWith(map[string]any{"iss": "https://issuer.test"}), want: "unknown_issuer"},
		{name: "iss/issuer as a prefix", token: verifyWith(map[string]any{"iss": testIss + "evil"}), want: "unknown_issuer"},

		// aud: a string or an array containing a configured audience.
		{name: "aud/string", token: verifyWith(map[string]any{"aud": testAud}), want: "ok"},
		{name: "aud/array of one", token: verifyWith(map[string]any{"aud": []any{testAud}}), want: "ok"},
		{name: "aud/array, not first", token: verifyWith(map[string]any{"aud": []any{"billing", testAud}}), want: "ok"},
		{name: "aud/second configured audience", cfg: func(c *Config) { c.Issuers[0].Audiences = []string{"billing", testAud} }, token: verifyWith(map[string]any{"aud": "billing"}), want: "ok"},
		{name: "aud/missing", token: verifyWith(map[string]any{"aud": verifyAbsent}), want: "audience_mismatch"},
		{name: "aud/null", token: verifyWith(map[string]any{"aud": nil}), want: "audience_mismatch"},
		{name: "aud/wrong", token: verifyWith(map[string]any{"aud": "billing"}), want: "audience_mismatch"},
		{name: "aud/empty string", token: verifyWith(map[string]any{"aud": ""}), want: "audience_mismatch"},
		{name: "aud/empty array", token: verifyWith(map[string]any{"aud": []any{}}), want: "audience_mismatch"},
		{name: "aud/array without it", token: verifyWith(map[string]any{"aud": []any{"billing", "shipping"}}), want: "audience_mismatch"},
		{name: "aud/differs in case", token: verifyWith(map[string]any{"aud": strings.ToUpper(testAud)}), want: "audience_mismatch"},
		{name: "aud/trailing space", token: verifyWith(map[string]any{"aud": testAud + " "}), want: "audience_mismatch"},
		{name: "aud/comma-joined", token: verifyWith(map[string]any{"aud": "billing," + testAud}), want: "audience_mismatch"},
		{name: "aud/space-joined", token: verifyWith(map[string]any{"aud": "billing " + testAud}), want: "audience_mismatch"},
		{name: "aud/array with a number", token: verifyWith(map[string]any{"aud": []any{testAud, 1}}), want: "invalid_claims"},
		{name: "aud/array with null", token: verifyWith(map[string]any{"aud": []any{nil, testAud}}), want: "invalid_claims"},
		{name: "aud/nested array", token: verifyWith(map[string]any{"aud": []any{[]any{testAud}}}), want: "invalid_claims"},
		{name: "aud/number", token: verifyWith(map[string]any{"aud": 42}), want: "invalid_claims"},
		{name: "aud/bool", token: verifyWith(map[string]any{"aud": true}), want: "invalid_claims"},
		{name: "aud/object", token: verifyWith(map[string]any{"aud": map[string]any{testAud: true}}), want: "invalid_claims"},

		// sub and jti: strings when present.
		{name: "sub/number", token: verifyWith(map[string]any{"sub": 42}), want: "invalid_claims"},
		{name: "sub/null", token: verifyWith(map[string]any{"sub": nil}), want: "invalid_claims"},
		{name: "sub/array", token: verifyWith(map[string]any{"sub": []any{"user-1"}}), want: "invalid_claims"},
		{name: "sub/object", token: verifyWith(map[string]any{"sub": map[string]any{"id": "user-1"}}), want: "invalid_claims"},
		{name: "sub/bool", token: verifyWith(map[string]any{"sub": true}), want: "invalid_claims"},
		{name: "jti/number", token: verifyWith(map[string]any{"jti": 7}), want: "invalid_claims"},
		{name: "jti/null", token: verifyWith(map[string]any{"jti": nil}), want: "invalid_claims"},
		{name: "jti/array", token: verifyWith(map[string]any{"jti": []any{"a"}}), want: "invalid_claims"},
		{name: "jti/bool", token: verifyWith(map[string]any{"jti": false}), want: "invalid_claims"},
	}
	for _, alg := range fixtureAlgs {
		// The claim rules do not depend on the algorithm.
		cases = append(cases,
			verifyCase{name: "by alg/" + alg + " exp string", token: verifyWithAlg(alg, map[string]any{"exp": fmt.Sprint(in(time.Hour))}, nil), want: "invalid_claims"},
			verifyCase{name: "by alg/" + alg + " expired", token: verifyWithAlg(alg, map[string]any{"iat": ago(2 * time.Hour), "exp": ago(time.Hour)}, nil), want: "expired"},
			verifyCase{name: "by alg/" + alg + " wrong audience", token: verifyWithAlg(alg, map[string]any{"aud": "billing"}, nil), want: "audience_mismatch"},
		)
	}
	verifyRun(t, cases)
}

func TestVerifyPayload(t *testing.T) {
	p := verifyRawPayload
	valid := verifyPayloadExp(fmt.Sprint(testNow.Add(time.Hour).Unix()))
	verifyRun(t, []verifyCase{
		{name: "not JSON", token: p(`hello`), want: "malformed_token"},
		{name: "truncated", token: p(valid[:len(valid)-1]), want: "malformed_token"},
		{name: "array", token: p(`[` + valid + `]`), want: "malformed_token"},
		{name: "string", token: p(`"` + testIss + `"`), want: "malformed_token"},
		{name: "number", token: p(`1800003600`), want: "malformed_token"},
		{name: "null", token: p(`null`), want: "malformed_token"},
		{name: "bool", token: p(`true`), want: "malformed_token"},
		{name: "whitespace only", token: p(` `), want: "malformed_token"},
		{name: "two objects", token: p(valid + `{}`), want: "malformed_token"},
		{name: "trailing garbage", token: p(valid + `x`), want: "malformed_token"},
		{name: "trailing brace", token: p(valid + `}`), want: "malformed_token"},
		{name: "byte order mark", token: p("\uFEFF" + valid), want: "malformed_token"},
		{name: "nested JWT (cty JWT)", token: func(tb testing.TB, f *fixture) string {
			inner := f.token(tb, "ES256", f.claims(), nil)
			return verifyRaw(tb, f, "ES256", verifyHeader(tb, "ES256", map[string]any{"cty": "JWT"}), inner)
		}, want: "malformed_token"},
		{name: "empty object", token: p(`{}`), want: "invalid_claims"},
		{name: "surrounding whitespace", token: p(" \n" + valid + "\n "), want: "ok"},
	})
}

// TestVerifyIssuerKeys checks that a token is verified only with keys of
// the issuer it names, even when two issuers use the same kid.
func TestVerifyIssuerKeys(t *testing.T) {
	const other = "https://other.test/"
	a := jwkstest.NewKey(t, "ES256", "shared")
	b := jwkstest.NewKey(t, "ES256", "shared")
	bOnly := jwkstest.NewKey(t, "ES256", "b-only")
	cfg := newFixture(t, nil).cfg
	cfg.Issuers = []Issuer{
		{Issuer: testIss, Audiences: []string{testAud}, Algorithms: []string{"ES256"}},
		{Issuer: other, Audiences: []string{testAud}, Algorithms: []string{"ES256"}},
		{Issuer: "https://nokeys.test/", Audiences: []string{testAud}, Algorithms: []string{"ES256"}},
	}
	keys := staticKeys{testIss: keySetOf(t, a), other: keySetOf(t, b, bOnly)}
	e, err := NewEngine(cfg, keys, nil, func() time.Time { return testNow })
	if err != nil {
		t.Fatal(err)
	}
	claims := func(iss string) map[string]any { return jwkstest.Claims(iss, testAud, "user-1", testNow, time.Hour) }
	for _, c := range []struct {
		name, tok, want string
	}{
		{"own key", a.Sign(t, claims(testIss), nil), "ok"},
		{"other issuer's own key", b.Sign(t, claims(other), nil), "ok"},
		{"other issuer's key, same kid", b.Sign(t, claims(testIss), nil), "bad_signature"},
		{"other issuer's key, its own kid", bOnly.Sign(t, claims(testIss), nil), "unknown_key"},
		{"issuer without a key set", a.Sign(t, claims("https://nokeys.test/"), nil), "keys_unavailable"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, h := range []map[string]string{bearer(c.tok), {"cookie": "session=" + c.tok}} {
				d := e.Decide(context.Background(), Input{Headers: h, Method: "GET", Path: "/"})
				if d.Allowed != (c.want == "ok") || d.Reason.Code != c.want {
					t.Errorf("allowed=%v reason %q (%v), want %q", d.Allowed, d.Reason.Code, d.Err, c.want)
				}
			}
		})
	}
}

// TestVerifyNeverFetches runs the real key cache against a real identity
// provider and checks that no URL, key or issuer named by a token makes
// sidegate contact anything.
func TestVerifyNeverFetches(t *testing.T) {
	f := newFixture(t, nil)
	idp := jwkstest.NewServer(t, slices.Collect(maps.Values(f.keys))...)

	var hits atomic.Int64
	evil := jwkstest.NewKey(t, "ES256", "attacker")
	evilTrusted := jwkstest.NewKey(t, "ES256", "kid-ES256")
	evilJWKS := verifyJSON(t, map[string]any{"keys": []any{evil.JWK(), evilTrusted.JWK()}})
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(evilJWKS))
	}))
	t.Cleanup(attacker.Close)

	cache, err := jwks.New([]jwks.IssuerConfig{{Issuer: testIss, JWKSURI: idp.JWKSURI()}}, jwks.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.Refresh(context.Background(), testIss); err != nil {
		t.Fatal(err)
	}
	fetched := idp.Fetches()
	e, err := NewEngine(f.cfg, cache, nil, func() time.Time { return testNow })
	if err != nil {
		t.Fatal(err)
	}

	claims := f.claims()
	evilClaims := jwkstest.Claims(attacker.URL, testAud, "admin", testNow, time.Hour)
	cases := []struct {
		name, tok, want string
	}{
		{"valid", f.token(t, "ES256", claims, nil), "ok"},
		{"jku, attacker kid", evil.Sign(t, claims, map[string]any{"jku": attacker.URL + "/jwks"}), "forbidden_header"},
		{"jku, trusted kid", evilTrusted.Sign(t, claims, map[string]any{"jku": attacker.URL + "/jwks"}), "forbidden_header"},
		{"jku, unknown kid", evil.Sign(t, claims, map[string]any{"jku": attacker.URL + "/jwks", "kid": "rotated"}), "forbidden_header"},
		{"jku, validly signed", f.token(t, "ES256", claims, map[string]any{"jku": attacker.URL + "/jwks"}), "forbidden_header"},
		{"jku, the issuer's own JWKS", evil.Sign(t, claims, map[string]any{"jku": idp.JWKSURI()}), "forbidden_header"},
		{"x5u", evil.Sign(t, claims, map[string]any{"x5u": attacker.URL + "/cert.pem"}), "forbidden_header"},
		{"x5u, trusted kid", evilTrusted.Sign(t, claims, map[string]any{"x5u": attacker.URL + "/cert.pem"}), "forbidden_header"},
		{"jwk and jku", evil.Sign(t, claims, map[string]any{"jwk": evil.JWK(), "jku": attacker.URL + "/jwks"}), "forbidden_header"},
		{"x5c and x5u", evil.Sign(t, claims, map[string]any{"x5c": []any{verifyCert(t, evil)}, "x5u": attacker.URL}), "forbidden_header"},
		// An issuer sidegate does not know is never discovered.
		{"iss is the attacker", evil.Sign(t, evilClaims, nil), "unknown_issuer"},
		{"iss is the attacker, with jku", evil.Sign(t, evilClaims, map[string]any{"jku": attacker.URL + "/jwks"}), "forbidden_header"},
	}
	for _, c := range cases {
		for _, h := range []map[string]string{bearer(c.tok), {"cookie": "session=" + c.tok}} {
			d := e.Decide(context.Background(), Input{Headers: h, Method: "GET", Path: "/"})
			if d.Allowed != (c.want == "ok") || d.Reason.Code != c.want {
				t.Errorf("%s: allowed=%v reason %q (%v), want %q", c.name, d.Allowed, d.Reason.Code, d.Err, c.want)
			}
		}
	}
	attacker.Close() // waits for any request in flight
	if n := hits.Load(); n != 0 {
		t.Errorf("tokens made sidegate send %d requests to a URL they named", n)
	}
	if n := idp.Fetches(); n != fetched {
		t.Errorf("tokens made the key cache fetch %d more times", n-fetched)
	}
}

// TestParseObjectMembers: duplicates are found wherever the text hides
// them, and colons, braces and escaped quotes inside strings or nested
// values are not taken for members.
func TestParseObjectMembers(t *testing.T) {
	for _, tc := range []struct {
		json string
		ok   bool
	}{
		{`{"a":1,"b":2}`, true},
		{`{"a":"x:y","b":{"c":1,"d":[1,{"e":":"}]}}`, true},
		{`{"a":"\"}:{\"","b":"\\","c":"\\\":"}`, true},
		{`{}`, true},
		{`{"a":1,"a":2}`, false},
		{`{"sub":"x","\u0073ub":"y"}`, false},
		{`{"a":{"b":1,"b":2}}`, true}, // nested duplicates are the consumer's business
		{`{"a":1,"b":{"x":"}"},"a":3}`, false},
		{`[1,2]`, false},
		{`null`, false},
		{`{"a":1} {"b":2}`, false},
		{`{"a":1`, false},
	} {
		_, err := parseObject(tc.json)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok %v", tc.json, err, tc.ok)
		}
	}
}
