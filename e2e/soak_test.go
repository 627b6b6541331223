package e2e

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidegate/sidegate/jwks/jwkstest"
)

// The soak: checks of every kind at a paced rate for a minute, across key
// rotations, with the daemon's goroutines and memory watched for growth.
const (
	soakDuration      = 60 * time.Second
	soakShortDuration = 5 * time.Second // under -short
	soakRate          = 1000            // checks a second, sent on schedule (open loop)
	soakWorkers       = 16              // senders, each with its own HTTP connection
	soakGrowth        = 0.10            // allowed growth of goroutines and RSS after the warm-up
)

// TestSoak sends about soakRate checks a second for soakDuration (open
// loop: each is due at its time, whether or not earlier ones were
// answered), over HTTP and gRPC, of every kind at once: valid tokens
// (bearer and cookie), expired, revoked (a banned subject, and single
// tokens), garbage, no token, and tokens of keys the provider rotated out;
// it rotates the signing key twice meanwhile. Every answer must be the one
// its kind calls for, and from a window after the warm-up to one at the
// end the daemon's goroutines and RSS must not grow by more than
// soakGrowth. The daemon is built without -race (see README.md). The test
// does not run in parallel with the others, so the load is its own.
func TestSoak(t *testing.T) {
	duration := soakDuration
	if testing.Short() {
		duration = soakShortDuration
	}
	// Goroutines and RSS are sampled over 20 s after a 10 s warm-up, and
	// over the last 20 s (for a minute; in proportion under -short).
	warmup, window := duration/6, duration/3
	p, ns, sc := revocationSetup(t)
	sc.Binary = plainBinary(t)
	// The denylist's periodic rebuild allocates a fresh filter sized for
	// the default million revocations (1.8 MB, a quarter of the live heap)
	// and lifts RSS by several MB for a while; the first, a minute after
	// start, would fall in the last window and pass for growth. None runs
	// during the soak (the revocation package's tests cover rebuilds).
	sc.RebuildInterval = "10m"
	hc := httpClient(t)
	sg := serve(t, sc)
	sg.waitReady(hc)
	c := newChecker(t, sg)
	mix := newSoakMix(t, p, ns, sg, hc, c)

	load := startPaced(t, c, mix)
	var warm, end footprint
	var warmErr, endErr error
	sampled := make(chan struct{})
	go func() { // the test goroutine rotates keys meanwhile
		defer close(sampled)
		time.Sleep(time.Until(load.began.Add(warmup)))
		warm, warmErr = measure(hc, sg, window)
		time.Sleep(time.Until(load.began.Add(duration - window - 500*time.Millisecond)))
		end, endErr = measure(hc, sg, window)
	}()
	for k := 1; k <= 2; k++ {
		time.Sleep(time.Until(load.began.Add(duration * time.Duration(k) / 3)))
		mix.keys.rotate(t, p, sg, hc)
	}
	select {
	case <-sampled:
	case <-time.After(time.Until(load.began.Add(duration)) + readyDeadline):
		t.Fatal("the footprint samples did not finish")
	}
	time.Sleep(time.Until(load.began.Add(duration)))
	load.halt(t)

	c.assertAllRight(t, scrape(t, hc, sg.Admin))
	if err := errors.Join(warmErr, endErr); err != nil {
		t.Fatalf("sampling goroutines and RSS: %v", err)
	}
	gGrowth, rGrowth := end.goroutines/warm.goroutines-1, end.rssKB/warm.rssKB-1
	if !testing.Short() {
		if gGrowth > soakGrowth {
			t.Errorf("goroutines grew from %v after the warm-up to %v at the end (%+.1f%%, over %.0f%%)", warm.goroutines, end.goroutines, 100*gGrowth, 100*soakGrowth)
		}
		if rGrowth > soakGrowth {
			t.Errorf("RSS grew from %.0f kB after the warm-up to %.0f kB at the end (%+.1f%%, over %.0f%%)", warm.rssKB, end.rssKB, 100*rGrowth, 100*soakGrowth)
		}
	}
	report(t, "%s at %d/s, daemon built without -race: %d checks sent in %s (%.0f/s), by kind: %s; %d wrong; answered after their due time p50 %s, p99 %s, %d over 1 s; %d key rotations; median goroutines %v → %v (%+.1f%%), VmRSS %.1f → %.1f MB (%+.1f%%), %s windows after %s and at the end",
		duration, soakRate, load.sent, load.elapsed.Round(100*time.Millisecond), float64(load.sent)/load.elapsed.Seconds(), c.byClass(), c.wrongCount(),
		quantile(load.lat, 0.5).Round(10*time.Microsecond), quantile(load.lat, 0.99).Round(10*time.Microsecond), countOver(load.lat, time.Second), mix.keys.n,
		warm.goroutines, end.goroutines, 100*gGrowth, warm.rssKB/1024, end.rssKB/1024, 100*rGrowth, window.Round(100*time.Millisecond), warmup.Round(100*time.Millisecond))
}

// soakMix is what the soak sends: request i is of the kind in slot i/2 of
// a fixed pattern of 20 (and over HTTP or gRPC as i is even or odd).
type soakMix struct {
	slots []func() probe
	keys  *keyring // the rotating key's tokens, in the first rotating slots
	// rotating is how many slots, from the first, hold the rotating
	// key's tokens: their checks hold keys.mu.
	rotating int
}

// newSoakMix signs and revokes the soak's tokens and checks one of each
// kind over both transports.
func newSoakMix(t *testing.T, p *idp, ns *natsServer, sg *proc, hc *http.Client, c *checker) *soakMix {
	t.Helper()
	iss := p.srv.Issuer()
	// Tokens that keep their kind, signed with the keys that do not rotate.
	fixed := func(n int, mk func(i int, alg string) probe) []probe {
		out := make([]probe, n)
		for i := range out {
			out[i] = mk(i, []string{"RS256", "EdDSA"}[i%2])
		}
		return out
	}
	valid := fixed(50, func(i int, alg string) probe {
		sub := fmt.Sprintf("steady-%d", i)
		return allow("valid", sub, bearer(p.token(t, alg, p.claims(sub))))
	})
	expired := fixed(20, func(i int, alg string) probe {
		cl := jwkstest.Claims(iss, audience, fmt.Sprintf("gone-%d", i), time.Now().Add(-2*time.Hour), time.Hour)
		return deny("expired", invalid("expired"), bearer(p.token(t, alg, cl)))
	})
	revoked := fixed(20, func(_ int, alg string) probe {
		return deny("revoked", invalid("revoked"), bearer(p.token(t, alg, p.claims("banned"))))
	})
	revoke(t, ns.URL, "--iss", iss, "--sub", "banned")
	for i := range 5 {
		tok := p.token(t, "EdDSA", p.claims(fmt.Sprintf("single-%d", i)))
		revoke(t, ns.URL, "--token", tok)
		revoked = append(revoked, deny("revoked", invalid("revoked"), cookie(tok)))
	}
	sg.waitMetric(hc, "sidegate_revocation_last_sequence", nil, "the revocations applied", func(v float64) bool { return v >= 6 })
	garbage := fixed(20, func(int, string) probe {
		return deny("garbage", invalid("malformed_token"), bearer(rand.Text()+"."+rand.Text()+"."+rand.Text()))
	})
	none := []probe{deny("no token", denial{status: 401, reason: "no_token"}, map[string]string{})}
	for _, pr := range slices.Concat(valid, expired, revoked, garbage, none) {
		c.both(t, hc, pr)
	}

	m := &soakMix{keys: &keyring{key: p.keys["ES256"], valid: signedBy(t, p, p.keys["ES256"])}}
	m.keys.rotate(t, p, sg, hc) // so that there are rotated-out tokens from the start
	// Each kind goes round its own tokens.
	from := func(ps *[]probe) func() probe {
		var n atomic.Int64
		return func() probe { return (*ps)[int(n.Add(1))%len(*ps)] }
	}
	for _, s := range []struct {
		n        int
		pick     func() probe
		rotating bool
	}{
		{8, from(&m.keys.valid), true}, {1, from(&m.keys.retired), true}, // the rotating key: first
		{4, from(&valid), false}, {2, from(&expired), false}, {2, from(&revoked), false}, {2, from(&garbage), false}, {1, from(&none), false},
	} {
		for range s.n {
			m.slots = append(m.slots, s.pick)
		}
		if s.rotating {
			m.rotating = len(m.slots)
		}
	}
	return m
}

// send sends request i with hc.
func (m *soakMix) send(c *checker, hc *http.Client, i int) {
	transport := []string{"http", "grpc"}[i%2]
	slot := (i / 2) % len(m.slots)
	if slot < m.rotating { // a token of the rotating key: see keyring
		m.keys.mu.RLock()
		defer m.keys.mu.RUnlock()
	}
	_ = c.send(hc, transport, m.slots[slot]())
}

// keyring is the rotating key's side of the soak: tokens of the ES256 key
// the provider signs with, and tokens of the keys it has rotated out. A
// check of either holds mu for reading until its answer, so that rotate,
// holding it to switch keys, knows no token it retires is still out.
type keyring struct {
	mu      sync.RWMutex
	key     *jwkstest.Key
	valid   []probe // allowed
	retired []probe // denied unknown_key
	n       int     // rotations so far
}

// rotate makes the provider publish a new key beside the current one, waits
// until sidegate holds it, signs with it from then on, drops the old key
// from the JWKS and, once sidegate has refreshed, sends the old key's tokens
// as retired. The new key is thus published well before it is used, as
// providers do (TestKeyRotation uses one at once).
func (kr *keyring) rotate(t *testing.T, p *idp, sg *proc, hc *http.Client) {
	t.Helper()
	kr.n++
	fresh := jwkstest.NewKey(t, "ES256", fmt.Sprintf("es256-soak-%d", kr.n))
	valid := signedBy(t, p, fresh)
	p.srv.SetKeys(p.keys["RS256"], p.keys["EdDSA"], kr.key, fresh)
	sg.waitFetched(hc, p.srv.Issuer(), 2)
	kr.mu.Lock()
	old := kr.valid
	kr.key, kr.valid = fresh, valid
	kr.mu.Unlock()
	p.srv.SetKeys(p.keys["RS256"], p.keys["EdDSA"], fresh)
	sg.waitFetched(hc, p.srv.Issuer(), 2)
	kr.mu.Lock()
	for _, pr := range old {
		kr.retired = append(kr.retired, deny("rotated-out key", invalid("unknown_key"), pr.headers))
	}
	kr.mu.Unlock()
}

// signedBy makes the rotating key's valid tokens, as bearer and cookie.
func signedBy(t *testing.T, p *idp, key *jwkstest.Key) []probe {
	valid := make([]probe, 100)
	for i := range valid {
		sub := fmt.Sprintf("user-%d", i)
		tok := key.Sign(t, p.claims(sub), nil)
		valid[i] = allow("valid (rotating key)", sub, bearer(tok))
		if i%2 == 1 {
			valid[i].headers = cookie(tok)
		}
	}
	return valid
}

// countOver is how many of lat are over d.
func countOver(lat []time.Duration, d time.Duration) int {
	n := 0
	for _, l := range lat {
		if l > d {
			n++
		}
	}
	return n
}

// pacedLoad is open-loop load: request i is due at began + i/soakRate and
// goes to the next free worker then, however long earlier ones take; a
// stall shows as answers late against their due time, not as a lower rate.
type pacedLoad struct {
	began   time.Time
	stop    atomic.Bool
	paced   chan int // the number of requests made, once the pacer stops
	workers sync.WaitGroup

	// After halt:
	sent    int
	elapsed time.Duration
	mu      sync.Mutex
	lat     []time.Duration // answer time minus due time
}

func startPaced(t *testing.T, c *checker, mix *soakMix) *pacedLoad {
	type job struct {
		i   int
		due time.Time
	}
	l := &pacedLoad{began: time.Now(), paced: make(chan int, 1)}
	jobs := make(chan job, soakRate*10)
	for range soakWorkers {
		hc := httpClient(t)
		l.workers.Go(func() {
			var lat []time.Duration
			for j := range jobs {
				mix.send(c, hc, j.i)
				lat = append(lat, time.Since(j.due))
			}
			l.mu.Lock()
			l.lat = append(l.lat, lat...)
			l.mu.Unlock()
		})
	}
	go func() {
		i := 0
		for ; !l.stop.Load(); i++ {
			due := l.began.Add(time.Duration(i) * time.Second / soakRate)
			time.Sleep(time.Until(due))
			jobs <- job{i, due}
		}
		close(jobs)
		l.paced <- i
	}()
	t.Cleanup(func() { l.halt(t) })
	return l
}

// halt stops the pacer and waits for the workers to finish what is due.
func (l *pacedLoad) halt(t *testing.T) {
	t.Helper()
	if l.stop.Swap(true) {
		return
	}
	select {
	case l.sent = <-l.paced:
	case <-time.After(exitDeadline):
		t.Errorf("the soak's pacer still blocked %s after it was stopped", exitDeadline)
		return
	}
	l.elapsed = time.Since(l.began)
	if !waitGroup(&l.workers, exitDeadline) {
		t.Errorf("soak workers still busy %s after the pacer stopped", exitDeadline)
	}
}

// footprint is what the soak watches for growth.
type footprint struct {
	goroutines float64 // go_goroutines
	rssKB      float64 // VmRSS
}

// measure samples goroutines and RSS every 250 ms for the window and
// returns the medians. The heap swings by a few MB for seconds at a time
// (VmRSS by up to 13% here between two samples), so one sample compared
// with another says little; the median over 20 s is the level under the
// swings.
func measure(hc *http.Client, sg *proc, window time.Duration) (footprint, error) {
	var gs, rs []float64
	for end := time.Now().Add(window); ; time.Sleep(250 * time.Millisecond) {
		m, err := scrapeErr(hc, sg.Admin)
		if err != nil {
			return footprint{}, err
		}
		g, _ := m.get("go_goroutines", nil)
		rss, err := vmRSS(sg.cmd.Process.Pid)
		if err != nil {
			return footprint{}, err
		}
		gs, rs = append(gs, g), append(rs, rss)
		if time.Now().After(end) {
			break
		}
	}
	slices.Sort(gs)
	slices.Sort(rs)
	return footprint{gs[len(gs)/2], rs[len(rs)/2]}, nil
}

// vmRSS reads a process's resident set size in kB from /proc.
func vmRSS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
