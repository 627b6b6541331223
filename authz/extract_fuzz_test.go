package authz

import (
	"errors"
	"strings"
	"testing"
)

// FuzzExtract: header and cookie parsing never panics, and whatever it
// returns obeys the extraction rules: a bearer token is one b64token taken
// from a "Bearer" credential; a cookie token is the value of a configured
// cookie sent once, with no separator in it; anything in Authorization that
// is not one Bearer token is an error, never a fall-through to the cookie.
func FuzzExtract(f *testing.F) {
	for _, s := range [][2]string{
		{"Bearer a.b.c", ""},
		{"bearer   a.b.c", "session=x.y.z"},
		{"Basic dXNlcjpwYXNz", "session=x.y.z"},
		{"Bearer a, Bearer b", ""},
		{"Bearer a b", ""},
		{"", "session=a; session=b"},
		{"", `theme=dark; session="q.r.s"; lang=en`},
		{"", "session=; other=1"},
		{"", "sid=1; session2=2; xsession=3"},
		{"Bearer\ta", "session=a;session=a"},
	} {
		f.Add(s[0], s[1], true, true)
		f.Add(s[0], s[1], false, true)
		f.Add(s[0], s[1], true, false)
	}
	names := []string{"session", "sid"}
	f.Fuzz(func(t *testing.T, authorization, cookie string, bearer, hasAuth bool) {
		h := map[string]string{"cookie": cookie}
		if hasAuth {
			h["authorization"] = authorization
		}
		cands, err := Extract(h, ExtractOptions{Bearer: bearer, Cookies: names})
		if err != nil {
			if !errors.Is(err, ErrNoToken) && !errors.Is(err, ErrBadAuthorization) && !errors.Is(err, ErrDuplicateCookie) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			if cands != nil {
				t.Fatalf("candidates %v returned with error %v", cands, err)
			}
			return
		}
		if bearer && hasAuth && strings.Contains(authorization, ",") {
			t.Fatalf("a comma-merged Authorization %q was accepted", authorization)
		}
		if len(cands) == 0 || len(cands) > 2 {
			t.Fatalf("%d candidates", len(cands))
		}
		if bearer && hasAuth && cands[0].Source != "bearer" {
			t.Fatalf("Authorization %q present and bearer on, yet the first candidate is %s", authorization, cands[0].Source)
		}
		for _, c := range cands {
			switch {
			case c.Source == "bearer":
				if !bearer || !hasAuth || !isB64Token(c.Token) || !strings.Contains(authorization, c.Token) {
					t.Fatalf("bearer candidate %q from %q", c.Token, authorization)
				}
				scheme, _, _ := strings.Cut(strings.Trim(authorization, " \t"), " ")
				if !strings.EqualFold(scheme, "bearer") {
					t.Fatalf("bearer token taken from scheme %q", scheme)
				}
			case strings.HasPrefix(c.Source, "cookie:"):
				name := strings.TrimPrefix(c.Source, "cookie:")
				if name != "session" && name != "sid" || c.Token == "" || strings.ContainsRune(c.Token, ';') {
					t.Fatalf("cookie candidate %+v from %q", c, cookie)
				}
				if !strings.Contains(cookie, name) || !strings.Contains(cookie, c.Token) {
					t.Fatalf("cookie candidate %+v not in %q", c, cookie)
				}
			default:
				t.Fatalf("source %q", c.Source)
			}
		}
	})
}
