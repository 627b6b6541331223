package e2e

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// policyRoutes is appended to a running sidegate's configuration file,
// which is then reloaded by SIGHUP.
const policyRoutes = `
routes:
  - name: health
    match: {paths: [/healthz]}
    auth: none
  - name: admin
    match: {path_prefix: /admin/}
    require: {scopes: ["admin:write"]}
  - name: beta
    match: {path_prefix: /beta/}
    require: {scopes: [beta]}
    mode: shadow
csrf: {trusted_origins: ["https://app.example.com"]}
`

// TestPolicyNginx and TestPolicyCaddy: routes, required scopes, shadow
// mode and the CSRF defence judged through a real proxy's subrequest,
// whose own method is GET: sidegate must judge the client's method, path
// and host (X-Forwarded-Method, -Uri, -Host). The routes arrive by live
// reload (SIGHUP) of the running process.
func TestPolicyNginx(t *testing.T) {
	t.Parallel()
	policyThroughProxy(t, "nginx", startNginx)
}

func TestPolicyCaddy(t *testing.T) {
	t.Parallel()
	policyThroughProxy(t, "caddy", startCaddy)
}

func policyThroughProxy(t *testing.T, name string, launch func(*testing.T, string, string) *peer) {
	began := time.Now()
	p, sg, hc := readyForProxy(t, name)

	// Live reload: the routes are added to the file in force and SIGHUP
	// applies them to the running process.
	f, err := os.OpenFile(sg.ConfigPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(policyRoutes); err != nil {
		t.Fatal(err)
	}
	f.Close()
	sg.signal(syscall.SIGHUP)
	sg.waitMetric(hc, "sidegate_config_generation", nil, "the routes to be reloaded", func(gen float64) bool { return gen == 2 })

	up := startEcho(t)
	px := launch(t, sg.HTTP, up.addr)
	base := "http://" + px.Addr
	plain := p.token(t, "ES256", p.claims("alice"))
	adminClaims := p.claims("root")
	adminClaims["scope"] = "openid admin:write"
	admin := p.token(t, "ES256", adminClaims)
	cookie := cookieName + "=" + plain

	cases := []struct {
		name    string
		method  string
		path    string
		headers map[string]string
		status  int // 200: the upstream is reached
	}{
		{"public route, no token", "GET", "/healthz", nil, 200},
		{"admin without the scope", "GET", "/admin/users", map[string]string{"Authorization": "Bearer " + plain}, 403},
		{"admin with the scope", "GET", "/admin/users", map[string]string{"Authorization": "Bearer " + admin}, 200},
		{"ambiguous path", "GET", "/admin%2fusers", map[string]string{"Authorization": "Bearer " + admin}, 403},
		{"shadow route would deny, allows", "GET", "/beta/x", map[string]string{"Authorization": "Bearer " + plain}, 200},
		{"cookie POST without Origin or Sec-Fetch-Site", "POST", "/orders", map[string]string{"Cookie": cookie}, 403},
		{"cookie POST, Sec-Fetch-Site same-origin", "POST", "/orders", map[string]string{"Cookie": cookie, "Sec-Fetch-Site": "same-origin"}, 200},
		{"cookie POST, Sec-Fetch-Site cross-site", "POST", "/orders", map[string]string{"Cookie": cookie, "Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, 403},
		{"cookie DELETE, foreign Origin", "DELETE", "/orders/1", map[string]string{"Cookie": cookie, "Origin": "https://evil.example"}, 403},
		{"cookie PUT, Origin of the site", "PUT", "/orders/1", map[string]string{"Cookie": cookie, "Origin": base}, 200},
		{"cookie POST, trusted Origin", "POST", "/orders", map[string]string{"Cookie": cookie, "Origin": "https://app.example.com"}, 200},
		{"cookie GET, foreign Origin (safe method)", "GET", "/orders", map[string]string{"Cookie": cookie, "Origin": "https://evil.example"}, 200},
		{"bearer POST, foreign Origin (exempt)", "POST", "/orders", map[string]string{"Authorization": "Bearer " + plain, "Origin": "https://evil.example"}, 200},
		{"client-sent X-Forwarded-Method does not pass a cookie POST", "POST", "/orders", map[string]string{"Cookie": cookie, "X-Forwarded-Method": "GET", "Origin": "https://evil.example"}, 403},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := up.calls.Load()
			code, _, raw, err := do(hc, tc.method, base+tc.path, tc.headers, []byte("{}"))
			if err != nil {
				t.Fatal(err)
			}
			if code != tc.status {
				t.Errorf("%s %s through %s: %d, want %d (body %s)", tc.method, tc.path, name, code, tc.status, raw)
			}
			reached := up.calls.Load() - before
			if (tc.status == 200) != (reached == 1) {
				t.Errorf("upstream called %d times", reached)
			}
		})
	}

	m := scrape(t, hc, sg.Admin)
	for _, c := range []struct {
		labels map[string]string
		want   float64
	}{
		{map[string]string{"decision": "deny", "reason": "csrf", "route": "default", "enforced": "true"}, 4},
		{map[string]string{"decision": "deny", "reason": "insufficient_scope", "route": "admin", "enforced": "true"}, 1},
		{map[string]string{"decision": "deny", "reason": "insufficient_scope", "route": "beta", "enforced": "false"}, 1},
		{map[string]string{"decision": "deny", "reason": "bad_path", "route": "(none)", "enforced": "true"}, 1},
		{map[string]string{"decision": "allow", "reason": "ok", "route": "health", "enforced": "true"}, 1},
	} {
		if got, _ := m.get("sidegate_decisions_total", c.labels); got != c.want {
			t.Errorf("sidegate_decisions_total%v = %v, want %v", c.labels, got, c.want)
		}
	}
	if got, _ := m.get("sidegate_config_reload_total", map[string]string{"outcome": "success"}); got != 1 {
		t.Errorf("reloads %v, want 1", got)
	}
	report(t, "routes reloaded by SIGHUP; %d route/CSRF cases through %s in %s", len(cases), name, time.Since(began).Round(100*time.Millisecond))
}
