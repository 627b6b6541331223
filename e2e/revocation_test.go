package e2e

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The revocation scenarios run Debian's nats-server with JetStream as a
// separate process, and publish with the "sidegate revoke" binary.

// revocationSetup is an identity provider, a nats-server and the serve
// configuration that trusts the one and follows the other.
func revocationSetup(t *testing.T) (*idp, *natsServer, serveConfig) {
	t.Helper()
	ns := startNATS(t) // skips the test when nats-server is missing
	p := newIDP(t)
	sc := p.config()
	sc.NATSURL = ns.URL
	return p, ns, sc
}

// pollRevoked checks tok over HTTP about every millisecond until sidegate
// answers 401 revoked, and returns when that answer arrived. Until then
// every answer must allow sub.
func (c *checker) pollRevoked(hc *http.Client, tok, sub string) (time.Time, error) {
	deadline := time.Now().Add(readyDeadline)
	for time.Now().Before(deadline) {
		code, hdr, body, err := get(hc, c.url, bearer(tok))
		at := time.Now()
		switch {
		case err != nil:
			return at, err
		case code == http.StatusOK:
			err = allowedHTTPErr(code, hdr, body, sub)
			c.record("http", "polled until revoked", "ok", err)
			if err != nil {
				return at, err
			}
			time.Sleep(time.Millisecond)
		default:
			err = invalid("revoked").httpErr(code, hdr, body)
			c.record("http", "polled until revoked", "revoked", err)
			return at, err
		}
	}
	return time.Time{}, fmt.Errorf("still allowed %s later", readyDeadline)
}

// assertRevocationEvents checks that sidegate applied exactly n events,
// each once, up to stream sequence n.
func assertRevocationEvents(t *testing.T, m metrics, n int) {
	t.Helper()
	for outcome, want := range map[string]int{"applied": n, "unchanged": 0, "invalid": 0} {
		if got, _ := m.get("sidegate_revocation_events_total", map[string]string{"outcome": outcome}); int(got) != want {
			t.Errorf("sidegate_revocation_events_total{outcome=%q} = %v, want %d", outcome, got, want)
		}
	}
	if got, _ := m.get("sidegate_revocation_last_sequence", nil); int(got) != n {
		t.Errorf("sidegate_revocation_last_sequence = %v, want %d", got, n)
	}
}

// quantile is the q-quantile of ds (nearest rank).
func quantile(ds []time.Duration, q float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[max(int(math.Ceil(q*float64(len(s))))-1, 0)]
}

// TestRevoke is the token lifecycle across two sidegate processes that
// follow one nats-server: a token both allow over HTTP and gRPC is revoked
// with "sidegate revoke --token", after which both deny it with 401
// revoked over HTTP and gRPC while another user's token still passes. Over
// several revocations it measures the time from JetStream's
// acknowledgement of the event to the moment both processes deny the
// token (reported, not asserted).
func TestRevoke(t *testing.T) {
	t.Parallel()
	const revocations = 20
	p, ns, sc := revocationSetup(t)
	js := ns.jetStream()
	hc := httpClient(t)
	var sgs []*proc
	var cs []*checker
	for range 2 {
		sg := serve(t, sc)
		sg.waitReady(hc)
		sgs, cs = append(sgs, sg), append(cs, newChecker(t, sg))
	}
	pollers := []*http.Client{httpClient(t), httpClient(t)}
	alice := allow("another user", "alice", bearer(p.token(t, "RS256", p.claims("alice"))))

	var fromAck, fromRun []time.Duration
	for i := range revocations {
		sub := fmt.Sprintf("victim-%d", i)
		victim := p.token(t, algs[i%len(algs)], p.claims(sub))
		for _, c := range cs {
			c.both(t, hc, allow("before revocation", sub, bearer(victim)))
		}
		denied := make([]time.Time, len(cs))
		errs := make([]error, len(cs))
		var wg sync.WaitGroup
		for j, c := range cs {
			wg.Go(func() { denied[j], errs[j] = c.pollRevoked(pollers[j], victim, sub) })
		}
		ran := time.Now()
		seq := revoke(t, ns.URL, "--token", victim)
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("revocation %d: %v", i+1, err)
		}
		if seq != uint64(i+1) {
			t.Errorf("revocation %d stored as sequence %d", i+1, seq)
		}
		both := slices.MaxFunc(denied, time.Time.Compare)
		fromAck = append(fromAck, both.Sub(storedAt(t, js, seq)))
		fromRun = append(fromRun, both.Sub(ran))
		for _, c := range cs {
			c.both(t, hc, deny("revoked", invalid("revoked"), bearer(victim)))
			c.both(t, hc, alice)
		}
	}

	for i, sg := range sgs {
		m := scrape(t, hc, sg.Admin)
		cs[i].assertAllRight(t, m)
		assertRevocationEvents(t, m, revocations)
	}
	report(t, "%d revocations, 2 sidegates: JetStream ack to denied on both p50 %s, max %s; `sidegate revoke` started to denied on both p50 %s, max %s (HTTP polled every 1 ms)",
		revocations, quantile(fromAck, 0.5).Round(100*time.Microsecond), quantile(fromAck, 1).Round(100*time.Microsecond),
		quantile(fromRun, 0.5).Round(time.Millisecond), quantile(fromRun, 1).Round(time.Millisecond))
}

// TestRevocationReplay: sidegate is stopped, a token is revoked while it
// is down (after thousands of other revocations), and sidegate started
// again with the same configuration replays the stream before it turns
// ready: no check of the token is allowed while it starts, and the first
// answer after /readyz turns 200 denies it.
func TestRevocationReplay(t *testing.T) {
	t.Parallel()
	const others = 5000
	p, ns, sc := revocationSetup(t)
	hc := httpClient(t)
	sg := serve(t, sc)
	sg.waitReady(hc)
	victim := p.token(t, "ES256", p.claims("mallory"))
	newChecker(t, sg).both(t, hc, allow("before revocation", "mallory", bearer(victim)))
	sg.sigterm()
	if code := sg.wait(exitDeadline); code != 0 {
		t.Fatalf("exit %d after SIGTERM", code)
	}

	publishJTIs(t, ns.jetStream(), p.srv.Issuer(), others)
	if seq := revoke(t, ns.URL, "--token", victim); seq != others+1 {
		t.Fatalf("the revocation is sequence %d, want %d", seq, others+1)
	}

	sg = sg.restart()
	began := time.Now()
	c := newChecker(t, sg)
	var ready atomic.Bool
	starting := map[string]int{}
	var wg sync.WaitGroup
	hammer := httpClient(t)
	wg.Go(func() { hammerWhileStarting(c, hammer, bearer(victim), &ready, starting) })
	t.Cleanup(func() { ready.Store(true); wg.Wait() })
	ok := false
	for deadline := time.Now().Add(readyDeadline); !ok && time.Now().Before(deadline) && !sg.exited(); {
		code, _, _, err := get(hc, "http://"+sg.Admin+"/readyz", nil)
		if ok = err == nil && code == http.StatusOK; !ok {
			time.Sleep(time.Millisecond)
		}
	}
	readyAfter := time.Since(began)
	ready.Store(true)
	if !ok {
		t.Fatalf("not ready within %s after the restart", readyDeadline)
	}
	// The first answers after ready, over both transports.
	c.both(t, hc, deny("revoked", invalid("revoked"), bearer(victim)))
	wg.Wait()

	m := scrape(t, hc, sg.Admin)
	c.assertAllRight(t, m)
	assertRevocationEvents(t, m, others+1)
	report(t, "restart with %d revocations in the stream: ready %s after start; the revoked token checked while starting: %s; first answer after ready: 401 revoked",
		others+1, readyAfter.Round(time.Millisecond), countsString(starting))
}

// The answers a starting sidegate may give a revoked token: no listener
// yet, 503 while its keys or the revocation replay are not there yet, or
// once they are (the test sees /readyz turn 200 a little later), 401.
var startingDenials = []denial{{status: 503, reason: "keys_unavailable"}, {status: 503, reason: "revocation_unavailable"}, invalid("revoked")}

// hammerWhileStarting checks the revoked token over HTTP about every
// millisecond until ready is set, counting the answers in starting by
// kind. Any other answer (an allow above all) is recorded as wrong.
func hammerWhileStarting(c *checker, hc *http.Client, headers map[string]string, ready *atomic.Bool, starting map[string]int) {
	for deadline := time.Now().Add(startDeadline + readyDeadline); !ready.Load() && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		code, hdr, body, err := get(hc, c.url, headers)
		if err != nil {
			starting["no listener yet"]++
			continue
		}
		i := slices.IndexFunc(startingDenials, func(d denial) bool { return d.httpErr(code, hdr, body) == nil })
		if i < 0 {
			c.record("http", "while starting", "unexpected", fmt.Errorf("while starting: HTTP %d %s, want 503 keys_unavailable or revocation_unavailable, or 401 revoked", code, body))
			continue
		}
		c.record("http", "while starting", startingDenials[i].reason, nil)
		starting[startingDenials[i].reason]++
	}
}

// TestNATSOutage: nats-server is killed with SIGKILL while checks flow and
// started again on the same port and store. Throughout, valid tokens pass
// and tokens revoked before the kill stay denied (on_disconnect: serve);
// sidegate_revocation_connected goes 0, then 1; "sidegate revoke" fails
// while NATS is down; revocations published once it is back, possibly
// before sidegate has reconnected, are applied after the restored ones,
// each exactly once, without a gap in the sequence.
func TestNATSOutage(t *testing.T) {
	t.Parallel()
	p, ns, sc := revocationSetup(t)
	hc := httpClient(t)
	sg := serve(t, sc)
	sg.waitReady(hc)
	c := newChecker(t, sg)
	token := func(sub string) string { return p.token(t, "ES256", p.claims(sub)) }

	// revokeAll revokes a token per subject, all first, then waits until
	// sidegate denies each; seq is the stream sequence of the first.
	revokeAll := func(class string, seq uint64, subs ...string) []probe {
		toks := make([]string, len(subs))
		for i, sub := range subs {
			toks[i] = token(sub)
			if got := revoke(t, ns.URL, "--token", toks[i]); got != seq+uint64(i) {
				t.Errorf("revocation of %s stored as sequence %d, want %d", sub, got, seq+uint64(i))
			}
		}
		probes := make([]probe, len(subs))
		for i, sub := range subs {
			if _, err := c.pollRevoked(hc, toks[i], sub); err != nil {
				t.Fatalf("%s: %v", sub, err)
			}
			probes[i] = deny(class, invalid("revoked"), bearer(toks[i]))
			c.both(t, hc, probes[i])
		}
		return probes
	}

	probes := revokeAll("revoked before the outage", 1, "revoked-before-0", "revoked-before-1", "revoked-before-2")
	for i := range 4 {
		sub := fmt.Sprintf("user-%d", i)
		probes = append(probes, allow("valid", sub, bearer(token(sub))))
	}
	var next atomic.Int64
	tr := startTraffic(t, c, 4, func() probe { return probes[int(next.Add(1))%len(probes)] })
	tr.pass(t, 200)

	ns.kill()
	down, answeredBefore := time.Now(), c.total()
	sg.waitMetric(hc, "sidegate_revocation_connected", nil, "disconnected from NATS", func(v float64) bool { return v == 0 })
	if out, errOut, code := run(t, nil, "revoke", "--nats", ns.URL, "--token", token("nobody")); code != 1 || !strings.Contains(errOut, ns.URL) {
		t.Errorf("sidegate revoke while NATS is down: exit %d, stdout %q, stderr %q; want 1 naming %s", code, out, errOut, ns.URL)
	}
	// Down for a few seconds at least: sidegate's reconnect attempts back
	// off meanwhile, so it is likely still away when the server is back.
	tr.pass(t, 200)
	time.Sleep(time.Until(down.Add(3 * time.Second)))

	ns.restart()
	outage, answeredDown := time.Since(down), c.total()-answeredBefore
	disconnectedAtPublish := sg.metric(hc, "sidegate_revocation_connected", nil) == 0
	// Sequences 4-6: the store kept the first three.
	revokeAll("revoked after the restart", 4, "revoked-after-0", "revoked-after-1", "revoked-after-2")
	sg.waitMetric(hc, "sidegate_revocation_connected", nil, "reconnected to NATS", func(v float64) bool { return v == 1 })
	tr.pass(t, 200)
	tr.halt(t)

	m := scrape(t, hc, sg.Admin)
	c.assertAllRight(t, m)
	assertRevocationEvents(t, m, 6)
	when := "sidegate already back"
	if disconnectedAtPublish {
		when = "sidegate not reconnected yet"
	}
	report(t, "nats-server down %s (SIGKILL, restarted on its store): %d checks answered meanwhile, %d in all, %d wrong; 3 revocations published right after the restart (%s) applied as sequences 4-6",
		outage.Round(100*time.Millisecond), answeredDown, c.total(), c.wrongCount(), when)
}
