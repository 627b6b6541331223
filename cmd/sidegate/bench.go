package main

// sidegate bench: the load tool of issue 6. It runs sidegate and a
// do-nothing ext_authz server (the floor) as child processes on loopback,
// drives them alternately with the same Envoy-shaped CheckRequest, and
// prints each figure for both side by side, so that sidegate's cost is
// read as a ratio to what gRPC itself costs on the same machine.

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/big"
	"math/bits"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"gopkg.in/yaml.v3"

	"github.com/sidegate/sidegate/authz"
	"github.com/sidegate/sidegate/revocation"
)

const benchUsage = `Usage: sidegate bench [flags]

Starts a do-nothing ext_authz gRPC server (the floor) and sidegate, each as a
child process of this binary on loopback, and drives them alternately with
the same Envoy-shaped CheckRequest carrying an RS256 bearer token:

  closed loop   --concurrency workers over --conns connections, as fast as
                the servers answer: req/s, p50, p99
  open loop     each of --rates, sent on a fixed schedule whatever the
                answers; latency from the scheduled send time

for each of --modes:

  cached        one token, repeated
  unique        pre-minted tokens, each sent to sidegate once
  mixed         the repeated token, and 10% invalid requests: bad signature,
                expired, garbage, no token

Every sidegate answer is checked (valid allowed, invalid denied); any wrong
decision or gRPC error makes the exit status 1. The client reads only each
answer's status unless --decode full: it shares the cores with the servers,
and decoding sidegate's identity headers would take CPU from them that the
floor's empty answer does not. The result is a Markdown
table on stdout (and in --out); progress goes to stderr.

With --revocation, sidegate follows a NATS JetStream stream of revocations
on an embedded server; --revoked N first fills that stream with N jti
revocations (of tokens the bench never sends), so that sidegate starts by
replaying them: the table then reports the publish and replay times and
sidegate's memory with that denylist loaded.

"sidegate bench floor [--listen ADDR]" runs the floor by itself (the bench
starts it so).

Flags:
`

// Defaults keep a full run (3 modes × 4 loads × 2 servers × 2 rounds of
// 3.5 s, plus minting) at about three minutes.
const (
	benchAudience      = "orders-api"
	benchKid           = "bench-rs256"
	benchCookie        = "session"
	benchLateThreshold = time.Millisecond // a send later than this fell behind
	benchChildWait     = 20 * time.Second // start-up and readiness of a child
	// benchMaxRevoked is revocation.capacity's upper bound.
	benchMaxRevoked = 100_000_000
	// benchDefaultCapacity is revocation.capacity's default.
	benchDefaultCapacity = 1_000_000
	// benchRevokedBatch is how many revocations are published before
	// waiting for their acks (and the most in flight).
	benchRevokedBatch = 10_000
)

// benchDrainWait is how long the calls in flight when a run ends are let
// finish before they are cancelled and count as errors (a var for tests).
var benchDrainWait = 5 * time.Second

var benchModes = []string{"cached", "unique", "mixed"}

type benchOptions struct {
	duration, warmup  time.Duration
	concurrency       int
	conns             int
	rates             []int
	modes             []string
	rounds            int
	out               string
	exe               string
	revocation        bool
	revoked           int
	extraConfig       string
	uniqueMaxRate     int
	openWorkers       int
	sidegateLogLevel  string
	cpuProfile        string
	verifier          bool
	fullDecode        bool
	commandLine       string
	progress, results io.Writer
}

func cmdBench(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "floor" {
		return cmdBenchFloor(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, benchUsage)
		fs.PrintDefaults()
	}
	o := benchOptions{progress: stderr, results: stdout}
	fs.DurationVar(&o.duration, "duration", 3*time.Second, "measured time of each run")
	fs.DurationVar(&o.warmup, "warmup", 500*time.Millisecond, "unmeasured load before each run")
	fs.IntVar(&o.concurrency, "concurrency", 32, "closed-loop workers (0: no closed-loop figure)")
	fs.IntVar(&o.conns, "conns", 4, "gRPC connections to each server")
	rates := fs.String("rates", "1000,2000,5000", "open-loop rates in req/s, comma-separated (\"\": none)")
	modes := fs.String("modes", strings.Join(benchModes, ","), "token modes, comma-separated: cached, unique, mixed")
	fs.IntVar(&o.rounds, "rounds", 2, "floor/sidegate alternations per figure")
	fs.StringVar(&o.out, "out", "", "also write the table to this file")
	fs.StringVar(&o.exe, "exe", "", "sidegate binary to run as both children (default: this one)")
	fs.BoolVar(&o.revocation, "revocation", false, "run an embedded NATS server and turn revocation on in sidegate")
	fs.IntVar(&o.revoked, "revoked", 0, "with --revocation: publish this many jti revocations (of tokens the bench never sends) before sidegate starts, to load its denylist")
	fs.StringVar(&o.extraConfig, "extra-config", "", "YAML merged over sidegate's generated configuration, e.g. 'tokens: {leeway: 0s}'")
	fs.IntVar(&o.uniqueMaxRate, "unique-max-rate", 20000, "highest closed-loop rate expected in unique mode; sizes the token pool")
	fs.IntVar(&o.openWorkers, "open-workers", 1000, "open-loop requests in flight at most; a send waiting for one falls behind")
	fs.StringVar(&o.sidegateLogLevel, "sidegate-log-level", "info", "sidegate's --log-level (its warnings and errors are reported)")
	fs.BoolVar(&o.verifier, "verifier", false, "in unique mode, also drive a plain Go RS256 verifier (the floor plus crypto/rsa on each token's signature): the crypto limit")
	decode := fs.String("decode", "status", "how the client reads each answer: status (its status alone, straight from the wire) or full (decoded into a CheckResponse, as a generated gRPC client does)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write sidegate's CPU profile of each figure's first measured run to PREFIX-<mode>-<load>.pprof (turns on debug.pprof; the profile covers --duration rounded to whole seconds, and that run, profiled, still counts in the table)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var bad []string
	if fs.NArg() > 0 {
		bad = append(bad, fmt.Sprintf("unexpected arguments %q", fs.Args()))
	}
	var err error
	if o.rates, err = parseRates(*rates); err != nil {
		bad = append(bad, err.Error())
	}
	for m := range strings.SplitSeq(*modes, ",") {
		if m = strings.TrimSpace(m); m == "" {
			continue
		}
		if !slices.Contains(benchModes, m) {
			bad = append(bad, fmt.Sprintf("--modes: %q is not cached, unique or mixed", m))
		} else if !slices.Contains(o.modes, m) {
			o.modes = append(o.modes, m)
		}
	}
	switch {
	case len(o.modes) == 0:
		bad = append(bad, "--modes: name at least one mode")
	case o.duration <= 0:
		bad = append(bad, "--duration must be positive")
	case o.warmup < 0:
		bad = append(bad, "--warmup must not be negative")
	case o.rounds < 1:
		bad = append(bad, "--rounds must be at least 1")
	case o.conns < 1:
		bad = append(bad, "--conns must be at least 1")
	case o.concurrency < 0:
		bad = append(bad, "--concurrency must not be negative")
	case o.concurrency == 0 && len(o.rates) == 0:
		bad = append(bad, "no load: --concurrency is 0 and --rates is empty")
	case o.openWorkers < 1:
		bad = append(bad, "--open-workers must be at least 1")
	case o.uniqueMaxRate < 1:
		bad = append(bad, "--unique-max-rate must be at least 1")
	case o.revoked < 0 || o.revoked > benchMaxRevoked:
		bad = append(bad, fmt.Sprintf("--revoked must be from 0 to %d", benchMaxRevoked))
	case o.revoked > 0 && !o.revocation:
		bad = append(bad, "--revoked needs --revocation")
	case o.verifier && !slices.Contains(o.modes, "unique"):
		bad = append(bad, "--verifier runs in unique mode only: add unique to --modes")
	}
	switch *decode {
	case "status":
	case "full":
		o.fullDecode = true
	default:
		bad = append(bad, fmt.Sprintf("--decode: %q is not status or full", *decode))
	}
	if o.cpuProfile != "" {
		if fi, err := os.Stat(filepath.Dir(o.cpuProfile)); err != nil || !fi.IsDir() {
			bad = append(bad, fmt.Sprintf("--cpuprofile: no directory %s to write the profiles in", filepath.Dir(o.cpuProfile)))
		}
	}
	if len(bad) > 0 {
		for _, b := range bad {
			fmt.Fprintln(stderr, "sidegate bench:", b)
		}
		return 2
	}
	if o.exe == "" {
		if o.exe, err = os.Executable(); err != nil {
			fmt.Fprintln(stderr, "sidegate bench: cannot find this binary to run it as the servers:", err)
			return 1
		}
	}
	o.commandLine = "sidegate bench"
	if len(args) > 0 {
		o.commandLine += " " + strings.Join(args, " ")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := runBench(ctx, &o)
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		fmt.Fprintln(stderr, "sidegate bench: interrupted")
		return 1
	}
	if err != nil {
		fmt.Fprintln(stderr, "sidegate bench:", err)
		return 1
	}
	if rep.wrong > 0 || rep.errors > 0 {
		fmt.Fprintf(stderr, "sidegate bench: %d wrong decision(s), %d gRPC error(s)\n", rep.wrong, rep.errors)
		return 1
	}
	return 0
}

func parseRates(s string) ([]int, error) {
	var rates []int
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		r, err := strconv.Atoi(f)
		if err != nil || r < 1 || r > 1_000_000 {
			return nil, fmt.Errorf("--rates: %q is not a rate from 1 to 1000000 req/s", f)
		}
		rates = append(rates, r)
	}
	return rates, nil
}

// ---- the floor ----

// floorServer answers every Check with the same OK response and does
// nothing else: the cost of ext_authz over gRPC itself, which no
// authorization server can go below.
type floorServer struct {
	authv3.UnimplementedAuthorizationServer
	ok *authv3.CheckResponse
}

// Check returns one shared response: gRPC only reads it to marshal it.
func (f *floorServer) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return f.ok, nil
}

// verifierServer is the floor plus the one thing no JWT server can skip:
// an RS256 signature check of the bearer token with crypto/rsa, and
// nothing else (no JSON, no claims, no cache). It is the crypto limit
// that unique tokens are measured against.
type verifierServer struct {
	authv3.UnimplementedAuthorizationServer
	pub        *rsa.PublicKey
	ok, denied *authv3.CheckResponse
}

func (v *verifierServer) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	tok, _ := strings.CutPrefix(req.GetAttributes().GetRequest().GetHttp().GetHeaders()["authorization"], "Bearer ")
	dot := strings.LastIndexByte(tok, '.')
	if dot < 0 {
		return v.denied, nil
	}
	sig, err := base64.RawURLEncoding.DecodeString(tok[dot+1:])
	if err != nil {
		return v.denied, nil
	}
	digest := sha256.Sum256([]byte(tok[:dot]))
	if rsa.VerifyPKCS1v15(v.pub, crypto.SHA256, digest[:], sig) != nil {
		return v.denied, nil
	}
	return v.ok, nil
}

// cmdBenchFloor is "sidegate bench floor": the floor as its own process,
// so that its CPU is read from /proc like sidegate's. It logs one JSON
// line with its address ("grpc"), as sidegate serve does. With
// --rs256-key it is the plain RS256 verifier instead.
func cmdBenchFloor(args []string, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench floor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "gRPC listen address")
	keyFile := fs.String("rs256-key", "", "verify each bearer token's RS256 signature with this PEM public key")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	ok := &authv3.CheckResponse{Status: &rpcstatus.Status{}}
	var srv authv3.AuthorizationServer = &floorServer{ok: ok}
	if *keyFile != "" {
		pub, err := readRSAPublicKey(*keyFile)
		if err != nil {
			log.Error("--rs256-key", "err", err)
			return 1
		}
		srv = &verifierServer{pub: pub, ok: ok, denied: &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)}}}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Error("cannot listen", "err", err)
		return 1
	}
	// sidegate's own server options, so that the two servers differ only
	// in what Check does.
	gs := grpc.NewServer(authz.ServerOptions()...)
	authv3.RegisterAuthorizationServer(gs, srv)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		gs.Stop()
	}()
	log.Info("floor started", "grpc", ln.Addr().String())
	if err := gs.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		log.Error("serve", "err", err)
		return 1
	}
	return 0
}

// readRSAPublicKey reads a PEM "PUBLIC KEY" (PKIX) RSA key.
func readRSAPublicKey(file string) (*rsa.PublicKey, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%s: no PEM PUBLIC KEY block", file)
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	pub, ok := key.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s: a %T, not an RSA key", file, key)
	}
	return pub, nil
}

// ---- the signing key and tokens ----

// benchKey is an RS256 signing key made of eight 256-bit primes. Its
// modulus is 2048 bits and its public exponent 65537, so verifying its
// signatures costs exactly what verifying any RSA-2048 signature costs
// (the verifier sees only n and e); signing with CRT over eight small
// primes is about five times faster than with two 1024-bit primes (about
// 0.2 ms here instead of 1 ms with math/big, 1.6 ms with crypto/rsa),
// which is what lets unique mode mint a pool of a hundred thousand
// tokens in seconds. It is variable-time math/big arithmetic on a
// throw-away key: fine for a benchmark, never for real keys.
type benchKey struct {
	pub    rsa.PublicKey
	primes []*big.Int
	exps   []*big.Int // d mod (p-1)
	prods  []*big.Int // product of the primes before this one
	coefs  []*big.Int // prods[i]^-1 mod primes[i]
}

func newBenchKey() (*benchKey, error) {
	const nprimes, size = 8, 2048
	e := big.NewInt(65537)
	one := big.NewInt(1)
	for attempt := 0; attempt < 1000; attempt++ {
		k := &benchKey{}
		n := big.NewInt(1)
		usable := true
		for len(k.primes) < nprimes && usable {
			p, err := rand.Prime(rand.Reader, size/nprimes)
			if err != nil {
				return nil, err
			}
			d := new(big.Int).ModInverse(e, new(big.Int).Sub(p, one))
			usable = d != nil && !slices.ContainsFunc(k.primes, func(q *big.Int) bool { return q.Cmp(p) == 0 })
			k.primes, k.exps = append(k.primes, p), append(k.exps, d)
			n.Mul(n, p)
		}
		// rand.Prime sets each prime's top two bits, which leaves the
		// product a few bits short of 2048 now and then.
		if !usable || n.BitLen() != size {
			continue
		}
		k.pub = rsa.PublicKey{N: n, E: 65537}
		m := big.NewInt(1)
		for _, p := range k.primes {
			k.prods = append(k.prods, new(big.Int).Set(m))
			k.coefs = append(k.coefs, new(big.Int).ModInverse(m, p)) // 1 for the first prime, unused
			m.Mul(m, p)
		}
		// Check against the standard library before any token depends on it.
		digest := sha256.Sum256([]byte("sidegate bench self-check"))
		if err := rsa.VerifyPKCS1v15(&k.pub, crypto.SHA256, digest[:], k.sign(digest[:])); err != nil {
			return nil, fmt.Errorf("bench: signing self-check: %w", err)
		}
		return k, nil
	}
	return nil, errors.New("bench: could not make a 2048-bit signing key")
}

// sha256DigestInfo is the DER prefix of a SHA-256 DigestInfo (RFC 8017 §9.2).
var sha256DigestInfo = []byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}

// sign is RSASSA-PKCS1-v1_5 over a SHA-256 digest, with Garner's CRT.
func (k *benchKey) sign(digest []byte) []byte {
	size := k.pub.Size()
	em := make([]byte, size) // 0x00 0x01 FF…FF 0x00 DigestInfo digest
	em[1] = 1
	tail := len(sha256DigestInfo) + len(digest)
	for i := 2; i < size-tail-1; i++ {
		em[i] = 0xff
	}
	copy(em[size-tail:], sha256DigestInfo)
	copy(em[size-len(digest):], digest)
	m := new(big.Int).SetBytes(em)
	x := new(big.Int).Exp(m, k.exps[0], k.primes[0])
	t, mi := new(big.Int), new(big.Int)
	for i := 1; i < len(k.primes); i++ {
		p := k.primes[i]
		mi.Exp(m, k.exps[i], p)
		t.Sub(mi, x)
		t.Mul(t, k.coefs[i]).Mod(t, p)
		t.Mul(t, k.prods[i])
		x.Add(x, t)
	}
	return x.FillBytes(make([]byte, size))
}

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// benchClaims are an access token's usual claims, in a fixed order so
// that every token has the same shape and, give or take a digit, size.
type benchClaims struct {
	Iss   string   `json:"iss"`
	Sub   string   `json:"sub"`
	Aud   string   `json:"aud"`
	Exp   int64    `json:"exp"`
	Iat   int64    `json:"iat"`
	Nbf   int64    `json:"nbf"`
	Jti   string   `json:"jti"`
	Scope string   `json:"scope"`
	Email string   `json:"email"`
	Name  string   `json:"name"`
	Roles []string `json:"roles"`
}

// benchIssuer is the identity provider: the key, its JWKS served over real
// HTTP on loopback, and token minting.
type benchIssuer struct {
	key     *benchKey
	url     string
	header  string // base64url of the JOSE header
	srv     *http.Server
	fetches atomic.Int64
}

func newBenchIssuer() (*benchIssuer, error) {
	key, err := newBenchKey()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: issuer: %w", err)
	}
	is := &benchIssuer{key: key, url: "http://" + ln.Addr().String(),
		header: b64url([]byte(`{"alg":"RS256","kid":"` + benchKid + `","typ":"JWT"}`))}
	jwks, err := json.Marshal(map[string]any{"keys": []any{map[string]string{
		"kty": "RSA", "kid": benchKid, "alg": "RS256", "use": "sig",
		"n": b64url(key.pub.N.Bytes()), "e": b64url(big.NewInt(int64(key.pub.E)).Bytes()),
	}}})
	if err != nil {
		ln.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		is.fetches.Add(1)
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Write(jwks)
	})
	is.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go is.srv.Serve(ln)
	return is, nil
}

func (is *benchIssuer) claims(now time.Time, ttl time.Duration) benchClaims {
	return benchClaims{
		Iss: is.url, Sub: "usr_" + rand.Text()[:12], Aud: benchAudience,
		Exp: now.Add(ttl).Unix(), Iat: now.Add(-time.Minute).Unix(), Nbf: now.Add(-time.Minute).Unix(),
		Jti: rand.Text(), Scope: "orders:read orders:write",
		Email: "jane.doe@example.com", Name: "Jane Doe", Roles: []string{"customer"},
	}
}

// signingInput is base64url(header).base64url(payload).
func (is *benchIssuer) signingInput(c benchClaims) (string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	return is.header + "." + b64url(payload), nil
}

func (is *benchIssuer) mint(c benchClaims) (string, error) {
	input, err := is.signingInput(c)
	if err != nil {
		return "", err
	}
	digest := sha256.Sum256([]byte(input))
	return input + "." + b64url(is.key.sign(digest[:])), nil
}

// mintMany mints n tokens valid for ttl on every CPU.
func (is *benchIssuer) mintMany(ctx context.Context, n int, ttl time.Duration) ([]string, error) {
	out := make([]string, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	now := time.Now()
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n && ctx.Err() == nil; i = int(next.Add(1) - 1) {
				tok, err := is.mint(is.claims(now, ttl))
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				out[i] = tok
			}
		})
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return out, firstErr
}

// badSignature is a well-formed token for the bench's key and kid whose
// signature is random bytes: the verifier has to do the RSA work to refuse
// it. Each is distinct, as forged tokens in an attack would be.
func (is *benchIssuer) badSignature() string {
	input, _ := is.signingInput(is.claims(time.Now(), time.Hour)) // marshalling this struct cannot fail
	sig := make([]byte, is.key.pub.Size())
	rand.Read(sig)
	return input + "." + b64url(sig)
}

// garbage is a distinct non-JWT credential of about a token's length.
func garbage() string {
	b := make([]byte, 96)
	rand.Read(b)
	return b64url(b)
}

// ---- requests ----

// benchHeaders are a browser request as Envoy passes it to ext_authz:
// pseudo-headers, the usual browser headers, Envoy's own, tracing, a
// cookie without a session token, and the bearer token.
func benchHeaders(token string) map[string]string {
	return map[string]string{
		":authority":                     "orders.example.com",
		":method":                        "GET",
		":path":                          "/api/v1/orders?status=open&limit=20",
		":scheme":                        "https",
		"user-agent":                     "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
		"accept":                         "application/json, text/plain, */*",
		"accept-encoding":                "gzip, deflate, br, zstd",
		"accept-language":                "en-GB,en;q=0.9",
		"x-request-id":                   "8a6f4c3e-1b2d-4e5f-9a8b-7c6d5e4f3a2b",
		"x-forwarded-for":                "203.0.113.42",
		"x-forwarded-proto":              "https",
		"x-envoy-external-address":       "203.0.113.42",
		"x-envoy-expected-rq-timeout-ms": "15000",
		"traceparent":                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"cookie":                         "_ga=GA1.2.1234567890.1700000000; theme=dark; consent=analytics%3Dno",
		"authorization":                  "Bearer " + token,
	}
}

func socketAddr(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
}

// benchRequest is the CheckRequest Envoy sends for that request: peers,
// time, and the HTTP attributes with the headers map.
func benchRequest(token string) *authv3.CheckRequest {
	h := benchHeaders(token)
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: socketAddr("10.244.1.17", 52344)},
		Destination: &authv3.AttributeContext_Peer{Address: socketAddr("10.244.2.9", 8080)},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.Now(),
			Http: &authv3.AttributeContext_HttpRequest{
				Id: "13690189316398519123", Method: h[":method"], Headers: h, Path: h[":path"],
				Host: h[":authority"], Scheme: h[":scheme"], Protocol: "HTTP/1.1",
			},
		},
	}}
}

// tokenSource says what each request carries. next returns the token (""
// for none), whether sidegate must allow it, and false once a pool of
// single-use tokens is spent.
type tokenSource interface {
	next() (token string, valid bool, ok bool)
}

type repeatedToken string

func (t repeatedToken) next() (string, bool, bool) { return string(t), true, true }

// poolSource hands out each pool token once; with wrap (for the floor,
// which does not look at tokens) it starts over instead of running out.
type poolSource struct {
	pool   []string
	cursor *atomic.Int64 // one per run: its warm-up and measured part
	wrap   bool
}

func (p poolSource) next() (string, bool, bool) {
	i := p.cursor.Add(1) - 1
	if p.wrap {
		i %= int64(len(p.pool))
	} else if i >= int64(len(p.pool)) {
		return "", true, false
	}
	return p.pool[i], true, true
}

// mixedSource is the repeated valid token, with every tenth request
// invalid, in turn: a bad signature, an expired token, garbage, no token.
type mixedSource struct {
	valid   string
	expired []string
	is      *benchIssuer
	seq     atomic.Int64
}

func (m *mixedSource) next() (string, bool, bool) {
	n := m.seq.Add(1)
	if n%10 != 0 {
		return m.valid, true, true
	}
	switch (n / 10) % 4 {
	case 0:
		return m.is.badSignature(), false, true
	case 1:
		return m.expired[int(n/40)%len(m.expired)], false, true
	case 2:
		return garbage(), false, true
	}
	return "", false, true
}

// ---- histogram ----

// histSub buckets per power of two: a recorded value is off by at most
// half a bucket, 1/256 = 0.4% of the value, well inside the 1% the
// percentiles need. Values below 2·histSub ns are exact.
const (
	histSubBits = 7
	histSub     = 1 << histSubBits
	histMaxExp  = 40 // values are clamped at 2^40 ns (18 minutes)
)

// histogram is a fixed log-bucket (HDR-like) latency histogram in
// nanoseconds. record is safe for concurrent use: one histogram per run,
// shared by its workers, costs an atomic add per request and no merging.
type histogram struct {
	counts [2*histSub + (histMaxExp-histSubBits-1)*histSub]atomic.Uint64
	max    atomic.Int64
}

func histBucket(v uint64) int {
	if v < 2*histSub {
		return int(v)
	}
	shift := bits.Len64(v) - histSubBits - 1 // v>>shift is in [histSub, 2·histSub)
	return (shift+1)*histSub + int(v>>shift) - histSub
}

// histMid is the middle of bucket i.
func histMid(i int) float64 {
	if i < 2*histSub {
		return float64(i)
	}
	shift := i/histSub - 1
	lo := uint64(i%histSub+histSub) << shift
	return float64(lo) + float64(uint64(1)<<shift)/2
}

func (h *histogram) record(d time.Duration) {
	v := max(int64(d), 0)
	if v >= 1<<histMaxExp {
		v = 1<<histMaxExp - 1
	}
	h.counts[histBucket(uint64(v))].Add(1)
	for m := h.max.Load(); v > m && !h.max.CompareAndSwap(m, v); m = h.max.Load() {
	}
}

func (h *histogram) add(o *histogram) {
	for i := range o.counts {
		if c := o.counts[i].Load(); c > 0 {
			h.counts[i].Add(c)
		}
	}
	if m := o.max.Load(); m > h.max.Load() {
		h.max.Store(m)
	}
}

func (h *histogram) count() uint64 {
	var n uint64
	for i := range h.counts {
		n += h.counts[i].Load()
	}
	return n
}

// quantile returns the q-quantile (0 < q ≤ 1), or 0 when empty.
func (h *histogram) quantile(q float64) time.Duration {
	n := h.count()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	var seen uint64
	for i := range h.counts {
		if seen += h.counts[i].Load(); seen >= max(rank, 1) {
			return time.Duration(math.Min(histMid(i), float64(h.max.Load())))
		}
	}
	return time.Duration(h.max.Load())
}

// ---- child processes ----

// child is a server process started from this binary. Both children log
// JSON on stderr; the first line with a "grpc" field carries the
// addresses they bound (they listen on port 0).
type child struct {
	name  string
	cmd   *exec.Cmd
	done  chan struct{} // closed when the process has exited
	err   error         // Wait's result, once done
	addrs chan map[string]string
	admin string // sidegate's admin listener, once known

	mu       sync.Mutex
	tail     []string       // last log lines, for error messages
	warnings map[string]int // WARN and ERROR messages, counted
	sent     bool
	// replayTook is the "took" of sidegate's "replay complete" log line.
	replayTook string
}

func startChild(name, exe string, args ...string) (*child, error) {
	c := &child{name: name, done: make(chan struct{}), addrs: make(chan map[string]string, 1), warnings: map[string]int{}}
	c.cmd = exec.Command(exe, args...)
	c.cmd.Stdout = io.Discard
	c.cmd.Stderr = &lineWriter{fn: c.logLine}
	c.cmd.SysProcAttr = benchProcAttr()
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s: %w", name, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *child) logLine(line string) {
	var rec map[string]any
	json.Unmarshal([]byte(line), &rec) // not JSON: kept in the tail only
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tail = append(c.tail, line); len(c.tail) > 20 {
		c.tail = c.tail[1:]
	}
	if msg, _ := rec["msg"].(string); strings.HasPrefix(msg, "revocation: replay complete") {
		switch took := rec["took"].(type) {
		case float64: // slog's JSON handler writes durations in ns
			c.replayTook = time.Duration(took).Round(time.Millisecond).String()
		case string:
			c.replayTook = took
		}
	}
	if lvl, _ := rec["level"].(string); lvl == "WARN" || lvl == "ERROR" {
		msg, _ := rec["msg"].(string)
		c.warnings[lvl+" "+msg]++
	}
	if grpcAddr, ok := rec["grpc"].(string); ok && !c.sent {
		c.sent = true
		addrs := map[string]string{"grpc": grpcAddr}
		if admin, ok := rec["admin"].(string); ok {
			addrs["admin"] = admin
		}
		c.addrs <- addrs
	}
}

func (c *child) logTail() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.tail, "\n")
}

// waitAddrs waits for the line with the bound addresses.
func (c *child) waitAddrs(ctx context.Context) (map[string]string, error) {
	t := time.NewTimer(benchChildWait)
	defer t.Stop()
	select {
	case a := <-c.addrs:
		return a, nil
	case <-c.done:
		return nil, fmt.Errorf("bench: %s exited at start-up (%v); its log:\n%s", c.name, c.err, c.logTail())
	case <-t.C:
		return nil, fmt.Errorf("bench: %s did not report its addresses within %s; its log:\n%s", c.name, benchChildWait, c.logTail())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// exited reports a child that died during the run.
func (c *child) exited() error {
	select {
	case <-c.done:
		return fmt.Errorf("bench: %s exited (%v); its log:\n%s", c.name, c.err, c.logTail())
	default:
		return nil
	}
}

// stop asks the child to shut down, then kills it if it takes too long.
func (c *child) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		c.cmd.Process.Kill()
		<-c.done
	}
}

// lineWriter calls fn for each complete line written to it. exec.Cmd
// writes to it from one goroutine.
type lineWriter struct {
	fn  func(string)
	buf []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.fn(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

// procCPU is the process's user+system CPU time from /proc/PID/stat.
// utime and stime (fields 14 and 15) are in USER_HZ ticks, which the
// kernel fixes at 100 per second for this interface: 10 ms resolution.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc stat format")
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3
	if len(f) < 13 {
		return 0, errors.New("unexpected /proc stat format")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("unexpected /proc stat format")
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// procStatusMiB is a memory field of /proc/PID/status (VmHWM: peak RSS;
// VmRSS: RSS now) in MiB, or "" when unknown.
func procStatusMiB(pid int, field string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			if kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB")); err == nil {
				return fmt.Sprintf("%.0f MiB", float64(kb)/1024)
			}
		}
	}
	return ""
}

// ---- targets and runs ----

// target is one server under load: its process and gRPC connections.
type target struct {
	name  string
	proc  *child
	conns []*grpc.ClientConn
	codec grpc.CallOption // how answers are read: see answerCodec
	// decides: answers are checked against the token's validity; the
	// floor allows everything and is only checked for answering OK.
	decides bool
}

func dialTarget(name, addr string, n int, proc *child, decides, fullDecode bool) (*target, error) {
	t := &target{name: name, proc: proc, decides: decides, codec: grpc.ForceCodecV2(answerCodec{full: fullDecode})}
	for range n {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.close()
			return nil, fmt.Errorf("bench: dial %s at %s: %w", name, addr, err)
		}
		t.conns = append(t.conns, cc)
	}
	return t, nil
}

// check makes one Check call on connection i (modulo their number) and
// reads its answer into a.
func (t *target) check(ctx context.Context, i int, req *authv3.CheckRequest, a *answer) error {
	return t.conns[i%len(t.conns)].Invoke(ctx, authv3.Authorization_Check_FullMethodName, req, a, t.codec)
}

func (t *target) close() {
	for _, cc := range t.conns {
		cc.Close()
	}
}

// runResult is one measured run of one server.
type runResult struct {
	n, wrong, errors, behind int64
	elapsed                  time.Duration // time the load was applied
	cpu                      time.Duration // of the server process; <0 unknown
	clientCPU                time.Duration // of this process, the client; <0 unknown
	hist                     *histogram
	poolOut                  time.Duration // >0: unique tokens ran out this far into the run
	examples                 []string      // first wrong answers
}

// runStats is shared by a run's workers.
type runStats struct {
	n, wrong, errs, behind atomic.Int64
	hist                   histogram
	mu                     sync.Mutex
	examples               []string
}

// answer checks one answer and records its latency. An answer that came
// after the measured window (measured false) is not counted, unless it is
// an error (such as a call cancelled after the grace of drain).
func (s *runStats) answer(t *target, a *answer, err error, valid bool, lat time.Duration, measured bool) {
	if measured {
		s.n.Add(1)
		s.hist.record(lat)
	} else if err == nil {
		return
	}
	var bad string
	switch {
	case err != nil:
		s.errs.Add(1)
		bad = "gRPC error: " + err.Error()
	case t.decides && (a.code == 0) != valid:
		s.wrong.Add(1)
		bad = fmt.Sprintf("valid=%v token answered code %d %q", valid, a.code, a.message)
	case !t.decides && a.code != 0:
		s.wrong.Add(1)
		bad = fmt.Sprintf("the floor answered code %d", a.code)
	default:
		return
	}
	s.mu.Lock()
	if len(s.examples) < 3 {
		s.examples = append(s.examples, t.name+": "+bad)
	}
	s.mu.Unlock()
}

func (s *runStats) result(elapsed, cpu, clientCPU time.Duration) runResult {
	return runResult{n: s.n.Load(), wrong: s.wrong.Load(), errors: s.errs.Load(), behind: s.behind.Load(),
		elapsed: elapsed, cpu: cpu, clientCPU: clientCPU, hist: &s.hist, examples: s.examples}
}

// worker is one request in flight at a time: its own CheckRequest, whose
// token and request id it sets before each call (gRPC has marshalled the
// message by the time Check returns).
type worker struct {
	req *authv3.CheckRequest
	ans answer
	h   map[string]string
	id  uint64
	buf []byte
}

func newWorker(template *authv3.CheckRequest, id int) *worker {
	req := proto.Clone(template).(*authv3.CheckRequest)
	return &worker{req: req, h: req.Attributes.Request.Http.Headers, id: uint64(id) << 40}
}

func (w *worker) set(token string) {
	if token == "" {
		delete(w.h, "authorization")
	} else {
		w.h["authorization"] = "Bearer " + token
	}
	// Envoy sends a fresh x-request-id on every request.
	w.id++
	w.buf = strconv.AppendUint(append(w.buf[:0], "8a6f4c3e-1b2d-4e5f-9a8b-"...), w.id, 16)
	w.h["x-request-id"] = string(w.buf)
}

// cpuReader samples the server's CPU at the start and end of a run.
func cpuReader(t *target) func() time.Duration {
	if t.proc == nil { // an in-process server, in tests
		return func() time.Duration { return -1 }
	}
	return pidCPUReader(t.proc.cmd.Process.Pid)
}

// pidCPUReader returns a function that reports the CPU time process pid
// has used since pidCPUReader was called, or -1 if unknown.
func pidCPUReader(pid int) func() time.Duration {
	before, err := procCPU(pid)
	return func() time.Duration {
		after, err2 := procCPU(pid)
		if err != nil || err2 != nil {
			return -1
		}
		return after - before
	}
}

// drain waits for a run's workers once it has stopped issuing requests,
// and after benchDrainWait cancels the calls still in flight (a stuck
// server must not hang the bench); those then count as errors.
func drain(wg *sync.WaitGroup, cancel context.CancelFunc) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(benchDrainWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		cancel()
		<-done
	}
}

// closedLoop runs c workers, each sending its next request as soon as
// the last one is answered, for d. When d is up no new request is sent;
// those in flight are let finish (see drain) but, answered after the
// window, are not counted. A spent token pool ends the run early: the
// requests already sent are then all counted, to the last answer.
func closedLoop(ctx context.Context, t *target, src tokenSource, template *authv3.CheckRequest, c int, d time.Duration) runResult {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var s runStats
	var stop atomic.Bool // no new requests
	var end atomic.Int64 // >0: the window closed this far into the run
	var poolOut atomic.Int64
	spent := make(chan struct{})
	var spentOnce sync.Once
	var wg sync.WaitGroup
	go1 := make(chan struct{}) // all workers start together, once made
	var start time.Time
	for i := range c {
		w := newWorker(template, i)
		wg.Go(func() {
			<-go1
			for !stop.Load() {
				tok, valid, ok := src.next()
				if !ok {
					poolOut.CompareAndSwap(0, int64(time.Since(start)))
					stop.Store(true)
					spentOnce.Do(func() { close(spent) })
					return
				}
				w.set(tok)
				t0 := time.Now()
				err := t.check(ctx, i, w.req, &w.ans)
				now := time.Now()
				e := end.Load()
				s.answer(t, &w.ans, err, valid, now.Sub(t0), e == 0 || now.Sub(start) <= time.Duration(e))
			}
		})
	}
	cpu, clientCPU := cpuReader(t), pidCPUReader(os.Getpid())
	start = time.Now()
	timer := time.NewTimer(d)
	defer timer.Stop()
	close(go1)
	select {
	case <-timer.C:
	case <-ctx.Done():
	case <-spent:
	}
	if poolOut.Load() == 0 {
		end.Store(max(int64(time.Since(start)), 1))
	}
	stop.Store(true)
	drain(&wg, cancel)
	elapsed := time.Since(start)
	if e := end.Load(); e > 0 {
		elapsed = time.Duration(e)
	}
	r := s.result(elapsed, cpu(), clientCPU())
	if po := time.Duration(poolOut.Load()); po > 0 {
		r.poolOut = po
	}
	return r
}

// job is one open-loop send: when it was due (since the run's start) and
// what it carries.
type job struct {
	due   time.Duration
	token string
	valid bool
}

// openLoop sends rate requests per second on a fixed schedule for d,
// whether or not earlier ones were answered. Latency is measured from the
// scheduled time, so a server (or client) that falls behind pays for the
// wait of every request queued behind it (no coordinated omission).
func openLoop(ctx context.Context, t *target, src tokenSource, template *authv3.CheckRequest, rate, workers int, d time.Duration) runResult {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var s runStats
	var wg sync.WaitGroup
	// Unbuffered: when every worker is busy the dispatcher waits, and the
	// sends it could not make on time count as behind.
	jobs := make(chan job)
	// The workers are made and waiting before the clock starts: a
	// thousand request clones take milliseconds, which the first sends
	// would otherwise carry as lateness.
	var start time.Time // set before the first job is sent, read after
	for i := range workers {
		w := newWorker(template, i)
		wg.Go(func() {
			for j := range jobs {
				w.set(j.token)
				err := t.check(ctx, i, w.req, &w.ans)
				// Every request sent in the window counts, however late
				// its answer: leaving out the slowest would understate
				// the latencies of a server that fell behind.
				s.answer(t, &w.ans, err, j.valid, time.Since(start)-j.due, true)
			}
		})
	}
	var poolOut time.Duration
	end := d
	cpu, clientCPU := cpuReader(t), pidCPUReader(os.Getpid())
	start = time.Now()
	func() {
		sleep, release := preciseSleeper()
		defer release()
		for i := 0; ; i++ {
			due := time.Duration(float64(i) * float64(time.Second) / float64(rate))
			if due >= d || (i%64 == 0 && ctx.Err() != nil) {
				return
			}
			if wait := due - time.Since(start); wait > 0 {
				sleep(wait)
			}
			tok, valid, ok := src.next()
			if !ok {
				poolOut, end = due, due
				return
			}
			jobs <- job{due: due, token: tok, valid: valid}
			if time.Since(start)-due > benchLateThreshold {
				s.behind.Add(1)
			}
		}
	}()
	close(jobs)
	drain(&wg, cancel)
	r := s.result(end, cpu(), clientCPU())
	r.poolOut = poolOut
	return r
}

// ---- the whole bench ----

// benchLoad is a closed-loop (rate 0) or open-loop load.
type benchLoad struct{ rate int }

func (l benchLoad) label(o *benchOptions) string {
	if l.rate == 0 {
		return fmt.Sprintf("closed, %d workers / %d conns", o.concurrency, o.conns)
	}
	return fmt.Sprintf("open, %d/s", l.rate)
}

// slug names the load in a file name: "closed" or "open2000".
func (l benchLoad) slug() string {
	if l.rate == 0 {
		return "closed"
	}
	return fmt.Sprintf("open%d", l.rate)
}

// figure is one table row: each server's runs, one per round.
type figure struct {
	mode string
	load benchLoad
	runs [3][]runResult // [floor, sidegate, verifier]
}

type benchReport struct {
	wrong, errors int64
}

func (o *benchOptions) loads() []benchLoad {
	var ls []benchLoad
	if o.concurrency > 0 {
		ls = append(ls, benchLoad{})
	}
	for _, r := range o.rates {
		ls = append(ls, benchLoad{rate: r})
	}
	return ls
}

// poolShares is how many unique tokens each of sidegate's unique-mode
// runs needs, load by load and round by round: every request, warm-up
// included, with the closed loop taken at --unique-max-rate. Each run has
// its own share, so that one which outruns its estimate ends early
// instead of eating the tokens of the runs after it.
func (o *benchOptions) poolShares() [][]int {
	secs := (o.warmup + o.duration).Seconds()
	var shares [][]int
	for _, l := range o.loads() {
		rate := l.rate
		if rate == 0 {
			rate = o.uniqueMaxRate
		}
		per := make([]int, o.rounds)
		for r := range per {
			per[r] = int(float64(rate)*secs*1.05) + 50
		}
		shares = append(shares, per)
	}
	return shares
}

func (o *benchOptions) logf(format string, args ...any) {
	fmt.Fprintf(o.progress, format+"\n", args...)
}

// sidegateConfig is the generated configuration: the bench's issuer,
// listeners on port 0, bearer tokens and a session cookie, two claim
// headers and the payload header, revocation only if asked; then
// --extra-config merged over it.
func (o *benchOptions) sidegateConfig(issuer, natsURL string) ([]byte, error) {
	cfg := map[string]any{
		"listen": map[string]any{"grpc": "127.0.0.1:0", "http": "127.0.0.1:0", "admin": "127.0.0.1:0"},
		"issuers": []any{map[string]any{
			"issuer": issuer, "jwks_uri": issuer + "/jwks",
			"audiences": []any{benchAudience}, "algorithms": []any{"RS256"},
		}},
		"tokens":  map[string]any{"bearer": true, "cookies": []any{benchCookie}},
		"forward": map[string]any{"claims": map[string]any{"x-user-id": "sub", "x-user-email": "email"}},
	}
	if natsURL != "" {
		rev := map[string]any{"nats": map[string]any{"url": natsURL, "create_stream": true}}
		// The denylist is sized for at least the --revoked entries it
		// will hold (sidegate's default, a million, when that is more).
		if o.revoked > benchDefaultCapacity {
			rev["capacity"] = o.revoked
		}
		cfg["revocation"] = rev
	}
	if o.cpuProfile != "" {
		cfg["debug"] = map[string]any{"pprof": true}
	}
	if o.extraConfig != "" {
		var extra map[string]any
		if err := yaml.Unmarshal([]byte(o.extraConfig), &extra); err != nil {
			return nil, fmt.Errorf("--extra-config: %w", err)
		}
		mergeYAML(cfg, extra)
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	// Check here, so that a bad --extra-config is one clear message and
	// not a child that exits at start-up.
	if _, err := ParseConfig(data); err != nil {
		return nil, fmt.Errorf("the generated sidegate configuration: %w\n%s", err, data)
	}
	return data, nil
}

// mergeYAML sets every key of src in dst, recursing into mappings.
func mergeYAML(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				mergeYAML(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

// runBench runs everything and prints the table. Wrong decisions are in
// the report; an error means the bench itself could not run.
func runBench(ctx context.Context, o *benchOptions) (benchReport, error) {
	began := time.Now()
	var rep benchReport
	is, err := newBenchIssuer()
	if err != nil {
		return rep, err
	}
	defer is.srv.Close()

	validTok, err := is.mint(is.claims(time.Now(), 2*time.Hour))
	if err != nil {
		return rep, err
	}
	var pool []string
	var mintTime time.Duration
	shares := o.poolShares()
	if slices.Contains(o.modes, "unique") {
		n := 0
		for _, per := range shares {
			for _, k := range per {
				n += k
			}
		}
		o.logf("minting %d unique RS256 tokens on %d CPUs…", n, runtime.GOMAXPROCS(0))
		t0 := time.Now()
		if pool, err = is.mintMany(ctx, n, 2*time.Hour); err != nil {
			return rep, fmt.Errorf("minting: %w", err)
		}
		mintTime = time.Since(t0)
		o.logf("minted in %s", mintTime.Round(100*time.Millisecond))
	}
	expired := make([]string, 64)
	for i := range expired {
		if expired[i], err = is.mint(is.claims(time.Now().Add(-3*time.Hour), time.Hour)); err != nil {
			return rep, err
		}
	}

	var natsURL string
	if o.revocation {
		url, stopNATS, err := startDevNATS()
		if err != nil {
			return rep, fmt.Errorf("embedded NATS: %w", err)
		}
		defer stopNATS()
		natsURL = url
	}
	cfgData, err := o.sidegateConfig(is.url, natsURL)
	if err != nil {
		return rep, err
	}
	var revoked revokedStats
	if o.revoked > 0 {
		if revoked, err = o.publishRevoked(ctx, cfgData, is.url); err != nil {
			return rep, err
		}
	}
	dir, err := os.MkdirTemp("", "sidegate-bench-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)
	cfgPath := filepath.Join(dir, "sidegate.yaml")
	if err := os.WriteFile(cfgPath, cfgData, 0o600); err != nil {
		return rep, err
	}

	fp, err := startChild("floor", o.exe, "bench", "floor", "--listen", "127.0.0.1:0")
	if err != nil {
		return rep, err
	}
	defer fp.stop()
	var vp *child   // the plain RS256 verifier, with --verifier in unique mode
	if o.verifier { // unique is in o.modes: the flags were checked
		der, err := x509.MarshalPKIXPublicKey(&is.key.pub)
		if err != nil {
			return rep, err
		}
		keyPath := filepath.Join(dir, "rs256.pem")
		if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
			return rep, err
		}
		if vp, err = startChild("verifier", o.exe, "bench", "floor", "--listen", "127.0.0.1:0", "--rs256-key", keyPath); err != nil {
			return rep, err
		}
		defer vp.stop()
	}
	sgStart := time.Now()
	sp, err := startChild("sidegate", o.exe, "serve", "--config", cfgPath, "--log-format", "json", "--log-level", o.sidegateLogLevel)
	if err != nil {
		return rep, err
	}
	defer sp.stop()
	fa, err := fp.waitAddrs(ctx)
	if err != nil {
		return rep, err
	}
	sa, err := sp.waitAddrs(ctx)
	if err != nil {
		return rep, err
	}
	if sp.admin = sa["admin"]; sp.admin == "" {
		return rep, errors.New("bench: sidegate did not log its admin address")
	}
	// A full denylist is replayed before /readyz answers 200: allow
	// for it, about 50 µs an event at worst.
	readyWait := benchChildWait + time.Duration(o.revoked)*50*time.Microsecond
	if o.revoked > 0 {
		o.logf("sidegate (pid %d) replaying %d revocations…", sp.cmd.Process.Pid, o.revoked)
	}
	if err := waitSidegateReady(ctx, sp, "http://"+sp.admin+"/readyz", readyWait); err != nil {
		return rep, err
	}
	readyAfter := time.Since(sgStart)
	readyRSS := procStatusMiB(sp.cmd.Process.Pid, "VmRSS")
	readyPeak := procStatusMiB(sp.cmd.Process.Pid, "VmHWM") // start-up (and replay) only
	if o.revoked > 0 {
		sp.mu.Lock()
		revoked.replayTook = sp.replayTook
		sp.mu.Unlock()
		revoked.entries = sidegateMetric(ctx, sp.admin, `sidegate_revocation_entries{kind="jti"}`)
		o.logf("sidegate ready %s after its start (replay took %s by its log), %s jti entries in its denylist; RSS now %s, peak so far %s",
			readyAfter.Round(time.Millisecond), orDash(revoked.replayTook), orDash(revoked.entries), orDash(readyRSS), orDash(readyPeak))
	}
	floor, err := dialTarget("floor", fa["grpc"], o.conns, fp, false, o.fullDecode)
	if err != nil {
		return rep, err
	}
	defer floor.close()
	sg, err := dialTarget("sidegate", sa["grpc"], o.conns, sp, true, o.fullDecode)
	if err != nil {
		return rep, err
	}
	defer sg.close()
	o.logf("floor (pid %d) on %s, sidegate (pid %d) on %s", fp.cmd.Process.Pid, fa["grpc"], sp.cmd.Process.Pid, sa["grpc"])
	var verifier *target
	if vp != nil {
		va, err := vp.waitAddrs(ctx)
		if err != nil {
			return rep, err
		}
		// It sees only valid tokens, so it is checked like sidegate.
		if verifier, err = dialTarget("verifier", va["grpc"], o.conns, vp, true, o.fullDecode); err != nil {
			return rep, err
		}
		defer verifier.close()
		o.logf("plain RS256 verifier (pid %d) on %s", vp.cmd.Process.Pid, va["grpc"])
	}
	// One call on every connection before any timing: it connects them,
	// and a sidegate that refuses the valid token is a configuration
	// problem, better said now than as a table of wrong decisions.
	template := benchRequest(validTok)
	for _, t := range []*target{floor, sg, verifier} {
		if t == nil {
			continue
		}
		for i := range t.conns {
			var a answer
			if err := t.check(ctx, i, template, &a); err != nil {
				return rep, fmt.Errorf("first Check to %s: %w", t.name, err)
			}
			if a.code != 0 {
				return rep, fmt.Errorf("%s denies the bench's valid token (code %d, %q); check --extra-config", t.name, a.code, a.message)
			}
		}
	}
	if verifier != nil {
		// A verifier that allowed a forged signature would be the floor
		// by another name.
		var a answer
		if err := verifier.check(ctx, 0, benchRequest(is.badSignature()), &a); err != nil {
			return rep, fmt.Errorf("Check to the verifier: %w", err)
		}
		if a.code == 0 {
			return rep, errors.New("bench: the RS256 verifier allows a bad signature")
		}
	}

	// Sidegate's unique runs take consecutive shares of the pool, so no
	// token reaches it twice; the floor, which does not look at tokens,
	// reads the same pool from the start.
	var uniqueUsed int
	rest := pool
	var figures []*figure
	for _, mode := range o.modes {
		mixed := &mixedSource{valid: validTok, expired: expired, is: is}
		for li, load := range o.loads() {
			f := &figure{mode: mode, load: load}
			figures = append(figures, f)
			for round := range o.rounds {
				var share []string
				if mode == "unique" {
					share, rest = rest[:shares[li][round]], rest[shares[li][round]:]
				}
				targets := []*target{floor, sg}
				if mode == "unique" && verifier != nil {
					targets = append(targets, verifier)
				}
				for i, t := range targets {
					if err := ctx.Err(); err != nil {
						return rep, err
					}
					var src tokenSource = repeatedToken(validTok)
					switch {
					case mode == "mixed":
						src = mixed
					case mode == "unique" && t != sg:
						// The floor and the verifier keep nothing: any token will do.
						src = poolSource{pool: pool, cursor: new(atomic.Int64), wrap: true}
					case mode == "unique":
						src = poolSource{pool: share, cursor: new(atomic.Int64)}
					}
					var profile string
					if o.cpuProfile != "" && t == sg && round == 0 {
						profile = fmt.Sprintf("%s-%s-%s.pprof", o.cpuProfile, mode, load.slug())
					}
					r, err := o.run(ctx, t, src, template, load, profile)
					if err != nil {
						return rep, err
					}
					if err := ctx.Err(); err != nil {
						return rep, err // interrupted: its cancelled calls are not errors
					}
					if ps, ok := src.(poolSource); ok && !ps.wrap {
						uniqueUsed += min(int(ps.cursor.Load()), len(share))
					}
					if err := t.proc.exited(); err != nil {
						return rep, err
					}
					f.runs[i] = append(f.runs[i], r)
					rep.wrong += r.wrong
					rep.errors += r.errors
					o.logf("%-6s %-30s round %d/%d %-8s %s", mode, load.label(o), round+1, o.rounds, t.name, r.summary())
					for _, e := range r.examples {
						o.logf("    wrong: %s", e)
					}
				}
			}
		}
	}

	env := benchEnv{
		tokenLen: len(validTok), reqSize: proto.Size(template), headers: len(template.Attributes.Request.Http.Headers),
		pool: len(pool), poolUsed: uniqueUsed, mintTime: mintTime,
		floorRSS: procStatusMiB(floor.proc.cmd.Process.Pid, "VmHWM"), sidegateRSS: procStatusMiB(sg.proc.cmd.Process.Pid, "VmHWM"),
		sidegateReadyRSS: readyRSS, sidegateReadyPeak: readyPeak, sidegateReady: readyAfter, revoked: revoked,
		jwksFetches: is.fetches.Load(), decisions: sidegateDecisions(ctx, sg),
		revocation: natsURL != "", elapsed: time.Since(began),
	}
	sg.proc.mu.Lock()
	env.warnings = maps2lines(sg.proc.warnings)
	sg.proc.mu.Unlock()
	var table bytes.Buffer
	writeBenchTable(&table, o, figures, env, rep)
	o.results.Write(table.Bytes())
	if o.out != "" {
		if err := os.WriteFile(o.out, table.Bytes(), 0o644); err != nil {
			return rep, fmt.Errorf("--out: %w", err)
		}
	}
	return rep, nil
}

// waitSidegateReady polls sidegate's /readyz until it answers 200, for
// up to wait.
func waitSidegateReady(ctx context.Context, c *child, url string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	client := &http.Client{Timeout: time.Second}
	last := ""
	for time.Now().Before(deadline) {
		if err := c.exited(); err != nil {
			return err
		}
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = strings.TrimSpace(string(body))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("bench: sidegate not ready after %s: %s; its log:\n%s", wait, last, c.logTail())
}

// run drives t with load l for the warm-up, then for the measured
// duration. With profile set, it writes the CPU profile of t (sidegate,
// with debug.pprof on) over the measured part to that file.
func (o *benchOptions) run(ctx context.Context, t *target, src tokenSource, template *authv3.CheckRequest, l benchLoad, profile string) (runResult, error) {
	do := func(d time.Duration) runResult {
		if l.rate == 0 {
			return closedLoop(ctx, t, src, template, o.concurrency, d)
		}
		return openLoop(ctx, t, src, template, l.rate, o.openWorkers, d)
	}
	if o.warmup > 0 {
		w := do(o.warmup)
		if w.poolOut > 0 {
			w.elapsed, w.n = 0, 0 // the pool ran out during warm-up: nothing measured
			return w, nil
		}
	}
	if profile == "" {
		return do(o.duration), nil
	}
	done := make(chan error, 1)
	go func() { done <- fetchProfile(ctx, t.proc.admin, o.duration, profile) }()
	r := do(o.duration)
	if err := <-done; err != nil {
		return r, fmt.Errorf("--cpuprofile: %w", err)
	}
	o.logf("CPU profile of sidegate written to %s", profile)
	return r, nil
}

// fetchProfile writes the CPU profile, over d rounded to whole seconds
// (at least one), of the process serving pprof on admin to file.
func fetchProfile(ctx context.Context, admin string, d time.Duration, file string) error {
	secs := max(int(d.Round(time.Second)/time.Second), 1)
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", admin, secs)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(file, data, 0o644)
}

func (r runResult) rps() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.n) / r.elapsed.Seconds()
}

func (r runResult) summary() string {
	s := fmt.Sprintf("%8.0f req/s  p50 %s  p99 %s  cpu %s µs/req  client cpu %s µs/req", r.rps(), fmtMicros(r.hist.quantile(0.5)),
		fmtMicros(r.hist.quantile(0.99)), fmtCPU(r.cpu, r.n), fmtCPU(r.clientCPU, r.n))
	if r.behind > 0 {
		s += fmt.Sprintf("  behind %d", r.behind)
	}
	if r.wrong+r.errors > 0 {
		s += fmt.Sprintf("  WRONG %d  errors %d", r.wrong, r.errors)
	}
	if r.poolOut > 0 {
		s += fmt.Sprintf("  (token pool ran out at %s)", r.poolOut.Round(time.Millisecond))
	}
	return s
}

// ---- output ----

type benchEnv struct {
	tokenLen, reqSize, headers int
	pool, poolUsed             int
	mintTime                   time.Duration
	floorRSS, sidegateRSS      string
	sidegateReadyRSS           string        // VmRSS once ready, before any load
	sidegateReadyPeak          string        // VmHWM then: start-up's peak
	sidegateReady              time.Duration // from its start to /readyz 200
	revoked                    revokedStats
	jwksFetches                int64
	decisions                  []string
	warnings                   []string
	revocation                 bool
	elapsed                    time.Duration
}

// agg is one server's runs of a figure, summed over rounds.
type agg struct {
	n, wrong, errors, behind int64
	elapsed, cpu, clientCPU  time.Duration
	cpuKnown, clientKnown    bool
	hist                     histogram
	poolOut                  int
}

func aggregate(runs []runResult) *agg {
	a := &agg{cpuKnown: true, clientKnown: true}
	for _, r := range runs {
		a.n += r.n
		a.wrong += r.wrong
		a.errors += r.errors
		a.behind += r.behind
		a.elapsed += r.elapsed
		a.hist.add(r.hist)
		if r.cpu < 0 {
			a.cpuKnown = false
		}
		a.cpu += r.cpu
		if r.clientCPU < 0 {
			a.clientKnown = false
		}
		a.clientCPU += r.clientCPU
		if r.poolOut > 0 {
			a.poolOut++
		}
	}
	return a
}

func (a *agg) rps() float64 {
	if a.elapsed <= 0 {
		return 0
	}
	return float64(a.n) / a.elapsed.Seconds()
}

// cpuPerReq is µs of server CPU per request, or NaN when unknown.
func (a *agg) cpuPerReq() float64 {
	if !a.cpuKnown || a.n == 0 {
		return math.NaN()
	}
	return float64(a.cpu.Microseconds()) / float64(a.n)
}

// clientPerReq is the client's (this process's) CPU per request.
func (a *agg) clientPerReq() float64 {
	if !a.clientKnown || a.n == 0 {
		return math.NaN()
	}
	return float64(a.clientCPU.Microseconds()) / float64(a.n)
}

func fmtMicros(d time.Duration) string { return fmtNum(float64(d) / 1e3) }

func fmtCPU(cpu time.Duration, n int64) string {
	if cpu < 0 || n == 0 {
		return "–"
	}
	return fmtNum(float64(cpu.Microseconds()) / float64(n))
}

// fmtNum prints three significant figures or so.
func fmtNum(v float64) string {
	switch {
	case math.IsNaN(v):
		return "–"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func ratio(sidegate, floor float64) string {
	if floor == 0 || math.IsNaN(floor) || math.IsNaN(sidegate) {
		return "–"
	}
	return strconv.FormatFloat(sidegate/floor, 'f', 2, 64)
}

// rpsRatio is a's req/s over b's, aggregated (aa, ab), then round by
// round in parentheses when there are several rounds.
func rpsRatio(a, b []runResult, aa, ab *agg) string {
	out := ratio(aa.rps(), ab.rps())
	if n := min(len(a), len(b)); n > 1 {
		byRound := make([]string, n)
		for i := range n {
			byRound[i] = ratio(a[i].rps(), b[i].rps())
		}
		out += " (" + strings.Join(byRound, ", ") + ")"
	}
	return out
}

// writeVerifierTable writes, for the figures that ran the plain RS256
// verifier (--verifier, unique mode), each server's req/s and CPU, and
// where sidegate stands between the floor and that crypto limit.
func writeVerifierTable(w io.Writer, o *benchOptions, figs []*figure) {
	var rows []*figure
	for _, f := range figs {
		if len(f.runs[2]) > 0 {
			rows = append(rows, f)
		}
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w, "Unique tokens against the crypto limit: a plain Go RS256 verifier, the floor plus `crypto/rsa` on each token's signature and nothing else, run after sidegate in each round.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| mode | load | req/s floor | req/s verifier | req/s sidegate | verifier/floor | sidegate/floor | sidegate/verifier (rounds) | CPU µs/req floor | CPU µs/req verifier | CPU µs/req sidegate | verifier wrong |")
	fmt.Fprintln(w, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, f := range rows {
		fl, sg, v := aggregate(f.runs[0]), aggregate(f.runs[1]), aggregate(f.runs[2])
		sv := rpsRatio(f.runs[1], f.runs[2], sg, v)
		fmt.Fprintf(w, "| %s | %s | %.0f | %.0f | %.0f | %s | %s | %s | %s | %s | %s | %d |\n",
			f.mode, f.load.label(o), fl.rps(), v.rps(), sg.rps(),
			ratio(v.rps(), fl.rps()), ratio(sg.rps(), fl.rps()), sv,
			fmtNum(fl.cpuPerReq()), fmtNum(v.cpuPerReq()), fmtNum(sg.cpuPerReq()), v.wrong+v.errors)
	}
	fmt.Fprintln(w)
}

func writeBenchTable(w io.Writer, o *benchOptions, figs []*figure, env benchEnv, rep benchReport) {
	cpuModel := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpuModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	fmt.Fprintf(w, "## sidegate bench, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(w, "- command: `%s`\n", o.commandLine)
	fmt.Fprintf(w, "- machine: %d CPUs (%s), GOMAXPROCS %d in each process; %s %s/%s; sidegate %s\n",
		runtime.NumCPU(), cpuModel, runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH, versionString())
	fmt.Fprintf(w, "- request: %d headers, RS256 bearer token of %d bytes (RSA-2048), CheckRequest %d bytes\n", env.headers, env.tokenLen, env.reqSize)
	rev := "off"
	if env.revocation {
		rev = "on (embedded NATS)"
	}
	fmt.Fprintf(w, "- sidegate: bearer + cookie %q, x-user-id, x-user-email and x-jwt-payload forwarded, revocation %s", benchCookie, rev)
	if o.extraConfig != "" {
		fmt.Fprintf(w, ", plus `%s`", o.extraConfig)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "- each figure: %d round(s) of %s after %s of warm-up, floor then sidegate each round; client and both servers share the machine\n", o.rounds, o.duration, o.warmup)
	decoded := "its status read straight from the wire"
	if o.fullDecode {
		decoded = "decoded in full into a CheckResponse"
	}
	fmt.Fprintf(w, "- each answer: %s (--decode)\n", decoded)
	fmt.Fprintf(w, "- latency: closed loop from send, open loop from the scheduled send time; behind: open-loop sends made over %s late (all %d --open-workers busy, or the client short of CPU); CPU: server process utime+stime from /proc/PID/stat (10 ms ticks) per request\n\n", benchLateThreshold, o.openWorkers)

	fmt.Fprintln(w, "| mode | load | req/s floor | req/s sidegate | ratio (rounds) | p50 µs floor | p50 µs sidegate | ratio | p99 µs floor | p99 µs sidegate | ratio | CPU µs/req floor | CPU µs/req sidegate | ratio | behind floor/sidegate | wrong |")
	fmt.Fprintln(w, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	var notes, clients []string
	for _, f := range figs {
		fl, sg := aggregate(f.runs[0]), aggregate(f.runs[1])
		rr := rpsRatio(f.runs[1], f.runs[0], sg, fl)
		p50f, p50s := fl.hist.quantile(0.5), sg.hist.quantile(0.5)
		p99f, p99s := fl.hist.quantile(0.99), sg.hist.quantile(0.99)
		behind := "–"
		if f.load.rate > 0 {
			behind = fmt.Sprintf("%d / %d", fl.behind, sg.behind)
		}
		fmt.Fprintf(w, "| %s | %s | %.0f | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n",
			f.mode, f.load.label(o), fl.rps(), sg.rps(), rr,
			fmtMicros(p50f), fmtMicros(p50s), ratio(float64(p50s), float64(p50f)),
			fmtMicros(p99f), fmtMicros(p99s), ratio(float64(p99s), float64(p99f)),
			fmtNum(fl.cpuPerReq()), fmtNum(sg.cpuPerReq()), ratio(sg.cpuPerReq(), fl.cpuPerReq()),
			behind, sg.wrong+sg.errors+fl.wrong+fl.errors)
		clients = append(clients, fmt.Sprintf("%s, %s: %s / %s", f.mode, f.load.label(o), fmtNum(fl.clientPerReq()), fmtNum(sg.clientPerReq())))
		if sg.poolOut > 0 {
			notes = append(notes, fmt.Sprintf("%s, %s: the unique-token pool ran out in %d of %d sidegate run(s), which then ended early (raise --unique-max-rate)", f.mode, f.load.label(o), sg.poolOut, len(f.runs[1])))
		}
		if e := fl.errors + sg.errors; e > 0 {
			notes = append(notes, fmt.Sprintf("%s, %s: %d gRPC error(s) (floor %d, sidegate %d)", f.mode, f.load.label(o), e, fl.errors, sg.errors))
		}
	}
	fmt.Fprintln(w)
	writeVerifierTable(w, o, figs)
	fmt.Fprintf(w, "- wrong decisions: %d; gRPC errors: %d\n", rep.wrong, rep.errors)
	// The client shares the machine: what an answer costs it to read is
	// CPU the servers do not get.
	fmt.Fprintf(w, "- client CPU µs/req (this process, driving floor / sidegate): %s\n", strings.Join(clients, "; "))
	for _, n := range notes {
		fmt.Fprintf(w, "- %s\n", n)
	}
	if env.pool > 0 {
		fmt.Fprintf(w, "- unique tokens: %d minted in %s (before any timing), %d sent to sidegate\n", env.pool, env.mintTime.Round(100*time.Millisecond), env.poolUsed)
	}
	if r := env.revoked; r.n > 0 {
		fmt.Fprintf(w, "- denylist: %d jti revocations published to the embedded stream in %s (%.0f/s) before sidegate started; sidegate ready %s after its start (replay took %s by its log) with %s jti entries in its denylist; revocation.capacity %d\n",
			r.n, r.publish.Round(time.Millisecond), float64(r.n)/max(r.publish.Seconds(), 1e-9),
			env.sidegateReady.Round(time.Millisecond), orDash(r.replayTook), orDash(r.entries), r.capacity)
	}
	fmt.Fprintf(w, "- peak RSS (VmHWM): floor %s, sidegate %s; sidegate once ready, before load: RSS (VmRSS) %s, peak so far %s; JWKS fetched %d time(s)\n",
		orDash(env.floorRSS), orDash(env.sidegateRSS), orDash(env.sidegateReadyRSS), orDash(env.sidegateReadyPeak), env.jwksFetches)
	if len(env.decisions) > 0 {
		fmt.Fprintf(w, "- sidegate's own count: %s\n", strings.Join(env.decisions, ", "))
	}
	if len(env.warnings) > 0 {
		fmt.Fprintf(w, "- sidegate logged: %s\n", strings.Join(env.warnings, "; "))
	}
	fmt.Fprintf(w, "- whole run: %s\n", env.elapsed.Round(time.Second))
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

func maps2lines(m map[string]int) []string {
	var out []string
	for k, n := range m {
		out = append(out, fmt.Sprintf("%s (×%d)", k, n))
	}
	slices.Sort(out)
	return out
}

// sidegateMetric is the value of one series (name and labels, as
// /metrics writes them) from sidegate's /metrics, or "" when absent.
func sidegateMetric(ctx context.Context, admin, series string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return ""
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			if f, err := strconv.ParseFloat(strings.Fields(v)[0], 64); err == nil {
				return strconv.FormatFloat(f, 'f', -1, 64)
			}
		}
	}
	return ""
}

// sidegateDecisions reads sidegate_decisions_total from its /metrics, as
// "decision/reason N", to set beside the bench's own count.
func sidegateDecisions(ctx context.Context, sg *target) []string {
	admin := sg.proc.admin
	if admin == "" || sg.proc.exited() != nil {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return nil
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var out []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "sidegate_decisions_total{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(line, "} ")
		if !ok {
			continue
		}
		l := map[string]string{}
		for kv := range strings.SplitSeq(labels, ",") {
			if k, v, ok := strings.Cut(kv, "="); ok {
				l[k] = strings.Trim(v, `"`)
			}
		}
		name := l["decision"] + "/" + l["reason"]
		if r := l["route"]; r != "" && r != "default" {
			name += " on " + r
		}
		if l["enforced"] == "false" {
			name += " (not enforced)"
		}
		if v, err := strconv.ParseFloat(strings.Fields(value)[0], 64); err == nil && v > 0 {
			out = append(out, fmt.Sprintf("%s %.0f", name, v))
		}
	}
	slices.Sort(out)
	return out
}

// ---- a full denylist (--revoked) ----

// revokedStats is what --revoked did.
type revokedStats struct {
	n          int
	capacity   int           // revocation.capacity of the generated configuration
	publish    time.Duration // publishing all n, acks included
	replayTook string        // sidegate's own replay time, from its log
	entries    string        // jti entries in sidegate's denylist once ready, by its metrics
}

// publishRevoked fills the revocation stream of the generated
// configuration cfgData with o.revoked jti revocations for issuer, before
// sidegate starts, so that its start-up replay loads them all. Their jtis
// (bench-revoked-N) are none of the bench's tokens, and they expire in an
// hour. The stream is created as sidegate would create it, and checked to
// keep them all.
func (o *benchOptions) publishRevoked(ctx context.Context, cfgData []byte, issuer string) (revokedStats, error) {
	st := revokedStats{n: o.revoked}
	cfg, err := ParseConfig(cfgData)
	if err != nil {
		return st, err
	}
	st.capacity = cfg.Revocation.Capacity
	if st.capacity < o.revoked {
		o.logf("note: revocation.capacity %d (from --extra-config) is below --revoked %d: the denylist grows past it", st.capacity, o.revoked)
	}
	opts, err := cfg.natsOptions("sidegate bench")
	if err != nil {
		return st, err
	}
	nc, err := revocation.Connect(opts, nil, nats.RetryOnFailedConnect(false))
	if err != nil {
		return st, err
	}
	defer nc.Close()
	var failed atomic.Int64
	var firstErr atomic.Pointer[error]
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(benchRevokedBatch),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, &err)
		}))
	if err != nil {
		return st, err
	}
	stream, err := revocation.EnsureStream(ctx, js, opts)
	if err != nil {
		return st, err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return st, fmt.Errorf("bench: stream %q: %w", opts.Stream, err)
	}
	if err := benchStreamHolds(info, o.revoked); err != nil {
		return st, err
	}
	before := info.State.Msgs

	exp := time.Now().Add(time.Hour).Unix()
	event := func(i int) revocation.Event {
		return revocation.Event{Kind: revocation.KindJTI, Iss: issuer, Value: "bench-revoked-" + strconv.Itoa(i), Exp: exp}
	}
	o.logf("publishing %d jti revocations to stream %s (subject %s)…", o.revoked, opts.Stream, opts.Subject)
	t0 := time.Now()
	// The first through the helper, which checks the event as the
	// subscribers will and explains a stream that is not there; the
	// others, of the same shape, asynchronously in batches.
	if _, err := revocation.Publish(ctx, js, opts.Subject, event(0)); err != nil {
		return st, err
	}
	step := max(o.revoked/10, benchRevokedBatch)
	lastReport := 1
	for i := 1; i < o.revoked; {
		end := min(i+benchRevokedBatch, o.revoked)
		for ; i < end; i++ {
			data, err := event(i).MarshalJSON()
			if err != nil {
				return st, err
			}
			if _, err := js.PublishAsync(opts.Subject, data); err != nil {
				return st, fmt.Errorf("bench: publish revocation %d: %w", i, err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(30 * time.Second):
			return st, fmt.Errorf("bench: %d revocations still unacknowledged after 30s", js.PublishAsyncPending())
		}
		if e := firstErr.Load(); e != nil {
			return st, fmt.Errorf("bench: %d revocation(s) not stored: %w", failed.Load(), *e)
		}
		if i-lastReport >= step || i == o.revoked {
			lastReport = i
			o.logf("  %d/%d published (%s)", i, o.revoked, time.Since(t0).Round(100*time.Millisecond))
		}
	}
	st.publish = time.Since(t0)
	if info, err = stream.Info(ctx); err != nil {
		return st, fmt.Errorf("bench: stream %q: %w", opts.Stream, err)
	}
	if got := info.State.Msgs - before; got != uint64(o.revoked) {
		return st, fmt.Errorf("bench: stream %q holds %d new messages, want %d: check its limits", opts.Stream, got, o.revoked)
	}
	o.logf("published %d revocations in %s (%.0f/s), stream %s now %.0f MiB",
		o.revoked, st.publish.Round(time.Millisecond), float64(o.revoked)/st.publish.Seconds(), opts.Stream, float64(info.State.Bytes)/(1<<20))
	return st, nil
}

// benchStreamHolds checks that the stream's limits keep n more
// revocations of an hour's lifetime on top of what it holds: with the
// discard-old policy a limit would drop the first ones silently.
func benchStreamHolds(info *jetstream.StreamInfo, n int) error {
	c, have := info.Config, info.State.Msgs
	need := have + uint64(n)
	var bad []string
	if c.MaxMsgs > 0 && uint64(c.MaxMsgs) < need {
		bad = append(bad, fmt.Sprintf("max_msgs %d", c.MaxMsgs))
	}
	if c.MaxMsgsPerSubject > 0 && uint64(c.MaxMsgsPerSubject) < need {
		bad = append(bad, fmt.Sprintf("max_msgs_per_subject %d", c.MaxMsgsPerSubject))
	}
	// An event is about 100 bytes; a stored message, with the subject
	// and the store's own header, under 200.
	if c.MaxBytes > 0 && uint64(c.MaxBytes) < info.State.Bytes+uint64(n)*200 {
		bad = append(bad, fmt.Sprintf("max_bytes %d", c.MaxBytes))
	}
	if c.MaxAge > 0 && c.MaxAge < time.Hour {
		bad = append(bad, fmt.Sprintf("max_age %s", c.MaxAge))
	}
	if len(bad) > 0 {
		return fmt.Errorf("bench: stream %q cannot keep %d more revocations (%s)", c.Name, n, strings.Join(bad, ", "))
	}
	return nil
}
