package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/nats-io/nats.go/jetstream"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// buildSidegate builds this command into a temporary directory: the bench
// runs its servers as child processes of a sidegate binary, which the
// test binary is not.
func buildSidegate(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go") // go test puts its own go first on PATH
	if err != nil {
		t.Skip("no go tool to build the binary:", err)
	}
	bin := filepath.Join(t.TempDir(), "sidegate")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goTool, "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestBench runs the whole tool, with the binary built from this
// package, on tiny runs.
func TestBench(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts servers")
	}
	bin := buildSidegate(t)
	t.Run("smoke", func(t *testing.T) { testBenchSmoke(t, bin) })
	t.Run("misconfigured sidegate", func(t *testing.T) { testBenchMisconfigured(t, bin) })
	t.Run("revoked", func(t *testing.T) { testBenchRevoked(t, bin) })
	t.Run("cpuprofile", func(t *testing.T) { testBenchProfile(t, bin) })
	t.Run("verifier", func(t *testing.T) { testBenchVerifier(t, bin) })
}

// testBenchVerifier: --verifier runs the plain RS256 verifier in unique
// mode only, and its table has a row per unique figure with the verifier's
// req/s between the floor's and the ratios computed from them.
func testBenchVerifier(t *testing.T, bin string) {
	stdout, stderr := benchOK(t, bin,
		"--duration", "300ms", "--warmup", "50ms", "--rounds", "2",
		"--concurrency", "2", "--conns", "1", "--rates", "",
		"--modes", "cached,unique", "--unique-max-rate", "5000", "--verifier")
	if !strings.Contains(stderr, "plain RS256 verifier (pid ") || len(regexp.MustCompile(`unique .* round \d/2 verifier `).FindAllString(stderr, -1)) != 2 || regexp.MustCompile(`cached .* round \d/2 verifier `).MatchString(stderr) {
		t.Errorf("want the verifier started and run in the 2 unique rounds only; stderr:\n%s", stderr)
	}
	var rows [][]string
	for line := range strings.SplitSeq(stdout, "\n") {
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 12 || !strings.HasPrefix(line, "| unique |") {
			continue
		}
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		rows = append(rows, cells)
	}
	if len(rows) != 1 {
		t.Fatalf("want one verifier row, got %d:\n%s", len(rows), stdout)
	}
	num := func(s string) float64 {
		f, err := strconv.ParseFloat(strings.Fields(s)[0], 64)
		if err != nil {
			t.Fatalf("%q is not a number:\n%s", s, stdout)
		}
		return f
	}
	row := rows[0]
	floor, verifier, sidegate := num(row[2]), num(row[3]), num(row[4])
	if floor <= 0 || verifier <= 0 || sidegate <= 0 {
		t.Fatalf("req/s must be positive: %v", row)
	}
	if got, want := num(row[5]), verifier/floor; math.Abs(got-want) > 0.006 {
		t.Errorf("verifier/floor = %v, want %.2f from the req/s", got, want)
	}
	if got, want := num(row[7]), sidegate/verifier; math.Abs(got-want) > 0.006 {
		t.Errorf("sidegate/verifier = %v, want %.2f from the req/s", got, want)
	}
	if !strings.Contains(row[7], "(") {
		t.Errorf("no per-round ratios with 2 rounds: %q", row[7])
	}
	if row[11] != "0" {
		t.Errorf("the verifier answered %s valid token(s) wrong", row[11])
	}
	if !strings.Contains(stdout, "- wrong decisions: 0; gRPC errors: 0") {
		t.Errorf("wrong decisions:\n%s", stdout)
	}
}

// benchOK runs "sidegate bench --exe bin" with args and fails the test
// unless it exits 0.
func benchOK(t *testing.T, bin string, args ...string) (stdout, stderr string) {
	t.Helper()
	code, stdout, stderr := runCmd(t, append([]string{"bench", "--exe", bin}, args...)...)
	if code != 0 {
		t.Fatalf("exit %d; stderr:\n%s\nstdout:\n%s", code, stderr, stdout)
	}
	return stdout, stderr
}

// testBenchProfile: --cpuprofile writes sidegate's CPU profile of the
// figure's first measured run, a gzipped pprof protobuf whose string table
// names the CPU sample type and the gRPC server's functions.
func testBenchProfile(t *testing.T, bin string) {
	prefix := filepath.Join(t.TempDir(), "prof")
	_, stderr := benchOK(t, bin,
		"--duration", "1s", "--warmup", "50ms", "--rounds", "1",
		"--concurrency", "2", "--conns", "1", "--rates", "",
		"--modes", "cached", "--cpuprofile", prefix)
	f, err := os.Open(prefix + "-cached-closed.pprof")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("not gzip: %v", err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	// Only sampled functions are named, so not sidegate's own Check (a few
	// percent of a cached run): gRPC's server, which every check goes
	// through.
	for _, want := range []string{"cpu", "nanoseconds", "google.golang.org/grpc.(*Server)"} {
		if !bytes.Contains(data, []byte(want)) {
			t.Errorf("profile (%d bytes) does not name %q", len(data), want)
		}
	}
	if !strings.Contains(stderr, "CPU profile of sidegate written to "+prefix+"-cached-closed.pprof") {
		t.Errorf("no word of the profile on stderr:\n%s", stderr)
	}
}

// testBenchRevoked: --revoked fills the stream before sidegate starts,
// sidegate replays all of it before it is ready, and the bench's own
// tokens, none revoked, are still allowed.
func testBenchRevoked(t *testing.T, bin string) {
	stdout, _ := benchOK(t, bin,
		"--duration", "200ms", "--warmup", "50ms", "--rounds", "1",
		"--concurrency", "2", "--conns", "1", "--rates", "",
		"--modes", "cached", "--revocation", "--revoked", "2000")
	for _, want := range []string{
		"- wrong decisions: 0; gRPC errors: 0",
		"- denylist: 2000 jti revocations published to the embedded stream in ",
		" with 2000 jti entries in its denylist; revocation.capacity 1000000",
		"revocation on (embedded NATS)",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	if regexpFind(`replay took (\d[^ ]*) by its log`, stdout) == "" {
		t.Errorf("no replay time from sidegate's log:\n%s", stdout)
	}
	if runtime.GOOS == "linux" && regexpFind(`once ready, before load: RSS \(VmRSS\) (\d+) MiB, peak so far \d+ MiB`, stdout) == "" {
		t.Errorf("no RSS once ready:\n%s", stdout)
	}
	if !strings.Contains(stdout, "| cached | closed, 2 workers / 1 conns |") || !strings.HasSuffix(regexpFind(`(\| cached \|[^\n]*)`, stdout), "| 0 |") {
		t.Errorf("no cached row with 0 wrong:\n%s", stdout)
	}
}

// testBenchSmoke checks the table's shape and the decisions, never the
// speed.
func testBenchSmoke(t *testing.T, bin string) {
	out := filepath.Join(t.TempDir(), "bench.md")
	stdout, _ := benchOK(t, bin,
		"--duration", "200ms", "--warmup", "50ms", "--rounds", "1",
		"--concurrency", "4", "--conns", "2", "--rates", "200",
		"--modes", "cached,unique,mixed", "--unique-max-rate", "20000", "--out", out)
	if written, err := os.ReadFile(out); err != nil || string(written) != stdout {
		t.Errorf("--out file differs from stdout (err %v)", err)
	}
	for _, want := range []string{
		"| mode | load | req/s floor | req/s sidegate |",
		"- command: `sidegate bench --exe ",
		"- wrong decisions: 0; gRPC errors: 0",
		"- unique tokens: ",
		"- sidegate's own count: ",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	if runtime.GOOS == "linux" {
		// Each figure's client CPU, floor / sidegate, both measured.
		if m := regexpFind(`- client CPU µs/req \(this process, driving floor / sidegate\): (cached, closed, 4 workers / 2 conns: [0-9.]+ / [0-9.]+;)`, stdout); m == "" {
			t.Errorf("no client CPU for the cached closed-loop figure:\n%s", stdout)
		}
	}
	if m := regexpFind(`RS256 bearer token of (\d+) bytes`, stdout); m == "" {
		t.Errorf("no token size in the header:\n%s", stdout)
	} else if n, _ := strconv.Atoi(m); n < 600 || n > 900 {
		t.Errorf("token is %d bytes, want about 700", n)
	}

	rows := map[string][]string{}
	for line := range strings.SplitSeq(stdout, "\n") {
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| mode") || strings.HasPrefix(line, "| ---") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if len(cells) != 16 {
			t.Fatalf("row has %d cells, want 16: %s", len(cells), line)
		}
		rows[cells[0]+" / "+cells[1]] = cells
	}
	for _, mode := range []string{"cached", "unique", "mixed"} {
		for _, load := range []string{"closed, 4 workers / 2 conns", "open, 200/s"} {
			cells, ok := rows[mode+" / "+load]
			if !ok {
				t.Errorf("no row for %s, %s:\n%s", mode, load, stdout)
				continue
			}
			// req/s both, then the req/s, p50 and p99 ratios: numbers > 0.
			for _, i := range []int{2, 3, 7, 10} {
				if v, err := strconv.ParseFloat(cells[i], 64); err != nil || v <= 0 {
					t.Errorf("%s, %s: cell %d = %q, want a positive number", mode, load, i, cells[i])
				}
			}
			if v, err := strconv.ParseFloat(cells[4], 64); err != nil || v <= 0 {
				t.Errorf("%s, %s: req/s ratio %q, want a positive number", mode, load, cells[4])
			}
			if runtime.GOOS == "linux" {
				for _, i := range []int{11, 12} { // CPU µs/req: known, possibly 0 ticks
					if _, err := strconv.ParseFloat(cells[i], 64); err != nil {
						t.Errorf("%s, %s: CPU cell %d = %q, want a number", mode, load, i, cells[i])
					}
				}
			}
			if cells[15] != "0" {
				t.Errorf("%s, %s: %s wrong decisions", mode, load, cells[15])
			}
		}
	}
	if len(rows) != 6 {
		t.Errorf("%d rows, want 6", len(rows))
	}
	// mixed mode sends each kind of invalid request, and sidegate says so.
	for _, reason := range []string{"deny/no_token", "deny/expired", "deny/bad_signature"} {
		if !strings.Contains(stdout, reason) {
			t.Errorf("sidegate's count lacks %s:\n%s", reason, stdout)
		}
	}
}

func regexpFind(expr, s string) string {
	m := regexp.MustCompile(expr).FindStringSubmatch(s)
	if m == nil {
		return ""
	}
	return m[1]
}

// testBenchMisconfigured: a sidegate that denies the valid token is
// reported before any load, and the exit status is 1.
func testBenchMisconfigured(t *testing.T, bin string) {
	code, _, stderr := runCmd(t, "bench", "--exe", bin, "--duration", "100ms", "--rounds", "1",
		"--rates", "", "--modes", "cached", "--extra-config", "tokens: {bearer: false}")
	if code != 1 || !strings.Contains(stderr, "sidegate denies the bench's valid token") {
		t.Fatalf("exit %d, want 1 with the denial explained; stderr:\n%s", code, stderr)
	}
}

func TestBenchFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--modes", "cached,fast"},
		{"--rates", "1000,abc"},
		{"--rounds", "0"},
		{"--concurrency", "0", "--rates", ""},
		{"--revoked", "10"},
		{"--revocation", "--revoked", "-1"},
		{"--revocation", "--revoked", "100000001"},
		{"--verifier", "--modes", "cached"},
		{"--cpuprofile", "/nonexistent-dir/prof"},
		{"--decode", "fast"},
		{"extra"},
	} {
		if code, _, stderr := runCmd(t, append([]string{"bench"}, args...)...); code != 2 || !strings.Contains(stderr, "sidegate bench") {
			t.Errorf("bench %q: exit %d, want 2 with a message; stderr:\n%s", args, code, stderr)
		}
	}
}

// answerServer answers every Check with a fixed status code, shaped like
// sidegate's answers: an OK sets identity headers, a denial carries a
// message, headers and a body.
type answerServer struct {
	authv3.UnimplementedAuthorizationServer
	code codes.Code
}

func (a answerServer) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return answerLike(a.code), nil
}

func answerLike(code codes.Code) *authv3.CheckResponse {
	hdr := func(k, v string) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
	}
	if code == codes.OK {
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers:         []*corev3.HeaderValueOption{hdr("x-user-id", "u-1"), hdr("x-jwt-payload", strings.Repeat("eyJzdWIiOiJ1LTEifQ", 30))},
				HeadersToRemove: []string{"x-user-email"},
			}},
		}
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code), Message: "token_" + strings.ToLower(code.String())},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized},
			Headers: []*corev3.HeaderValueOption{hdr("www-authenticate", `Bearer error="invalid_token"`)},
			Body:    `{"error":"invalid_token"}`,
		}},
	}
}

func serveAnswers(t *testing.T, code codes.Code) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, answerServer{code: code})
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return ln.Addr().String()
}

// TestBenchLoopsCheckDecisions drives the closed and open loops against
// in-process servers that answer right and wrong, and checks what each
// loop counts.
func TestBenchLoopsCheckDecisions(t *testing.T) {
	ctx := context.Background()
	template := benchRequest("header.payload.signature")
	for _, tc := range []struct {
		name      string
		code      codes.Code
		decides   bool
		wantWrong bool
	}{
		{"sidegate allows the valid token", codes.OK, true, false},
		{"sidegate denies the valid token", codes.Unauthenticated, true, true},
		{"floor allows", codes.OK, false, false},
		{"floor does not answer OK", codes.PermissionDenied, false, true},
	} {
		for _, full := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s, full decode %v", tc.name, full), func(t *testing.T) {
				tg, err := dialTarget("server", serveAnswers(t, tc.code), 2, nil, tc.decides, full)
				if err != nil {
					t.Fatal(err)
				}
				defer tg.close()
				for name, r := range map[string]runResult{
					"closed": closedLoop(ctx, tg, repeatedToken("t"), template, 4, 100*time.Millisecond),
					"open":   openLoop(ctx, tg, repeatedToken("t"), template, 500, 8, 100*time.Millisecond),
				} {
					if r.n == 0 || r.errors != 0 {
						t.Fatalf("%s: %d answers, %d errors", name, r.n, r.errors)
					}
					if want := int64(0); tc.wantWrong {
						want = r.n
						if r.wrong != want || len(r.examples) == 0 {
							t.Errorf("%s: %d wrong of %d (examples %q), want all", name, r.wrong, r.n, r.examples)
						} else if msg := answerLike(tc.code).GetStatus().GetMessage(); tc.decides && !strings.Contains(r.examples[0], strconv.Quote(msg)) {
							t.Errorf("%s: example %q does not quote the status message %q", name, r.examples[0], msg)
						}
					} else if r.wrong != 0 {
						t.Errorf("%s: %d wrong, want 0: %q", name, r.wrong, r.examples)
					}
					if r.cpu >= 0 {
						t.Errorf("%s: CPU %s for a target without a process, want unknown", name, r.cpu)
					}
					if got := r.hist.count(); got != uint64(r.n) {
						t.Errorf("%s: histogram holds %d, want %d", name, got, r.n)
					}
				}
			})
		}
	}
}

// slowServer answers OK after delay, or gives up when the call is
// cancelled.
type slowServer struct {
	authv3.UnimplementedAuthorizationServer
	delay time.Duration
}

func (a slowServer) Check(ctx context.Context, _ *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	select {
	case <-time.After(a.delay):
		return &authv3.CheckResponse{Status: &rpcstatus.Status{}}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func dialSlow(t *testing.T, delay time.Duration) *target {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, slowServer{delay: delay})
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	tg, err := dialTarget("sidegate", ln.Addr().String(), 2, nil, true, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tg.close)
	return tg
}

// TestBenchRunEndLetsCallsFinish: ending a run, longer than the grace for
// calls in flight, stops sending but lets the calls in flight finish
// (no "context canceled" errors); in the closed loop those answered after
// the window are not counted. A call still unanswered after the grace is
// an error.
func TestBenchRunEndLetsCallsFinish(t *testing.T) {
	defer func(w time.Duration) { benchDrainWait = w }(benchDrainWait)
	benchDrainWait = 300 * time.Millisecond
	template := benchRequest("x")
	ctx := context.Background()

	const delay, d, workers = 100 * time.Millisecond, time.Second, 16
	tg := dialSlow(t, delay)
	r := closedLoop(ctx, tg, repeatedToken("t"), template, workers, d)
	if r.errors != 0 {
		t.Errorf("closed: %d errors (%q), want 0", r.errors, r.examples)
	}
	// Each worker has at most d/delay answers inside the window; the one
	// in flight when it closes is answered after it.
	if maxN := int64(workers * (d / delay)); r.n == 0 || r.n > maxN {
		t.Errorf("closed: %d answers counted, want 1..%d", r.n, maxN)
	}
	if r.elapsed < d || r.elapsed > d+delay/2 {
		t.Errorf("closed: elapsed %s, want the window, %s", r.elapsed, d)
	}
	if got := r.hist.count(); got != uint64(r.n) {
		t.Errorf("closed: histogram holds %d, want %d", got, r.n)
	}

	r = openLoop(ctx, tg, repeatedToken("t"), template, 200, 64, d)
	if r.errors != 0 || r.n != 200 {
		t.Errorf("open: %d answers, %d errors (%q); want 200 and 0", r.n, r.errors, r.examples)
	}

	stuck := dialSlow(t, time.Hour)
	began := time.Now()
	r = closedLoop(ctx, stuck, repeatedToken("t"), template, 4, 100*time.Millisecond)
	if r.errors != 4 || r.n != 0 {
		t.Errorf("closed, stuck server: %d answers, %d errors; want 0 and 4", r.n, r.errors)
	}
	r = openLoop(ctx, stuck, repeatedToken("t"), template, 100, 8, 50*time.Millisecond)
	if r.errors != 5 || r.n != 5 {
		t.Errorf("open, stuck server: %d sent, %d errors; want 5 and 5", r.n, r.errors)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("stuck server: runs took %s; the grace is %s", took, benchDrainWait)
	}
}

// TestBenchPoolRunsOut: a spent pool ends the run early and says when.
func TestBenchPoolRunsOut(t *testing.T) {
	tg, err := dialTarget("sidegate", serveAnswers(t, codes.OK), 1, nil, true, false)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.close()
	template := benchRequest("x")
	for name, run := range map[string]func(tokenSource) runResult{
		"closed": func(s tokenSource) runResult {
			return closedLoop(context.Background(), tg, s, template, 2, 10*time.Second)
		},
		"open": func(s tokenSource) runResult {
			return openLoop(context.Background(), tg, s, template, 1000, 4, 10*time.Second)
		},
	} {
		src := poolSource{pool: []string{"a", "b", "c", "d", "e"}, cursor: new(atomic.Int64)}
		r := run(src)
		if r.n != 5 || r.poolOut <= 0 || r.poolOut > 5*time.Second {
			t.Errorf("%s: %d sent, pool out at %s; want 5 sent and an early end", name, r.n, r.poolOut)
		}
	}
}

// TestHistogramQuantiles compares the histogram's percentiles with the
// exact ones over latencies spread across five orders of magnitude.
func TestHistogramQuantiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var h histogram
	vals := make([]time.Duration, 200_000)
	for i := range vals {
		// log-uniform from 1 µs to 100 ms
		vals[i] = time.Duration(math.Exp(math.Log(1e3) + rng.Float64()*(math.Log(1e8)-math.Log(1e3))))
		h.record(vals[i])
	}
	slices.Sort(vals)
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999, 1} {
		exact := vals[int(math.Ceil(q*float64(len(vals))))-1]
		got := h.quantile(q)
		if rel := math.Abs(float64(got-exact)) / float64(exact); rel > 0.01 {
			t.Errorf("q%v = %s, exact %s: off by %.2f%%", q, got, exact, rel*100)
		}
	}
	if h.count() != uint64(len(vals)) {
		t.Errorf("count %d, want %d", h.count(), len(vals))
	}
	var empty histogram
	if empty.quantile(0.5) != 0 {
		t.Error("empty histogram: quantile not 0")
	}
	// Small values are exact; huge ones are clamped, not lost.
	var small histogram
	small.record(7)
	small.record(time.Duration(math.MaxInt64))
	if small.quantile(0.5) != 7 || small.count() != 2 {
		t.Errorf("small: q50 %d, count %d", small.quantile(0.5), small.count())
	}
}

func TestBenchKeyTokensVerify(t *testing.T) {
	is, err := newBenchIssuer()
	if err != nil {
		t.Fatal(err)
	}
	defer is.srv.Close()
	if got := is.key.pub.N.BitLen(); got != 2048 {
		t.Fatalf("modulus is %d bits, want 2048", got)
	}
	tok, err := is.mint(is.claims(time.Now(), time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(tok, ".") != 2 {
		t.Fatalf("not a compact JWS: %q", tok)
	}
	// Verified by the standard library, independently of sign.
	if err := verifyRS256(&is.key.pub, tok); err != nil {
		t.Errorf("minted token: %v", err)
	}
	if err := verifyRS256(&is.key.pub, is.badSignature()); err == nil {
		t.Error("badSignature verifies")
	}
}

func verifyRS256(pub *rsa.PublicKey, token string) error {
	i := strings.LastIndexByte(token, '.')
	sig, err := base64.RawURLEncoding.DecodeString(token[i+1:])
	if err != nil {
		return err
	}
	digest := sha256.Sum256([]byte(token[:i]))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig)
}

func TestBenchStreamHolds(t *testing.T) {
	info := func(c jetstream.StreamConfig, msgs uint64) *jetstream.StreamInfo {
		c.Name = "S"
		return &jetstream.StreamInfo{Config: c, State: jetstream.StreamState{Msgs: msgs, Bytes: msgs * 150}}
	}
	unlimited := jetstream.StreamConfig{MaxMsgs: -1, MaxBytes: -1, MaxMsgsPerSubject: -1, MaxAge: 48 * time.Hour}
	if err := benchStreamHolds(info(unlimited, 5), 1_000_000); err != nil {
		t.Errorf("unlimited stream: %v", err)
	}
	for name, c := range map[string]jetstream.StreamConfig{
		"max_msgs":             {MaxMsgs: 1_000_000},
		"max_msgs_per_subject": {MaxMsgsPerSubject: 1000},
		"max_bytes":            {MaxBytes: 1 << 20},
		"max_age":              {MaxAge: time.Minute},
	} {
		if err := benchStreamHolds(info(c, 5), 1_000_000); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error %v, want one naming it", name, err)
		}
	}
}
