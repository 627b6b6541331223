package e2e

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
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

// TestJWKSOutageMidTraffic: while checks flow, the identity provider
// answers 500, then hangs (each fetch held until sidegate's jwks.timeout
// gives up), then recovers. sidegate keeps serving the keys it has
// (stale-while-error): every check is answered right, /readyz stays 200,
// and sidegate_jwks_refresh_total and the log count the failed refreshes.
func TestJWKSOutageMidTraffic(t *testing.T) {
	t.Parallel()
	p := newIDP(t)
	sc := p.config()
	sc.JWKSTimeout = "2s" // refresh_interval 2s: retries back off from 1s to 2s
	sg := serve(t, sc)
	hc := httpClient(t)
	sg.waitReady(hc)
	c := newChecker(t, sg)
	iss := p.srv.Issuer()

	// Every check carries a token signed for it, so each one is verified
	// against the keys sidegate holds.
	var n atomic.Int64
	tr := startTraffic(t, c, 4, func() probe {
		i := n.Add(1)
		alg, sub := []string{"ES256", "EdDSA"}[i%2], fmt.Sprintf("user-%d", i%50)
		return allow(alg, sub, bearer(p.token(t, alg, p.claims(sub))))
	})
	// /readyz is probed every 50 ms throughout.
	var stopReady atomic.Bool
	var readyChecks, notReady atomic.Int64
	readyDone := make(chan struct{})
	go func() {
		defer close(readyDone)
		for !stopReady.Load() {
			code, _, _, err := get(hc, "http://"+sg.Admin+"/readyz", nil)
			readyChecks.Add(1)
			if err != nil || code != http.StatusOK {
				notReady.Add(1)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	stopProbing := func() { stopReady.Store(true); <-readyDone }
	t.Cleanup(stopProbing)
	tr.pass(t, 100)

	errs := map[string]string{"issuer": iss, "outcome": "error"}
	began := time.Now()
	var phases []string
	for _, phase := range []struct {
		name  string
		begin func()
	}{
		{"HTTP 500", func() { p.srv.SetStatus(http.StatusInternalServerError) }},
		{"hanging", func() { p.srv.Hold(); p.srv.SetStatus(http.StatusOK) }},
	} {
		from, answered, at := sg.metric(hc, "sidegate_jwks_refresh_total", errs), c.total(), time.Now()
		phase.begin()
		sg.waitMetric(hc, "sidegate_jwks_refresh_total", errs, phase.name+": two failed refreshes", func(v float64) bool { return v >= from+2 })
		tr.pass(t, 100)
		phases = append(phases, fmt.Sprintf("%s %s (%d checks)", phase.name, time.Since(at).Round(100*time.Millisecond), c.total()-answered))
	}
	p.srv.Release()
	outage := time.Since(began)
	sg.waitFetched(hc, iss, 2)
	tr.pass(t, 100)
	tr.halt(t)
	stopProbing()

	m := scrape(t, hc, sg.Admin)
	c.assertAllRight(t, m)
	if notReady.Load() > 0 {
		t.Errorf("/readyz was not 200 %d times of %d during the outage: the keys held should have kept it ready", notReady.Load(), readyChecks.Load())
	}
	failed, _ := m.get("sidegate_jwks_refresh_total", errs)
	for _, cause := range []string{"HTTP 500", "Timeout exceeded|deadline exceeded"} {
		if logLines(sg, "jwks refresh failed", cause) == 0 {
			t.Errorf("no \"jwks refresh failed\" log line for %s", cause)
		}
	}
	report(t, "outage %s: %s; %v failed refreshes counted; %d checks in all, %d wrong; /readyz 200 throughout (%d probes)",
		outage.Round(100*time.Millisecond), strings.Join(phases, ", then "), failed, c.total(), c.wrongCount(), readyChecks.Load())
}

// logLines counts the lines of sidegate's log that contain what, and one
// of the |-separated alternatives of which.
func logLines(p *proc, what, which string) int {
	n := 0
	for line := range strings.SplitSeq(p.errb.String(), "\n") {
		if strings.Contains(line, what) && slices.ContainsFunc(strings.Split(which, "|"), func(s string) bool { return strings.Contains(line, s) }) {
			n++
		}
	}
	return n
}
