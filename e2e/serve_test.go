package e2e

import (
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// tally counts the decisions a test caused, to compare with /metrics.
type tally struct {
	decisions map[[2]string]int // (decision, reason)
	durations map[[2]string]int // (transport, decision)
}

func newTally() *tally {
	return &tally{decisions: map[[2]string]int{}, durations: map[[2]string]int{}}
}

func (c *tally) add(transport, reason string) {
	decision := "deny"
	if reason == "ok" {
		decision = "allow"
	}
	c.decisions[[2]string{decision, reason}]++
	c.durations[[2]string{transport, decision}]++
}

// assert compares the counts with the process's own /metrics exactly: the
// process served no one but this test.
func (c *tally) assert(t *testing.T, m metrics) {
	t.Helper()
	total := 0
	for k, n := range c.decisions {
		total += n
		got, ok := m.get("sidegate_decisions_total", map[string]string{"decision": k[0], "reason": k[1]})
		if !ok || int(got) != n {
			t.Errorf("sidegate_decisions_total{decision=%q,reason=%q} = %v (present %v), want %d", k[0], k[1], got, ok, n)
		}
	}
	if got := m.sum("sidegate_decisions_total"); int(got) != total {
		t.Errorf("sum of sidegate_decisions_total = %v, want %d (the checks this test sent)", got, total)
	}
	for k, n := range c.durations {
		got, ok := m.get("sidegate_check_duration_seconds_count", map[string]string{"transport": k[0], "decision": k[1]})
		if !ok || int(got) != n {
			t.Errorf("sidegate_check_duration_seconds_count{transport=%q,decision=%q} = %v (present %v), want %d", k[0], k[1], got, ok, n)
		}
	}
}

// TestServe is the core contract of issue 2 against the built binary:
// valid RS256, ES256 and EdDSA tokens from a bearer header or the cookie
// are allowed over HTTP and gRPC with identity headers set and client
// copies overwritten or removed; every hostile token class is denied with
// 401 and its reason; /metrics counts exactly what was sent.
func TestServe(t *testing.T) {
	t.Parallel()
	began := time.Now()
	p := newIDP(t)
	sg := serve(t, p.config())
	hc := httpClient(t)
	sg.waitReady(hc)
	ac := authv3.NewAuthorizationClient(dialGRPC(t, sg.GRPC))
	httpURL := "http://" + sg.HTTP + "/orders/42?page=1"
	n := newTally()

	t.Run("allow", func(t *testing.T) {
		for _, alg := range algs {
			sub := "user-" + strings.ToLower(alg)
			tok := p.token(t, alg, p.claims(sub))
			for _, via := range []struct {
				name    string
				headers map[string]string
			}{
				{"bearer", map[string]string{"Authorization": "Bearer " + tok}},
				{"cookie", map[string]string{"Cookie": "theme=dark; " + cookieName + "=" + tok + "; lang=en"}},
			} {
				t.Run(alg+"/"+via.name, func(t *testing.T) {
					spoofed := maps.Clone(via.headers)
					spoofed["X-User-Id"] = "mallory"
					for _, h := range []map[string]string{via.headers, spoofed} {
						code, hdr, body, err := get(hc, httpURL, h)
						n.add("http", "ok")
						if err != nil {
							t.Fatal(err)
						}
						if code != http.StatusOK || hdr.Get("X-User-Id") != sub {
							t.Errorf("HTTP: %d, X-User-Id %q, want 200 and %q (body %s)", code, hdr.Get("X-User-Id"), sub, body)
						}
						if hdr.Get("X-Jwt-Payload") == "" {
							t.Error("HTTP: no X-Jwt-Payload")
						}
						if v := hdr.Get("X-Envoy-Auth-Headers-To-Remove"); v != "" {
							t.Errorf("HTTP: X-Envoy-Auth-Headers-To-Remove %q, but every identity header is set", v)
						}

						resp, err := check(t, ac, h)
						n.add("grpc", "ok")
						if err != nil {
							t.Fatalf("gRPC: %v", err)
						}
						got := okHeaders(t, resp)
						if got["x-user-id"] != sub {
							t.Errorf("gRPC: x-user-id %q, want %q (client sent %q)", got["x-user-id"], sub, h["X-User-Id"])
						}
						if got["x-jwt-payload"] == "" {
							t.Error("gRPC: no x-jwt-payload")
						}
						if rm := resp.GetOkResponse().GetHeadersToRemove(); slices.Contains(rm, "x-user-id") {
							t.Errorf("gRPC: headers_to_remove %v removes the header it sets", rm)
						}
					}
				})
			}
		}
	})

	t.Run("client identity header removed when the token has no sub", func(t *testing.T) {
		c := p.claims("")
		delete(c, "sub")
		h := map[string]string{"Authorization": "Bearer " + p.token(t, "ES256", c), "X-User-Id": "mallory"}
		resp, err := check(t, ac, h)
		n.add("grpc", "ok")
		if err != nil {
			t.Fatal(err)
		}
		got := okHeaders(t, resp)
		if v, ok := got["x-user-id"]; ok {
			t.Errorf("gRPC sets x-user-id %q for a token without sub", v)
		}
		if rm := resp.GetOkResponse().GetHeadersToRemove(); !slices.Contains(rm, "x-user-id") {
			t.Errorf("gRPC headers_to_remove %v, want it to contain x-user-id", rm)
		}

		code, hdr, _, err := get(hc, httpURL, h)
		n.add("http", "ok")
		if err != nil {
			t.Fatal(err)
		}
		if code != http.StatusOK || hdr.Get("X-User-Id") != "" || !strings.Contains(hdr.Get("X-Envoy-Auth-Headers-To-Remove"), "x-user-id") {
			t.Errorf("HTTP: %d, X-User-Id %q, X-Envoy-Auth-Headers-To-Remove %q; want 200, none, x-user-id",
				code, hdr.Get("X-User-Id"), hdr.Get("X-Envoy-Auth-Headers-To-Remove"))
		}
	})

	t.Run("bearer and cookie", func(t *testing.T) {
		alice := p.token(t, "ES256", p.claims("alice"))
		same := map[string]string{"Authorization": "Bearer " + alice, "Cookie": cookieName + "=" + p.token(t, "EdDSA", p.claims("alice"))}
		resp, err := check(t, ac, same)
		n.add("grpc", "ok")
		if err != nil {
			t.Fatal(err)
		}
		if got := okHeaders(t, resp)["x-user-id"]; got != "alice" {
			t.Errorf("same user in both: x-user-id %q, want alice", got)
		}
		mixed := map[string]string{"Authorization": "Bearer " + alice, "Cookie": cookieName + "=" + p.token(t, "RS256", p.claims("bob"))}
		want := invalid("token_mismatch")
		resp, err = check(t, ac, mixed)
		n.add("grpc", want.reason)
		want.assertGRPC(t, resp, err)
		code, hdr, body, err := get(hc, httpURL, mixed)
		n.add("http", want.reason)
		if err != nil {
			t.Fatal(err)
		}
		want.assertHTTP(t, code, hdr, body)
	})

	t.Run("deny", func(t *testing.T) {
		cases := append([]hostile{{
			name:  "no token",
			token: func(*testing.T, *idp) string { return "" },
			want:  denial{status: 401, reason: "no_token"},
		}}, hostileTokens...)
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				h := map[string]string{"X-User-Id": "mallory"}
				switch tok := tc.token(t, p); {
				case tok == "":
				case tc.cookie:
					h["Cookie"] = cookieName + "=" + tok
				default:
					h["Authorization"] = "Bearer " + tok
				}
				code, hdr, body, err := get(hc, httpURL, h)
				n.add("http", tc.want.reason)
				if err != nil {
					t.Fatal(err)
				}
				tc.want.assertHTTP(t, code, hdr, body)

				resp, err := check(t, ac, h)
				n.add("grpc", tc.want.reason)
				tc.want.assertGRPC(t, resp, err)
			})
		}
	})

	t.Run("metrics", func(t *testing.T) {
		n.assert(t, scrape(t, hc, sg.Admin))
	})
	var checks int
	for _, c := range n.decisions {
		checks += c
	}
	report(t, "%d checks over HTTP and gRPC in %s", checks, time.Since(began).Round(100*time.Millisecond))
}
