package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/sidegate/sidegate/revocation/natstest"
)

// TestRevoke is the token lifecycle against the built binaries: a token is
// allowed; "sidegate revoke --token" publishes its revocation; the serving
// process denies it with 401 "revoked" over HTTP and gRPC; a token of
// another user still passes; and a second sidegate started afterwards
// denies it on its first answer after ready (the stream is replayed).
func TestRevoke(t *testing.T) {
	p := newIDP(t)
	natsURL := natstest.Start(t)
	sc := p.config()
	sc.NATSURL = natsURL
	c := httpClient(t)
	sg := serve(t, sc)
	sg.waitReady(c)
	grpcClient := authv3.NewAuthorizationClient(dialGRPC(t, sg.GRPC))

	victim := p.token(t, "ES256", p.claims("mallory"))
	other := p.token(t, "ES256", p.claims("alice"))
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	if code, _, body, err := get(c, "http://"+sg.HTTP+"/", bearer(victim)); err != nil || code != http.StatusOK {
		t.Fatalf("before revocation: %d %s %v", code, body, err)
	}

	out, errOut, code := run(t, nil, "revoke", "--nats", natsURL, "--token", victim)
	revoked := time.Now()
	if code != 0 || !strings.Contains(out, "sequence 1") {
		t.Fatalf("sidegate revoke: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	eventually(t, 10*time.Second, "the revocation to be enforced", func() (bool, string) {
		code, _, body, err := get(c, "http://"+sg.HTTP+"/", bearer(victim))
		if err != nil {
			return false, err.Error()
		}
		return code == http.StatusUnauthorized, body
	})
	report(t, "revoke CLI exit to denied over HTTP: %s (polling)", time.Since(revoked).Round(time.Millisecond))
	code, hdr, body, err := get(c, "http://"+sg.HTTP+"/", bearer(victim))
	if err != nil {
		t.Fatal(err)
	}
	invalid("revoked").assertHTTP(t, code, hdr, body)
	resp, err := check(t, grpcClient, map[string]string{"authorization": "Bearer " + victim})
	invalid("revoked").assertGRPC(t, resp, err)
	if code, _, body, err := get(c, "http://"+sg.HTTP+"/", bearer(other)); err != nil || code != http.StatusOK {
		t.Fatalf("a token nobody revoked: %d %s %v", code, body, err)
	}

	sg2 := serve(t, sc)
	sg2.waitReady(c)
	code, hdr, body, err = get(c, "http://"+sg2.HTTP+"/", bearer(victim))
	if err != nil {
		t.Fatal(err)
	}
	invalid("revoked").assertHTTP(t, code, hdr, body)
	report(t, "a second sidegate replayed the stream and denied the token on its first answer")
}
