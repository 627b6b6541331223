package main

import (
	"context"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/sidegate/sidegate/revocation"
	"github.com/sidegate/sidegate/revocation/natstest"
)

func revConfig(t *testing.T, idp *testIdP, natsURL string) *Config {
	cfg := daemonConfig(t, idp)
	cfg.Revocation.NATS.URL = natsURL
	cfg.Revocation.NATS.CreateStream = true
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func revPublish(t *testing.T, cfg *Config, ev revocation.Event) {
	t.Helper()
	opts, err := cfg.natsOptions("test")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := publishRevocation(ctx, opts, ev); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

// TestDaemonRevocation: a revocation published on NATS turns an allowed
// token into a 401 "revoked" over both transports, other tokens pass, and a
// restarted daemon replays it before it is ready, so its first answer for
// that token is already a denial.
func TestDaemonRevocation(t *testing.T) {
	idp := newTestIdP(t)
	natsURL := natstest.Start(t)
	cfg := revConfig(t, idp, natsURL)
	rd := startDaemon(t, cfg)
	rd.waitReady(t)
	client := authv3.NewAuthorizationClient(dialGRPC(t, rd.grpcAddr()))

	victim := idp.mint(t, "ES256", "mallory", func(c map[string]any) { c["jti"] = "stolen-1" })
	bystander := idp.mint(t, "ES256", "alice", nil)
	banned := idp.mint(t, "RS256", "eve", nil)
	bearer := func(tok string) map[string]string { return map[string]string{"authorization": "Bearer " + tok} }
	for _, tok := range []string{victim, bystander, banned} {
		if resp := grpcCheck(t, client, bearer(tok)); resp.GetOkResponse() == nil {
			t.Fatalf("before any revocation: denied %v", resp)
		}
	}

	revPublish(t, cfg, revocation.Event{Kind: revocation.KindJTI, Iss: idp.Issuer(), Value: "stolen-1"})
	revPublish(t, cfg, revocation.Event{Kind: revocation.KindSub, Iss: idp.Issuer(), Value: "eve", IssuedBefore: time.Now().Unix() + 5})
	for _, tok := range []string{victim, banned} {
		waitFor(t, 10*time.Second, "the revocation to be enforced", func() bool {
			return grpcCheck(t, client, bearer(tok)).GetDeniedResponse() != nil
		})
		checkDenial(t, grpcDenial(t, grpcCheck(t, client, bearer(tok))), 401, "revoked")
		code, h, body := httpGet(t, rd.httpURL(), map[string]string{"Authorization": "Bearer " + tok})
		checkDenial(t, httpDenial(t, code, h, body), 401, "revoked")
	}
	if resp := grpcCheck(t, client, bearer(bystander)); resp.GetOkResponse() == nil {
		t.Fatalf("a token nobody revoked is denied: %v", resp)
	}
	m := scrape(t, rd.adminURL())
	if v := metricValue(t, m, `sidegate_revocation_events_total{outcome="applied"}`); v != 2 {
		t.Errorf("applied events = %v, want 2", v)
	}
	if v := metricValue(t, m, `sidegate_revocation_connected`); v != 1 {
		t.Errorf("connected = %v, want 1", v)
	}

	// Every metric sidegate exports is in the README's metrics table.
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`(?m)^# TYPE (sidegate_\w+) `).FindAllStringSubmatch(m, -1)
	if len(names) < 11 {
		t.Fatalf("only %d sidegate metrics exported", len(names))
	}
	for _, name := range names {
		if !strings.Contains(string(readme), "| `"+name[1]+"` |") {
			t.Errorf("metric %s is not in README.md's metrics table", name[1])
		}
	}

	// A second daemon replays the stream before it says ready.
	rd2 := startDaemon(t, revConfig(t, idp, natsURL))
	rd2.waitReady(t)
	client2 := authv3.NewAuthorizationClient(dialGRPC(t, rd2.grpcAddr()))
	checkDenial(t, grpcDenial(t, grpcCheck(t, client2, bearer(victim))), 401, "revoked")
	if resp := grpcCheck(t, client2, bearer(bystander)); resp.GetOkResponse() == nil {
		t.Fatalf("after replay a good token is denied: %v", resp)
	}
}

// TestDaemonRevocationNotReadyWithoutNATS: with revocation configured and
// NATS unreachable, the daemon starts and answers, but is not ready and
// denies with 503 revocation_unavailable: it cannot know what is revoked.
func TestDaemonRevocationNotReadyWithoutNATS(t *testing.T) {
	idp := newTestIdP(t)
	cfg := revConfig(t, idp, "nats://127.0.0.1:1")
	rd := startDaemon(t, cfg)
	var code int
	var body string
	waitFor(t, 10*time.Second, "/readyz to name revocations (once the keys are in)", func() bool {
		code, _, body = httpGet(t, rd.adminURL()+"/readyz", nil)
		return strings.Contains(body, "revocations:")
	})
	if code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d %q, want 503", code, body)
	}
	// It answers, but cannot know what is revoked before a first replay:
	// fail closed with 503, never an allow.
	resp := grpcCheck(t, authv3.NewAuthorizationClient(dialGRPC(t, rd.grpcAddr())), map[string]string{"authorization": "Bearer " + idp.mint(t, "ES256", "a", nil)})
	checkDenial(t, grpcDenial(t, resp), 503, "revocation_unavailable")
}

// TestDaemonStageMetrics: with metrics.stages every stage of a check is
// timed, the denylist stage included when revocation is on.
func TestDaemonStageMetrics(t *testing.T) {
	idp := newTestIdP(t)
	cfg := revConfig(t, idp, natstest.Start(t))
	cfg.Metrics.Stages = true
	rd := startDaemon(t, cfg)
	rd.waitReady(t)
	client := authv3.NewAuthorizationClient(dialGRPC(t, rd.grpcAddr()))
	for range 3 {
		if resp := grpcCheck(t, client, map[string]string{"authorization": "Bearer " + idp.mint(t, "ES256", "a", nil)}); resp.GetOkResponse() == nil {
			t.Fatalf("denied: %v", resp)
		}
	}
	m := scrape(t, rd.adminURL())
	for _, stage := range []string{"extract", "verify", "denylist"} {
		if v := metricValue(t, m, `sidegate_check_stage_duration_seconds_count{stage="`+stage+`"}`); v != 3 {
			t.Errorf("stage %s count = %v, want 3", stage, v)
		}
	}
}
