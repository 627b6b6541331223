package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
	"github.com/nats-io/nats-server/v2/server"
)

// devIssuer is sidegate dev's in-process identity provider: a fresh ES256
// key whose JWKS and OpenID configuration are served on loopback.
type devIssuer struct {
	key  *ecdsa.PrivateKey
	kid  string
	url  string
	srv  *http.Server
	ln   net.Listener
	jwks []byte
}

func newDevIssuer() (*devIssuer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	is := &devIssuer{key: key, kid: "dev-" + time.Now().UTC().Format("20060102T150405"), ln: ln, url: "http://" + ln.Addr().String()}
	pub, err := jwk.Import(key.Public())
	if err != nil {
		return nil, err
	}
	for _, kv := range []struct {
		k string
		v any
	}{{jwk.KeyIDKey, is.kid}, {jwk.AlgorithmKey, jwa.ES256()}, {jwk.KeyUsageKey, "sig"}} {
		if err := pub.Set(kv.k, kv.v); err != nil {
			return nil, err
		}
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, err
	}
	if is.jwks, err = json.Marshal(set); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                is.url,
			"jwks_uri":                              is.url + "/jwks",
			"id_token_signing_alg_values_supported": []string{"ES256"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Write(is.jwks)
	})
	is.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go is.srv.Serve(ln)
	return is, nil
}

// mint signs a token for subject with the given lifetime.
func (is *devIssuer) mint(subject, audience string, ttl time.Duration) (string, error) {
	now := time.Now()
	tok, err := jwt.NewBuilder().
		Issuer(is.url).
		Subject(subject).
		Audience([]string{audience}).
		IssuedAt(now).
		Expiration(now.Add(ttl)).
		JwtID(rand.Text()).
		Claim("email", subject+"@example.com").
		Build()
	if err != nil {
		return "", err
	}
	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.KeyIDKey, is.kid); err != nil {
		return "", err
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.ES256(), is.key, jws.WithProtectedHeaders(hdr)))
	return string(signed), err
}

// freeOr returns addr when it can be bound now, else a free loopback port:
// the demo must start even when another program holds the usual port.
func freeOr(addr string) string {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "127.0.0.1:0"
	}
	ln.Close()
	return addr
}

const devAudience = "sidegate-dev"
const devCookie = "sidegate_session"

func cmdDev(args []string, stdout, stderr io.Writer) int {
	log := parseWithLogger(flag.NewFlagSet("dev", flag.ContinueOnError), args, stderr)
	if log == nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runDev(ctx, log, stdout); err != nil {
		log.Error("sidegate dev failed", "err", err)
		return 1
	}
	return 0
}

func runDev(ctx context.Context, log *slog.Logger, out io.Writer) error {
	is, err := newDevIssuer()
	if err != nil {
		return fmt.Errorf("dev issuer: %w", err)
	}
	defer is.srv.Close()
	natsURL, stopNATS, err := startDevNATS()
	if err != nil {
		return fmt.Errorf("dev nats: %w", err)
	}
	defer stopNATS()
	cfg := &Config{
		Listen: ListenConfig{GRPC: freeOr(defaultGRPC), HTTP: freeOr(defaultHTTP), Admin: freeOr(defaultAdmin)},
		Issuers: []IssuerConfig{{
			Issuer:     is.url,
			Discovery:  true,
			Audiences:  []string{devAudience},
			Algorithms: []string{"ES256"},
		}},
		Tokens:     TokensConfig{Cookies: []string{devCookie}},
		Revocation: RevocationConfig{NATS: NATSConfig{URL: natsURL, CreateStream: true}},
		Forward:    ForwardConfig{Claims: map[string]string{"x-user-id": "sub", "x-user-email": "email"}},
	}
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	d, err := newDaemon(cfg, log)
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()

	deadline := time.Now().Add(15 * time.Second)
	for d.notReady() != "" {
		if time.Now().After(deadline) {
			cancel()
			<-done
			return errors.New("the verifier did not become ready: " + d.notReady())
		}
		select {
		case err := <-done:
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
	token, err := is.mint("dev-user", devAudience, time.Hour)
	if err != nil {
		cancel()
		<-done
		return err
	}
	httpAddr := d.lns.http.Addr().String()
	grpcAddr, adminAddr := d.lns.grpc.Addr().String(), d.lns.admin.Addr().String()
	fmt.Fprintf(out, `
sidegate dev is running; Ctrl-C stops it.

  issuer          %[1]s  (ES256 key %[2]s, JWKS at %[1]s/jwks)
  gRPC ext_authz  %[3]s
  HTTP check      http://%[4]s/
  admin           http://%[5]s/metrics  /healthz  /readyz
  NATS JetStream  %[9]s  (embedded; revocation events on sidegate.revocations)

A valid token for sub "dev-user", good for one hour:

export TOKEN='%[6]s'

# allowed: 200 with x-user-id and x-user-email
curl -i -H "Authorization: Bearer $TOKEN" http://%[4]s/

# the same token as the %[7]s cookie: 200
curl -i --cookie "%[7]s=$TOKEN" http://%[4]s/

# no token: 401
curl -i http://%[4]s/

# revoke it (every sidecar on this NATS stream denies it within milliseconds),
# then the first curl answers 401 "revoked"
%[8]s revoke --nats %[9]s --token "$TOKEN"

# Envoy's view over gRPC (needs grpcurl)
grpcurl -plaintext -d '{"attributes":{"request":{"http":{"headers":{"authorization":"Bearer '"$TOKEN"'"}}}}}' %[3]s envoy.service.auth.v3.Authorization/Check

`, is.url, is.kid, grpcAddr, httpAddr, adminAddr, token, devCookie, selfCommand(), natsURL)
	return <-done
}

// startDevNATS runs an embedded NATS server with JetStream on a free
// loopback port, its store in a temporary directory.
func startDevNATS() (url string, stop func(), err error) {
	dir, err := os.MkdirTemp("", "sidegate-dev-nats-")
	if err != nil {
		return "", nil, err
	}
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT,
		JetStream: true, StoreDir: dir,
		NoLog: true, NoSigs: true,
	})
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		os.RemoveAll(dir)
		return "", nil, errors.New("embedded NATS did not start")
	}
	return ns.ClientURL(), func() {
		ns.Shutdown()
		ns.WaitForShutdown()
		os.RemoveAll(dir)
	}, nil
}

// selfCommand is how the user can run this binary again: "go run
// ./cmd/sidegate" under go run, else the path it was started as.
func selfCommand() string {
	if strings.Contains(os.Args[0], "go-build") {
		return "go run ./cmd/sidegate"
	}
	return os.Args[0]
}
