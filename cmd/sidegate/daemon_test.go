package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/sidegate/sidegate/authz"
	"github.com/sidegate/sidegate/jwks/jwkstest"
)

const (
	testAudience = "orders-api"
	testCookie   = "sg_session"
)

// testAlgs are the algorithms the binary must accept out of the box.
var testAlgs = []string{"RS256", "ES256", "EdDSA"}

// testIdP is a real identity provider with one signing key per testAlgs
// entry (kid "kid-<alg>").
type testIdP struct {
	*jwkstest.Server
	keys map[string]*jwkstest.Key
}

func newTestIdP(t *testing.T) *testIdP {
	t.Helper()
	idp := &testIdP{keys: map[string]*jwkstest.Key{}}
	var keys []*jwkstest.Key
	for _, alg := range testAlgs {
		k := jwkstest.NewKey(t, alg, "kid-"+alg)
		idp.keys[alg] = k
		keys = append(keys, k)
	}
	idp.Server = jwkstest.NewServer(t, keys...)
	return idp
}

// mint signs a token for sub with alg's key, valid from now for an hour;
// edit, if not nil, changes the claims first.
func (idp *testIdP) mint(t *testing.T, alg, sub string, edit func(map[string]any)) string {
	t.Helper()
	c := jwkstest.Claims(idp.Issuer(), testAudience, sub, time.Now(), time.Hour)
	if edit != nil {
		edit(c)
	}
	return idp.keys[alg].Sign(t, c, nil)
}

// daemonConfig is a configuration for idp on loopback ports chosen by
// the kernel, read through ParseConfig like a real file.
func daemonConfig(t *testing.T, idp *testIdP) *Config {
	t.Helper()
	return mustParse(t, fmt.Sprintf(`
listen:
  grpc: 127.0.0.1:0
  http: 127.0.0.1:0
  admin: 127.0.0.1:0
  shutdown_timeout: 20s
issuers:
  - issuer: %q
    jwks_uri: %q
    audiences: [%s]
    algorithms: [RS256, ES256, EdDSA]
tokens:
  cookies: [%s]
forward:
  claims:
    x-user-id: sub
    x-user-email: email
`, idp.Issuer(), idp.JWKSURI(), testAudience, testCookie))
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// runningDaemon is a daemon whose Run is going in a goroutine.
type runningDaemon struct {
	*daemon
	cancel context.CancelFunc
	done   chan struct{}
	err    error // Run's result, once done is closed
}

func startDaemon(t *testing.T, cfg *Config) *runningDaemon {
	t.Helper()
	d, err := newDaemon(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("newDaemon: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rd := &runningDaemon{daemon: d, cancel: cancel, done: make(chan struct{})}
	go func() {
		rd.err = d.Run(ctx)
		close(rd.done)
	}()
	t.Cleanup(func() {
		if err := rd.stop(30 * time.Second); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return rd
}

// stop cancels Run and waits for it to return.
func (rd *runningDaemon) stop(timeout time.Duration) error {
	rd.cancel()
	select {
	case <-rd.done:
		return rd.err
	case <-time.After(timeout):
		return errors.New("Run did not return")
	}
}

func (rd *runningDaemon) returned() bool {
	select {
	case <-rd.done:
		return true
	default:
		return false
	}
}

func (rd *runningDaemon) grpcAddr() string { return rd.lns.grpc.Addr().String() }
func (rd *runningDaemon) httpURL() string  { return "http://" + rd.lns.http.Addr().String() }
func (rd *runningDaemon) adminURL() string { return "http://" + rd.lns.admin.Addr().String() }
func (rd *runningDaemon) addrs() []string {
	return []string{rd.grpcAddr(), rd.lns.http.Addr().String(), rd.lns.admin.Addr().String()}
}
func (rd *runningDaemon) waitReady(t *testing.T) { waitReady(t, rd.adminURL()) }

func waitReady(t *testing.T, adminURL string) {
	t.Helper()
	waitFor(t, 20*time.Second, "GET /readyz to answer 200", func() bool {
		code, _, _ := httpGet(t, adminURL+"/readyz", nil)
		return code == http.StatusOK
	})
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// httpGet sends GET url with the headers and returns status, response
// headers and body. A transport error fails the test.
func httpGet(t *testing.T, url string, headers map[string]string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, resp.Header, string(body)
}

func dialGRPC(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// checkRequest is what Envoy sends for GET /orders/42 with these headers.
func checkRequest(headers map[string]string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method:   http.MethodGet,
			Path:     "/orders/42",
			Host:     "orders.example.com",
			Scheme:   "https",
			Protocol: "HTTP/1.1",
			Headers:  headers,
		}},
	}}
}

func grpcCheck(t *testing.T, c authv3.AuthorizationClient, headers map[string]string) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Check(ctx, checkRequest(headers))
	if err != nil {
		t.Fatalf("Check: a denial must be a response, not an error: %v", err)
	}
	return resp
}

func healthStatus(t *testing.T, conn *grpc.ClientConn, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("health Check(%q): %v", service, err)
	}
	return resp.GetStatus()
}

// okHeaders returns the headers an allowed response sets, checking that
// every one overwrites (never appends to) what the client sent.
func okHeaders(t *testing.T, ok *authv3.OkHttpResponse) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, h := range ok.GetHeaders() {
		if a := h.GetAppendAction(); a != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("header %s: append action %v, want OVERWRITE_IF_EXISTS_OR_ADD", h.GetHeader().GetKey(), a)
		}
		if h.GetAppend() != nil && h.GetAppend().GetValue() {
			t.Errorf("header %s: deprecated append=true", h.GetHeader().GetKey())
		}
		m[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	return m
}

// denial is what a client learns from a denied check.
type denial struct {
	status    int
	challenge string
	body      struct{ Error, Reason, Description string }
}

func parseDenialBody(t *testing.T, d *denial, body string) {
	t.Helper()
	if err := json.Unmarshal([]byte(body), &d.body); err != nil {
		t.Fatalf("denial body %q is not JSON: %v", body, err)
	}
}

// grpcDenial checks that resp is a well-formed denial and returns it.
func grpcDenial(t *testing.T, resp *authv3.CheckResponse) denial {
	t.Helper()
	dr := resp.GetDeniedResponse()
	if dr == nil {
		t.Fatalf("not denied: %v", resp)
	}
	d := denial{status: int(dr.GetStatus().GetCode())}
	hs := map[string]string{}
	for _, h := range dr.GetHeaders() {
		hs[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	d.challenge = hs["www-authenticate"]
	if ct := hs["content-type"]; ct != "application/json" {
		t.Errorf("denied content-type = %q", ct)
	}
	parseDenialBody(t, &d, dr.GetBody())
	// The gRPC status mirrors the HTTP status and names the reason.
	want := map[int]codes.Code{401: codes.Unauthenticated, 403: codes.PermissionDenied, 503: codes.Unavailable}[d.status]
	if got := codes.Code(resp.GetStatus().GetCode()); got != want || got == codes.OK {
		t.Errorf("status code %v for HTTP %d, want %v", got, d.status, want)
	}
	if msg := resp.GetStatus().GetMessage(); msg != d.body.Reason {
		t.Errorf("status message %q, body reason %q", msg, d.body.Reason)
	}
	return d
}

func httpDenial(t *testing.T, code int, h http.Header, body string) denial {
	t.Helper()
	d := denial{status: code, challenge: h.Get("WWW-Authenticate")}
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Errorf("denied Content-Type = %q", ct)
	}
	parseDenialBody(t, &d, body)
	return d
}

// checkDenial compares a denial with the expected status and reason and
// its RFC 6750 challenge with the body.
func checkDenial(t *testing.T, d denial, status int, reason string) {
	t.Helper()
	if d.status != status || d.body.Reason != reason {
		t.Errorf("denied %d %q, want %d %q (body %+v)", d.status, d.body.Reason, status, reason, d.body)
	}
	switch {
	case reason == "no_token":
		if d.challenge != `Bearer realm="sidegate"` {
			t.Errorf("WWW-Authenticate = %q", d.challenge)
		}
		return
	case status != 401:
		// Not the token's fault (503): the exact challenge is authz's call.
		if !strings.HasPrefix(d.challenge, `Bearer realm="sidegate"`) {
			t.Errorf("WWW-Authenticate = %q", d.challenge)
		}
		return
	}
	want := fmt.Sprintf(`Bearer realm="sidegate", error=%q, error_description=%q`, d.body.Error, d.body.Description)
	if d.challenge != want || d.body.Error != "invalid_token" {
		t.Errorf("WWW-Authenticate = %q, body %+v", d.challenge, d.body)
	}
}

// scrape returns the admin listener's /metrics in the text format.
func scrape(t *testing.T, adminURL string) string {
	t.Helper()
	code, _, body := httpGet(t, adminURL+"/metrics", nil)
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d", code)
	}
	return body
}

// metricValue returns the value of one series, written as in the text
// format (name{label="value",...} with labels in name order).
func metricValue(t *testing.T, metrics, series string) float64 {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(metrics))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: value %q: %v", series, v, err)
			}
			return f
		}
	}
	t.Fatalf("no series %s in /metrics", series)
	return 0
}

// payloadOf is the token's payload segment, which x-jwt-payload carries.
func payloadOf(token string) string { return strings.Split(token, ".")[1] }

// TestDaemon runs one daemon against a real identity provider: readiness,
// every algorithm from the bearer header and the cookie over both
// transports, the common denials, the admin endpoints and the metrics they
// all leave behind.
func TestDaemon(t *testing.T) {
	t.Parallel()
	idp := newTestIdP(t)
	idp.SetStatus(http.StatusInternalServerError) // the IdP is down at start
	rd := startDaemon(t, daemonConfig(t, idp))
	conn := dialGRPC(t, rd.grpcAddr())
	client := authv3.NewAuthorizationClient(conn)
	var allowed, allowedGRPC int // expected counters

	t.Run("not ready before the first successful fetch", func(t *testing.T) {
		waitFor(t, 10*time.Second, "a first JWKS fetch", func() bool { return idp.Fetches() >= 1 })
		code, _, body := httpGet(t, rd.adminURL()+"/readyz", nil)
		if code != http.StatusServiceUnavailable || body != "not ready: no usable keys yet for "+idp.Issuer()+"\nissuer "+idp.Issuer()+": no keys yet\n" {
			t.Errorf("/readyz = %d %q", code, body)
		}
		if code, _, body := httpGet(t, rd.adminURL()+"/healthz", nil); code != http.StatusOK || body != "ok\n" {
			t.Errorf("/healthz = %d %q, want 200: the process runs", code, body)
		}
		for _, svc := range []string{"", authz.AuthorizationService} {
			if st := healthStatus(t, conn, svc); st != healthpb.HealthCheckResponse_NOT_SERVING {
				t.Errorf("health %q = %v, want NOT_SERVING", svc, st)
			}
		}
		// A good token cannot be verified yet: 503, never an allow.
		token := idp.mint(t, "ES256", "early", nil)
		checkDenial(t, grpcDenial(t, grpcCheck(t, client, map[string]string{"authorization": "Bearer " + token})), 503, "keys_unavailable")
		code, h, body := httpGet(t, rd.httpURL(), map[string]string{"Authorization": "Bearer " + token})
		checkDenial(t, httpDenial(t, code, h, body), 503, "keys_unavailable")
	})

	t.Run("ready once the keys are fetched", func(t *testing.T) {
		idp.SetStatus(http.StatusOK)
		rd.waitReady(t)
		if _, _, body := httpGet(t, rd.adminURL()+"/readyz", nil); !strings.HasPrefix(body, "ready\nissuer "+idp.Issuer()+": ok, 3 keys, confirmed ") {
			t.Errorf("/readyz body %q", body)
		}
		for _, svc := range []string{"", authz.AuthorizationService} {
			waitFor(t, 10*time.Second, "gRPC health "+svc+" SERVING", func() bool {
				return healthStatus(t, conn, svc) == healthpb.HealthCheckResponse_SERVING
			})
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	// The client tries to pass its own identity headers. x-user-id and
	// x-jwt-payload are overwritten; the token has no email, so the forged
	// x-user-email must be removed.
	forged := map[string]string{"x-user-id": "admin", "x-user-email": "boss@example.com", "x-jwt-payload": "e30"}

	for _, alg := range testAlgs {
		sub := "user-" + alg
		token := idp.mint(t, alg, sub, nil)
		sources := []struct {
			name   string
			header string // Envoy's lower-case name
			value  string
		}{
			{"bearer", "authorization", "Bearer " + token},
			{"cookie", "cookie", "theme=dark; " + testCookie + "=" + token + "; lang=en"},
		}
		for _, src := range sources {
			t.Run(alg+"/"+src.name+"/grpc", func(t *testing.T) {
				headers := map[string]string{src.header: src.value}
				for k, v := range forged {
					headers[k] = v
				}
				resp := grpcCheck(t, client, headers)
				allowed++
				allowedGRPC++
				if resp.GetStatus().GetCode() != int32(codes.OK) || resp.GetOkResponse() == nil {
					t.Fatalf("not allowed: %v", resp)
				}
				got := okHeaders(t, resp.GetOkResponse())
				want := map[string]string{"x-user-id": sub, "x-jwt-payload": payloadOf(token)}
				if !mapsEqual(got, want) {
					t.Errorf("headers set = %v, want %v", got, want)
				}
				if rm := resp.GetOkResponse().GetHeadersToRemove(); !slices.Equal(rm, []string{"x-user-email"}) {
					t.Errorf("headers_to_remove = %v, want [x-user-email]", rm)
				}
			})
			t.Run(alg+"/"+src.name+"/http", func(t *testing.T) {
				headers := map[string]string{src.header: src.value}
				for k, v := range forged {
					headers[k] = v
				}
				code, h, body := httpGet(t, rd.httpURL()+"/orders/42?x=1", headers)
				allowed++
				if code != http.StatusOK {
					t.Fatalf("status %d, body %s", code, body)
				}
				if got := h.Get("X-User-Id"); got != sub {
					t.Errorf("X-User-Id = %q, want %q", got, sub)
				}
				if got := h.Get("X-Jwt-Payload"); got != payloadOf(token) {
					t.Errorf("X-Jwt-Payload = %q", got)
				}
				if got, ok := h["X-User-Email"]; ok {
					t.Errorf("X-User-Email = %q, want none", got)
				}
				if got := h.Get("X-Envoy-Auth-Headers-To-Remove"); got != "x-user-email" {
					t.Errorf("X-Envoy-Auth-Headers-To-Remove = %q, want x-user-email", got)
				}
			})
		}
	}

	t.Run("every identity header supplied", func(t *testing.T) {
		token := idp.mint(t, "ES256", "usr_1", func(c map[string]any) { c["email"] = "a.b@example.com" })
		headers := map[string]string{"authorization": "bearer " + token} // scheme is case-insensitive
		for k, v := range forged {
			headers[k] = v
		}
		resp := grpcCheck(t, client, headers)
		allowed++
		allowedGRPC++
		if resp.GetOkResponse() == nil {
			t.Fatalf("not allowed: %v", resp)
		}
		want := map[string]string{"x-user-id": "usr_1", "x-user-email": "a.b@example.com", "x-jwt-payload": payloadOf(token)}
		if got := okHeaders(t, resp.GetOkResponse()); !mapsEqual(got, want) {
			t.Errorf("headers set = %v, want %v", got, want)
		}
		if rm := resp.GetOkResponse().GetHeadersToRemove(); len(rm) != 0 {
			t.Errorf("headers_to_remove = %v, want none", rm)
		}
		code, h, _ := httpGet(t, rd.httpURL(), headers)
		allowed++
		if code != 200 || h.Get("X-User-Email") != "a.b@example.com" || h.Get("X-Envoy-Auth-Headers-To-Remove") != "" {
			t.Errorf("HTTP: %d %v", code, h)
		}
	})

	// Denials: one token per class and algorithm, over both transports.
	impostor := map[string]*jwkstest.Key{ // same kid and alg, different key
		"RS256": jwkstest.NewRSAKey(t, "RS256", "kid-RS256", 2048),
		"ES256": jwkstest.NewKey(t, "ES256", "kid-ES256"),
		"EdDSA": jwkstest.NewKey(t, "EdDSA", "kid-EdDSA"),
	}
	denials := []struct {
		name   string
		reason string
		token  func(t *testing.T, alg string) string
	}{
		{"expired", "expired", func(t *testing.T, alg string) string {
			return idp.mint(t, alg, "late", func(c map[string]any) {
				now := time.Now()
				c["iat"], c["exp"] = now.Add(-2*time.Hour).Unix(), now.Add(-time.Hour).Unix()
			})
		}},
		{"wrong audience", "audience_mismatch", func(t *testing.T, alg string) string {
			return idp.mint(t, alg, "elsewhere", func(c map[string]any) { c["aud"] = []string{"billing-api", "other"} })
		}},
		{"bad signature", "bad_signature", func(t *testing.T, alg string) string {
			return impostor[alg].Sign(t, jwkstest.Claims(idp.Issuer(), testAudience, "admin", time.Now(), time.Hour), nil)
		}},
	}
	denied := map[string]int{}
	for _, alg := range testAlgs {
		for _, dc := range denials {
			token := dc.token(t, alg)
			t.Run(alg+"/"+dc.name+"/grpc", func(t *testing.T) {
				resp := grpcCheck(t, client, map[string]string{"authorization": "Bearer " + token, "x-user-id": "admin"})
				denied[dc.reason]++
				checkDenial(t, grpcDenial(t, resp), 401, dc.reason)
			})
			t.Run(alg+"/"+dc.name+"/http-cookie", func(t *testing.T) {
				code, h, body := httpGet(t, rd.httpURL(), map[string]string{"Cookie": testCookie + "=" + token, "X-User-Id": "admin"})
				denied[dc.reason]++
				checkDenial(t, httpDenial(t, code, h, body), 401, dc.reason)
				if h.Get("X-User-Id") != "" {
					t.Error("a denial carries identity headers")
				}
			})
		}
	}
	t.Run("no token", func(t *testing.T) {
		checkDenial(t, grpcDenial(t, grpcCheck(t, client, map[string]string{"x-user-id": "admin"})), 401, "no_token")
		code, h, body := httpGet(t, rd.httpURL(), nil)
		checkDenial(t, httpDenial(t, code, h, body), 401, "no_token")
		denied["no_token"] += 2
	})

	t.Run("admin", func(t *testing.T) {
		if code, _, body := httpGet(t, rd.adminURL()+"/healthz", nil); code != 200 || body != "ok\n" {
			t.Errorf("/healthz = %d %q", code, body)
		}
		if code, _, _ := httpGet(t, rd.adminURL()+"/nothing", nil); code != http.StatusNotFound {
			t.Errorf("/nothing = %d, want 404", code)
		}
		// The admin routes are not on the check listener: there, every
		// path is a check.
		if code, _, _ := httpGet(t, rd.httpURL()+"/metrics", nil); code != http.StatusUnauthorized {
			t.Errorf("check listener /metrics = %d, want 401", code)
		}
		denied["no_token"]++
	})

	t.Run("metrics", func(t *testing.T) {
		m := scrape(t, rd.adminURL())
		want := map[string]float64{
			`sidegate_decisions_total{decision="allow",enforced="true",reason="ok",route="default"}`:               float64(allowed),
			`sidegate_decisions_total{decision="deny",enforced="true",reason="expired",route="default"}`:           float64(denied["expired"]),
			`sidegate_decisions_total{decision="deny",enforced="true",reason="audience_mismatch",route="default"}`: float64(denied["audience_mismatch"]),
			`sidegate_decisions_total{decision="deny",enforced="true",reason="bad_signature",route="default"}`:     float64(denied["bad_signature"]),
			`sidegate_decisions_total{decision="deny",enforced="true",reason="no_token",route="default"}`:          float64(denied["no_token"]),
			`sidegate_decisions_total{decision="deny",enforced="true",reason="keys_unavailable",route="default"}`:  2,
			`sidegate_decisions_total{decision="deny",enforced="true",reason="revoked",route="default"}`:           0,
			`sidegate_check_duration_seconds_count{decision="allow",transport="grpc"}`:                             float64(allowedGRPC),
			`sidegate_check_duration_seconds_count{decision="allow",transport="http"}`:                             float64(allowed - allowedGRPC),
			`sidegate_jwks_keys{issuer="` + idp.Issuer() + `"}`:                                                    3,
		}
		for series, v := range want {
			if got := metricValue(t, m, series); got != v {
				t.Errorf("%s = %v, want %v", series, got, v)
			}
		}
		if allowed != 3*2*2+2 {
			t.Errorf("test bookkeeping: %d allowed", allowed)
		}
		for _, series := range []string{
			`sidegate_jwks_refresh_total{issuer="` + idp.Issuer() + `",outcome="error"}`,
			`sidegate_jwks_refresh_total{issuer="` + idp.Issuer() + `",outcome="success"}`,
		} {
			if got := metricValue(t, m, series); got < 1 {
				t.Errorf("%s = %v, want at least 1", series, got)
			}
		}
		if got := metricValue(t, m, `sidegate_jwks_last_success_timestamp_seconds{issuer="`+idp.Issuer()+`"}`); time.Since(time.Unix(int64(got), 0)) > time.Hour {
			t.Errorf("last success timestamp %v", got)
		}
		if got := metricValue(t, m, "go_goroutines"); got < 1 {
			t.Errorf("go_goroutines = %v", got)
		}
		for _, name := range []string{"sidegate_check_duration_seconds_bucket{", "process_start_time_seconds"} {
			if !strings.Contains(m, name) {
				t.Errorf("/metrics has no %s", name)
			}
		}
		// Label values come from fixed sets or the configuration, never
		// from tokens or requests.
		for _, leak := range []string{"user-ES256", "admin", "orders/42", "billing-api"} {
			if strings.Contains(m, leak) {
				t.Errorf("/metrics mentions %q", leak)
			}
		}
	})
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// grpcFrame is one length-prefixed gRPC message.
func grpcFrame(t *testing.T, msg any) []byte {
	t.Helper()
	bs, err := encoding.GetCodecV2(grpcproto.Name).Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	b := bs.Materialize()
	frame := make([]byte, 5+len(b))
	binary.BigEndian.PutUint32(frame[1:5], uint32(len(b)))
	copy(frame[5:], b)
	return frame
}

// slowCall is a request whose body the test writes piece by piece, so
// that it is provably in flight at a chosen moment.
type slowCall struct {
	body *io.PipeWriter
	resp chan *http.Response
	err  chan error
}

func startSlowCall(t *testing.T, client *http.Client, req *http.Request, body *io.PipeWriter) *slowCall {
	t.Helper()
	c := &slowCall{body: body, resp: make(chan *http.Response, 1), err: make(chan error, 1)}
	// If the test stops early, end the request so the drain need not wait.
	t.Cleanup(func() { body.CloseWithError(errors.New("test over")) })
	go func() {
		resp, err := client.Do(req)
		if err != nil {
			c.err <- err
			return
		}
		c.resp <- resp
	}()
	return c
}

func (c *slowCall) write(t *testing.T, p []byte) {
	t.Helper()
	done := make(chan error, 1)
	go func() { _, err := c.body.Write(p); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("writing the request body: %v", err)
		}
	case err := <-c.err:
		t.Fatalf("request failed: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the request body was not read")
	}
}

func (c *slowCall) finish(t *testing.T, rest []byte) *http.Response {
	t.Helper()
	c.write(t, rest)
	c.body.Close()
	select {
	case resp := <-c.resp:
		return resp
	case err := <-c.err:
		t.Fatalf("an in-flight request was dropped: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("no response")
	}
	return nil
}

// dialFails reports whether a new TCP connection to addr is refused.
func dialFails(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

// TestDaemonGracefulShutdown holds one gRPC check and one HTTP check in
// flight across the cancellation of Run: both must be answered, in the
// documented order (readiness off, gRPC drained, then HTTP), and Run must
// return nil with every listener closed.
func TestDaemonGracefulShutdown(t *testing.T) {
	t.Parallel()
	idp := newTestIdP(t)
	rd := startDaemon(t, daemonConfig(t, idp))
	rd.waitReady(t)
	token := idp.mint(t, "EdDSA", "usr_inflight", nil)

	// gRPC, as Envoy speaks it: HTTP/2 without TLS. The message is sent in
	// two halves, so the stream is open on the server and waiting.
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	defer h2c.CloseIdleConnections()
	frame := grpcFrame(t, checkRequest(map[string]string{"authorization": "Bearer " + token, "x-user-id": "admin"}))
	gpr, gpw := io.Pipe()
	greq, _ := http.NewRequest(http.MethodPost, "http://"+rd.grpcAddr()+"/envoy.service.auth.v3.Authorization/Check", gpr)
	greq.Header.Set("Content-Type", "application/grpc")
	greq.Header.Set("TE", "trailers")
	gcall := startSlowCall(t, &http.Client{Transport: h2c}, greq, gpw)
	gcall.write(t, frame[:len(frame)/2])

	// HTTP with Expect: 100-continue: the client sends the body only once
	// the server's handler reads it, so when the first write returns the
	// request is being handled.
	h1 := &http.Transport{ExpectContinueTimeout: time.Minute}
	defer h1.CloseIdleConnections()
	hpr, hpw := io.Pipe()
	hreq, _ := http.NewRequest(http.MethodPost, rd.httpURL()+"/upload", hpr)
	hreq.Header.Set("Authorization", "Bearer "+token)
	hreq.Header.Set("Expect", "100-continue")
	hcall := startSlowCall(t, &http.Client{Transport: h1}, hreq, hpw)
	hcall.write(t, []byte("part one;"))

	rd.cancel()

	// Readiness goes off and the gRPC listener closes, while the in-flight
	// stream holds the drain open.
	waitFor(t, 10*time.Second, "the gRPC listener to close", func() bool { return dialFails(rd.grpcAddr()) })
	if code, _, body := httpGet(t, rd.adminURL()+"/readyz", nil); code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "not ready: shutting down\n") {
		t.Errorf("/readyz during the drain = %d %q", code, body)
	}
	if rd.returned() {
		t.Fatal("Run returned with a gRPC check in flight")
	}

	resp := gcall.finish(t, frame[len(frame)/2:])
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading the gRPC response: %v", err)
	}
	if resp.StatusCode != 200 || resp.Trailer.Get("Grpc-Status") != "0" || len(body) < 5 {
		t.Fatalf("gRPC response: %d, trailer %v, %d bytes", resp.StatusCode, resp.Trailer, len(body))
	}
	var cr authv3.CheckResponse
	if err := encoding.GetCodecV2(grpcproto.Name).Unmarshal(mem.BufferSlice{mem.SliceBuffer(body[5:])}, &cr); err != nil {
		t.Fatal(err)
	}
	if cr.GetOkResponse() == nil || okHeaders(t, cr.GetOkResponse())["x-user-id"] != "usr_inflight" {
		t.Errorf("in-flight gRPC check: %v", &cr)
	}

	// Then the HTTP server shuts down, waiting for its in-flight check.
	waitFor(t, 10*time.Second, "the HTTP listener to close", func() bool { return dialFails(rd.lns.http.Addr().String()) })
	if rd.returned() {
		t.Fatal("Run returned with an HTTP check in flight")
	}
	resp = hcall.finish(t, []byte("part two"))
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-User-Id") != "usr_inflight" {
		t.Errorf("in-flight HTTP check: %d %v", resp.StatusCode, resp.Header)
	}

	if err := rd.stop(20 * time.Second); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	for _, addr := range rd.addrs() {
		if !dialFails(addr) {
			t.Errorf("%s still accepts connections after Run returned", addr)
		}
	}
}

// TestDaemonShutdownUnderLoad cancels Run while many gRPC checks are
// being made over one connection, as Envoy would: checks already sent are
// answered, later ones fail with Unavailable when a new connection cannot
// be made, and nothing else happens.
func TestDaemonShutdownUnderLoad(t *testing.T) {
	t.Parallel()
	idp := newTestIdP(t)
	rd := startDaemon(t, daemonConfig(t, idp))
	rd.waitReady(t)
	client := authv3.NewAuthorizationClient(dialGRPC(t, rd.grpcAddr()))
	token := idp.mint(t, "ES256", "usr_load", nil)
	req := checkRequest(map[string]string{"authorization": "Bearer " + token})

	type result struct {
		beforeCancel bool
		err          error
		allowed      bool
	}
	var (
		cancelled atomic.Bool
		okCount   atomic.Int64
		mu        sync.Mutex
		results   []result
		wg        sync.WaitGroup
	)
	const workers = 32
	for range workers {
		wg.Go(func() {
			deadline := time.Now().Add(20 * time.Second)
			for time.Now().Before(deadline) {
				before := !cancelled.Load()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				resp, err := client.Check(ctx, req)
				cancel()
				r := result{beforeCancel: before, err: err, allowed: err == nil && resp.GetOkResponse() != nil}
				if r.allowed {
					okCount.Add(1)
				}
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
				if err != nil && cancelled.Load() {
					return // the server is gone
				}
			}
		})
	}
	waitFor(t, 20*time.Second, "500 checks", func() bool { return okCount.Load() >= 500 })
	cancelled.Store(true)
	rd.cancel()
	wg.Wait()

	var inFlightOK, failed int
	// What a check gets when it needs a new connection and the listener
	// is gone; a dropped in-flight check reads "error reading from server:
	// EOF" or "transport is closing" instead.
	newConnRefused := regexp.MustCompile(`Error while dialing|connect: connection refused`)
	for _, r := range results {
		switch {
		case r.err == nil && !r.allowed:
			t.Errorf("a good token was not allowed")
		case r.err == nil:
			if r.beforeCancel {
				inFlightOK++
			}
		default:
			failed++
			st, _ := status.FromError(r.err)
			if st.Code() != codes.Unavailable {
				t.Errorf("check failed with %v, want only Unavailable", r.err)
				continue
			}
			if r.beforeCancel && !newConnRefused.MatchString(st.Message()) {
				t.Errorf("a check started before the cancellation failed other than by a refused new connection: %v", r.err)
			}
		}
	}
	t.Logf("%d checks: %d allowed, %d failed after the shutdown", len(results), len(results)-failed, failed)
	if failed < workers {
		t.Errorf("%d failures, want one per worker once the server is gone", failed)
	}
	if err := rd.stop(20 * time.Second); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	for _, addr := range rd.addrs() {
		if !dialFails(addr) {
			t.Errorf("%s still accepts connections after Run returned", addr)
		}
	}
}

func TestNewDaemonPortInUse(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	idp := newTestIdP(t)
	cfg := daemonConfig(t, idp)
	cfg.Listen.Admin = busy.Addr().String()
	d, err := newDaemon(cfg, testLogger(t))
	if err == nil {
		d.closeListeners()
		t.Fatal("newDaemon bound a port in use")
	}
	if !strings.HasPrefix(err.Error(), "listen.admin: ") || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("error %q", err)
	}
}

// TestDaemonStopBeforeReady: a daemon stopped while its first key fetch
// hangs exits cleanly and at once.
func TestDaemonStopBeforeReady(t *testing.T) {
	t.Parallel()
	idp := newTestIdP(t)
	idp.SetDelay(time.Minute) // the first fetch hangs
	rd := startDaemon(t, daemonConfig(t, idp))
	waitFor(t, 10*time.Second, "the admin listener", func() bool {
		code, _, _ := httpGet(t, rd.adminURL()+"/readyz", nil)
		return code == http.StatusServiceUnavailable
	})
	if err := rd.stop(10 * time.Second); err != nil {
		t.Fatalf("Run = %v", err)
	}
}

// TestDaemonRunAlreadyCancelled: a SIGTERM that arrives before the
// servers have started is a clean stop, not an error (the gRPC server used
// to report "the server has been stopped" when shutdown won that race).
func TestDaemonRunAlreadyCancelled(t *testing.T) {
	t.Parallel()
	idp := newTestIdP(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 20 {
		d, err := newDaemon(daemonConfig(t, idp), testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Run(ctx); err != nil {
			t.Fatalf("run %d: Run = %v, want nil", i, err)
		}
		for _, ln := range []net.Listener{d.lns.grpc, d.lns.http, d.lns.admin} {
			if !dialFails(ln.Addr().String()) {
				t.Errorf("run %d: %s still open", i, ln.Addr())
			}
		}
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestRunDev runs "sidegate dev" in process and follows its printed
// instructions.
func TestRunDev(t *testing.T) {
	var out syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- runDev(ctx, testLogger(t), &out) }()

	tokenRE := regexp.MustCompile(`(?m)^export TOKEN='([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)'$`)
	checkRE := regexp.MustCompile(`(?m)^  HTTP check +(http://127\.0\.0\.1:\d+/)$`)
	adminRE := regexp.MustCompile(`(?m)^  admin +(http://127\.0\.0\.1:\d+)/metrics`)
	waitFor(t, 30*time.Second, "sidegate dev to print a token", func() bool {
		select {
		case err := <-done:
			t.Fatalf("runDev returned early: %v\n%s", err, out.String())
		default:
		}
		return tokenRE.MatchString(out.String())
	})
	printed := out.String()
	token := tokenRE.FindStringSubmatch(printed)[1]
	m := checkRE.FindStringSubmatch(printed)
	if m == nil {
		t.Fatalf("no HTTP check URL in:\n%s", printed)
	}
	checkURL := m[1]
	for _, want := range []string{
		`curl -i -H "Authorization: Bearer $TOKEN" ` + checkURL,
		`curl -i --cookie "sidegate_session=$TOKEN" ` + checkURL,
		"curl -i " + checkURL + "\n",
	} {
		if !strings.Contains(printed, want) {
			t.Errorf("output lacks %q", want)
		}
	}

	code, h, body := httpGet(t, checkURL, map[string]string{"Authorization": "Bearer " + token})
	if code != http.StatusOK || h.Get("X-User-Id") != "dev-user" || h.Get("X-User-Email") != "dev-user@example.com" {
		t.Errorf("with the token: %d %v %s", code, h, body)
	}
	code, h, _ = httpGet(t, checkURL, map[string]string{"Cookie": "sidegate_session=" + token})
	if code != http.StatusOK || h.Get("X-User-Id") != "dev-user" {
		t.Errorf("with the cookie: %d %v", code, h)
	}
	code, h, body = httpGet(t, checkURL, nil)
	if code != http.StatusUnauthorized || h.Get("WWW-Authenticate") != `Bearer realm="sidegate"` {
		t.Errorf("without a token: %d %v %s", code, h, body)
	}
	if am := adminRE.FindStringSubmatch(printed); am == nil {
		t.Errorf("no admin URL in:\n%s", printed)
	} else if code, _, _ := httpGet(t, am[1]+"/readyz", nil); code != http.StatusOK {
		t.Errorf("dev /readyz = %d", code)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("runDev = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("runDev did not return after cancel")
	}
	if _, err := http.Get(checkURL); err == nil {
		t.Error("the dev HTTP check still answers after runDev returned")
	}
}

// TestDaemonShutdownDelay: during listen.shutdown_delay the daemon reports
// not ready (readyz 503, gRPC health NOT_SERVING) but still answers checks
// on new and existing connections; afterwards it stops.
func TestDaemonShutdownDelay(t *testing.T) {
	idp := newTestIdP(t)
	cfg := daemonConfig(t, idp)
	cfg.Listen.ShutdownDelay = Duration(3 * time.Second)
	rd := startDaemon(t, cfg)
	rd.waitReady(t)
	conn := dialGRPC(t, rd.grpcAddr())
	client := authv3.NewAuthorizationClient(conn)
	tok := idp.mint(t, "ES256", "alice", nil)
	rd.cancel()
	waitFor(t, 5*time.Second, "readyz to turn 503", func() bool {
		code, _, _ := httpGet(t, rd.adminURL()+"/readyz", nil)
		return code == http.StatusServiceUnavailable
	})
	if st := healthStatus(t, conn, ""); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("gRPC health during the delay = %v, want NOT_SERVING", st)
	}
	resp := grpcCheck(t, client, map[string]string{"authorization": "Bearer " + tok})
	if resp.GetOkResponse() == nil {
		t.Errorf("existing connection during the delay: not allowed: %v", resp)
	}
	fresh := authv3.NewAuthorizationClient(dialGRPC(t, rd.grpcAddr()))
	if resp := grpcCheck(t, fresh, map[string]string{"authorization": "Bearer " + tok}); resp.GetOkResponse() == nil {
		t.Errorf("new connection during the delay: not allowed: %v", resp)
	}
	if rd.returned() {
		t.Fatal("Run returned during the shutdown delay")
	}
	select {
	case <-rd.done:
		if rd.err != nil {
			t.Fatalf("Run: %v", rd.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after the delay")
	}
}
