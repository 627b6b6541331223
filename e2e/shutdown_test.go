package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// callKey carries a *callRec in a Check's context to sentTracker.
type callKey struct{}

type callRec struct{ sentBeforeTerm atomic.Bool }

// sentTracker marks a call as sent before SIGTERM when gRPC queued its
// HEADERS frame on an established connection before the signal was sent.
// (gRPC reports OutHeader once the frame is queued, and frames leave in
// queue order, so such a call reaches the server ahead of the client's
// answer to the server's drain PING: the server must process it.) A call
// that had merely started is not counted: it may still be waiting for a
// stream and meet the server's GOAWAY.
type sentTracker struct{ term *atomic.Bool }

func (s sentTracker) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (s sentTracker) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (s sentTracker) HandleConn(context.Context, stats.ConnStats) {}
func (s sentTracker) HandleRPC(ctx context.Context, st stats.RPCStats) {
	if _, ok := st.(*stats.OutHeader); !ok {
		return
	}
	if rec, ok := ctx.Value(callKey{}).(*callRec); ok && !s.term.Load() {
		rec.sentBeforeTerm.Store(true)
	}
}

// drainCounts are the outcomes of the checks around SIGTERM.
type drainCounts struct {
	okBefore, failedBefore, inFlight atomic.Int64 // sent before SIGTERM
	okAfter, unavailableAfter        atomic.Int64 // sent after SIGTERM
	otherAfter, wrong                atomic.Int64 // never acceptable
	mu                               sync.Mutex
	failures                         []string
}

func (c *drainCounts) fail(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.failures) < 10 {
		c.failures = append(c.failures, fmt.Sprintf(format, args...))
	}
}

// TestGracefulShutdown: SIGTERM while clients run concurrent gRPC checks
// on several connections. Every check sent on an existing connection
// before the signal is answered; checks sent afterwards are answered or
// fail with Unavailable (the listener is closed) and are counted apart;
// the process exits 0 within its drain timeout and frees its ports.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	const (
		conns, workersPerConn = 3, 3
		drain                 = 10 * time.Second
		warmup                = 20 // successful checks per worker before SIGTERM
	)
	p := newIDP(t)
	sc := p.config()
	sc.ShutdownTimeout = drain.String()
	sg := serve(t, sc)
	sg.waitReady(httpClient(t))

	var term, stop atomic.Bool
	var c drainCounts
	var wg sync.WaitGroup
	warm := make([]atomic.Int64, conns*workersPerConn)
	for i := range conns {
		ac := authv3.NewAuthorizationClient(dialGRPC(t, sg.GRPC, grpc.WithStatsHandler(sentTracker{&term})))
		for j := range workersPerConn {
			w := i*workersPerConn + j
			alg := algs[w%len(algs)]
			sub := fmt.Sprintf("worker-%d", w)
			req := checkRequest(map[string]string{"authorization": "Bearer " + p.token(t, alg, p.claims(sub))})
			wg.Go(func() {
				for calls := 0; !stop.Load() && calls < 200_000; calls++ {
					rec := &callRec{}
					ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), callKey{}, rec), 2*drain)
					resp, err := ac.Check(ctx, req)
					cancel()
					doneAfterTerm := term.Load()
					// Sent before SIGTERM, or finished before it: must be answered.
					before := rec.sentBeforeTerm.Load() || !doneAfterTerm
					switch {
					case err == nil && resp.GetOkResponse() != nil && userOf(resp) == sub:
						if !before {
							c.okAfter.Add(1)
							break
						}
						c.okBefore.Add(1)
						warm[w].Add(1)
						if doneAfterTerm {
							c.inFlight.Add(1)
						}
					case err == nil:
						c.wrong.Add(1)
						c.fail("worker %d: wrong answer %v", w, resp)
					case before:
						c.failedBefore.Add(1)
						c.fail("worker %d: a check sent before SIGTERM failed: %v", w, err)
					case status.Code(err) == codes.Unavailable:
						c.unavailableAfter.Add(1)
						time.Sleep(5 * time.Millisecond) // the server is gone; do not spin
					default:
						c.otherAfter.Add(1)
						c.fail("worker %d: a check sent after SIGTERM failed with %v, want Unavailable", w, err)
					}
				}
			})
		}
	}
	t.Cleanup(func() { stop.Store(true); wg.Wait() })

	eventually(t, readyDeadline, fmt.Sprintf("%d checks answered on every worker", warmup), func() (bool, string) {
		if c.failedBefore.Load()+c.wrong.Load() > 0 {
			return true, "" // already failed: report it below
		}
		for i := range warm {
			if warm[i].Load() < warmup {
				return false, fmt.Sprintf("worker %d: %d", i, warm[i].Load())
			}
		}
		return true, ""
	})

	term.Store(true)
	sent := sg.sigterm()
	code := sg.wait(2*drain + exitDeadline) // the drain is bounded by shutdown_timeout; generous slack
	exitAfter := time.Since(sent)
	stop.Store(true)
	if !waitGroup(&wg, exitDeadline+2*drain) {
		t.Fatal("client workers did not stop")
	}

	if code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if exitAfter > drain {
		t.Logf("note: exit took %s, longer than the %s drain timeout (a loaded machine?)", exitAfter, drain)
	}
	if c.failedBefore.Load() > 0 || c.wrong.Load() > 0 || c.otherAfter.Load() > 0 {
		t.Errorf("%d checks sent before SIGTERM failed, %d wrong answers, %d unexpected errors after SIGTERM:\n%s",
			c.failedBefore.Load(), c.wrong.Load(), c.otherAfter.Load(), strings.Join(c.failures, "\n"))
	}
	if c.okBefore.Load() < int64(warmup*len(warm)) {
		t.Errorf("only %d checks answered before SIGTERM", c.okBefore.Load())
	}
	for _, want := range []string{"shutting down", "stopped"} {
		if !strings.Contains(sg.errb.String(), want) {
			t.Errorf("the log has no %q line", want)
		}
	}
	assertNoPanic(t, sg.errb.String())
	eventually(t, exitDeadline, "ports free after exit", func() (bool, string) {
		err := portsFree(sg.GRPC, sg.HTTP, sg.Admin)
		return err == nil, fmt.Sprint(err)
	})
	report(t, "exit %d %s after SIGTERM (drain timeout %s); sent before it: %d answered (%d of them in flight at SIGTERM), %d failed; sent after it: %d answered, %d Unavailable",
		code, exitAfter.Round(time.Millisecond), drain, c.okBefore.Load(), c.inFlight.Load(), c.failedBefore.Load(), c.okAfter.Load(), c.unavailableAfter.Load())
}

// userOf is the x-user-id an allowed response sets.
func userOf(resp *authv3.CheckResponse) string {
	for _, h := range resp.GetOkResponse().GetHeaders() {
		if h.GetHeader().GetKey() == "x-user-id" {
			return h.GetHeader().GetValue()
		}
	}
	return ""
}
