package e2e

import (
	"context"
	"net/http"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestStartDuringJWKSOutage: with the identity provider answering 500,
// sidegate starts and is live but not ready, and denies with 503
// keys_unavailable (fail closed, and not a 401 that would log users out);
// once the provider recovers, the retry picks the keys up, readiness turns
// on and the same token is allowed.
func TestStartDuringJWKSOutage(t *testing.T) {
	t.Parallel()
	p := newIDP(t)
	p.srv.SetStatus(http.StatusInternalServerError)
	sg := serve(t, p.config()) // refresh_interval 2s; retries back off from 1s
	hc := httpClient(t)
	conn := dialGRPC(t, sg.GRPC)
	ac := authv3.NewAuthorizationClient(conn)
	hh := healthpb.NewHealthClient(conn)
	tok := map[string]string{"Authorization": "Bearer " + p.token(t, "RS256", p.claims("carol"))}
	n := newTally()

	// Let it fail more than once, so the retries are seen failing too.
	eventually(t, readyDeadline, "two JWKS fetches", func() (bool, string) {
		return p.srv.Fetches() >= 2, ""
	})
	if code, _, body, err := get(hc, "http://"+sg.Admin+"/healthz", nil); err != nil || code != http.StatusOK {
		t.Errorf("/healthz during the outage: %d %q %v, want 200", code, body, err)
	}
	code, _, body, err := get(hc, "http://"+sg.Admin+"/readyz", nil)
	if err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("/readyz during the outage: %d %q %v, want 503", code, body, err)
	}
	if hs := healthStatus(t, hh); hs != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("gRPC health during the outage: %v, want NOT_SERVING", hs)
	}
	// No RFC 6750 error attribute: the token may well be good, and
	// invalid_token would tell the client to drop it and log in again.
	want := denial{status: 503, reason: "keys_unavailable"}
	code, hdr, body, err := get(hc, "http://"+sg.HTTP+"/", tok)
	n.add("http", want.reason)
	if err != nil {
		t.Fatal(err)
	}
	want.assertHTTP(t, code, hdr, body)
	resp, err := check(t, ac, tok)
	n.add("grpc", want.reason)
	want.assertGRPC(t, resp, err)

	p.srv.SetStatus(http.StatusOK)
	recovered := time.Now()
	sg.waitReady(hc)
	report(t, "ready %s after the JWKS server recovered (%d fetches)", time.Since(recovered).Round(100*time.Millisecond), p.srv.Fetches())
	eventually(t, readyDeadline, "gRPC health SERVING", func() (bool, string) {
		hs := healthStatus(t, hh)
		return hs == healthpb.HealthCheckResponse_SERVING, hs.String()
	})

	code, hdr, body, err = get(hc, "http://"+sg.HTTP+"/", tok)
	n.add("http", "ok")
	if err != nil || code != http.StatusOK || hdr.Get("X-User-Id") != "carol" {
		t.Errorf("after recovery: %d, X-User-Id %q, %v (body %s); want 200 and carol", code, hdr.Get("X-User-Id"), err, body)
	}
	resp, err = check(t, ac, tok)
	n.add("grpc", "ok")
	if err != nil {
		t.Fatal(err)
	}
	if got := okHeaders(t, resp)["x-user-id"]; got != "carol" {
		t.Errorf("after recovery over gRPC: x-user-id %q, want carol", got)
	}

	m := scrape(t, hc, sg.Admin)
	n.assert(t, m)
	iss := p.srv.Issuer()
	if v, _ := m.get("sidegate_jwks_refresh_total", map[string]string{"issuer": iss, "outcome": "error"}); v < 2 {
		t.Errorf("sidegate_jwks_refresh_total{outcome=error} = %v, want >= 2", v)
	}
	if v, _ := m.get("sidegate_jwks_refresh_total", map[string]string{"issuer": iss, "outcome": "success"}); v < 1 {
		t.Errorf("sidegate_jwks_refresh_total{outcome=success} = %v, want >= 1", v)
	}
}

func healthStatus(t *testing.T, hh healthpb.HealthClient) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := hh.Check(ctx, &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
	if err != nil {
		t.Fatalf("gRPC health: %v", err)
	}
	return resp.GetStatus()
}
