package authz

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalizePath(t *testing.T) {
	tests := []struct {
		in, want string
		bad      string // a part of the error's detail; "" for no error
	}{
		{in: "/", want: "/"},
		{in: "/a/b", want: "/a/b"},
		{in: "/a/b/", want: "/a/b/"},
		{in: "/a/b?x=1#f", want: "/a/b"},
		{in: "/a/b#f?x", want: "/a/b"},
		{in: "/a?x=/../..%2F", want: "/a"},
		{in: "/%61dmin/x", want: "/admin/x"},
		{in: "/adm%69n/x", want: "/admin/x"},
		{in: "/admin/../admin/x", want: "/admin/x"},
		{in: "//admin/x", want: "/admin/x"},
		{in: "/a//b///c", want: "/a/b/c"},
		{in: "/a//", want: "/a/"},
		{in: "/admin/%2e%2e/secret", want: "/secret"},
		{in: "/admin/%2E%2e/secret", want: "/secret"},
		{in: "/admin/.%2E/secret", want: "/secret"},
		{in: "/a/./b", want: "/a/b"},
		{in: "/a/b/.", want: "/a/b/"},
		{in: "/a/b/..", want: "/a/"},
		{in: "/a/..", want: "/"},
		{in: "/.", want: "/"},
		{in: "/./", want: "/"},
		{in: "/a/../b/../c", want: "/c"},
		{in: "/a/./../b", want: "/b"},
		{in: "/a/b/../../c/", want: "/c/"},
		{in: "/.well-known/x", want: "/.well-known/x"},
		{in: "/..a/.b/", want: "/..a/.b/"},
		{in: "/a%2db%5Fc%7e", want: "/a-b_c~"},
		// Sub-delimiters, ":" and "@" are decoded too: "/users:delete" and
		// "/users%3Adelete" are one path to every common server.
		{in: "/api/users%3Adelete", want: "/api/users:delete"},
		{in: "/u/a%40b.com", want: "/u/a@b.com"},
		{in: "/a%21%24%26%27%28%29%2A%2B%2C%3D", want: "/a!$&'()*+,="},
		// Everything else is escaped, in upper-case hex.
		{in: "/a%25b", want: "/a%25b"},
		{in: "/a%2541", want: "/a%2541"},
		{in: "/a%3fb%23c", want: "/a%3Fb%23c"},
		{in: "/a b", want: "/a%20b"},
		{in: "/a%20b", want: "/a%20b"},
		{in: `/a"<>^` + "`{|}[]", want: "/a%22%3C%3E%5E%60%7B%7C%7D%5B%5D"},
		{in: "/caf%c3%a9", want: "/caf%C3%A9"},
		{in: "/café", want: "/caf%C3%A9"},
		{in: "/caf\xc3%A9", want: "/caf%C3%A9"},
		{in: "/%F0%9F%98%80", want: "/%F0%9F%98%80"},
		{in: "/" + strings.Repeat("a", maxPathLen-1), want: "/" + strings.Repeat("a", maxPathLen-1)},

		{in: "", bad: "does not start with /"},
		{in: "admin/x", bad: "does not start with /"},
		{in: "*", bad: "does not start with /"},
		{in: "?a", bad: "does not start with /"},
		{in: "http://h/admin", bad: "does not start with /"},
		{in: "/admin;x/y", bad: "semicolon"},
		{in: "/app;jsessionid=1", bad: "semicolon"},
		{in: "/admin%3bx/y", bad: "semicolon"},
		{in: "/admin./x", bad: `ends in "."`},
		{in: "/admin%2e/x", bad: `ends in "."`},
		{in: "/admin...", bad: `ends in "."`},
		{in: "/admin%20/x", bad: "ends in a space"},
		{in: "/admin /x", bad: "ends in a space"},
		{in: "/admin%2Fx", bad: "encoded slash"},
		{in: "/admin%2fx", bad: "encoded slash"},
		{in: "/public/..%2fadmin", bad: "encoded slash"},
		{in: "/admin%5Cx", bad: "encoded backslash"},
		{in: "/admin%5cx", bad: "encoded backslash"},
		{in: `/admin\x`, bad: "backslash at byte 6"},
		{in: "/x/../../admin", bad: "above the root"},
		{in: "/..", bad: "above the root"},
		{in: "/../admin", bad: "above the root"},
		{in: "/%2e%2e/admin", bad: "above the root"},
		{in: "/a//../b", bad: `".." after "//"`},
		{in: "//..", bad: `".." after "//"`},
		{in: "/a//./../b", bad: `".." after "//"`},
		{in: "/a%", bad: "invalid percent-encoding"},
		{in: "/a%2", bad: "invalid percent-encoding"},
		{in: "/a%zz", bad: "invalid percent-encoding"},
		{in: "/a%2g/b", bad: "invalid percent-encoding"},
		{in: "/a%%41", bad: "invalid percent-encoding"},
		{in: "/a\x00b", bad: "NUL"},
		{in: "/a%00b", bad: "NUL"},
		{in: "/a\tb", bad: "control byte 0x09"},
		{in: "/a%0Ab", bad: "control byte 0x0A"},
		{in: "/a%0d", bad: "control byte 0x0D"},
		{in: "/a%7F", bad: "control byte 0x7F"},
		{in: "/a\x7f", bad: "control byte 0x7F"},
		{in: "/a%C2%80", bad: "C1 control"},
		{in: "/a%FF", bad: "does not start a UTF-8 sequence"},
		{in: "/a\xff", bad: "does not start a UTF-8 sequence"},
		{in: "/a%A9", bad: "does not start a UTF-8 sequence"},
		{in: "/a%C3", bad: "not UTF-8"},
		{in: "/a%C3/b", bad: "not UTF-8"},
		{in: "/a%C3b", bad: "not UTF-8"},
		{in: "/a%C3%C3", bad: "does not continue"},
		{in: "/a%C0%AF", bad: "invalid UTF-8"}, // overlong "/"
		{in: "/a%E0%80%AF", bad: "invalid UTF-8"},
		{in: "/a%ED%A0%80", bad: "invalid UTF-8"}, // surrogate
		{in: "/a%F4%90%80%80", bad: "invalid UTF-8"},
		{in: "/" + strings.Repeat("a", maxPathLen), bad: "limit 8192"},
		{in: "/" + strings.Repeat("é", 3000), bad: "once normalized"},
	}
	for _, tt := range tests {
		got, err := normalizePath(tt.in)
		if tt.bad != "" {
			if !errors.Is(err, ErrBadPath) || !strings.Contains(err.Error(), tt.bad) {
				t.Errorf("normalizePath(%.40q) = %q, %v; want an ErrBadPath with %q", tt.in, got, err, tt.bad)
			}
			if r := ReasonFor(err); r.Code != "bad_path" || r.Status != 403 || r.Error != "" {
				t.Errorf("normalizePath(%.40q): reason %+v", tt.in, r)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("normalizePath(%.40q) = %q, %v; want %q", tt.in, got, err, tt.want)
			continue
		}
		if again, err := normalizePath(got); again != got || err != nil {
			t.Errorf("normalizePath(%q) = %q, %v; want it unchanged", got, again, err)
		}
	}
}

// TestNormalizePathErrorQuotesLittle: the detail goes to the log; it names
// the problem and where, and quotes no more of the path than an escape.
func TestNormalizePathErrorQuotesLittle(t *testing.T) {
	secret := "reset-token-0123456789abcdef"
	for _, in := range []string{
		"/" + secret + "/%2F", "/" + secret + "/%zz", "/" + secret + ";", "/" + secret + ".",
		"/" + secret + "/\x00", "/" + secret + "/%FF", "/" + secret + "/../../..",
	} {
		_, err := normalizePath(in)
		if err == nil {
			t.Fatalf("normalizePath(%q) = nil error", in)
		}
		if msg := err.Error(); strings.Contains(msg, secret[:8]) || len(msg) > 80 {
			t.Errorf("normalizePath(%q): detail %q quotes the path or is long", in, msg)
		}
	}
}

// TestNormalizePathNoAllocs: a path that needs no change costs nothing,
// escapes included; one that does costs its result.
func TestNormalizePathNoAllocs(t *testing.T) {
	for _, tt := range []struct {
		in     string
		allocs float64
	}{
		{"/api/v1/orders/42?expand=items", 0},
		{"/caf%C3%A9/%25/x", 0},
		{"/" + strings.Repeat("seg/", 200), 0},
		{"/" + strings.Repeat("caf%C3%A9/", 100), 1},
		{"/api/./v1//orders", 1},
	} {
		if n := testing.AllocsPerRun(100, func() { normalizePath(tt.in) }); n != tt.allocs {
			t.Errorf("normalizePath(%.30q): %v allocations, want %v", tt.in, n, tt.allocs)
		}
	}
}

// TestPathBypass runs the known bypass shapes against a prefix rule
// /admin/ (case-sensitive, and with ignore_case) next to a public
// /public/: a path either selects the route the upstream will serve, or
// is bad_path; it never reaches a route by its raw spelling.
func TestPathBypass(t *testing.T) {
	policy := func(ignoreCase bool) *Policy {
		return pathTestPolicy(t, PolicyConfig{Routes: []RouteConfig{
			{Name: "admin", Match: RouteMatch{PathPrefix: "/admin/", IgnoreCase: ignoreCase}, Require: Requirements{Scopes: []string{"admin"}}},
			{Name: "public", Match: RouteMatch{PathPrefix: "/public/"}, Auth: "none"},
		}})
	}
	exact, folded := policy(false), policy(true)
	const bad = "bad_path"
	tests := []struct {
		path        string
		exact, fold string // route name, or bad_path
	}{
		{"/admin/x", "admin", "admin"},
		{"/admin/../admin/x", "admin", "admin"},
		{"/%61dmin/x", "admin", "admin"},
		{"/adm%69n/", "admin", "admin"},
		{"//admin/x", "admin", "admin"},
		{"/./admin/x", "admin", "admin"},
		{"/admin/x?y=/public/", "admin", "admin"},
		{"/ADMIN/x", "default", "admin"},
		{"/Admin/x", "default", "admin"},
		{"/%41dmin/x", "default", "admin"},
		{"/admin", "default", "default"}, // a prefix is a plain string prefix
		{"/admin/%2e%2e/secret", "default", "default"},
		{"/public/x", "public", "public"},
		{"/public/../admin/x", "admin", "admin"},
		{"/public/%2e%2e/admin/x", "admin", "admin"},
		{"/public/./../admin/x", "admin", "admin"},
		{"/admin;x/y", bad, bad},
		{"/public/..;/admin/x", bad, bad},
		{"/admin./x", bad, bad},
		{"/admin%2e/x", bad, bad},
		{"/admin%20/x", bad, bad},
		{"/admin%2Fx", bad, bad},
		{"/%2Fadmin/x", bad, bad},
		{"/public/..%2fadmin", bad, bad},
		{"/public/..%2Fadmin/x", bad, bad},
		{"/public/..%5Cadmin/x", bad, bad},
		{`/public/..\admin/x`, bad, bad},
		{"/public//../admin/x", bad, bad},
		{"/x/../../admin", bad, bad},
		{"/admin%00/x", bad, bad},
		{"/admin%C0%AF/x", bad, bad},
		{"admin/x", bad, bad},
	}
	for _, tt := range tests {
		for _, c := range []struct {
			p    *Policy
			want string
		}{{exact, tt.exact}, {folded, tt.fold}} {
			rt, err := c.p.Select(RouteRequest{Method: "GET", Host: "h", Path: tt.path})
			got := rt.Name
			if err != nil {
				got = ReasonFor(err).Code
				if rt.Name != unrouted {
					t.Errorf("%q: bad path on route %q, want %q", tt.path, rt.Name, unrouted)
				}
			}
			if got != c.want {
				t.Errorf("%q (ignore_case %t): %s (%v), want %s", tt.path, c.p == folded, got, err, c.want)
			}
		}
	}
}

func pathTestPolicy(tb testing.TB, cfg PolicyConfig) *Policy {
	tb.Helper()
	p, _, err := CompilePolicy(cfg, []string{testIss})
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func BenchmarkNormalizePath(b *testing.B) {
	for _, bm := range []struct{ name, path string }{
		{"clean", "/api/v1/orders/42?expand=items"},
		{"clean-escaped", "/catalog/caf%C3%A9/items"},
		{"clean-long", "/" + strings.Repeat("segment/", 64)},
		{"dots", "/api/v1/../v2/./orders//42"},
		{"decode", "/%61pi/v1/orders/%34%32"},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := normalizePath(bm.path); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
