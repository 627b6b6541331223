package authz

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// extractTok is a token-shaped string; Extract never looks inside tokens.
const extractTok = "aGVhZGVy.cGF5bG9hZA.c2ln"

func extractBearer(tok string) Candidate { return Candidate{Source: "bearer", Token: tok} }

func extractCookie(name, tok string) Candidate {
	return Candidate{Source: "cookie:" + name, Token: tok}
}

func TestExtract(t *testing.T) {
	both := ExtractOptions{Bearer: true, Cookies: []string{"session"}}
	cookieOnly := ExtractOptions{Cookies: []string{"session"}}
	bearerOnly := ExtractOptions{Bearer: true}
	ordered := ExtractOptions{Bearer: true, Cookies: []string{"primary", "fallback"}}

	tests := []struct {
		name    string
		opts    ExtractOptions
		headers map[string]string
		want    []Candidate
		err     error
	}{
		// The Authorization scheme is case-insensitive (RFC 9110 §11.1).
		{"Bearer", both, map[string]string{"authorization": "Bearer " + extractTok}, []Candidate{extractBearer(extractTok)}, nil},
		{"bearer", both, map[string]string{"authorization": "bearer " + extractTok}, []Candidate{extractBearer(extractTok)}, nil},
		{"BEARER", both, map[string]string{"authorization": "BEARER " + extractTok}, []Candidate{extractBearer(extractTok)}, nil},
		{"bEaReR", both, map[string]string{"authorization": "bEaReR " + extractTok}, []Candidate{extractBearer(extractTok)}, nil},
		{"several spaces before the token", both, map[string]string{"authorization": "Bearer     " + extractTok}, []Candidate{extractBearer(extractTok)}, nil},
		{"surrounding whitespace", both, map[string]string{"authorization": " \tBearer " + extractTok + " \t"}, []Candidate{extractBearer(extractTok)}, nil},
		{"b64token alphabet and padding", both, map[string]string{"authorization": "Bearer aZ09-._~+/=="}, []Candidate{extractBearer("aZ09-._~+/==")}, nil},

		// Anything else in Authorization is an error, never "no token".
		{"Basic credentials", both, map[string]string{"authorization": "Basic dXNlcjpwYXNz"}, nil, ErrBadAuthorization},
		{"other scheme", both, map[string]string{"authorization": "Token " + extractTok}, nil, ErrBadAuthorization},
		{"empty header", both, map[string]string{"authorization": ""}, nil, ErrBadAuthorization},
		{"whitespace header", both, map[string]string{"authorization": " \t "}, nil, ErrBadAuthorization},
		{"Bearer alone", both, map[string]string{"authorization": "Bearer"}, nil, ErrBadAuthorization},
		{"Bearer and a space", both, map[string]string{"authorization": "Bearer "}, nil, ErrBadAuthorization},
		{"scheme glued to token", both, map[string]string{"authorization": "Bearer" + extractTok}, nil, ErrBadAuthorization},
		{"scheme with colon", both, map[string]string{"authorization": "Bearer: " + extractTok}, nil, ErrBadAuthorization},
		{"tab instead of space", both, map[string]string{"authorization": "Bearer\t" + extractTok}, nil, ErrBadAuthorization},
		{"two tokens", both, map[string]string{"authorization": "Bearer a b"}, nil, ErrBadAuthorization},
		{"comma-merged duplicates", both, map[string]string{"authorization": "Bearer x, Bearer y"}, nil, ErrBadAuthorization},
		{"comma-merged duplicates without space", both, map[string]string{"authorization": "Bearer x,Bearer y"}, nil, ErrBadAuthorization},
		{"comma-merged same token", both, map[string]string{"authorization": "Bearer " + extractTok + ",Bearer " + extractTok}, nil, ErrBadAuthorization},
		{"Bearer with auth-params", both, map[string]string{"authorization": `Bearer token="` + extractTok + `"`}, nil, ErrBadAuthorization},
		{"padding in the middle", both, map[string]string{"authorization": "Bearer ab=cd"}, nil, ErrBadAuthorization},
		{"padding only", both, map[string]string{"authorization": "Bearer =="}, nil, ErrBadAuthorization},
		{"quote", both, map[string]string{"authorization": `Bearer a"b`}, nil, ErrBadAuthorization},
		{"semicolon", both, map[string]string{"authorization": "Bearer a;b"}, nil, ErrBadAuthorization},
		{"percent", both, map[string]string{"authorization": "Bearer a%2Eb"}, nil, ErrBadAuthorization},
		{"NUL", both, map[string]string{"authorization": "Bearer a\x00b"}, nil, ErrBadAuthorization},
		{"CRLF", both, map[string]string{"authorization": "Bearer a\r\nb"}, nil, ErrBadAuthorization},
		{"non-ASCII", both, map[string]string{"authorization": "Bearer abcé"}, nil, ErrBadAuthorization},
		{"JWS JSON serialization", both, map[string]string{"authorization": `Bearer {"payload":"x"}`}, nil, ErrBadAuthorization},

		// Bearer disabled: Authorization is not ours to judge.
		{"bearer disabled, cookie used", cookieOnly, map[string]string{"authorization": "Bearer other", "cookie": "session=" + extractTok}, []Candidate{extractCookie("session", extractTok)}, nil},
		{"bearer disabled, Basic ignored", cookieOnly, map[string]string{"authorization": "Basic dXNlcjpwYXNz", "cookie": "session=" + extractTok}, []Candidate{extractCookie("session", extractTok)}, nil},
		{"bearer disabled, no cookie", cookieOnly, map[string]string{"authorization": "Bearer " + extractTok}, nil, ErrNoToken},
		{"no cookies configured", bearerOnly, map[string]string{"cookie": "session=" + extractTok}, nil, ErrNoToken},
		{"no cookies configured, duplicate ignored", bearerOnly, map[string]string{"authorization": "Bearer " + extractTok, "cookie": "session=a; session=b"}, []Candidate{extractBearer(extractTok)}, nil},

		// Cookies, RFC 6265.
		{"one cookie", both, map[string]string{"cookie": "session=" + extractTok}, []Candidate{extractCookie("session", extractTok)}, nil},
		{"among several", both, map[string]string{"cookie": "a=1; session=" + extractTok + "; b=2"}, []Candidate{extractCookie("session", extractTok)}, nil},
		{"no space after semicolon", both, map[string]string{"cookie": "a=1;session=" + extractTok + ";b=2"}, []Candidate{extractCookie("session", extractTok)}, nil},
		{"spaces around name and value", both, map[string]string{"cookie": "a=1;  session = " + extractTok + " ; b=2"}, []Candidate{extractCookie("session", extractTok)}, nil},
		{"quoted value", both, map[string]string{"cookie": `session="` + extractTok + `"`}, []Candidate{extractCookie("session", extractTok)}, nil},
		{"pair without =", both, map[string]string{"cookie": "flag; session=" + extractTok + "; other"}, []Candidate{extractCookie("session", extractTok)}, nil},
		{"bare name like ours is skipped", both, map[string]string{"cookie": "session; a=1"}, nil, ErrNoToken},
		{"prefix names are other cookies", both, map[string]string{"cookie": "session2=x; xsession=y; session_id=z; session=" + extractTok}, []Candidate{extractCookie("session", extractTok)}, nil},
		{"only prefix names", both, map[string]string{"cookie": "session2=x; xsession=y"}, nil, ErrNoToken},
		{"names are case-sensitive", both, map[string]string{"cookie": "Session=x; SESSION=y"}, nil, ErrNoToken},
		{"value holding =", both, map[string]string{"cookie": "session=" + extractTok + "=="}, []Candidate{extractCookie("session", extractTok+"==")}, nil},
		{"other cookies duplicated", both, map[string]string{"cookie": "a=1; a=2; session=" + extractTok}, []Candidate{extractCookie("session", extractTok)}, nil},

		// Cookie tossing: the same name twice is a denial, whatever the values.
		{"duplicate cookie", both, map[string]string{"cookie": "session=a; session=b"}, nil, ErrDuplicateCookie},
		{"duplicate cookie same value", both, map[string]string{"cookie": "session=" + extractTok + "; other=1; session=" + extractTok}, nil, ErrDuplicateCookie},
		{"duplicate across joined Cookie headers", both, map[string]string{"cookie": "a=1; session=x" + "; " + "session=y; b=2"}, nil, ErrDuplicateCookie},
		{"duplicate with one empty", both, map[string]string{"cookie": "session=; session=" + extractTok}, nil, ErrDuplicateCookie},
		{"duplicate cookie beside a good bearer", both, map[string]string{"authorization": "Bearer " + extractTok, "cookie": "session=a; session=b"}, nil, ErrDuplicateCookie},

		// Empty values are a cleared cookie: absent.
		{"empty cookie value", both, map[string]string{"cookie": "session="}, nil, ErrNoToken},
		{"empty quoted value", both, map[string]string{"cookie": `session=""`}, nil, ErrNoToken},
		{"blank cookie value", both, map[string]string{"cookie": "session=  ; a=1"}, nil, ErrNoToken},
		{"empty cookie beside bearer", both, map[string]string{"authorization": "Bearer " + extractTok, "cookie": "session="}, []Candidate{extractBearer(extractTok)}, nil},
		{"empty Cookie header", both, map[string]string{"cookie": ""}, nil, ErrNoToken},

		// Several configured names: first in configured order wins.
		{"configured order, not header order", ordered, map[string]string{"cookie": "fallback=F; primary=P"}, []Candidate{extractCookie("primary", "P")}, nil},
		{"second name when first absent", ordered, map[string]string{"cookie": "x=1; fallback=F"}, []Candidate{extractCookie("fallback", "F")}, nil},
		{"second name when first empty", ordered, map[string]string{"cookie": "primary=; fallback=F"}, []Candidate{extractCookie("fallback", "F")}, nil},
		{"duplicate of the second name still denies", ordered, map[string]string{"cookie": "primary=P; fallback=A; fallback=B"}, nil, ErrDuplicateCookie},

		// Both sources: both are returned, bearer first, for Decide to match.
		{"bearer and cookie", both, map[string]string{"authorization": "Bearer b1", "cookie": "session=c1"}, []Candidate{extractBearer("b1"), extractCookie("session", "c1")}, nil},
		{"bad bearer never falls through to the cookie", both, map[string]string{"authorization": "Basic x", "cookie": "session=" + extractTok}, nil, ErrBadAuthorization},

		// Nothing at all.
		{"no headers", both, nil, nil, ErrNoToken},
		{"unrelated headers", both, map[string]string{"x-user-id": "root", "accept": "*/*"}, nil, ErrNoToken},
		{"nothing enabled", ExtractOptions{}, map[string]string{"authorization": "Bearer " + extractTok, "cookie": "session=" + extractTok}, nil, ErrNoToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Extract(tt.headers, tt.opts)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Extract = %v, %v; want error %v", got, err, tt.err)
				}
				if got != nil {
					t.Errorf("Extract returned candidates %v with error %v", got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Extract: unexpected error %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Extract = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestExtractErrorsNameNoToken checks that no error Extract returns quotes
// the credential: details go to the log, where tokens must never appear.
func TestExtractErrorsNameNoToken(t *testing.T) {
	const secret = "c2VjcmV0.c2VjcmV0.c2VjcmV0"
	opts := ExtractOptions{Bearer: true, Cookies: []string{"session"}}
	for _, h := range []map[string]string{
		{"authorization": "Bearer " + secret + " " + secret},
		{"authorization": "Basic " + secret},
		{"authorization": "Bearer " + secret + ", Bearer " + secret},
		{"cookie": "session=" + secret + "; session=" + secret},
	} {
		_, err := Extract(h, opts)
		if err == nil {
			t.Fatalf("Extract(%q): no error", h)
		}
		if strings.Contains(err.Error(), "c2VjcmV0") {
			t.Errorf("Extract(%q) error %q quotes the credential", h, err)
		}
	}
}

// TestExtractDecisions runs the extraction rules through the engine with
// real tokens, asserting the decision and its reason.
func TestExtractDecisions(t *testing.T) {
	f := newFixture(t, nil)
	good := f.token(t, "ES256", f.claims(), nil)
	other := f.token(t, "EdDSA", f.claims(), nil) // same iss and sub

	tests := []struct {
		name    string
		mutate  func(*Config)
		headers map[string]string
		allowed bool
		reason  string
		source  string // Claims.KeyID of the deciding token, when allowed
	}{
		{"Bearer", nil, map[string]string{"authorization": "Bearer " + good}, true, "ok", "kid-ES256"},
		{"bearer", nil, map[string]string{"authorization": "bearer " + good}, true, "ok", "kid-ES256"},
		{"BEARER", nil, map[string]string{"authorization": "BEARER " + good}, true, "ok", "kid-ES256"},
		{"several spaces", nil, map[string]string{"authorization": "Bearer   " + good}, true, "ok", "kid-ES256"},
		{"Basic", nil, map[string]string{"authorization": "Basic dXNlcjpwYXNz"}, false, "bad_authorization_header", ""},
		{"empty Authorization", nil, map[string]string{"authorization": ""}, false, "bad_authorization_header", ""},
		{"Bearer alone", nil, map[string]string{"authorization": "Bearer"}, false, "bad_authorization_header", ""},
		{"two tokens", nil, map[string]string{"authorization": "Bearer " + good + " " + good}, false, "bad_authorization_header", ""},
		{"comma-merged duplicates", nil, map[string]string{"authorization": "Bearer " + good + ", Bearer " + good}, false, "bad_authorization_header", ""},
		{"outside b64token", nil, map[string]string{"authorization": "Bearer " + good + "\x00"}, false, "bad_authorization_header", ""},
		{"b64token but not a JWS", nil, map[string]string{"authorization": "Bearer " + good + "=="}, false, "malformed_token", ""},
		{"Basic beside a good cookie", nil, map[string]string{"authorization": "Basic dXNlcjpwYXNz", "cookie": "session=" + good}, false, "bad_authorization_header", ""},
		{"bearer disabled: Authorization ignored, cookie used", func(c *Config) { c.Bearer = false }, map[string]string{"authorization": "Basic dXNlcjpwYXNz", "cookie": "session=" + good}, true, "ok", "kid-ES256"},
		{"bearer disabled: bearer token alone is no token", func(c *Config) { c.Bearer = false }, map[string]string{"authorization": "Bearer " + good}, false, "no_token", ""},
		{"cookie", nil, map[string]string{"cookie": "a=1; session=" + good + "; b=2"}, true, "ok", "kid-ES256"},
		{"quoted cookie", nil, map[string]string{"cookie": `session="` + good + `"`}, true, "ok", "kid-ES256"},
		{"prefix-named cookies ignored", nil, map[string]string{"cookie": "session2=junk; xsession=junk; session=" + good}, true, "ok", "kid-ES256"},
		{"only prefix-named cookies", nil, map[string]string{"cookie": "session2=" + good + "; xsession=" + good}, false, "no_token", ""},
		{"duplicate cookie", nil, map[string]string{"cookie": "session=" + good + "; session=" + other}, false, "duplicate_cookie", ""},
		{"duplicate cookie, same value", nil, map[string]string{"cookie": "session=" + good + "; session=" + good}, false, "duplicate_cookie", ""},
		{"duplicate across two Cookie headers", nil, map[string]string{"cookie": "session=" + good + "; " + "session=" + other}, false, "duplicate_cookie", ""},
		{"empty cookie", nil, map[string]string{"cookie": "session="}, false, "no_token", ""},
		{"empty cookie, bearer decides", nil, map[string]string{"authorization": "Bearer " + good, "cookie": "session="}, true, "ok", "kid-ES256"},
		{"first configured cookie wins", func(c *Config) { c.Cookies = []string{"primary", "fallback"} }, map[string]string{"cookie": "fallback=junk; primary=" + good}, true, "ok", "kid-ES256"},
		{"second configured cookie when first absent", func(c *Config) { c.Cookies = []string{"primary", "fallback"} }, map[string]string{"cookie": "fallback=" + other}, true, "ok", "kid-EdDSA"},
		// The second name is not consulted when the first is present, even
		// if it would be a bad token.
		{"lower-priority cookie not verified", func(c *Config) { c.Cookies = []string{"primary", "fallback"} }, map[string]string{"cookie": "primary=" + good + "; fallback=junk"}, true, "ok", "kid-ES256"},
		{"no token", nil, map[string]string{"accept": "*/*"}, false, "no_token", ""},
		{"no headers", nil, nil, false, "no_token", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := f
			if tt.mutate != nil {
				f = &fixture{keys: f.keys, set: f.set, cfg: f.cfg, deny: f.deny}
				f.cfg.Cookies = slices.Clone(f.cfg.Cookies)
				tt.mutate(&f.cfg)
				f.build(t)
			}
			d := f.decide(tt.headers)
			if d.Allowed != tt.allowed || d.Reason.Code != tt.reason {
				t.Fatalf("Decide = allowed %v reason %q (%v); want allowed %v reason %q", d.Allowed, d.Reason.Code, d.Err, tt.allowed, tt.reason)
			}
			if tt.allowed {
				if d.Err != nil {
					t.Errorf("allowed with Err %v", d.Err)
				}
				if d.Claims == nil || d.Claims.KeyID != tt.source {
					t.Errorf("decided by %+v, want kid %q", d.Claims, tt.source)
				}
			} else if d.Err == nil {
				t.Error("denied with no Err")
			}
		})
	}
}
