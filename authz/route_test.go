package authz

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const routeTestIss2 = "https://other.test/"

// routeTestYAML is the example, as the configuration loader will
// decode it (yaml.v3, KnownFields).
const routeTestYAML = `
routes:
  - name: health
    match: {paths: ["/healthz", "/readyz"], methods: [GET, HEAD]}
    auth: none
  - name: catalog
    match: {path_prefix: /catalog/, hosts: ["shop.example.com", "*.shop.example.com"]}
    auth: optional
  - name: admin
    match: {path_prefix: /admin/}
    auth: required
    issuers: ["https://issuer.test/"]
    require:
      scopes: [admin:write]
      claims:
        realm_access.roles: [admin]
        email_verified: true
        resource_access["my.client"].roles: [ops]
        '["https://example.com/tier"]': 3
    mode: shadow
default_route: {auth: required}
`

// routeTestClaims decodes claims as verification does: numbers as
// json.Number.
func routeTestClaims(t testing.TB, doc string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(doc))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestPolicyFromYAML(t *testing.T) {
	p, warns, err := CompilePolicy(policyFromYAML(t, routeTestYAML), []string{testIss})
	if err != nil || len(warns) > 0 {
		t.Fatalf("CompilePolicy: %v, warnings %q", err, warns)
	}
	tests := []struct {
		req    RouteRequest
		route  string
		auth   AuthMode
		shadow bool
	}{
		{RouteRequest{Method: "GET", Host: "api", Path: "/healthz"}, "health", AuthNone, false},
		{RouteRequest{Method: "POST", Host: "api", Path: "/healthz"}, "default", AuthRequired, false},
		{RouteRequest{Method: "GET", Host: "shop.example.com", Path: "/catalog/1"}, "catalog", AuthOptional, false},
		{RouteRequest{Method: "GET", Host: "eu.shop.example.com:8443", Path: "/catalog/1"}, "catalog", AuthOptional, false},
		{RouteRequest{Method: "GET", Host: "evil.example.com", Path: "/catalog/1"}, "default", AuthRequired, false},
		{RouteRequest{Method: "DELETE", Host: "api", Path: "/admin/users/1"}, "admin", AuthRequired, true},
	}
	for _, tt := range tests {
		rt, err := p.Select(tt.req)
		if err != nil || rt.Name != tt.route || rt.Auth != tt.auth || rt.Shadow != tt.shadow {
			t.Errorf("Select(%+v) = %q auth %v shadow %t, %v; want %q %v %t", tt.req, rt.Name, rt.Auth, rt.Shadow, err, tt.route, tt.auth, tt.shadow)
		}
	}
	admin, _ := p.Select(RouteRequest{Path: "/admin/"})
	if !admin.AllowsIssuer(testIss) || admin.AllowsIssuer(routeTestIss2) {
		t.Errorf("admin issuers %q", admin.Issuers)
	}
	good := `{"scope":"openid admin:write","email_verified":true,"realm_access":{"roles":["user","admin"]},
		"resource_access":{"my.client":{"roles":["ops"]}},"https://example.com/tier":3.0}`
	if err := admin.check(p.extract(routeTestClaims(t, good))); err != nil {
		t.Errorf("check: %v", err)
	}
}

func TestSelect(t *testing.T) {
	p, _, err := CompilePolicy(PolicyConfig{
		Routes: []RouteConfig{
			{Name: "exact", Match: RouteMatch{Paths: []string{"/login", "/logout"}}, Auth: "none"},
			{Name: "writes", Match: RouteMatch{PathPrefix: "/api/", Methods: []string{"POST", "DELETE"}}, Mode: "enforce", CSRF: "report"},
			{Name: "api", Match: RouteMatch{PathPrefix: "/api/"}, Auth: "optional", Issuers: []string{routeTestIss2}},
			{Name: "host", Match: RouteMatch{Hosts: []string{"Admin.Example.com", "*.ops.example.com", "[::1]", "10.0.0.1"}}, CSRF: "off"},
			{Name: "folded", Match: RouteMatch{Paths: []string{"/Docs"}, PathPrefix: "/static/", IgnoreCase: true}, Auth: "none"},
		},
		Default: RouteConfig{Auth: "optional"},
		Mode:    "shadow",
		CSRF:    CSRFConfig{Mode: "report"},
	}, []string{testIss, routeTestIss2})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		req   RouteRequest
		route string
	}{
		{RouteRequest{Method: "GET", Path: "/login"}, "exact"},
		{RouteRequest{Method: "GET", Path: "/login?next=/admin"}, "exact"},
		{RouteRequest{Method: "GET", Path: "/login/"}, "default"},
		{RouteRequest{Method: "GET", Path: "/LOGIN"}, "default"},
		{RouteRequest{Method: "GET", Path: "/x/../logout"}, "exact"},
		{RouteRequest{Method: "POST", Path: "/api/orders"}, "writes"},
		{RouteRequest{Method: "post", Path: "/api/orders"}, "api"},
		{RouteRequest{Method: "GET", Path: "/api/orders"}, "api"},
		{RouteRequest{Method: "GET", Path: "/api"}, "default"},
		{RouteRequest{Method: "GET", Host: "admin.example.com", Path: "/"}, "host"},
		{RouteRequest{Method: "GET", Host: "ADMIN.example.com:443", Path: "/"}, "host"},
		{RouteRequest{Method: "GET", Host: "admin.example.com.", Path: "/"}, "host"},
		{RouteRequest{Method: "GET", Host: "\u212Admin.example.com", Path: "/"}, "default"},
		{RouteRequest{Method: "GET", Host: "xadmin.example.com", Path: "/"}, "default"},
		{RouteRequest{Method: "GET", Host: "a.b.ops.example.com", Path: "/"}, "host"},
		{RouteRequest{Method: "GET", Host: "ops.example.com", Path: "/"}, "default"},
		{RouteRequest{Method: "GET", Host: "evilops.example.com", Path: "/"}, "default"},
		{RouteRequest{Method: "GET", Host: "[::1]:9192", Path: "/"}, "host"},
		{RouteRequest{Method: "GET", Host: "10.0.0.1:80", Path: "/"}, "host"},
		{RouteRequest{Method: "GET", Host: "", Path: "/"}, "default"},
		{RouteRequest{Method: "GET", Path: "/docs"}, "folded"},
		{RouteRequest{Method: "GET", Path: "/STATIC/app.js"}, "folded"},
		{RouteRequest{Method: "GET", Path: "/%53tatic/app.js"}, "folded"},
		// By name: the match is not looked at.
		{RouteRequest{Method: "GET", Path: "/login", Name: "api"}, "api"},
		{RouteRequest{Method: "GET", Path: "/anything", Name: "default"}, "default"},
		{RouteRequest{Method: "GET", Path: "/public/..%2Fadmin", Name: "exact"}, "exact"},
	}
	for _, tt := range tests {
		rt, err := p.Select(tt.req)
		if err != nil || rt.Name != tt.route {
			t.Errorf("Select(%+v) = %q, %v; want %q", tt.req, rt.Name, err, tt.route)
		}
	}

	byName := func(name string) *Route {
		rt, err := p.Select(RouteRequest{Path: "/", Name: name})
		if err != nil {
			t.Fatal(err)
		}
		return rt
	}
	for _, tt := range []struct {
		name    string
		shadow  bool
		csrf    CSRFMode
		issuers []string
	}{
		{"exact", true, CSRFReport, nil},
		{"writes", false, CSRFReport, nil},
		{"api", true, CSRFReport, []string{routeTestIss2}},
		{"host", true, CSRFOff, nil},
		{"default", true, CSRFReport, nil},
	} {
		rt := byName(tt.name)
		if rt.Shadow != tt.shadow || rt.CSRF != tt.csrf || !slices.Equal(rt.Issuers, tt.issuers) {
			t.Errorf("route %s: shadow %t csrf %v issuers %q; want %t %v %q", tt.name, rt.Shadow, rt.CSRF, rt.Issuers, tt.shadow, tt.csrf, tt.issuers)
		}
	}
	if api := byName("api"); api.AllowsIssuer(testIss) || !api.AllowsIssuer(routeTestIss2) {
		t.Error("api: AllowsIssuer does not follow issuers")
	}
	if def := byName("default"); !def.AllowsIssuer(testIss) || !def.AllowsIssuer("https://unknown/") {
		t.Error("default: no issuers should allow every (configured) issuer")
	}
}

// TestSelectErrors: an unknown name and an ambiguous path are denials on
// route "(none)"; a named route that reads the token judges its path.
func TestSelectErrors(t *testing.T) {
	compile := func(mode string, routeMode string) *Policy {
		return pathTestPolicy(t, PolicyConfig{Mode: mode, Routes: []RouteConfig{
			{Name: "public", Match: RouteMatch{PathPrefix: "/public/"}, Auth: "none", Mode: routeMode},
			{Name: "admin", Match: RouteMatch{PathPrefix: "/admin/"}, Mode: routeMode},
		}})
	}
	tests := []struct {
		p      *Policy
		req    RouteRequest
		route  string
		code   string
		shadow bool
	}{
		{compile("", ""), RouteRequest{Name: "nope", Path: "/"}, unrouted, "unknown_route", false},
		{compile("shadow", ""), RouteRequest{Name: "nope", Path: "/"}, unrouted, "unknown_route", false},
		{compile("", ""), RouteRequest{Name: "admin", Path: "/admin/..%2f"}, "admin", "bad_path", false},
		{compile("", "shadow"), RouteRequest{Name: "admin", Path: "/admin;x/"}, "admin", "bad_path", true},
		{compile("", ""), RouteRequest{Name: "default", Path: "/a%00"}, "default", "bad_path", false},
		{compile("", ""), RouteRequest{Path: "/public/..%2fadmin"}, unrouted, "bad_path", false},
		// In shadow only when nothing is enforced.
		{compile("shadow", ""), RouteRequest{Path: "/public/..%2fadmin"}, unrouted, "bad_path", true},
		{compile("shadow", "enforce"), RouteRequest{Path: "/public/..%2fadmin"}, unrouted, "bad_path", false},
		{compile("", "shadow"), RouteRequest{Path: "/public/..%2fadmin"}, unrouted, "bad_path", false},
	}
	for _, tt := range tests {
		rt, err := tt.p.Select(tt.req)
		r := ReasonFor(err)
		if rt == nil || rt.Name != tt.route || r.Code != tt.code || rt.Shadow != tt.shadow {
			t.Errorf("Select(%+v) = %v, %v (%s); want %q, %s, shadow %t", tt.req, rt, err, r.Code, tt.route, tt.code, tt.shadow)
		}
	}
	_, err := compile("", "").Select(RouteRequest{Name: "x\x00\"" + strings.Repeat("y", 100)})
	if r := ReasonFor(err); r.Code != "unknown_route" || r.Status != 500 || strings.Count(err.Error(), "y") > 64 || strings.Contains(err.Error(), "\x00") {
		t.Errorf("unknown route: %v (%+v)", err, r)
	}
}

func TestCompilePolicyErrors(t *testing.T) {
	cfg := PolicyConfig{
		Mode: "dry-run",
		CSRF: CSRFConfig{Mode: "block", TrustedOrigins: []string{"https://ok.example.com", "https://App.example.com", "https://x.example.com/", "null", "https://*.example.com", "https://a.example.com:443"}},
		Routes: []RouteConfig{
			{Name: "a", Match: RouteMatch{PathPrefix: "/a/"}},
			{Name: "a", Match: RouteMatch{PathPrefix: "/b/"}},
			{Match: RouteMatch{PathPrefix: "/c/"}},
			{Name: "empty"},
			{Name: "paths", Match: RouteMatch{Paths: []string{"/x/../y", "admin", "/a%2f", "/ok", "/ok", "/q?x"}, PathPrefix: "/A%2e/"}},
			{Name: "methods", Match: RouteMatch{Methods: []string{"get", "POST", "POST", "GE T"}}},
			{Name: "hosts", Match: RouteMatch{Hosts: []string{"a.com:80", "*", "a.*.com", "x..com", "a.com.", "[::1", "ok.com", "OK.com"}}},
			{Name: "modes", Match: RouteMatch{Methods: []string{"PUT"}}, Auth: "maybe", Mode: "dry", CSRF: "warn"},
			{Name: "admin", Match: RouteMatch{PathPrefix: "/admin/"}, Issuers: []string{"https://x/", testIss, testIss}},
			{Name: "none", Match: RouteMatch{Paths: []string{"/n"}}, Auth: "none", Issuers: []string{testIss}, Require: Requirements{Scopes: []string{"s"}}},
			{Name: "claims", Match: RouteMatch{Paths: []string{"/c"}}, Require: Requirements{
				Scopes: []string{"a b", "ok", "ok", ""},
				Claims: map[string]any{
					"a..b": true, "[x]": true, `["unterminated`: true, "": true, "a b": true,
					"null": nil, "obj": map[string]any{"x": 1}, "empty": []any{}, "nested": []any{[]any{1}},
					"nan": 0.0 / zero(), "ok": []string{"x"}, `["ok"]`: 1,
				},
			}},
			{Name: "bad name!", Match: RouteMatch{Paths: []string{"/bn"}}},
			{Name: "default", Match: RouteMatch{Paths: []string{"/d"}}},
		},
		Default: RouteConfig{Name: "fallback", Match: RouteMatch{Paths: []string{"/"}}},
	}
	_, _, err := CompilePolicy(cfg, []string{testIss})
	if err == nil {
		t.Fatal("no error")
	}
	want := []string{
		`policy.mode: "dry-run" is not enforce or shadow`,
		`csrf.mode: "block" is not enforce, report or off`,
		`csrf.trusted_origins[1]: "https://App.example.com": browsers send origins in lower case`,
		`csrf.trusted_origins[2]: "https://x.example.com/": an origin has no user info, path`,
		`csrf.trusted_origins[3]: "null": want scheme://host[:port]`,
		`csrf.trusted_origins[4]: "https://*.example.com": the host is not a host name or IP literal`,
		`csrf.trusted_origins[5]: "https://a.example.com:443": browsers leave out the default port 443`,
		`routes[1] (a): name "a" is already used by routes[0]`,
		`routes[2]: name is required`,
		`routes[3] (empty): match: no paths, path_prefix, methods or hosts`,
		`routes[4] (paths): match.paths: "/x/../y" is not normalized; write "/y"`,
		`routes[4] (paths): match.paths: "admin" is not a valid path: ambiguous request path: does not start with /`,
		`routes[4] (paths): match.paths: "/a%2f" is not a valid path: ambiguous request path: encoded slash`,
		`routes[4] (paths): match.paths: "/ok" is listed twice`,
		`routes[4] (paths): match.paths: "/q?x" is not normalized; write "/q"`,
		`routes[4] (paths): match.path_prefix: "/A%2e/" is not a valid path`,
		`routes[5] (methods): match.methods: "get" is not an upper-case method`,
		`routes[5] (methods): match.methods: "POST" is listed twice`,
		`routes[5] (methods): match.methods: "GE T" is not an upper-case method`,
		`routes[6] (hosts): match.hosts: "a.com:80": no port`,
		`routes[6] (hosts): match.hosts: "*": '*' is not allowed`,
		`routes[6] (hosts): match.hosts: "a.*.com": '*' is not allowed in a host name`,
		`routes[6] (hosts): match.hosts: "x..com": a label is empty`,
		`routes[6] (hosts): match.hosts: "a.com.": a label is empty`,
		`routes[6] (hosts): match.hosts: "[::1": not an IPv6 address in brackets`,
		`routes[6] (hosts): match.hosts: "OK.com" is listed twice`,
		`routes[7] (modes): auth: "maybe" is not required, optional or none`,
		`routes[7] (modes): mode: "dry" is not enforce or shadow`,
		`routes[7] (modes): csrf: "warn" is not enforce, report or off`,
		`routes[8] (admin): issuers: "https://x/" is not a configured issuer`,
		`routes[8] (admin): issuers: "https://issuer.test/" is listed twice`,
		`routes[9] (none): issuers: an auth: none route looks at no token`,
		`routes[9] (none): require: an auth: none route has no token to require anything of`,
		`routes[10] (claims): require.scopes: "a b" is not a scope`,
		`routes[10] (claims): require.scopes: "ok" is listed twice`,
		`routes[10] (claims): require.scopes: "" is not a scope`,
		`routes[10] (claims): require.claims: "a..b": at byte 2: want a name`,
		`routes[10] (claims): require.claims: "[x]": at byte 0: want ["…"]`,
		`routes[10] (claims): require.claims: "[\"unterminated": at byte 0: unterminated quoted name`,
		`routes[10] (claims): require.claims: "": empty`,
		`routes[10] (claims): require.claims: "a b": at byte 1: want "." or "["`,
		`routes[10] (claims): require.claims: null: no expected value (null)`,
		`routes[10] (claims): require.claims: obj: expected a string, bool, number or a list of them, not map[string]interface {}`,
		`routes[10] (claims): require.claims: empty: an empty list can never match`,
		`routes[10] (claims): require.claims: nested: [0]: expected a string, bool, number or a list of them, not []interface {}`,
		`routes[10] (claims): require.claims: nan: not a finite number`,
		`routes[10] (claims): require.claims: ok names the same claim as another entry`,
		`routes[11] (bad name!): name "bad name!" is not 1 to 64 of`,
		`routes[12] (default): name "default" is the default route's`,
		`default_route: name is always "default", not "fallback"`,
		`default_route: match: the default route applies when no route matches`,
	}
	got := strings.Split(err.Error(), "\n")
	for _, w := range want {
		if !slices.ContainsFunc(got, func(g string) bool { return strings.HasPrefix(g, w) }) {
			t.Errorf("no error %q", w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d errors, want %d:\n%s", len(got), len(want), err)
	}
}

func zero() float64 { return 0 }

func TestCompilePolicyWarnings(t *testing.T) {
	cfg := PolicyConfig{Routes: []RouteConfig{
		{Name: "api", Match: RouteMatch{PathPrefix: "/api/"}},
		{Name: "api-v1", Match: RouteMatch{PathPrefix: "/api/v1/", Methods: []string{"GET"}}},
		{Name: "get-only", Match: RouteMatch{Methods: []string{"GET", "HEAD"}, Hosts: []string{"*.example.com"}}},
		{Name: "get-host", Match: RouteMatch{Methods: []string{"GET"}, Hosts: []string{"a.example.com", "*.b.example.com"}, Paths: []string{"/x"}}},
		{Name: "post-host", Match: RouteMatch{Methods: []string{"POST"}, Hosts: []string{"a.example.com"}}},
		{Name: "health", Match: RouteMatch{Paths: []string{"/healthz"}}},
		{Name: "health-again", Match: RouteMatch{Paths: []string{"/healthz"}, Methods: []string{"GET"}}},
		{Name: "folded", Match: RouteMatch{PathPrefix: "/Docs/", IgnoreCase: true}},
		{Name: "docs", Match: RouteMatch{Paths: []string{"/docs/a", "/DOCS/b"}}},
		{Name: "docs-folded", Match: RouteMatch{PathPrefix: "/docs/x/", IgnoreCase: true}},
		{Name: "static", Match: RouteMatch{PathPrefix: "/static/"}},
		{Name: "static-folded", Match: RouteMatch{PathPrefix: "/static/x/", IgnoreCase: true}},
		{Name: "public", Match: RouteMatch{PathPrefix: "/public"}, Auth: "none"},
		{Name: "optional", Match: RouteMatch{Paths: []string{"/o"}}, Auth: "optional", Require: Requirements{Scopes: []string{"s"}}},
	}}
	_, warns, err := CompilePolicy(cfg, []string{testIss})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"routes[1] (api-v1): never matches: routes[0] (api) matches every request it does",
		"routes[3] (get-host): never matches: routes[2] (get-only) matches every request it does",
		"routes[6] (health-again): never matches: routes[5] (health) matches every request it does",
		"routes[8] (docs): never matches: routes[7] (folded) matches every request it does",
		"routes[9] (docs-folded): never matches: routes[7] (folded) matches every request it does",
		`routes[12] (public): match.path_prefix "/public" of this auth: none route also matches "/public-anything"`,
		"routes[13] (optional): require is checked only when a token is present; a request without one is allowed",
	}
	if !slices.Equal(warns, want) {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(warns, "\n"), strings.Join(want, "\n"))
	}
}

func TestParseClaimPath(t *testing.T) {
	tests := []struct {
		in   string
		want []string // nil: invalid
	}{
		{"sub", []string{"sub"}},
		{"realm_access.roles", []string{"realm_access", "roles"}},
		{`resource_access["my.client"].roles`, []string{"resource_access", "my.client", "roles"}},
		{`["https://example.com/roles"]`, []string{"https://example.com/roles"}},
		{`a["b"]["c.d"].e`, []string{"a", "b", "c.d", "e"}},
		{`["say \"hi\" \\ bye"]`, []string{`say "hi" \ bye`}},
		{"https://x/claims", []string{"https://x/claims"}},
		{"grüße.ß", []string{"grüße", "ß"}},
		{"", nil},
		{".a", nil},
		{"a.", nil},
		{"a..b", nil},
		{"a[b]", nil},
		{`a["b"]c`, nil},
		{`a["b"`, nil},
		{`a["b"].`, nil},
		{`[""]`, nil},
		{`["a\b"]`, nil},
		{"a b", nil},
		{"a\tb", nil},
		{`a"b`, nil},
		{`a\b`, nil},
		{"a]", nil},
		{`["a` + "\n" + `"]`, nil},
		{"\xff", nil},
	}
	for _, tt := range tests {
		got, err := parseClaimPath(tt.in)
		if tt.want == nil {
			if err == nil {
				t.Errorf("parseClaimPath(%q) = %q, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("parseClaimPath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestRequirements(t *testing.T) {
	p := pathTestPolicy(t, PolicyConfig{Routes: []RouteConfig{
		{Name: "scoped", Match: RouteMatch{Paths: []string{"/scoped"}}, Require: Requirements{Scopes: []string{"orders:write", "orders:read"}}},
		{Name: "roles", Match: RouteMatch{Paths: []string{"/roles"}}, Require: Requirements{Claims: map[string]any{
			"realm_access.roles": []any{"admin", "ops"},
		}}},
		{Name: "exact", Match: RouteMatch{Paths: []string{"/exact"}}, Require: Requirements{Claims: map[string]any{
			"email_verified": true,
			"tier":           3,
			"ratio":          0.1,
			"big":            uint64(1 << 63),
			"tenant":         "acme",
			`org["x.y"].id`:  []any{7, "seven"},
		}}},
	}})
	route := func(name string) *Route {
		rt, err := p.Select(RouteRequest{Path: "/", Name: name})
		if err != nil {
			t.Fatal(err)
		}
		return rt
	}
	const exactOK = `"email_verified":true,"tier":3,"ratio":0.1,"big":9223372036854775808,"tenant":"acme","org":{"x.y":{"id":7}}`
	tests := []struct {
		route, claims string
		code          string // "" for allowed
		requirement   string
	}{
		{"scoped", `{"scope":"orders:read orders:write"}`, "", ""},
		{"scoped", `{"scope":"  orders:read   orders:write "}`, "", ""},
		{"scoped", `{"scp":["orders:write","orders:read"]}`, "", ""},
		{"scoped", `{"scp":"orders:write orders:read"}`, "", ""},
		{"scoped", `{"scope":"orders:read","scp":["orders:write"]}`, "", ""},
		{"scoped", `{"scope":"orders:read"}`, "insufficient_scope", "scope orders:write"},
		{"scoped", `{"scope":"orders:read\torders:write"}`, "insufficient_scope", "scope orders:write"},
		{"scoped", `{"scope":["orders:read","orders:write"]}`, "insufficient_scope", "scope orders:write"},
		{"scoped", `{"scp":[["orders:write"]],"scope":"orders:read"}`, "insufficient_scope", "scope orders:write"},
		{"scoped", `{"scope":"orders:write"}`, "insufficient_scope", "scope orders:read"},
		{"scoped", `{"scope":"orders:writer orders:read"}`, "insufficient_scope", "scope orders:write"},
		{"scoped", `{}`, "insufficient_scope", "scope orders:write"},

		{"roles", `{"realm_access":{"roles":["user","ops"]}}`, "", ""},
		{"roles", `{"realm_access":{"roles":"admin"}}`, "", ""},
		{"roles", `{"realm_access":{"roles":["user"]}}`, "claim_mismatch", "claim realm_access.roles"},
		{"roles", `{"realm_access":{"roles":"administrator"}}`, "claim_mismatch", "claim realm_access.roles"},
		{"roles", `{"realm_access":{"roles":[["admin"]]}}`, "claim_mismatch", "claim realm_access.roles"},
		{"roles", `{"realm_access":{"roles":{"admin":true}}}`, "claim_mismatch", "claim realm_access.roles"},
		{"roles", `{"realm_access":["admin"]}`, "claim_mismatch", "claim realm_access.roles"},
		{"roles", `{"realm_access.roles":["admin"]}`, "claim_mismatch", "claim realm_access.roles"},
		{"roles", `{}`, "claim_mismatch", "claim realm_access.roles"},

		{"exact", `{` + exactOK + `}`, "", ""},
		{"exact", `{` + exactOK + `,"tier":3.0}`, "", ""},
		{"exact", `{` + exactOK + `,"tier":3e0}`, "", ""},
		{"exact", `{` + exactOK + `,"ratio":1e-1}`, "", ""},
		{"exact", `{` + exactOK + `,"org":{"x.y":{"id":"seven"}}}`, "", ""},
		{"exact", `{` + exactOK + `,"org":{"x.y":{"id":[1,7]}}}`, "", ""},
		{"exact", `{` + exactOK + `,"email_verified":"true"}`, "claim_mismatch", "claim email_verified"},
		{"exact", `{` + exactOK + `,"email_verified":false}`, "claim_mismatch", "claim email_verified"},
		{"exact", `{` + exactOK + `,"email_verified":[true]}`, "claim_mismatch", "claim email_verified"},
		{"exact", `{` + exactOK + `,"email_verified":null}`, "claim_mismatch", "claim email_verified"},
		{"exact", `{` + exactOK + `,"tier":"3"}`, "claim_mismatch", "claim tier"},
		{"exact", `{` + exactOK + `,"tier":3.5}`, "claim_mismatch", "claim tier"},
		{"exact", `{` + exactOK + `,"big":9223372036854775807}`, "claim_mismatch", "claim big"},
		{"exact", `{` + exactOK + `,"big":9.223372036854775808e18}`, "claim_mismatch", "claim big"},
		{"exact", `{` + exactOK + `,"ratio":0.10000001}`, "claim_mismatch", "claim ratio"},
		{"exact", `{` + exactOK + `,"tenant":"ACME"}`, "claim_mismatch", "claim tenant"},
		{"exact", `{` + exactOK + `,"org":{"x":{"y":{"id":7}}}}`, "claim_mismatch", `claim org["x.y"].id`},
		{"exact", `{` + exactOK + `,"org":{"x.y":{"id":"7"}}}`, "claim_mismatch", `claim org["x.y"].id`},
	}
	for _, tt := range tests {
		rt := route(tt.route)
		err := rt.check(p.extract(routeTestClaims(t, tt.claims)))
		if tt.code == "" {
			if err != nil {
				t.Errorf("%s %s: %v", tt.route, tt.claims, err)
			}
			continue
		}
		var re *RequirementError
		r := ReasonFor(err)
		if !errors.As(err, &re) || r.Code != tt.code || r.Status != 403 || r.Error != "insufficient_scope" {
			t.Errorf("%s %s: %v (%+v), want %s", tt.route, tt.claims, err, r, tt.code)
			continue
		}
		if re.Route != tt.route || re.Requirement != tt.requirement || !slices.Equal(re.Scopes, rt.scopes) {
			t.Errorf("%s %s: %+v, want requirement %q", tt.route, tt.claims, re, tt.requirement)
		}
		for _, v := range []string{"user", "administrator", "ACME", "3.5", "false", "0.10000001", "writer"} {
			if strings.Contains(err.Error(), v) {
				t.Errorf("%s %s: error %q shows a claim value", tt.route, tt.claims, err)
			}
		}
	}
	// A float64 claim (decoded without UseNumber) compares by value too.
	if err := route("exact").check(p.extract(map[string]any{
		"email_verified": true, "tier": 3.0, "ratio": 0.1, "big": json.Number("9223372036854775808"),
		"tenant": "acme", "org": map[string]any{"x.y": map[string]any{"id": 7.0}},
	})); err != nil {
		t.Error(err)
	}
}

// TestClaimValuesAcrossPolicies: values are good for any policy with the
// same claim paths (a reload that keeps them keeps the cache), never for
// one with other paths.
func TestClaimValuesAcrossPolicies(t *testing.T) {
	compile := func(claim string) *Policy {
		return pathTestPolicy(t, PolicyConfig{Routes: []RouteConfig{
			{Name: "r", Match: RouteMatch{Paths: []string{"/"}}, Require: Requirements{Scopes: []string{"s"}, Claims: map[string]any{claim: "x"}}},
		}})
	}
	a, b, c := compile("a"), compile(`["a"]`), compile("b")
	raw := routeTestClaims(t, `{"scope":"s","a":"x","b":"x"}`)
	ra, _ := b.Select(RouteRequest{Path: "/"})
	if err := ra.check(a.extract(raw)); err != nil {
		t.Errorf("same paths: %v", err)
	}
	if v := a.extract(raw); !v.fits(a) || !v.fits(b) || v.fits(c) || (claimValues{}).fits(c) {
		t.Error("fits does not follow the claim paths")
	}
	rc, _ := c.Select(RouteRequest{Path: "/"})
	if err := rc.check(a.extract(raw)); !errors.Is(err, errForeignClaims) || ReasonFor(err).Code != "internal" {
		t.Errorf("other paths: %v", err)
	}
	if err := rc.check(claimValues{}); !errors.Is(err, errForeignClaims) {
		t.Errorf("zero values: %v", err)
	}
	// A route without requirements needs no values.
	plain := pathTestPolicy(t, PolicyConfig{})
	def, _ := plain.Select(RouteRequest{Path: "/"})
	if err := def.check(claimValues{}); err != nil {
		t.Error(err)
	}
}

func TestExtractNoRequirementsNoAllocs(t *testing.T) {
	p := pathTestPolicy(t, PolicyConfig{Routes: []RouteConfig{{Name: "r", Match: RouteMatch{Paths: []string{"/"}}}}})
	raw := routeTestClaims(t, `{"sub":"u","scope":"a b"}`)
	if n := testing.AllocsPerRun(100, func() { p.extract(raw) }); n != 0 {
		t.Errorf("extract: %v allocations", n)
	}
}

func TestRouteConfigYAMLUnknownKey(t *testing.T) {
	dec := yaml.NewDecoder(bytes.NewReader([]byte("- name: x\n  match: {path_prefx: /a/}\n")))
	dec.KnownFields(true)
	var routes []RouteConfig
	if err := dec.Decode(&routes); err == nil || !strings.Contains(err.Error(), "path_prefx") {
		t.Errorf("unknown key: %v", err)
	}
}

func BenchmarkSelect(b *testing.B) {
	var routes []RouteConfig
	for _, name := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		routes = append(routes, RouteConfig{Name: name, Match: RouteMatch{PathPrefix: "/" + name + "/", Methods: []string{"GET", "POST"}}})
	}
	routes = append(routes, RouteConfig{Name: "hosts", Match: RouteMatch{Hosts: []string{"*.example.com"}}})
	p := pathTestPolicy(b, PolicyConfig{Routes: routes})
	for _, bm := range []struct {
		name string
		req  RouteRequest
	}{
		{"first", RouteRequest{Method: "GET", Host: "api.example.com", Path: "/a/orders/42?x=1"}},
		{"host", RouteRequest{Method: "GET", Host: "api.example.com:443", Path: "/z/orders/42"}},
		{"default", RouteRequest{Method: "GET", Host: "api", Path: "/z/orders/42"}},
		{"name", RouteRequest{Method: "GET", Path: "/z/orders/42", Name: "h"}},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.Select(bm.req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRequirements(b *testing.B) {
	p := pathTestPolicy(b, PolicyConfig{Routes: []RouteConfig{{
		Name: "admin", Match: RouteMatch{PathPrefix: "/admin/"},
		Require: Requirements{Scopes: []string{"admin:write"}, Claims: map[string]any{"realm_access.roles": []any{"admin"}, "email_verified": true}},
	}}})
	raw := routeTestClaims(b, `{"sub":"u","scope":"openid profile admin:write","email_verified":true,"realm_access":{"roles":["user","admin"]}}`)
	rt, _ := p.Select(RouteRequest{Path: "/admin/x"})
	b.Run("extract", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			p.extract(raw)
		}
	})
	v := p.extract(raw)
	b.Run("check", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := rt.check(v); err != nil {
				b.Fatal(err)
			}
		}
	})
}
