package authz

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sidegate/sidegate/jwks"
	"github.com/sidegate/sidegate/jwks/jwkstest"
)

// decideCheck asserts the properties every decision has, whatever the
// request: no header value carries a byte outside visible ASCII, nothing is
// both set and removed, and a denial sets and removes nothing.
func decideCheck(tb testing.TB, d Decision) {
	tb.Helper()
	for _, h := range d.Headers {
		for i := 0; i < len(h.Value); i++ {
			if c := h.Value[i]; c < 0x21 || c > 0x7E {
				tb.Errorf("header %s: byte %#x at %d in %q", h.Name, c, i, h.Value)
			}
		}
		if slices.Contains(d.Remove, h.Name) {
			tb.Errorf("header %s is both set and removed", h.Name)
		}
	}
	if !d.Allowed && (len(d.Headers) > 0 || len(d.Remove) > 0) {
		tb.Errorf("denial carries headers %v / remove %v", d.Headers, d.Remove)
	}
	if d.Allowed != (d.Reason.Code == "ok") {
		tb.Errorf("allowed %v with reason %q", d.Allowed, d.Reason.Code)
	}
}

// decideRun decides and checks the invariants.
func decideRun(tb testing.TB, f *fixture, headers map[string]string) Decision {
	tb.Helper()
	d := f.decide(headers)
	decideCheck(tb, d)
	return d
}

func decideHeaderMap(hs []Header) map[string]string {
	m := make(map[string]string, len(hs))
	for _, h := range hs {
		m[h.Name] = h.Value
	}
	return m
}

// decideDenylist revokes by jti, subject or kid.
type decideDenylist struct {
	jti, sub, kid map[string]bool
}

func (d decideDenylist) Check(c *Claims, _ time.Time) error {
	if d.jti[c.ID] || d.sub[c.Subject] || d.kid[c.KeyID] {
		return ErrRevoked
	}
	return nil
}

func decideClaims(f *fixture, sub string, extra map[string]any) map[string]any {
	c := f.claims()
	if sub == "" {
		delete(c, "sub")
	} else {
		c["sub"] = sub
	}
	maps.Copy(c, extra)
	return c
}

func TestDecideBearerAndCookie(t *testing.T) {
	const otherIss = "https://other-issuer.test/"
	f := newFixture(t, func(c *Config) {
		c.Issuers = append(c.Issuers, Issuer{Issuer: otherIss, Audiences: []string{testAud}, Algorithms: fixtureAlgs})
	})
	// Both issuers trust the same keys, so only iss tells them apart.
	e, err := NewEngine(f.cfg, staticKeys{testIss: f.set, otherIss: f.set}, decideDenylist{jti: map[string]bool{"revoked-jti": true}}, func() time.Time { return testNow })
	if err != nil {
		t.Fatal(err)
	}
	f.engine = e

	tok := func(alg string, c map[string]any) string { return f.token(t, alg, c, nil) }
	user1 := tok("ES256", decideClaims(f, "user-1", nil))
	user1b := tok("EdDSA", decideClaims(f, "user-1", nil)) // another token, same user
	user2 := tok("ES256", decideClaims(f, "user-2", nil))
	otherIssUser1 := tok("ES256", decideClaims(f, "user-1", map[string]any{"iss": otherIss}))
	noSub := tok("ES256", decideClaims(f, "", nil))
	expired := tok("RS256", decideClaims(f, "user-1", map[string]any{"iat": testNow.Add(-2 * time.Hour).Unix(), "exp": testNow.Add(-time.Hour).Unix()}))
	wrongAud := tok("RS256", decideClaims(f, "user-1", map[string]any{"aud": "other-api"}))
	revoked := tok("ES256", decideClaims(f, "user-1", map[string]any{"jti": "revoked-jti"}))
	badSig := user1[:len(user1)-4] + strings.Repeat("A", 4)
	if badSig == user1 {
		t.Fatal("bad signature equals the good one")
	}
	foreign := jwkstest.NewKey(t, "ES256", "kid-ES256").Sign(t, decideClaims(f, "user-1", nil), nil)

	both := func(b, c string) map[string]string {
		return map[string]string{"authorization": "Bearer " + b, "cookie": "session=" + c}
	}
	tests := []struct {
		name    string
		headers map[string]string
		reason  string
		kid     string // deciding token's kid when allowed
	}{
		{"same token in both", both(user1, user1), "ok", "kid-ES256"},
		{"two valid tokens, same iss and sub", both(user1b, user1), "ok", "kid-EdDSA"},
		{"different sub", both(user1, user2), "token_mismatch", ""},
		{"different sub, reversed", both(user2, user1), "token_mismatch", ""},
		{"same sub, different iss", both(user1, otherIssUser1), "token_mismatch", ""},
		{"one without sub", both(user1, noSub), "token_mismatch", ""},

		// Never fall back from a bad token to a good one, in either direction.
		{"expired bearer, valid cookie", both(expired, user1), "expired", ""},
		{"valid bearer, expired cookie", both(user1, expired), "expired", ""},
		{"bad signature bearer, valid cookie", both(badSig, user1), "bad_signature", ""},
		{"valid bearer, bad signature cookie", both(user1, badSig), "bad_signature", ""},
		{"foreign key bearer, valid cookie", both(foreign, user1), "bad_signature", ""},
		{"wrong audience bearer, valid cookie", both(wrongAud, user1), "audience_mismatch", ""},
		{"valid bearer, wrong audience cookie", both(user1, wrongAud), "audience_mismatch", ""},
		{"garbage bearer, valid cookie", both("not.a.jwt", user1), "malformed_token", ""},
		{"valid bearer, garbage cookie", both(user1, "garbage"), "malformed_token", ""},
		{"revoked bearer, valid cookie", both(revoked, user1), "revoked", ""},
		{"valid bearer, revoked cookie", both(user1, revoked), "revoked", ""},
		{"expired bearer, mismatched cookie", both(expired, user2), "expired", ""},

		// A malformed Authorization is never bypassed by a cookie.
		{"Basic and valid cookie", map[string]string{"authorization": "Basic dXNlcjpwYXNz", "cookie": "session=" + user1}, "bad_authorization_header", ""},
		{"Bearer alone and valid cookie", map[string]string{"authorization": "Bearer", "cookie": "session=" + user1}, "bad_authorization_header", ""},
		{"two bearer tokens and valid cookie", map[string]string{"authorization": "Bearer " + user1 + ", Bearer " + user1, "cookie": "session=" + user1}, "bad_authorization_header", ""},
		{"valid bearer and duplicate cookie", map[string]string{"authorization": "Bearer " + user1, "cookie": "session=" + user1 + "; session=" + user1}, "duplicate_cookie", ""},

		// One source alone.
		{"bearer only", bearer(user1), "ok", "kid-ES256"},
		{"cookie only", map[string]string{"cookie": "session=" + user1b}, "ok", "kid-EdDSA"},
		{"revoked alone", bearer(revoked), "revoked", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := decideRun(t, f, tt.headers)
			if d.Reason.Code != tt.reason {
				t.Fatalf("reason %q (%v), want %q", d.Reason.Code, d.Err, tt.reason)
			}
			if tt.reason != "ok" {
				if d.Allowed || d.Err == nil {
					t.Fatalf("denial: allowed %v, err %v", d.Allowed, d.Err)
				}
				return
			}
			if !d.Allowed || d.Err != nil || d.Claims == nil {
				t.Fatalf("allowed %v err %v claims %v", d.Allowed, d.Err, d.Claims)
			}
			if d.Claims.KeyID != tt.kid {
				t.Errorf("decided by kid %q, want %q", d.Claims.KeyID, tt.kid)
			}
		})
	}
}

func TestDecideIdentityHeaders(t *testing.T) {
	forward := map[string]string{
		"x-user-id":     "sub",
		"x-int":         "n",
		"x-neg":         "neg",
		"x-float":       "f",
		"x-big":         "big",
		"x-exp":         "e",
		"x-true":        "t",
		"x-false":       "no",
		"x-empty-str":   "empty",
		"x-roles":       "roles",
		"x-empty-list":  "none",
		"x-mixed":       "mixed",
		"x-comma-list":  "commas",
		"x-obj":         "obj",
		"x-realm-roles": "realm_access.roles",
		"x-realm":       "realm_access",
		"x-deep":        "a.b.c",
		"x-url-roles":   "https://example.com/roles",
		"x-dotted":      "dotted.name",
		"x-through-str": "sub.x",
		"x-null":        "nothing",
		"x-nested-null": "realm_access.none",
		"x-absent":      "absent",
		"x-crlf":        "crlf",
		"x-nul":         "nul",
		"x-ctl":         "ctl",
		"x-del":         "del",
		"x-space":       "space",
		"x-non-ascii":   "name",
		"x-percent":     "pct",
		"x-ls":          "ls",
		"x-ctl-list":    "ctl_list",
		"x-email":       "email",
	}
	f := newFixture(t, func(c *Config) {
		c.ForwardClaims = nil
		for _, h := range slices.Sorted(maps.Keys(forward)) {
			c.ForwardClaims = append(c.ForwardClaims, ForwardClaim{Header: h, Claim: forward[h]})
		}
	})
	extra := map[string]any{
		"n":      42,
		"neg":    -7,
		"f":      1.5,
		"t":      true,
		"no":     false,
		"empty":  "",
		"roles":  []any{"admin", "ops"},
		"none":   []any{},
		"mixed":  []any{"s", 1, true, nil, map[string]any{"k": "v"}, []any{"x", "y"}},
		"commas": []any{"a,b", "c"},
		"obj":    map[string]any{"z": 1, "a": []any{"x"}, "m": map[string]any{"k": "v"}},
		"realm_access": map[string]any{
			"roles": []any{"r1", "r2"},
			"none":  nil,
		},
		"a":                         map[string]any{"b": map[string]any{"c": "deep"}},
		"https://example.com/roles": []any{"reader", "writer"},
		// An exact name wins over the dotted path into "dotted".
		"dotted.name": "flat",
		"dotted":      map[string]any{"name": "nested"},
		"nothing":     nil,
		"crlf":        "evil\r\nx-admin: true",
		"nul":         "a\x00b",
		"ctl":         "\x01\x08\t\x0b\x0c\x1b\x1f",
		"del":         "a\x7fb",
		"space":       "Ada Lovelace",
		"name":        "José Ünïcödé 日本",
		"pct":         "100%25",
		"ls":          "a\u2028b\u0085c",
		"ctl_list":    []any{"a\r\n", "b\x00,c"},
		"email":       "ada@example.com",
	}
	claims := decideClaims(f, "user-1", extra)
	// Numbers are written by hand so their JSON form is exact.
	hdr := []byte(`{"alg":"ES256","kid":"kid-ES256","typ":"JWT"}`)
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	payload = append(payload[:len(payload)-1], []byte(`,"big":12345678901234567890123,"e":1e3}`)...)
	tok := f.keys["ES256"].SignRaw(t, hdr, payload)

	d := decideRun(t, f, bearer(tok))
	if !d.Allowed {
		t.Fatalf("denied: %v", d.Err)
	}
	got := decideHeaderMap(d.Headers)
	want := map[string]string{
		"x-user-id":     "user-1",
		"x-int":         "42",
		"x-neg":         "-7",
		"x-float":       "1.5",
		"x-big":         "12345678901234567890123",
		"x-exp":         "1e3",
		"x-true":        "true",
		"x-false":       "false",
		"x-roles":       "admin,ops",
		"x-mixed":       `s,1,true,null,{"k":"v"},["x"%2C"y"]`,
		"x-comma-list":  "a%2Cb,c",
		"x-obj":         `{"a":["x"],"m":{"k":"v"},"z":1}`,
		"x-realm-roles": "r1,r2",
		"x-realm":       `{"none":null,"roles":["r1","r2"]}`,
		"x-deep":        "deep",
		"x-url-roles":   "reader,writer",
		"x-dotted":      "flat",
		"x-crlf":        "evil%0D%0Ax-admin:%20true",
		"x-nul":         "a%00b",
		"x-ctl":         "%01%08%09%0B%0C%1B%1F",
		"x-del":         "a%7Fb",
		"x-space":       "Ada%20Lovelace",
		"x-non-ascii":   "Jos%C3%A9%20%C3%9Cn%C3%AFc%C3%B6d%C3%A9%20%E6%97%A5%E6%9C%AC",
		"x-percent":     "100%2525",
		"x-ls":          "a%E2%80%A8b%C2%85c",
		"x-ctl-list":    "a%0D%0A,b%00%2Cc",
		"x-email":       "ada@example.com",
		"x-jwt-payload": base64.RawURLEncoding.EncodeToString(payload),
	}
	for name, w := range want {
		g, ok := got[name]
		if !ok {
			t.Errorf("%s: not set, want %q", name, w)
		} else if g != w {
			t.Errorf("%s = %q, want %q", name, g, w)
		}
	}
	// Absent, null and empty claims, and paths through non-objects, set nothing.
	for _, name := range []string{"x-null", "x-nested-null", "x-absent", "x-through-str", "x-empty-str", "x-empty-list"} {
		if v, ok := got[name]; ok {
			t.Errorf("%s set to %q, want no header", name, v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d headers set, want %d: %v", len(got), len(want), slices.Sorted(maps.Keys(got)))
	}
	// Percent-decoding a string claim's header gives the exact claim back.
	for _, h := range []string{"x-crlf", "x-nul", "x-ctl", "x-del", "x-space", "x-non-ascii", "x-percent", "x-ls", "x-email"} {
		dec, err := url.PathUnescape(got[h])
		if err != nil {
			t.Errorf("%s: %v", h, err)
			continue
		}
		if dec != extra[forward[h]] {
			t.Errorf("%s decodes to %q, want %q", h, dec, extra[forward[h]])
		}
	}
	// Array elements decode one by one, commas inside them included.
	var els []string
	for el := range strings.SplitSeq(got["x-ctl-list"], ",") {
		s, err := url.PathUnescape(el)
		if err != nil {
			t.Fatal(err)
		}
		els = append(els, s)
	}
	if !slices.Equal(els, []string{"a\r\n", "b\x00,c"}) {
		t.Errorf("x-ctl-list elements decode to %q", els)
	}
}

// TestDecideHeaderBytes signs every ASCII byte and a spread of Unicode as a
// claim and checks that no header value ever carries a byte outside
// visible ASCII, and that it decodes back to the claim.
func TestDecideHeaderBytes(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.ForwardClaims = append(c.ForwardClaims, ForwardClaim{Header: "x-list", Claim: "list"}, ForwardClaim{Header: "x-obj", Claim: "obj"})
	})
	var values []string
	for c := range 0x80 {
		values = append(values, "<"+string(rune(c))+">")
	}
	values = append(values, "\u00a0", "\u2028\u2029", "\ufeff", "\U0001F600", "\ue000", "%00", "%%", "a%0D%0Ab")
	for _, v := range values {
		c := decideClaims(f, v, map[string]any{"list": []any{v, v}, "obj": map[string]any{v: v}})
		d := decideRun(t, f, bearer(f.token(t, "EdDSA", c, nil)))
		if !d.Allowed {
			t.Fatalf("%q: denied: %v", v, d.Err)
		}
		h := decideHeaderMap(d.Headers)
		if dec, err := url.PathUnescape(h["x-user-id"]); err != nil || dec != v {
			t.Errorf("%q: x-user-id %q decodes to %q, %v", v, h["x-user-id"], dec, err)
		}
		if h["x-list"] == "" || h["x-obj"] == "" {
			t.Errorf("%q: list %q obj %q", v, h["x-list"], h["x-obj"])
		}
	}
}

// TestDecidePayloadHeader checks that the payload header is the base64url
// (no padding) of the exact signed payload bytes, however they are spelled.
func TestDecidePayloadHeader(t *testing.T) {
	f := newFixture(t, nil)
	base := fmt.Sprintf(`"iss":%q,"aud":%q,"sub":"user-1","iat":%d,"exp":%d`, testIss, testAud, testNow.Unix(), testNow.Add(time.Hour).Unix())
	payloads := []string{
		"{" + base + "}",
		"{ " + strings.ReplaceAll(base, ",", " ,\n\t") + " }\n",
		"{" + base + `,"name":"Jos\u00e9 \"q\" \u003c\/\u003e","n":1.50,"x":[ 1 , 2 ]}`,
		"{" + base + `,"pad":"a"}`,   // lengths chosen so the
		"{" + base + `,"pad":"ab"}`,  // unpadded encoding ends
		"{" + base + `,"pad":"abc"}`, // in each possible way
	}
	for i, p := range payloads {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			hdr := []byte(`{"alg":"ES256","kid":"kid-ES256"}`)
			d := decideRun(t, f, bearer(f.keys["ES256"].SignRaw(t, hdr, []byte(p))))
			if !d.Allowed {
				t.Fatalf("denied: %v", d.Err)
			}
			v, ok := decideHeaderMap(d.Headers)["x-jwt-payload"]
			if !ok {
				t.Fatal("no x-jwt-payload")
			}
			if strings.ContainsAny(v, "=+/") {
				t.Errorf("payload header %q is not unpadded base64url", v)
			}
			got, err := base64.RawURLEncoding.Strict().DecodeString(v)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != p {
				t.Errorf("payload header decodes to %q, want the signed bytes %q", got, p)
			}
		})
	}

	t.Run("off", func(t *testing.T) {
		f := newFixture(t, func(c *Config) { c.PayloadHeader = "" })
		d := decideRun(t, f, map[string]string{"authorization": "Bearer " + f.token(t, "ES256", f.claims(), nil), "x-jwt-payload": "forged"})
		if !d.Allowed {
			t.Fatalf("denied: %v", d.Err)
		}
		if _, ok := decideHeaderMap(d.Headers)["x-jwt-payload"]; ok {
			t.Error("payload header set although turned off")
		}
		// Not configured, so not sidegate's to strip.
		if slices.Contains(d.Remove, "x-jwt-payload") {
			t.Error("unconfigured header in Remove")
		}
	})
}

func TestDecideRemove(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.ForwardClaims = []ForwardClaim{
			{Header: "x-user-id", Claim: "sub"},
			{Header: "x-email", Claim: "email"},
			{Header: "x-roles", Claim: "roles"},
		}
	})
	spoof := func(tok string, names ...string) map[string]string {
		h := map[string]string{"authorization": "Bearer " + tok}
		for _, n := range names {
			h[n] = "spoofed"
		}
		return h
	}
	full := f.token(t, "ES256", decideClaims(f, "user-1", map[string]any{"email": "a@b.test", "roles": []any{"r"}}), nil)
	subOnly := f.token(t, "ES256", decideClaims(f, "user-1", nil), nil)
	noSub := f.token(t, "ES256", decideClaims(f, "", map[string]any{"email": "a@b.test"}), nil)
	nullRoles := f.token(t, "ES256", decideClaims(f, "user-1", map[string]any{"roles": nil}), nil)

	all := []string{"x-user-id", "x-email", "x-roles", "x-jwt-payload"}
	tests := []struct {
		name    string
		headers map[string]string
		set     []string
		remove  []string
	}{
		{"nothing sent", spoof(full), all, nil},
		{"all sent, all supplied", spoof(full, all...), all, nil},
		{"all sent, only sub supplied", spoof(subOnly, all...), []string{"x-user-id", "x-jwt-payload"}, []string{"x-email", "x-roles"}},
		{"some sent, only sub supplied", spoof(subOnly, "x-roles", "x-other"), []string{"x-user-id", "x-jwt-payload"}, []string{"x-roles"}},
		{"x-user-id sent, no sub", spoof(noSub, "x-user-id"), []string{"x-email", "x-jwt-payload"}, []string{"x-user-id"}},
		{"null claim", spoof(nullRoles, "x-roles", "x-user-id"), []string{"x-user-id", "x-jwt-payload"}, []string{"x-roles"}},
		{"sent empty", map[string]string{"authorization": "Bearer " + noSub, "x-user-id": ""}, []string{"x-email", "x-jwt-payload"}, []string{"x-user-id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := decideRun(t, f, tt.headers)
			if !d.Allowed {
				t.Fatalf("denied: %v", d.Err)
			}
			set := slices.Sorted(maps.Keys(decideHeaderMap(d.Headers)))
			if want := slices.Sorted(slices.Values(tt.set)); !slices.Equal(set, want) {
				t.Errorf("set %v, want %v", set, want)
			}
			if got, want := slices.Sorted(slices.Values(d.Remove)), slices.Sorted(slices.Values(tt.remove)); !slices.Equal(got, want) {
				t.Errorf("remove %v, want %v", got, want)
			}
			if h := decideHeaderMap(d.Headers); h["x-user-id"] == "spoofed" || h["x-email"] == "spoofed" {
				t.Errorf("client value forwarded: %v", h)
			}
		})
	}
}

func TestDecideDenylist(t *testing.T) {
	f := newFixture(t, nil)
	f.deny = decideDenylist{
		jti: map[string]bool{"dead-jti": true},
		sub: map[string]bool{"banned": true},
		kid: map[string]bool{"kid-RS256": true},
	}
	f.build(t)
	tests := []struct {
		name    string
		headers map[string]string
		reason  string
	}{
		{"live token", bearer(f.token(t, "ES256", f.claims(), nil)), "ok"},
		{"revoked jti", bearer(f.token(t, "ES256", decideClaims(f, "user-1", map[string]any{"jti": "dead-jti"}), nil)), "revoked"},
		{"banned subject", bearer(f.token(t, "ES256", decideClaims(f, "banned", nil), nil)), "revoked"},
		{"compromised key", bearer(f.token(t, "RS256", f.claims(), nil)), "revoked"},
		{"revoked cookie", map[string]string{"cookie": "session=" + f.token(t, "EdDSA", decideClaims(f, "banned", nil), nil)}, "revoked"},
		// A revoked token is still judged on its own first: an expired one is expired.
		{"expired and revoked", bearer(f.token(t, "ES256", decideClaims(f, "banned", map[string]any{"iat": testNow.Add(-2 * time.Hour).Unix(), "exp": testNow.Add(-time.Hour).Unix()}), nil)), "expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := decideRun(t, f, tt.headers)
			if d.Reason.Code != tt.reason || d.Allowed != (tt.reason == "ok") {
				t.Fatalf("allowed %v reason %q (%v), want %q", d.Allowed, d.Reason.Code, d.Err, tt.reason)
			}
			if tt.reason == "revoked" && !errors.Is(d.Err, ErrRevoked) {
				t.Errorf("Err %v does not wrap ErrRevoked", d.Err)
			}
		})
	}
}

// decideCancelKeys cancels the request's context while looking up the key,
// as a client hanging up mid-decision would.
type decideCancelKeys struct {
	staticKeys
	cancel context.CancelFunc
}

func (k decideCancelKeys) Lookup(ctx context.Context, iss, kid string) (*jwks.Key, error) {
	k.cancel()
	return k.staticKeys.Lookup(ctx, iss, kid)
}

// decideCtxKeys returns the context's error, as a key source waiting on a
// refetch would.
type decideCtxKeys struct{}

func (decideCtxKeys) Lookup(ctx context.Context, _, _ string) (*jwks.Key, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func TestDecideCanceled(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.token(t, "ES256", f.claims(), nil)

	check := func(t *testing.T, d Decision) {
		t.Helper()
		decideCheck(t, d)
		if d.Allowed || d.Reason.Code != "canceled" {
			t.Fatalf("allowed %v reason %q (%v), want canceled", d.Allowed, d.Reason.Code, d.Err)
		}
	}
	t.Run("canceled before", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		check(t, f.engine.Decide(ctx, Input{Headers: bearer(tok)}))
	})
	t.Run("deadline passed", func(t *testing.T) {
		ctx, cancel := context.WithDeadline(context.Background(), time.Unix(1, 0))
		defer cancel()
		check(t, f.engine.Decide(ctx, Input{Headers: bearer(tok)}))
	})
	t.Run("canceled during verification", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		e, err := NewEngine(f.cfg, decideCancelKeys{staticKeys{testIss: f.set}, cancel}, nil, func() time.Time { return testNow })
		if err != nil {
			t.Fatal(err)
		}
		check(t, e.Decide(ctx, Input{Headers: bearer(tok)}))
	})
	t.Run("key lookup gives up", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		e, err := NewEngine(f.cfg, decideCtxKeys{}, nil, func() time.Time { return testNow })
		if err != nil {
			t.Fatal(err)
		}
		check(t, e.Decide(ctx, Input{Headers: bearer(tok)}))
	})
}

// decideSentinels is every denial sentinel with its reason code.
var decideSentinels = []struct {
	err  error
	code string
}{
	{ErrNoToken, "no_token"},
	{ErrBadAuthorization, "bad_authorization_header"},
	{ErrDuplicateCookie, "duplicate_cookie"},
	{ErrTokenTooLarge, "token_too_large"},
	{ErrMalformed, "malformed_token"},
	{ErrForbiddenHeader, "forbidden_header"},
	{ErrMissingKeyID, "missing_kid"},
	{ErrAlgorithm, "algorithm_not_allowed"},
	{ErrUnknownIssuer, "unknown_issuer"},
	{ErrTokenType, "wrong_token_type"},
	{ErrUnknownKey, "unknown_key"},
	{ErrKeysUnavailable, "keys_unavailable"},
	{ErrBadSignature, "bad_signature"},
	{ErrInvalidClaims, "invalid_claims"},
	{ErrExpired, "expired"},
	{ErrNotYetValid, "not_yet_valid"},
	{ErrLifetime, "lifetime_too_long"},
	{ErrAudience, "audience_mismatch"},
	{ErrTokenMismatch, "token_mismatch"},
	{ErrRevoked, "revoked"},
	{ErrRevocationUnavailable, "revocation_unavailable"},
	{ErrCanceled, "canceled"},
	{ErrBadPath, "bad_path"},
	{ErrUnknownRoute, "unknown_route"},
	{ErrInsufficientScope, "insufficient_scope"},
	{ErrClaimMismatch, "claim_mismatch"},
	{ErrCSRF, "csrf"},
	{ErrRouteIssuer, "route_issuer"},
}

// RFC 6750 §3: error and error_description are quoted NQSCHAR strings.
var (
	decideChallengeRE = regexp.MustCompile(`^Bearer realm="sidegate", error="(invalid_request|invalid_token|insufficient_scope)", error_description="[\x20\x21\x23-\x5B\x5D-\x7E]+"$`)
	decideNoErrorRE   = regexp.MustCompile(`^Bearer realm="sidegate"$`)
)

func TestDecideReasons(t *testing.T) {
	all := Reasons()
	codes := map[string]bool{}
	for _, r := range all {
		if codes[r.Code] {
			t.Errorf("reason code %q appears twice", r.Code)
		}
		codes[r.Code] = true
		if !regexp.MustCompile(`^[a-z][a-z_]*$`).MatchString(r.Code) {
			t.Errorf("reason code %q is not a stable snake_case label", r.Code)
		}
	}
	if len(decideSentinels)+2 != len(all) { // + ok and internal
		t.Errorf("%d sentinels tested, %d reasons in the table", len(decideSentinels), len(all))
	}

	seen := map[string]error{}
	for _, s := range decideSentinels {
		for _, err := range []error{s.err, fmt.Errorf("bearer: %w", s.err), fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", s.err))} {
			if r := ReasonFor(err); r.Code != s.code {
				t.Errorf("ReasonFor(%v) = %q, want %q", err, r.Code, s.code)
			}
		}
		if prev, dup := seen[s.code]; dup {
			t.Errorf("%v and %v share reason %q", prev, s.err, s.code)
		}
		seen[s.code] = s.err
		if !codes[s.code] {
			t.Errorf("reason %q missing from Reasons()", s.code)
		}
	}

	if r := ReasonFor(nil); r.Code != "ok" || r.Status != 200 {
		t.Errorf("ReasonFor(nil) = %+v", r)
	}
	for _, err := range []error{context.Canceled, context.DeadlineExceeded, fmt.Errorf("lookup: %w", context.DeadlineExceeded)} {
		if r := ReasonFor(err); r.Code != "canceled" {
			t.Errorf("ReasonFor(%v) = %q, want canceled", err, r.Code)
		}
	}
	for _, err := range []error{errors.New("boom"), jwks.ErrKeysUnavailable, jwks.ErrUnknownKey} {
		r := ReasonFor(err)
		if r.Code == "ok" || r.Status < 400 {
			t.Errorf("unknown error %v maps to %+v; want a denial", err, r)
		}
	}

	for _, r := range all {
		t.Run(r.Code, func(t *testing.T) {
			if r.Code == "ok" {
				if r.Status != 200 {
					t.Errorf("ok has status %d", r.Status)
				}
				return
			}
			switch r.Status {
			case 401, 403, 500, 503:
			default:
				t.Errorf("status %d", r.Status)
			}
			ch := r.Challenge()
			if r.Error == "" {
				if !decideNoErrorRE.MatchString(ch) {
					t.Errorf("Challenge() = %q, want realm only", ch)
				}
			} else if !decideChallengeRE.MatchString(ch) {
				t.Errorf("Challenge() = %q does not match RFC 6750 §3", ch)
			}
			body := r.Body()
			if !json.Valid([]byte(body)) {
				t.Fatalf("Body() = %q is not JSON", body)
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(body), &m); err != nil {
				t.Fatal(err)
			}
			if len(m) != 3 {
				t.Errorf("Body() has fields %v, want error, reason, description", slices.Sorted(maps.Keys(m)))
			}
			for _, k := range []string{"error", "reason", "description"} {
				if s, ok := m[k].(string); !ok || s == "" {
					t.Errorf("Body() %s = %v, want a non-empty string", k, m[k])
				}
			}
			if m["reason"] != r.Code {
				t.Errorf("Body() reason %v, want %q", m["reason"], r.Code)
			}
			if r.Error != "" && m["error"] != r.Error {
				t.Errorf("Body() error %v, want %q", m["error"], r.Error)
			}
		})
	}
	if got := ReasonFor(ErrNoToken).Challenge(); got != `Bearer realm="sidegate"` {
		t.Errorf("no_token challenge %q", got)
	}
}

// TestDecideNoSubjectTokensMustBeIdentical: without sub, nothing shows that
// a bearer token and a cookie token name the same user, so only the very
// same token in both places passes.
func TestDecideNoSubjectTokensMustBeIdentical(t *testing.T) {
	f := newFixture(t, nil)
	noSub := func() string {
		c := f.claims()
		delete(c, "sub")
		return f.token(t, "ES256", c, nil)
	}
	a, b := noSub(), noSub()
	same := f.decide(map[string]string{"authorization": "Bearer " + a, "cookie": "session=" + a})
	if !same.Allowed {
		t.Fatalf("same token twice: denied %v", same.Err)
	}
	diff := f.decide(map[string]string{"authorization": "Bearer " + a, "cookie": "session=" + b})
	if diff.Allowed || diff.Reason.Code != "token_mismatch" {
		t.Fatalf("two different tokens without sub: allowed=%v reason=%s, want token_mismatch", diff.Allowed, diff.Reason.Code)
	}
}

type decideUnavailable struct{}

func (decideUnavailable) Check(*Claims, time.Time) error { return ErrRevocationUnavailable }

// TestDecideRevocationUnavailable: when the denylist cannot vouch for
// itself (deny_after passed), a good token is denied with 503, never allowed.
func TestDecideRevocationUnavailable(t *testing.T) {
	f := newFixture(t, nil)
	f.deny = decideUnavailable{}
	f.build(t)
	d := f.decide(bearer(f.token(t, "ES256", f.claims(), nil)))
	if d.Allowed || d.Reason.Code != "revocation_unavailable" || d.Reason.Status != 503 {
		t.Fatalf("allowed=%v reason=%s status=%d, want a 503 revocation_unavailable", d.Allowed, d.Reason.Code, d.Reason.Status)
	}
}
