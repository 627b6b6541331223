package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
)

// reloadVersion is a configuration file for idp whose route /x/ is
// auth: mode; mode "bogus" makes the file invalid. n makes each file's
// content distinct.
func reloadVersion(idp *testIdP, n int, mode string) string {
	return fmt.Sprintf(`# version %d
listen: {grpc: 127.0.0.1:0, http: 127.0.0.1:0, admin: 127.0.0.1:0}
issuers:
  - issuer: %q
    jwks_uri: %q
    audiences: [%s]
tokens: {cookies: [%s]}
forward: {claims: {x-user-id: sub}}
routes:
  - name: x
    match: {path_prefix: /x/}
    auth: %s
reload: {interval: 10ms}
`, n, idp.Issuer(), idp.JWKSURI(), testAudience, testCookie, mode)
}

// writeAtomically replaces path's content the way a ConfigMap update
// does: a new file renamed over the old one.
func writeAtomically(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func checkPath(ctx context.Context, c authv3.AuthorizationClient, path string, headers map[string]string) (*authv3.CheckResponse, error) {
	req := checkRequest(headers)
	req.Attributes.Request.Http.Path = path
	return c.Check(ctx, req)
}

// TestReloadUnderLoad: checks run without pause while the configuration
// file is rewritten 50 times, valid and invalid versions alternating.
// No check fails or is decided against the configuration in force, and
// the generation advances for valid files only.
func TestReloadUnderLoad(t *testing.T) {
	idp := newTestIdP(t)
	path := filepath.Join(t.TempDir(), "sidegate.yaml")
	writeAtomically(t, path, reloadVersion(idp, 0, "none"))
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	rd := startDaemon(t, cfg)
	rd.waitReady(t)
	client := authv3.NewAuthorizationClient(dialGRPC(t, rd.grpcAddr()))
	tok := idp.mint(t, "ES256", "user-1", nil)

	// Paths outside /x/ mean the same in every version: a good token is
	// allowed, no token is denied.
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var checks, wrong atomic.Int64
	var firstWrong atomic.Value
	for w := range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				withToken := w%2 == 0
				h := map[string]string{}
				if withToken {
					h["authorization"] = "Bearer " + tok
				}
				cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				resp, err := checkPath(cctx, client, "/orders/42", h)
				cancel()
				checks.Add(1)
				got := codes.Code(resp.GetStatus().GetCode())
				if err != nil || (withToken && got != codes.OK) || (!withToken && got != codes.Unauthenticated) {
					wrong.Add(1)
					firstWrong.CompareAndSwap(nil, fmt.Sprintf("token %v: status %v, err %v", withToken, got, err))
				}
			}
		})
	}

	metric := func(series string) float64 { return metricValue(t, scrape(t, rd.adminURL()), series) }
	xAllowsAnonymous := func() bool {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := checkPath(cctx, client, "/x/page", nil)
		if err != nil {
			t.Fatalf("check /x/page: %v", err)
		}
		return codes.Code(resp.GetStatus().GetCode()) == codes.OK
	}
	if !xAllowsAnonymous() {
		t.Fatal("version 0: /x/ is auth: none, but an anonymous check was denied")
	}

	gen, errs := 1.0, 0.0
	anonymous := true
	for i := 1; i <= 50; i++ {
		valid := i%2 == 0
		mode := "bogus"
		if valid {
			anonymous = !anonymous
			mode = map[bool]string{true: "none", false: "required"}[anonymous]
			gen++
		} else {
			errs++
		}
		writeAtomically(t, path, reloadVersion(idp, i, mode))
		waitFor(t, 10*time.Second, fmt.Sprintf("version %d (%s) to be reloaded", i, mode), func() bool {
			return metric(`sidegate_config_generation`) == gen && metric(`sidegate_config_reload_total{outcome="error"}`) == errs
		})
		if got := xAllowsAnonymous(); got != anonymous {
			t.Fatalf("after version %d (%s, generation %v): /x/ allows anonymous = %v, want %v", i, mode, gen, got, anonymous)
		}
	}
	stop()
	wg.Wait()
	if n := wrong.Load(); n > 0 {
		t.Errorf("%d of %d checks failed or were decided wrongly during reloads; first: %v", n, checks.Load(), firstWrong.Load())
	}
	m := scrape(t, rd.adminURL())
	if got := metricValue(t, m, `sidegate_config_reload_total{outcome="success"}`); got != 25 {
		t.Errorf("reload successes %v, want 25", got)
	}
	if got := metricValue(t, m, `sidegate_config_generation`); got != 26 {
		t.Errorf("generation %v, want 26", got)
	}
	if ts := metricValue(t, m, `sidegate_config_last_reload_success_timestamp_seconds`); time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("last reload success at %v", ts)
	}
	t.Logf("%d checks during 50 rewrites, none wrong", checks.Load())
}
