package main

import (
	"testing"
	"time"
)

// TestConfigJWKSAndRevocationKeys: the key-management and revocation keys
// parse, default, reach the packages' options, and are validated together.
func TestConfigJWKSAndRevocationKeys(t *testing.T) {
	dir := t.TempDir()
	cfg := mustParse(t, `
issuers:
  - issuer: https://login.example.com/
    jwks_uri: https://login.example.com/jwks
    audiences: [a]
    optional: true
  - issuer: http://idp.internal/
    jwks_uri: http://idp.internal/jwks
    audiences: [a]
    insecure_http: true
jwks:
  refresh_interval: 10m
  min_refresh_interval: 30s
  kid_wait: 250ms
  max_stale: 6h
  snapshot_dir: `+dir+`
  max_keys: 20
revocation:
  on_disconnect: {deny_after: 2m}
  nats: {url: "nats://127.0.0.1:4222", create_stream: true}
`)
	jo := cfg.jwksOptions()
	if jo.RefreshInterval != 10*time.Minute || jo.MinRefreshInterval != 30*time.Second || jo.KidWait != 250*time.Millisecond ||
		jo.MaxStale != 6*time.Hour || jo.SnapshotDir != dir || jo.MaxKeys != 20 || jo.MaxBodyBytes != 1<<20 || jo.ConnectTimeout != 5*time.Second {
		t.Errorf("jwks options = %+v", jo)
	}
	is := cfg.jwksIssuers()
	if !is[0].Optional || is[0].InsecureHTTP || !is[1].InsecureHTTP {
		t.Errorf("issuers = %+v", is)
	}
	r := cfg.Revocation
	if r.OnDisconnect.DenyAfter.D() != 2*time.Minute || r.Capacity != 1_000_000 || r.FalsePositiveRate != 0.001 ||
		r.NATS.Subject != "sidegate.revocations" || r.NATS.Stream != "SIDEGATE_REVOCATIONS" || r.NATS.MaxAge.D() < 24*time.Hour {
		t.Errorf("revocation = %+v", r)
	}
	if got := mustParse(t, minimalConfig+"revocation: {on_disconnect: serve, nats: {url: \"nats://n:4222\"}}\n"); got.Revocation.OnDisconnect.DenyAfter != 0 {
		t.Errorf("on_disconnect: serve gave %+v", got.Revocation.OnDisconnect)
	}

	broken := func(onDisconnect string) string {
		return `
issuers:
  - issuer: https://login.example.com/
    jwks_uri: http://login.example.com/jwks
    audiences: [a]
jwks:
  refresh_interval: 1m
  min_refresh_interval: 2m
  max_stale: 30s
  snapshot_dir: /nonexistent/sidegate
  max_keys: 20000
revocation:
  capacity: -1
  false_positive_rate: 0.7
` + onDisconnect + `
  nats:
    url: http://nats:4222
    subject: "a.*"
    stream: "bad.name"
    create_stream: true
    max_age: 1h
    token: t
    token_file: /nonexistent/token
`
	}
	// A value of the wrong shape is reported alone (the rest is not
	// validated half-decoded); the other problems all together.
	p := configProblems(t, broken("  on_disconnect: sometimes"))
	assertProblems(t, p, []string{"line 15: on_disconnect is \"serve\" or {deny_after: DURATION}"})
	p = configProblems(t, broken(""))
	assertProblems(t, p, []string{
		"issuers[0].jwks_uri: \"http://login.example.com/jwks\": https is required",
		"jwks.min_refresh_interval:",
		"jwks.max_stale:",
		"jwks.snapshot_dir:",
		"jwks.max_keys:",
		"revocation.nats.url:",
		"revocation.nats.subject:",
		"revocation.nats.stream:",
		"revocation.nats.max_age:",
		"revocation.nats.token:",
		"revocation.nats.token_file:",
		"revocation.capacity:",
		"revocation.false_positive_rate:",
	})
}
