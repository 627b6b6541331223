package e2e

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/sidegate/sidegate/jwks/jwkstest"
)

// TestKeyRotation: the identity provider rotates its ES256 key while
// clients send checks. It publishes a new key and signs with it at once,
// then stops publishing the old one. Every token signed with a key the
// provider published at the time is allowed, the new key's first tokens
// included: they arrive seconds before sidegate's next scheduled refresh
// and are verified through the refetch an unknown kid triggers. Once the
// old key is gone and sidegate has refreshed, its tokens are denied
// unknown_key.
func TestKeyRotation(t *testing.T) {
	t.Parallel()
	p := newIDP(t)
	sc := p.config()
	sc.RefreshInterval = "4s" // ±10%: at least 3.6 s between scheduled refreshes
	sc.KidWait = "5s"         // a loaded machine may be slow to fetch; the test is about the outcome
	sg := serve(t, sc)
	hc := httpClient(t)
	sg.waitReady(hc)
	c := newChecker(t, sg)
	iss := p.srv.Issuer()

	old, fresh := p.keys["ES256"], jwkstest.NewKey(t, "ES256", "es256-2")
	var signer atomic.Pointer[jwkstest.Key]
	signer.Store(old)
	// RS256 and EdDSA tokens are signed once (and so cached by sidegate);
	// ES256 tokens afresh for every check, with the key the provider signs
	// with at that moment.
	steady := map[string][]probe{}
	for _, alg := range []string{"RS256", "EdDSA"} {
		for i := range 20 {
			sub := fmt.Sprintf("%s-user-%d", alg, i)
			steady[alg] = append(steady[alg], allow(p.keys[alg].Kid, sub, bearer(p.token(t, alg, p.claims(sub)))))
		}
	}
	var n atomic.Int64
	tr := startTraffic(t, c, 4, func() probe {
		i := n.Add(1)
		if alg := algs[i%3]; alg != "ES256" {
			return steady[alg][i%20]
		}
		k, sub := signer.Load(), fmt.Sprintf("es-user-%d", i%50)
		return allow(k.Kid, sub, bearer(k.Sign(t, p.claims(sub), nil)))
	})
	tr.pass(t, 100)

	// Just after a scheduled refresh: the next one is seconds away.
	sg.waitFetched(hc, iss, 1)
	p.srv.SetKeys(p.keys["RS256"], old, fresh, p.keys["EdDSA"])
	signer.Store(fresh)
	tr.pass(t, 100)
	tr.settle(t) // no token of the old key is still out
	p.srv.SetKeys(p.keys["RS256"], fresh, p.keys["EdDSA"])
	sg.waitFetched(hc, iss, 2)
	tr.pass(t, 100)
	tr.halt(t)

	c.both(t, hc, deny(old.Kid+" (removed)", invalid("unknown_key"), bearer(old.Sign(t, p.claims("late"), nil))))
	c.both(t, hc, allow(fresh.Kid, "late", bearer(fresh.Sign(t, p.claims("late"), nil))))
	m := scrape(t, hc, sg.Admin)
	c.assertAllRight(t, m)
	found, _ := m.get("sidegate_jwks_unknown_kid_total", map[string]string{"issuer": iss, "outcome": "found"})
	if found < 1 {
		t.Errorf(`sidegate_jwks_unknown_kid_total{outcome="found"} = %v: the new key's first tokens were not verified through an unknown-kid refetch`, found)
	}
	report(t, "%d checks across the rotation, by kid: %s; %d wrong; the new key's first tokens verified through the unknown-kid refetch (unknown_kid_total{found} %v)", c.total(), c.byClass(), c.wrongCount(), found)
}
