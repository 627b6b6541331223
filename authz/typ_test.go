package authz

import (
	"strconv"
	"testing"
)

// TestTokenTypes: with token_types configured, the header typ must be one
// of them (case-insensitive, "application/" optional); a missing typ, or
// another type such as an OIDC ID token's "JWT", is wrong_token_type.
// Without token_types, typ is not checked.
func TestTokenTypes(t *testing.T) {
	strict := newFixture(t, func(c *Config) { c.Issuers[0].TokenTypes = []string{"at+jwt"} })
	lax := newFixture(t, nil)
	lax.keys, lax.set = strict.keys, strict.set
	lax.build(t)
	for _, tc := range []struct {
		name       string
		typ        any // nil removes typ
		strictWant string
	}{
		{"at+jwt", "at+jwt", "ok"},
		{"upper case", "AT+JWT", "ok"},
		{"with application/", "application/at+jwt", "ok"},
		{"Application/ mixed case", "Application/At+Jwt", "ok"},
		{"JWT (an ID token)", "JWT", "wrong_token_type"},
		{"missing", nil, "wrong_token_type"},
		{"empty", "", "wrong_token_type"},
		{"bare application/", "application/", "wrong_token_type"},
		{"prefix only", "at", "wrong_token_type"},
		{"not a string", 1, "malformed_token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			extra := map[string]any{"typ": tc.typ}
			tok := strict.token(t, "ES256", strict.claims(), extra)
			if d := strict.decide(bearer(tok)); d.Reason.Code != tc.strictWant || d.Allowed != (tc.strictWant == "ok") {
				t.Errorf("with token_types: allowed=%v reason=%s (%v), want %s", d.Allowed, d.Reason.Code, d.Err, tc.strictWant)
			}
			laxWant := "ok"
			if tc.strictWant == "malformed_token" {
				laxWant = "malformed_token"
			}
			if d := lax.decide(bearer(tok)); d.Reason.Code != laxWant {
				t.Errorf("without token_types: reason=%s (%v), want %s", d.Reason.Code, d.Err, laxWant)
			}
		})
	}
}

// TestDuplicateClaimsRefused: a payload naming a claim twice is refused,
// so an upstream reading the forwarded payload cannot see another user.
func TestDuplicateClaimsRefused(t *testing.T) {
	f := newFixture(t, nil)
	payload := []byte(`{"iss":"` + testIss + `","aud":"` + testAud + `","sub":"admin","sub":"alice","exp":` +
		strconv.FormatInt(testNow.Unix()+600, 10) + `}`)
	tok := f.keys["ES256"].SignRaw(t, []byte(`{"alg":"ES256","kid":"kid-ES256"}`), payload)
	if d := f.decide(bearer(tok)); d.Allowed || d.Reason.Code != "malformed_token" {
		t.Fatalf("allowed=%v reason=%s, want malformed_token", d.Allowed, d.Reason.Code)
	}
}

// TestRequireIssuedAt: with RequireIssuedAt a token without iat is
// invalid_claims; without it, it passes (the default).
func TestRequireIssuedAt(t *testing.T) {
	for _, require := range []bool{false, true} {
		f := newFixture(t, func(c *Config) { c.RequireIssuedAt = require })
		c := f.claims()
		delete(c, "iat")
		d := f.decide(bearer(f.token(t, "ES256", c, nil)))
		want := "ok"
		if require {
			want = "invalid_claims"
		}
		if d.Reason.Code != want {
			t.Errorf("RequireIssuedAt=%v, no iat: reason %s (%v), want %s", require, d.Reason.Code, d.Err, want)
		}
		if d := f.decide(bearer(f.token(t, "ES256", f.claims(), nil))); !d.Allowed {
			t.Errorf("RequireIssuedAt=%v, with iat: denied %v", require, d.Err)
		}
	}
}

// TestInvalidUTF8Refused: a header or payload that is not UTF-8 is
// malformed_token, even when validly signed, so the claims sidegate reads are
// always the bytes it verified.
func TestInvalidUTF8Refused(t *testing.T) {
	f := newFixture(t, nil)
	payload := []byte(`{"iss":"` + testIss + `","aud":"` + testAud + `","sub":"al\xffice","exp":` +
		strconv.FormatInt(testNow.Unix()+600, 10) + `}`)
	tok := f.keys["ES256"].SignRaw(t, []byte(`{"alg":"ES256","kid":"kid-ES256"}`), payload)
	if d := f.decide(bearer(tok)); d.Allowed || d.Reason.Code != "malformed_token" {
		t.Fatalf("payload: allowed=%v reason=%s, want malformed_token", d.Allowed, d.Reason.Code)
	}
	tok = f.keys["ES256"].SignRaw(t, []byte("{\"alg\":\"ES256\",\"kid\":\"kid-ES256\",\"x\":\"\xfe\"}"), []byte(`{}`))
	if d := f.decide(bearer(tok)); d.Allowed || d.Reason.Code != "malformed_token" {
		t.Fatalf("header: allowed=%v reason=%s, want malformed_token", d.Allowed, d.Reason.Code)
	}
}
