package authz

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"gopkg.in/yaml.v3"
)

// policyYAML is the example policy, as a user writes it.
const policyYAML = `
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
  - name: beta
    match: {path_prefix: /beta/}
    require:
      scopes: [beta]
    mode: shadow
  - name: other-issuer
    match: {path_prefix: /partner/}
    issuers: ["https://other.test/"]
  - name: forms
    match: {path_prefix: /forms/}
    csrf: report
  - name: api
    match: {path_prefix: /api/}
    csrf: "off"
default_route: {auth: required}
csrf:
  trusted_origins: ["https://app.example.com"]
`

// policyFromYAML decodes a policy as the configuration loader does
// (yaml.v3, KnownFields): routes, default_route, policy.mode and csrf.
func policyFromYAML(tb testing.TB, text string) PolicyConfig {
	tb.Helper()
	var pf struct {
		Routes       []RouteConfig `yaml:"routes"`
		DefaultRoute RouteConfig   `yaml:"default_route"`
		Policy       struct {
			Mode string `yaml:"mode"`
		} `yaml:"policy"`
		CSRF CSRFConfig `yaml:"csrf"`
	}
	dec := yaml.NewDecoder(strings.NewReader(text))
	dec.KnownFields(true)
	if err := dec.Decode(&pf); err != nil {
		tb.Fatal(err)
	}
	return PolicyConfig{Routes: pf.Routes, Default: pf.DefaultRoute, Mode: pf.Policy.Mode, CSRF: pf.CSRF}
}

// policyFixture is the fixture engine, with a second issuer, under the
// policy from text; opts change the configuration further.
func policyFixture(tb testing.TB, text string, opts ...func(*Config)) *fixture {
	tb.Helper()
	pc := policyFromYAML(tb, text)
	return newFixture(tb, func(c *Config) {
		for _, o := range opts {
			o(c)
		}
		c.Issuers = append(c.Issuers, Issuer{Issuer: "https://other.test/", Audiences: []string{testAud}, Algorithms: fixtureAlgs})
		pol, _, err := CompilePolicy(pc, []string{testIss, "https://other.test/"})
		if err != nil {
			tb.Fatal(err)
		}
		c.Policy = pol
	})
}

type policyCase struct {
	name                 string
	method, host, path   string
	route                string // context extension
	headers              map[string]string
	allowed, shadow      bool
	reason, decidedRoute string
	user                 string // x-user-id expected ("" none)
}

func runPolicyCases(t *testing.T, f *fixture, cases []policyCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = "GET"
			}
			in := Input{Headers: tc.headers, Method: method, Host: tc.host, Path: tc.path, Route: tc.route}
			if in.Headers == nil {
				in.Headers = map[string]string{}
			}
			d := f.engine.Decide(context.Background(), in)
			if d.Allowed != tc.allowed || d.Shadow != tc.shadow || d.Reason.Code != tc.reason || d.Route != tc.decidedRoute {
				t.Fatalf("allowed=%v shadow=%v reason=%q route=%q (%v); want allowed=%v shadow=%v reason=%q route=%q",
					d.Allowed, d.Shadow, d.Reason.Code, d.Route, d.Err, tc.allowed, tc.shadow, tc.reason, tc.decidedRoute)
			}
			var user string
			for _, h := range d.Headers {
				if h.Name == "x-user-id" {
					user = h.Value
				}
			}
			if user != tc.user {
				t.Errorf("x-user-id %q, want %q", user, tc.user)
			}
			if _, sent := in.Headers["x-user-id"]; sent && user == "" && !contains(d.Remove, "x-user-id") {
				t.Errorf("client-sent x-user-id not removed: remove %v", d.Remove)
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestPolicyRoutes(t *testing.T) {
	f := policyFixture(t, policyYAML)
	admin := f.claims()
	admin["scope"] = "openid admin:write"
	admin["realm_access"] = map[string]any{"roles": []string{"user", "admin"}}
	admin["email_verified"] = true
	adminTok := f.token(t, "ES256", admin, nil)

	noScope := f.claims()
	noScope["realm_access"] = map[string]any{"roles": []string{"admin"}}
	noScope["email_verified"] = true
	noScopeTok := f.token(t, "ES256", noScope, nil)

	notAdmin := f.claims()
	notAdmin["scp"] = []string{"admin:write"}
	notAdmin["realm_access"] = map[string]any{"roles": []string{"user"}}
	notAdmin["email_verified"] = true
	notAdminTok := f.token(t, "ES256", notAdmin, nil)

	unverified := f.claims()
	unverified["scope"] = "admin:write"
	unverified["realm_access"] = map[string]any{"roles": []string{"admin"}}
	unverified["email_verified"] = "true" // a string is not the JSON true
	unverifiedTok := f.token(t, "ES256", unverified, nil)

	plain := f.token(t, "ES256", f.claims(), nil)
	expired := f.claims()
	expired["iat"], expired["exp"] = testNow.Unix()-7200, testNow.Unix()-3600
	expiredTok := f.token(t, "ES256", expired, nil)
	spoof := map[string]string{"x-user-id": "admin"}

	runPolicyCases(t, f, []policyCase{
		// auth: none
		{name: "health, no token", path: "/healthz", allowed: true, reason: "ok", decidedRoute: "health"},
		{name: "health, garbage token not looked at", path: "/healthz", headers: bearer("garbage"), allowed: true, reason: "ok", decidedRoute: "health"},
		{name: "health strips client identity", path: "/readyz", method: "HEAD", headers: spoof, allowed: true, reason: "ok", decidedRoute: "health"},
		{name: "health POST is not the health route", method: "POST", path: "/healthz", allowed: false, reason: "no_token", decidedRoute: "default"},
		{name: "health with query", path: "/healthz?full=1", allowed: true, reason: "ok", decidedRoute: "health"},
		// auth: optional
		{name: "catalog anonymous", host: "shop.example.com", path: "/catalog/shoes", headers: spoof, allowed: true, reason: "ok", decidedRoute: "catalog"},
		{name: "catalog subdomain, port", host: "eu.shop.example.com:8443", path: "/catalog/", allowed: true, reason: "ok", decidedRoute: "catalog"},
		{name: "catalog with a good token", host: "shop.example.com", path: "/catalog/x", headers: bearer(plain), allowed: true, reason: "ok", decidedRoute: "catalog", user: "user-1"},
		{name: "catalog with a bad token", host: "shop.example.com", path: "/catalog/x", headers: bearer(expiredTok), allowed: false, reason: "expired", decidedRoute: "catalog"},
		{name: "catalog on another host", host: "evil.example.com", path: "/catalog/x", allowed: false, reason: "no_token", decidedRoute: "default"},
		// requirements
		{name: "admin with everything", path: "/admin/users", headers: bearer(adminTok), allowed: true, reason: "ok", decidedRoute: "admin", user: "user-1"},
		{name: "admin without scope", path: "/admin/users", headers: bearer(noScopeTok), allowed: false, reason: "insufficient_scope", decidedRoute: "admin"},
		{name: "admin without role", path: "/admin/users", headers: bearer(notAdminTok), allowed: false, reason: "claim_mismatch", decidedRoute: "admin"},
		{name: "admin with email_verified as a string", path: "/admin/users", headers: bearer(unverifiedTok), allowed: false, reason: "claim_mismatch", decidedRoute: "admin"},
		{name: "admin without token", path: "/admin/", allowed: false, reason: "no_token", decidedRoute: "admin"},
		// issuers
		{name: "partner route refuses our issuer", path: "/partner/x", headers: bearer(plain), allowed: false, reason: "route_issuer", decidedRoute: "other-issuer"},
		// shadow
		{name: "beta would deny, allows with identity", path: "/beta/x", headers: mergeHeaders(bearer(plain), spoof), allowed: true, shadow: true, reason: "insufficient_scope", decidedRoute: "beta", user: "user-1"},
		{name: "beta with a bad token allows anonymous", path: "/beta/x", headers: mergeHeaders(bearer(expiredTok), spoof), allowed: true, shadow: true, reason: "expired", decidedRoute: "beta"},
		{name: "beta without token", path: "/beta/x", allowed: true, shadow: true, reason: "no_token", decidedRoute: "beta"},
		// routes named by Envoy
		{name: "named route skips path matching", path: "/anything", route: "health", allowed: true, reason: "ok", decidedRoute: "health"},
		{name: "named admin route", path: "/x", route: "admin", headers: bearer(noScopeTok), allowed: false, reason: "insufficient_scope", decidedRoute: "admin"},
		{name: "unknown named route denies", path: "/healthz", route: "nope", allowed: false, reason: "unknown_route", decidedRoute: "(none)"},
		{name: "named none route ignores a bad path", path: "/a/../../b", route: "health", allowed: true, reason: "ok", decidedRoute: "health"},
		{name: "named required route refuses a bad path", path: "/a/../../b", route: "admin", headers: bearer(adminTok), allowed: false, reason: "bad_path", decidedRoute: "admin"},
	})
}

func mergeHeaders(hs ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, h := range hs {
		for k, v := range h {
			out[k] = v
		}
	}
	return out
}

// TestPolicyPathBypass: the known path tricks never reach a protected
// route as an allowed request, and never reach the public one.
func TestPolicyPathBypass(t *testing.T) {
	f := policyFixture(t, policyYAML)
	plain := f.token(t, "ES256", f.claims(), nil) // good token without admin scope
	for _, tc := range []struct {
		path         string
		reason, rule string
	}{
		{"/admin/../admin/x", "insufficient_scope", "admin"},
		{"/%61dmin/x", "insufficient_scope", "admin"},
		{"//admin/x", "insufficient_scope", "admin"},
		{"/admin/./x", "insufficient_scope", "admin"},
		{"/public/../admin/x", "insufficient_scope", "admin"},
		{"/admin;x/y", "bad_path", "(none)"},
		{"/admin%2Fx", "bad_path", "(none)"},
		{"/admin%2fx", "bad_path", "(none)"},
		{"/admin%5Cx", "bad_path", "(none)"},
		{"/admin\\x", "bad_path", "(none)"},
		{"/admin./x", "bad_path", "(none)"},
		{"/admin%2e/x", "bad_path", "(none)"},
		{"/x/../../admin/x", "bad_path", "(none)"},
		{"/admin/%00", "bad_path", "(none)"},
		{"/admin/%zz", "bad_path", "(none)"},
		{"/healthz/..%2fadmin", "bad_path", "(none)"},
		{"/healthz/../admin/x", "insufficient_scope", "admin"},
		// Case-sensitive matching: /ADMIN/ is not the admin route, and so
		// it is the default route, which needs a token (this one passes).
		{"/ADMIN/x", "ok", "default"},
	} {
		d := f.engine.Decide(context.Background(), Input{Headers: bearer(plain), Method: "GET", Path: tc.path})
		if d.Reason.Code != tc.reason || d.Route != tc.rule {
			t.Errorf("%s: reason %q on route %q (%v), want %q on %q", tc.path, d.Reason.Code, d.Route, d.Err, tc.reason, tc.rule)
		}
		if d.Route == "admin" && d.Allowed {
			t.Errorf("%s reached the admin route allowed", tc.path)
		}
	}
}

// TestPolicyCSRF is the CSRF matrix at the decision: cookie and bearer
// tokens × safe and unsafe methods × Sec-Fetch-Site × Origin, in enforce,
// report and off.
func TestPolicyCSRF(t *testing.T) {
	f := policyFixture(t, policyYAML)
	tok := f.token(t, "ES256", f.claims(), nil)
	host := "shop.example.com"
	type headers = map[string]string
	with := func(base headers, kv ...string) headers {
		out := mergeHeaders(base)
		for i := 0; i+1 < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}
	ck := headers{"cookie": "session=" + tok}
	bt := bearer(tok)
	fetchSites := []string{"", "same-origin", "none", "same-site", "cross-site"}
	origins := []string{"", "https://shop.example.com", "https://app.example.com", "https://evil.example", "null"}
	for _, mode := range []struct{ path, route string }{{"/orders", "default"}, {"/forms/x", "forms"}, {"/api/x", "api"}} {
		for _, method := range []string{"GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE", "PATCH"} {
			for _, site := range fetchSites {
				for _, origin := range origins {
					for _, src := range []struct {
						name string
						h    headers
					}{{"cookie", ck}, {"bearer", bt}} {
						h := with(src.h)
						if site != "" {
							h["sec-fetch-site"] = site
						}
						if origin != "" {
							h["origin"] = origin
						}
						safe := method == "GET" || method == "HEAD" || method == "OPTIONS"
						crossSite := false
						switch {
						case site == "same-origin" || site == "none":
						case site != "":
							crossSite = origin != "https://app.example.com"
						case origin == "":
							crossSite = true // neither header, allow_missing_headers off
						default:
							crossSite = origin != "https://shop.example.com" && origin != "https://app.example.com"
						}
						refused := src.name == "cookie" && !safe && crossSite && mode.route != "api"
						d := f.engine.Decide(context.Background(), Input{Headers: h, Method: method, Host: host, Path: mode.path})
						wantAllowed := !refused || mode.route == "forms"
						wantReason := "ok"
						if refused {
							wantReason = "csrf"
						}
						if d.Allowed != wantAllowed || d.Reason.Code != wantReason || d.Shadow != (refused && mode.route == "forms") {
							t.Errorf("%s %s %s, Sec-Fetch-Site %q, Origin %q: allowed=%v shadow=%v reason %q (%v); want allowed=%v reason %q",
								mode.route, src.name, method, site, origin, d.Allowed, d.Shadow, d.Reason.Code, d.Err, wantAllowed, wantReason)
						}
					}
				}
			}
		}
	}
}

// TestPolicyAllowMissingHeaders: old clients sending neither header pass
// only when allowed.
func TestPolicyAllowMissingHeaders(t *testing.T) {
	f := policyFixture(t, "csrf: {allow_missing_headers: true}\n")
	tok := f.token(t, "ES256", f.claims(), nil)
	d := f.engine.Decide(context.Background(), Input{Headers: map[string]string{"cookie": "session=" + tok}, Method: "POST", Host: "a.test", Path: "/"})
	if !d.Allowed {
		t.Fatalf("POST without Origin or Sec-Fetch-Site: %v", d.Err)
	}
	d = f.engine.Decide(context.Background(), Input{Headers: map[string]string{"cookie": "session=" + tok, "origin": "https://evil.test"}, Method: "POST", Host: "a.test", Path: "/"})
	if d.Allowed || d.Reason.Code != "csrf" {
		t.Fatalf("foreign Origin: allowed=%v %v", d.Allowed, d.Err)
	}
}

// TestPolicyGlobalShadow: policy.mode: shadow allows every denial, and
// the decision says what would have happened.
func TestPolicyGlobalShadow(t *testing.T) {
	f := policyFixture(t, "policy: {mode: shadow}\n")
	d := f.engine.Decide(context.Background(), Input{Headers: map[string]string{}, Method: "GET", Path: "/"})
	if !d.Allowed || !d.Shadow || d.Reason.Code != "no_token" || d.Route != "default" {
		t.Fatalf("allowed=%v shadow=%v reason %q route %q", d.Allowed, d.Shadow, d.Reason.Code, d.Route)
	}
}

// TestPolicyRequirementResponse: a failed requirement is a 403 whose
// challenge lists the route's scopes and whose body names the route and
// the requirement, never a claim's value.
func TestPolicyRequirementResponse(t *testing.T) {
	f := policyFixture(t, policyYAML)
	c := f.claims()
	c["scope"] = "admin:write"
	c["realm_access"] = map[string]any{"roles": []string{"secret-role-value"}}
	c["email_verified"] = true
	d := f.engine.Decide(context.Background(), Input{Headers: bearer(f.token(t, "ES256", c, nil)), Method: "GET", Path: "/admin/x"})
	if d.Allowed || d.Reason.Status != 403 || d.Reason.Code != "claim_mismatch" {
		t.Fatalf("allowed=%v status %d reason %q", d.Allowed, d.Reason.Status, d.Reason.Code)
	}
	challenge, body := d.challenge(d.requirement()), d.body(d.requirement())
	if got, want := challenge, `Bearer realm="sidegate", error="insufficient_scope", error_description="the token lacks a claim this route requires", scope="admin:write"`; got != want {
		t.Errorf("challenge %s\nwant      %s", got, want)
	}
	var got struct{ Error, Reason, Route, Requirement string }
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("body %s: %v", body, err)
	}
	if got.Error != "insufficient_scope" || got.Reason != "claim_mismatch" || got.Route != "admin" || got.Requirement != "claim realm_access.roles" {
		t.Errorf("body %s", body)
	}
	if strings.Contains(body, "secret-role-value") || strings.Contains(challenge, "secret-role-value") {
		t.Errorf("a claim value leaked into the response")
	}
	var re *RequirementError
	if !errors.As(d.Err, &re) {
		t.Errorf("Err %v is not a RequirementError", d.Err)
	}
}

// TestPolicyCachedClaims: requirements hold on tokens served from the
// verified-token cache, which keeps no claim map: each round's answers,
// allow or deny, are the first round's.
func TestPolicyCachedClaims(t *testing.T) {
	f := policyFixture(t, policyYAML, benchCacheConfig)
	c := f.claims()
	c["scope"] = "admin:write"
	c["realm_access"] = map[string]any{"roles": []string{"admin"}}
	c["email_verified"] = true
	admin := f.token(t, "ES256", c, nil)
	c["realm_access"] = map[string]any{"roles": []string{"user"}}
	user := f.token(t, "ES256", c, nil)
	for i := range 3 {
		for _, p := range []struct {
			tok, path string
			allowed   bool
			reason    string
		}{
			{admin, "/admin/x", true, "ok"},
			{admin, "/beta/x", true, "insufficient_scope"}, // the shadow route: reported, not enforced
			{admin, "/orders", true, "ok"},
			{user, "/admin/x", false, "claim_mismatch"},
			{user, "/orders", true, "ok"},
		} {
			d := f.engine.Decide(context.Background(), Input{Headers: bearer(p.tok), Method: "GET", Path: p.path})
			if d.Allowed != p.allowed || d.Reason.Code != p.reason {
				t.Errorf("round %d %s: allowed=%v reason %q (%v), want %v %s", i, p.path, d.Allowed, d.Reason.Code, d.Err, p.allowed, p.reason)
			}
		}
	}
	if st := f.engine.cache.stats(); st.hits < 10 {
		t.Errorf("cache hits %d: the later rounds should be served from the cache", st.hits)
	}
}

// TestPolicyOverGRPC: the route, the CSRF check and the requirement
// response over the wire, with the request attributes and lower-case
// headers as Envoy sends them, and the route named by a context extension.
func TestPolicyOverGRPC(t *testing.T) {
	f := policyFixture(t, policyYAML)
	s := grpcStart(t, f.engine)
	tok := f.token(t, "ES256", f.claims(), nil)
	req := func(method, path, route string, headers map[string]string) *authv3.CheckRequest {
		r := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: method, Path: path, Host: "shop.example.com", Scheme: "https", Headers: headers,
			}},
		}}
		if route != "" {
			r.Attributes.ContextExtensions = map[string]string{RouteExtension: route}
		}
		return r
	}
	cookie := map[string]string{"cookie": "session=" + tok}

	grpcOK(t, grpcCheck(t, s, req("GET", "/healthz", "", nil)))
	grpcOK(t, grpcCheck(t, s, req("POST", "/orders", "", mergeHeaders(cookie, map[string]string{"sec-fetch-site": "same-origin"}))))
	grpcOK(t, grpcCheck(t, s, req("POST", "/orders", "", mergeHeaders(cookie, map[string]string{"origin": "https://shop.example.com"}))))
	grpcOK(t, grpcCheck(t, s, req("DELETE", "/orders", "", bearer(tok))))
	grpcDenied(t, grpcCheck(t, s, req("POST", "/orders", "", mergeHeaders(cookie, map[string]string{"sec-fetch-site": "cross-site", "origin": "https://evil.example"}))), 403, codes.PermissionDenied, "csrf")
	grpcDenied(t, grpcCheck(t, s, req("GET", "/x", "nope", nil)), 500, codes.Internal, "unknown_route")
	grpcDenied(t, grpcCheck(t, s, req("GET", "/admin%2Fx", "", bearer(tok))), 403, codes.PermissionDenied, "bad_path")
	// Named by Envoy: the path says nothing.
	grpcOK(t, grpcCheck(t, s, req("GET", "/admin/x", "health", nil)))

	resp := grpcCheck(t, s, req("GET", "/admin/x", "", bearer(tok)))
	grpcDenied(t, resp, 403, codes.PermissionDenied, "insufficient_scope")
	var www string
	for _, h := range resp.GetDeniedResponse().GetHeaders() {
		if h.GetHeader().GetKey() == "www-authenticate" {
			www = h.GetHeader().GetValue()
		}
	}
	if !strings.Contains(www, `error="insufficient_scope"`) || !strings.Contains(www, `scope="admin:write"`) {
		t.Errorf("www-authenticate %q", www)
	}
	if b := resp.GetDeniedResponse().GetBody(); !strings.Contains(b, `"route":"admin"`) || !strings.Contains(b, `"requirement":"scope admin:write"`) {
		t.Errorf("body %s", b)
	}

	// Shadow: allowed, identity set, counted as a denial not enforced.
	set, _ := grpcOK(t, grpcCheck(t, s, req("GET", "/beta/x", "", bearer(tok))))
	if set["x-user-id"] != "user-1" {
		t.Errorf("shadow allow without identity: %v", set)
	}
	for _, c := range []struct {
		labels map[string]string
		want   float64
	}{
		{map[string]string{"decision": "deny", "reason": "insufficient_scope", "route": "beta", "enforced": "false"}, 1},
		{map[string]string{"decision": "deny", "reason": "insufficient_scope", "route": "admin", "enforced": "true"}, 1},
		{map[string]string{"decision": "deny", "reason": "csrf", "route": "default", "enforced": "true"}, 1},
		{map[string]string{"decision": "deny", "reason": "unknown_route", "route": "(none)", "enforced": "true"}, 1},
		{map[string]string{"decision": "deny", "reason": "bad_path", "route": "(none)", "enforced": "true"}, 1},
		{map[string]string{"decision": "allow", "reason": "ok", "route": "health", "enforced": "true"}, 2},
	} {
		if got := grpcMetric(t, s.reg, "sidegate_decisions_total", c.labels); got != c.want {
			t.Errorf("sidegate_decisions_total%v = %v, want %v", c.labels, got, c.want)
		}
	}
}

// TestPolicyOverHTTP: behind nginx, Caddy or Traefik the check is a
// subrequest; the client's method, path and host come from
// X-Forwarded-Method, -Uri and -Host, and no header can name a route.
func TestPolicyOverHTTP(t *testing.T) {
	f := policyFixture(t, policyYAML)
	srv, _ := httpStart(t, f.engine)
	tok := f.token(t, "ES256", f.claims(), nil)
	for _, tc := range []struct {
		name    string
		method  string
		headers http.Header
		status  int
		reason  string
	}{
		{"cookie POST forwarded as such, cross-site", "GET", http.Header{"Cookie": {"session=" + tok}, "X-Forwarded-Method": {"POST"}, "X-Forwarded-Uri": {"/orders"}, "X-Forwarded-Host": {"shop.example.com"}, "Origin": {"https://evil.example"}}, 403, "csrf"},
		{"cookie POST, same origin", "GET", http.Header{"Cookie": {"session=" + tok}, "X-Forwarded-Method": {"POST"}, "X-Forwarded-Uri": {"/orders"}, "X-Forwarded-Host": {"shop.example.com"}, "Origin": {"https://shop.example.com"}}, 200, "ok"},
		{"cookie GET subrequest of a client GET", "GET", http.Header{"Cookie": {"session=" + tok}, "X-Forwarded-Method": {"GET"}, "X-Forwarded-Uri": {"/orders"}, "Origin": {"https://evil.example"}}, 200, "ok"},
		{"no forwarded headers: the request's own", "POST", http.Header{"Cookie": {"session=" + tok}, "Origin": {"https://evil.example"}}, 403, "csrf"},
		{"public path, forwarded", "GET", http.Header{"X-Forwarded-Method": {"GET"}, "X-Forwarded-Uri": {"/healthz?x=1"}}, 200, "ok"},
		{"route header ignored", "GET", http.Header{"X-Sidegate-Route": {"health"}, "X-Forwarded-Uri": {"/orders"}}, 401, "no_token"},
		{"ambiguous forwarded path", "GET", http.Header{"Authorization": {"Bearer " + tok}, "X-Forwarded-Uri": {"/admin%2fx"}}, 403, "bad_path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := httpDo(t, srv, tc.method, "/_sidegate", nil, tc.headers)
			if resp.StatusCode != tc.status || (tc.status != 200 && !strings.Contains(body, `"reason":"`+tc.reason+`"`)) {
				t.Errorf("status %d body %s, want %d %s", resp.StatusCode, body, tc.status, tc.reason)
			}
		})
	}
}
