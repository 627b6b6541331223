package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// Traffic: many checks sent while something happens around sidegate, each
// with the answer it must get known when it is built, so that a single
// wrong answer fails the test.

// probe is one check and the answer it must get.
type probe struct {
	class   string            // what kind of token, for the figures
	headers map[string]string // the request's credentials
	sub     string            // allowed, with this x-user-id...
	deny    denial            // ...unless deny.reason is set
}

func allow(class, sub string, headers map[string]string) probe {
	return probe{class: class, headers: headers, sub: sub}
}

func deny(class string, want denial, headers map[string]string) probe {
	return probe{class: class, headers: headers, deny: want}
}

// reason is the reason code sidegate must count the answer under.
func (p probe) reason() string {
	if p.deny.reason == "" {
		return "ok"
	}
	return p.deny.reason
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

func cookie(tok string) map[string]string { return map[string]string{"Cookie": cookieName + "=" + tok} }

// checker sends probes to one sidegate over HTTP or gRPC and keeps count
// of the answers and of every one that was not the expected answer.
type checker struct {
	url string
	ac  authv3.AuthorizationClient

	mu       sync.Mutex
	n        *tally         // by transport and reason, to compare with /metrics
	classes  map[string]int // by probe class
	wrong    int
	failures []string // the first few wrong answers
}

func newChecker(t *testing.T, sg *proc) *checker {
	return &checker{
		url:     "http://" + sg.HTTP + "/",
		ac:      authv3.NewAuthorizationClient(dialGRPC(t, sg.GRPC)),
		n:       newTally(),
		classes: map[string]int{},
	}
}

// send checks p over transport ("http", with hc, or "grpc") and records
// the answer; it returns how the answer was wrong, or nil.
func (c *checker) send(hc *http.Client, transport string, p probe) error {
	var err error
	if transport == "http" {
		code, hdr, body, herr := get(hc, c.url, p.headers)
		switch {
		case herr != nil:
			err = herr
		case p.deny.reason != "":
			err = p.deny.httpErr(code, hdr, body)
		default:
			err = allowedHTTPErr(code, hdr, body, p.sub)
		}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		resp, gerr := c.ac.Check(ctx, checkRequest(p.headers))
		cancel()
		if p.deny.reason != "" {
			err = p.deny.grpcErr(resp, gerr)
		} else {
			err = allowedGRPCErr(resp, gerr, p.sub)
		}
	}
	c.record(transport, p.class, p.reason(), err)
	return err
}

// both sends p over HTTP and over gRPC, failing the test on a wrong answer.
func (c *checker) both(t *testing.T, hc *http.Client, p probe) {
	t.Helper()
	for _, transport := range []string{"http", "grpc"} {
		if err := c.send(hc, transport, p); err != nil {
			t.Errorf("%s over %s: %v", p.class, transport, err)
		}
	}
}

func (c *checker) record(transport, class, reason string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n.add(transport, reason)
	c.classes[class]++
	if err != nil {
		c.wrong++
		if len(c.failures) < 10 {
			c.failures = append(c.failures, fmt.Sprintf("%s over %s: %v", class, transport, err))
		}
	}
}

// total is the number of answers recorded.
func (c *checker) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.totalLocked()
}

// assertAllRight fails the test when any answer was wrong, and compares
// the answers with the decisions sidegate counted (it served no one else).
func (c *checker) assertAllRight(t *testing.T, m metrics) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.wrong > 0 {
		t.Errorf("%d of %d answers were wrong; the first ones:\n%s", c.wrong, c.totalLocked(), strings.Join(c.failures, "\n"))
	}
	c.n.assert(t, m)
}

func (c *checker) totalLocked() int {
	n := 0
	for _, v := range c.classes {
		n += v
	}
	return n
}

// byClass renders the answers per class: "valid 300, revoked 12".
func (c *checker) byClass() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return countsString(c.classes)
}

// wrongCount is how many answers were wrong, for reports.
func (c *checker) wrongCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wrong
}

// countsString renders counts by name, sorted: "a 3, b 12".
func countsString(m map[string]int) string {
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// traffic is closed-loop load through a checker: workers each send one
// probe after another, alternating HTTP and gRPC, until halted.
type traffic struct {
	stop atomic.Bool
	done []atomic.Int64 // requests answered, per worker
	wg   sync.WaitGroup
}

// startTraffic starts workers sending the probes next makes (next is
// called from every worker at once). Each worker has its own HTTP
// connection, and pauses a millisecond between checks to leave the
// machine to the tests running beside it.
func startTraffic(t *testing.T, c *checker, workers int, next func() probe) *traffic {
	t.Helper()
	tr := &traffic{done: make([]atomic.Int64, workers)}
	for w := range workers {
		hc := httpClient(t)
		tr.wg.Go(func() {
			for i := w; !tr.stop.Load(); i++ {
				transport := "http"
				if i%2 == 1 {
					transport = "grpc"
				}
				_ = c.send(hc, transport, next())
				tr.done[w].Add(1)
				time.Sleep(time.Millisecond)
			}
		})
	}
	t.Cleanup(func() { tr.halt(t) })
	return tr
}

func (tr *traffic) answered() []int64 {
	out := make([]int64, len(tr.done))
	for i := range tr.done {
		out[i] = tr.done[i].Load()
	}
	return out
}

// pass returns once n more requests have been answered.
func (tr *traffic) pass(t *testing.T, n int64) {
	t.Helper()
	from := sum(tr.answered())
	eventually(t, readyDeadline, fmt.Sprintf("%d more checks answered", n), func() (bool, string) {
		got := sum(tr.answered()) - from
		return got >= n, fmt.Sprint(got)
	})
}

// settle returns once every worker has finished the request it had in
// flight when settle was called: no probe made before is still out.
func (tr *traffic) settle(t *testing.T) {
	t.Helper()
	marks := tr.answered()
	eventually(t, readyDeadline, "every traffic worker to finish its request", func() (bool, string) {
		now := tr.answered()
		for i := range now {
			if now[i] <= marks[i] {
				return false, fmt.Sprintf("worker %d", i)
			}
		}
		return true, ""
	})
}

// halt stops the workers and waits for them (a check gives up after 20 s).
func (tr *traffic) halt(t *testing.T) {
	t.Helper()
	tr.stop.Store(true)
	if !waitGroup(&tr.wg, exitDeadline) {
		t.Errorf("traffic workers still running %s after halt", exitDeadline)
	}
}

// waitGroup waits up to timeout for wg and reports whether it finished.
func waitGroup(wg *sync.WaitGroup, timeout time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

func sum(xs []int64) int64 {
	var s int64
	for _, x := range xs {
		s += x
	}
	return s
}

// metric scrapes sidegate's /metrics for one series (0 when absent).
func (p *proc) metric(hc *http.Client, name string, labels map[string]string) float64 {
	p.t.Helper()
	v, _ := scrape(p.t, hc, p.Admin).get(name, labels)
	return v
}

// waitMetric waits until the series satisfies ok.
func (p *proc) waitMetric(hc *http.Client, name string, labels map[string]string, what string, ok func(float64) bool) {
	p.t.Helper()
	eventually(p.t, readyDeadline, fmt.Sprintf("%s (%s)", what, seriesKey(name, labels)), func() (bool, string) {
		v := p.metric(hc, name, labels)
		return ok(v), fmt.Sprint(v)
	})
}

// waitFetched returns once sidegate has finished n more successful JWKS
// fetches of the issuer. Fetches run one at a time, so with n = 2 the
// second began after the call: the key set sidegate then holds is what
// the identity provider published before the call.
func (p *proc) waitFetched(hc *http.Client, iss string, n int) {
	p.t.Helper()
	labels := map[string]string{"issuer": iss, "outcome": "success"}
	from := p.metric(hc, "sidegate_jwks_refresh_total", labels)
	p.waitMetric(hc, "sidegate_jwks_refresh_total", labels, fmt.Sprintf("%d JWKS fetches", n), func(v float64) bool { return v >= from+float64(n) })
}
