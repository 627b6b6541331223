package authz

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// httpStart serves the HTTP check over real loopback HTTP, with the test's
// own metrics registry.
func httpStart(tb testing.TB, e *Engine) (*httptest.Server, *prometheus.Registry) {
	tb.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		tb.Fatal(err)
	}
	srv := httptest.NewServer(NewServer(e, m, nil))
	tb.Cleanup(srv.Close)
	return srv, reg
}

// httpDo sends method to url with headers (each value a separate header
// line) and returns the response with its body read.
func httpDo(tb testing.TB, srv *httptest.Server, method, path string, body io.Reader, headers http.Header) (*http.Response, string) {
	tb.Helper()
	req, err := http.NewRequestWithContext(grpcCtx(tb), method, srv.URL+path, body)
	if err != nil {
		tb.Fatal(err)
	}
	for k, vs := range headers {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp, string(b)
}

// httpDenied asserts a denial with this status and reason.
func httpDenied(tb testing.TB, resp *http.Response, body string, status int, reason string) {
	tb.Helper()
	if resp.StatusCode != status {
		tb.Fatalf("status %d, want %d (body %s)", resp.StatusCode, status, body)
	}
	if got := resp.Header.Values("Www-Authenticate"); len(got) != 1 || !strings.HasPrefix(got[0], `Bearer realm="sidegate"`) {
		tb.Errorf("WWW-Authenticate %q", got)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		tb.Errorf("Content-Type %q", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		tb.Errorf("Cache-Control %q", cc)
	}
	var b struct{ Error, Reason, Description string }
	if err := json.Unmarshal([]byte(body), &b); err != nil {
		tb.Fatalf("body %q: %v", body, err)
	}
	if b.Reason != reason || b.Error == "" || b.Description == "" {
		tb.Errorf("body %+v, want reason %q", b, reason)
	}
	for _, h := range []string{"X-User-Id", "X-Jwt-Payload", "X-Envoy-Auth-Headers-To-Remove"} {
		if v := resp.Header.Values(h); len(v) > 0 {
			tb.Errorf("denial carries %s: %q", h, v)
		}
	}
}

func TestHTTPAllowed(t *testing.T) {
	f := newFixture(t, nil)
	srv, _ := httpStart(t, f.engine)
	tok := f.token(t, "RS256", f.claims(), nil)
	payload := strings.Split(tok, ".")[1]

	tests := []struct {
		name    string
		method  string
		path    string
		body    string
		headers http.Header
	}{
		{"bearer", "GET", "/", "", http.Header{"Authorization": {"Bearer " + tok}}},
		{"lower-case scheme", "GET", "/", "", http.Header{"Authorization": {"bearer " + tok}}},
		{"cookie", "GET", "/", "", http.Header{"Cookie": {"theme=dark; session=" + tok}}},
		{"cookie in a second Cookie header", "GET", "/", "", http.Header{"Cookie": {"theme=dark", "session=" + tok}}},
		{"any path", "GET", "/auth/check?rd=/orders", "", http.Header{"Authorization": {"Bearer " + tok}}},
		{"nginx auth_request", "GET", "/_auth", "", http.Header{"Authorization": {"Bearer " + tok}, "X-Original-Uri": {"/orders/7"}, "X-Original-Method": {"DELETE"}}},
		{"Traefik forwardAuth", "GET", "/", "", http.Header{"Cookie": {"session=" + tok}, "X-Forwarded-Method": {"POST"}, "X-Forwarded-Uri": {"/orders"}, "X-Forwarded-Host": {"shop.test"}, "Sec-Fetch-Site": {"same-origin"}}},
		{"POST with a body", "POST", "/orders", strings.Repeat("x", 256<<10), http.Header{"Authorization": {"Bearer " + tok}, "Content-Type": {"application/json"}}},
		{"HEAD", "HEAD", "/", "", http.Header{"Authorization": {"Bearer " + tok}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			resp, b := httpDo(t, srv, tt.method, tt.path, body, tt.headers)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, body %s", resp.StatusCode, b)
			}
			if got := resp.Header.Values("X-User-Id"); len(got) != 1 || got[0] != "user-1" {
				t.Errorf("X-User-Id %q", got)
			}
			if got := resp.Header.Get("X-Jwt-Payload"); got != payload {
				t.Errorf("X-Jwt-Payload %q, want %q", got, payload)
			}
			if got := resp.Header.Values("X-Envoy-Auth-Headers-To-Remove"); len(got) > 0 {
				t.Errorf("X-Envoy-Auth-Headers-To-Remove %q, client sent none", got)
			}
			if got := resp.Header.Get("Www-Authenticate"); got != "" {
				t.Errorf("WWW-Authenticate %q on success", got)
			}
			if b != "" {
				t.Errorf("body %q on success", b)
			}
		})
	}
}

func TestHTTPDenied(t *testing.T) {
	f := newFixture(t, nil)
	srv, _ := httpStart(t, f.engine)
	tok := f.token(t, "ES256", f.claims(), nil)
	c := f.claims()
	c["iat"], c["exp"] = testNow.Add(-2*time.Hour).Unix(), testNow.Add(-time.Hour).Unix()
	expired := f.token(t, "ES256", c, nil)

	tests := []struct {
		name      string
		headers   http.Header
		reason    string
		challenge string
	}{
		{"no token", http.Header{"X-User-Id": {"admin"}}, "no_token", `Bearer realm="sidegate"`},
		{"expired", http.Header{"Authorization": {"Bearer " + expired}}, "expired", `Bearer realm="sidegate", error="invalid_token", error_description="the token has expired"`},
		{"two Authorization headers", http.Header{"Authorization": {"Bearer " + tok, "Bearer " + tok}}, "bad_authorization_header", `Bearer realm="sidegate", error="invalid_request", error_description="the Authorization header must be exactly one Bearer token"`},
		{"Basic", http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}}, "bad_authorization_header", ""},
		{"Basic beside a good cookie", http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}, "Cookie": {"session=" + tok}}, "bad_authorization_header", ""},
		{"duplicate cookie in one header", http.Header{"Cookie": {"session=" + tok + "; session=" + tok}}, "duplicate_cookie", ""},
		{"duplicate cookie across two headers", http.Header{"Cookie": {"session=" + tok, "session=" + tok}}, "duplicate_cookie", ""},
		{"garbage", http.Header{"Authorization": {"Bearer a.b.c"}}, "malformed_token", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := httpDo(t, srv, "GET", "/", nil, tt.headers)
			httpDenied(t, resp, body, 401, tt.reason)
			if tt.challenge != "" {
				if got := resp.Header.Get("Www-Authenticate"); got != tt.challenge {
					t.Errorf("WWW-Authenticate %q, want %q", got, tt.challenge)
				}
			}
		})
	}

	t.Run("HEAD has no body", func(t *testing.T) {
		resp, body := httpDo(t, srv, "HEAD", "/", nil, nil)
		if resp.StatusCode != 401 || body != "" {
			t.Errorf("status %d body %q", resp.StatusCode, body)
		}
		if got := resp.Header.Get("Www-Authenticate"); got != `Bearer realm="sidegate"` {
			t.Errorf("WWW-Authenticate %q", got)
		}
	})
	t.Run("POST with a body", func(t *testing.T) {
		resp, body := httpDo(t, srv, "POST", "/", strings.NewReader(strings.Repeat("x", 1<<20)), http.Header{"Authorization": {"Bearer " + expired}})
		httpDenied(t, resp, body, 401, "expired")
	})
	t.Run("keys unavailable", func(t *testing.T) {
		e, err := NewEngine(f.cfg, grpcNoKeys{}, nil, func() time.Time { return testNow })
		if err != nil {
			t.Fatal(err)
		}
		srv, _ := httpStart(t, e)
		resp, body := httpDo(t, srv, "GET", "/", nil, http.Header{"Authorization": {"Bearer " + tok}})
		httpDenied(t, resp, body, 503, "keys_unavailable")
	})
}

func TestHTTPRemove(t *testing.T) {
	f := newFixture(t, nil)
	srv, _ := httpStart(t, f.engine)
	c := f.claims()
	delete(c, "sub")
	noSub := f.token(t, "ES256", c, nil)
	withSub := f.token(t, "ES256", f.claims(), nil)

	t.Run("sent, not supplied", func(t *testing.T) {
		resp, body := httpDo(t, srv, "GET", "/", nil, http.Header{"Authorization": {"Bearer " + noSub}, "X-User-Id": {"admin"}})
		if resp.StatusCode != 200 {
			t.Fatalf("status %d body %s", resp.StatusCode, body)
		}
		if got := resp.Header.Values("X-Envoy-Auth-Headers-To-Remove"); len(got) != 1 || got[0] != "x-user-id" {
			t.Errorf("X-Envoy-Auth-Headers-To-Remove %q, want [x-user-id]", got)
		}
		if got := resp.Header.Values("X-User-Id"); len(got) > 0 {
			t.Errorf("X-User-Id %q set from a token without sub", got)
		}
		if resp.Header.Get("X-Jwt-Payload") == "" {
			t.Error("no X-Jwt-Payload")
		}
	})
	t.Run("sent, supplied", func(t *testing.T) {
		resp, _ := httpDo(t, srv, "GET", "/", nil, http.Header{"Authorization": {"Bearer " + withSub}, "X-User-Id": {"admin"}, "X-Jwt-Payload": {"forged"}})
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if got := resp.Header.Values("X-Envoy-Auth-Headers-To-Remove"); len(got) > 0 {
			t.Errorf("X-Envoy-Auth-Headers-To-Remove %q; both headers are overwritten", got)
		}
		if got := resp.Header.Get("X-User-Id"); got != "user-1" {
			t.Errorf("X-User-Id %q", got)
		}
	})
}

// TestHTTPHeaderInjection checks that a claim cannot add a response header
// or split the response: what reaches the wire is the escaped value.
func TestHTTPHeaderInjection(t *testing.T) {
	f := newFixture(t, nil)
	srv, _ := httpStart(t, f.engine)
	c := f.claims()
	c["sub"] = "user-1\r\nX-Admin: true\r\n\r\n<html>"
	resp, body := httpDo(t, srv, "GET", "/", nil, http.Header{"Authorization": {"Bearer " + f.token(t, "ES256", c, nil)}})
	if resp.StatusCode != 200 {
		t.Fatalf("status %d body %s", resp.StatusCode, body)
	}
	if got := resp.Header.Get("X-User-Id"); got != "user-1%0D%0AX-Admin:%20true%0D%0A%0D%0A<html>" {
		t.Errorf("X-User-Id %q", got)
	}
	if got := resp.Header.Values("X-Admin"); len(got) > 0 {
		t.Errorf("injected header X-Admin: %q", got)
	}
	if body != "" {
		t.Errorf("body %q", body)
	}
}

func TestHTTPMetrics(t *testing.T) {
	f := newFixture(t, nil)
	srv, reg := httpStart(t, f.engine)
	tok := f.token(t, "EdDSA", f.claims(), nil)
	for range 2 {
		httpDo(t, srv, "GET", "/", nil, http.Header{"Authorization": {"Bearer " + tok}})
	}
	httpDo(t, srv, "HEAD", "/", nil, http.Header{"Cookie": {"session=" + tok}})
	for range 4 {
		httpDo(t, srv, "GET", "/", nil, nil)
	}
	httpDo(t, srv, "GET", "/", nil, http.Header{"Authorization": {"Bearer " + tok, "Bearer " + tok}})

	for _, c := range []struct {
		decision, reason string
		want             float64
	}{
		{"allow", "ok", 3},
		{"deny", "no_token", 4},
		{"deny", "bad_authorization_header", 1},
		{"deny", "expired", 0},
	} {
		if got := grpcMetric(t, reg, "sidegate_decisions_total", map[string]string{"decision": c.decision, "reason": c.reason}); got != c.want {
			t.Errorf("sidegate_decisions_total{decision=%q,reason=%q} = %v, want %v", c.decision, c.reason, got, c.want)
		}
	}
	for _, d := range []struct {
		transport, decision string
		want                float64
	}{
		{"http", "allow", 3},
		{"http", "deny", 5},
		{"grpc", "allow", 0},
		{"grpc", "deny", 0},
	} {
		if got := grpcMetric(t, reg, "sidegate_check_duration_seconds", map[string]string{"transport": d.transport, "decision": d.decision}); got != d.want {
			t.Errorf("sidegate_check_duration_seconds{transport=%q,decision=%q} count = %v, want %v", d.transport, d.decision, got, d.want)
		}
	}
}
