// Package jwkstest is a real identity provider for tests: signing keys of
// every supported algorithm, tokens signed over exact header and payload
// bytes (so hostile tokens can be built), and an httptest server that
// publishes the JWKS and an OpenID configuration and can be made to fail.
//
// Signing uses the standard library only, independent of the jwx code
// under test.
package jwkstest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"hash"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Key is a signing key with its kid and JWS algorithm.
type Key struct {
	Kid     string
	Alg     string
	Private crypto.Signer // *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey
}

var (
	keyCacheMu sync.Mutex
	rsaCache   = map[int]*rsa.PrivateKey{}
)

// rsaKey returns an RSA key of the given size. Keys are cached per size
// because generating them is slow; tests that need distinct RSA keys pass
// distinct sizes or use NewRSAKey.
func rsaKey(tb testing.TB, bits int) *rsa.PrivateKey {
	keyCacheMu.Lock()
	defer keyCacheMu.Unlock()
	if k, ok := rsaCache[bits]; ok {
		return k
	}
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		tb.Fatal(err)
	}
	rsaCache[bits] = k
	return k
}

// NewKey makes a key for alg: RS256/384/512 and PS256/384/512 (RSA 2048,
// shared between calls), ES256/384/512, EdDSA (fresh each call).
func NewKey(tb testing.TB, alg, kid string) *Key {
	tb.Helper()
	k := &Key{Kid: kid, Alg: alg}
	var err error
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		k.Private = rsaKey(tb, 2048)
	case "ES256":
		k.Private, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ES384":
		k.Private, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "ES512":
		k.Private, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "EdDSA":
		_, k.Private, err = ed25519.GenerateKey(rand.Reader)
	default:
		tb.Fatalf("jwkstest: unsupported alg %q", alg)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// NewRSAKey makes a fresh RSA key of the given size (for rotation tests
// that need two different RSA keys, or undersized keys).
func NewRSAKey(tb testing.TB, alg, kid string, bits int) *Key {
	tb.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		tb.Fatal(err)
	}
	return &Key{Kid: kid, Alg: alg, Private: k}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func bigB64(n *big.Int, size int) string {
	b := n.Bytes()
	if size > len(b) {
		b = append(make([]byte, size-len(b)), b...)
	}
	return b64(b)
}

// JWK returns the public JWK with kid, alg and use "sig".
func (k *Key) JWK() map[string]any {
	m := map[string]any{"kid": k.Kid, "alg": k.Alg, "use": "sig"}
	switch p := k.Private.(type) {
	case *rsa.PrivateKey:
		m["kty"] = "RSA"
		m["n"] = b64(p.N.Bytes())
		m["e"] = b64(big.NewInt(int64(p.E)).Bytes())
	case *ecdsa.PrivateKey:
		size := (p.Curve.Params().BitSize + 7) / 8
		m["kty"] = "EC"
		m["crv"] = p.Curve.Params().Name
		pub, err := p.PublicKey.Bytes() // uncompressed: 0x04 || X || Y
		if err != nil {
			panic(err)
		}
		m["x"] = b64(pub[1 : 1+size])
		m["y"] = b64(pub[1+size:])
	case ed25519.PrivateKey:
		m["kty"] = "OKP"
		m["crv"] = "Ed25519"
		m["x"] = b64(p.Public().(ed25519.PublicKey))
	}
	return m
}

// Claims returns typical valid claims for iss and aud, valid from now for ttl.
func Claims(iss, aud, sub string, now time.Time, ttl time.Duration) map[string]any {
	return map[string]any{
		"iss": iss,
		"aud": aud,
		"sub": sub,
		"iat": now.Unix(),
		"exp": now.Add(ttl).Unix(),
		"jti": rand.Text(),
	}
}

// Sign signs claims with a header of {alg, kid, typ: JWT} merged with
// extra (an extra entry with a nil value removes that member).
func (k *Key) Sign(tb testing.TB, claims map[string]any, extra map[string]any) string {
	tb.Helper()
	h := map[string]any{"alg": k.Alg, "kid": k.Kid, "typ": "JWT"}
	for name, v := range extra {
		if v == nil {
			delete(h, name)
		} else {
			h[name] = v
		}
	}
	hb, err := json.Marshal(h)
	if err != nil {
		tb.Fatal(err)
	}
	pb, err := json.Marshal(claims)
	if err != nil {
		tb.Fatal(err)
	}
	return k.SignRaw(tb, hb, pb)
}

// SignRaw signs the exact header and payload bytes with the key's Alg.
func (k *Key) SignRaw(tb testing.TB, header, payload []byte) string {
	tb.Helper()
	return k.SignAs(tb, k.Alg, header, payload)
}

// SignAs signs the exact header and payload bytes with alg, which need not
// be the key's own (for algorithm-confusion cases).
func (k *Key) SignAs(tb testing.TB, alg string, header, payload []byte) string {
	tb.Helper()
	input := b64(header) + "." + b64(payload)
	sig, err := signBytes(k.Private, alg, []byte(input))
	if err != nil {
		tb.Fatal(err)
	}
	return input + "." + b64(sig)
}

// SignHMAC signs with HMAC (HS256/384/512) and secret, for the
// algorithm-confusion attack where the secret is a public key's bytes.
func SignHMAC(alg string, secret, header, payload []byte) string {
	input := b64(header) + "." + b64(payload)
	mac := hmac.New(func() hash.Hash { _, h := hashFor(alg); return h }, secret)
	mac.Write([]byte(input))
	return input + "." + b64(mac.Sum(nil))
}

func hashFor(alg string) (crypto.Hash, hash.Hash) {
	switch alg[2:] {
	case "384":
		return crypto.SHA384, sha512.New384()
	case "512":
		return crypto.SHA512, sha512.New()
	}
	return crypto.SHA256, sha256.New()
}

func signBytes(key crypto.Signer, alg string, input []byte) ([]byte, error) {
	if alg == "EdDSA" {
		return ed25519.Sign(key.(ed25519.PrivateKey), input), nil
	}
	ch, h := hashFor(alg)
	h.Write(input)
	digest := h.Sum(nil)
	switch alg[:2] {
	case "RS":
		return rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), ch, digest)
	case "PS":
		return rsa.SignPSS(rand.Reader, key.(*rsa.PrivateKey), ch, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case "ES":
		ek := key.(*ecdsa.PrivateKey)
		r, s, err := ecdsa.Sign(rand.Reader, ek, digest)
		if err != nil {
			return nil, err
		}
		size := (ek.Curve.Params().BitSize + 7) / 8
		out := make([]byte, 2*size)
		r.FillBytes(out[:size])
		s.FillBytes(out[size:])
		return out, nil
	}
	return nil, &unsupportedAlg{alg}
}

type unsupportedAlg struct{ alg string }

func (e *unsupportedAlg) Error() string { return "jwkstest: cannot sign " + e.alg }

// Server is an identity provider over real HTTP: GET /jwks and
// GET /.well-known/openid-configuration (issuer = the server's URL).
//
// /jwks answers with the current body, status, extra headers and delay.
// When the extra headers include an ETag or Last-Modified, a request whose
// If-None-Match or If-Modified-Since matches gets 304 Not Modified (only
// while the status is 200). The server can also be held (requests wait
// until released) and taken down and brought back up on the same address.
//
// The embedded httptest.Server is the first instance started: its URL,
// Certificate and Client stay valid across Down and Up.
type Server struct {
	*httptest.Server
	tb      testing.TB
	handler http.Handler

	mu         sync.Mutex
	body       []byte
	status     int
	delay      time.Duration
	header     http.Header   // extra response headers for /jwks
	hold       chan struct{} // while non-nil, /jwks requests wait for it to close
	lastHeader http.Header   // request headers of the last /jwks request
	live       *httptest.Server

	fetches     atomic.Int64
	conditional atomic.Int64
	notModified atomic.Int64
}

// NewServer starts a plain-http server publishing keys; it is closed at
// test end.
func NewServer(tb testing.TB, keys ...*Key) *Server {
	return newServer(tb, false, keys)
}

// NewTLSServer is NewServer over https, with httptest's self-signed
// certificate (for 127.0.0.1, ::1 and example.com): s.Certificate() is the
// CA to trust, and s.Client() trusts it.
func NewTLSServer(tb testing.TB, keys ...*Key) *Server {
	return newServer(tb, true, keys)
}

func newServer(tb testing.TB, useTLS bool, keys []*Key) *Server {
	s := &Server{tb: tb, status: http.StatusOK, header: http.Header{}}
	s.SetKeys(keys...)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /jwks", s.serveJWKS)
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"issuer": s.Issuer(), "jwks_uri": s.JWKSURI()})
	})
	s.handler = mux
	if useTLS {
		s.Server = httptest.NewTLSServer(mux)
	} else {
		s.Server = httptest.NewServer(mux)
	}
	s.live = s.Server
	tb.Cleanup(s.Close)
	return s
}

func (s *Server) serveJWKS(w http.ResponseWriter, r *http.Request) {
	s.fetches.Add(1)
	inm, ims := r.Header.Get("If-None-Match"), r.Header.Get("If-Modified-Since")
	if inm != "" || ims != "" {
		s.conditional.Add(1)
	}
	s.mu.Lock()
	body, status, delay, hold := s.body, s.status, s.delay, s.hold
	header := s.header.Clone()
	s.lastHeader = r.Header.Clone()
	s.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	for name, vals := range header {
		w.Header()[name] = vals
	}
	if status == http.StatusOK && notModified(header, inm, ims) {
		s.notModified.Add(1)
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.WriteHeader(status)
	w.Write(body)
}

// notModified applies RFC 9110 §13.1: If-None-Match against the ETag
// (weak comparison), else If-Modified-Since against Last-Modified.
func notModified(h http.Header, inm, ims string) bool {
	if inm != "" {
		etag := strings.TrimPrefix(h.Get("ETag"), "W/")
		if etag == "" {
			return false
		}
		for tag := range strings.SplitSeq(inm, ",") {
			tag = strings.TrimSpace(tag)
			if tag == "*" || strings.TrimPrefix(tag, "W/") == etag {
				return true
			}
		}
		return false
	}
	if ims == "" || h.Get("Last-Modified") == "" {
		return false
	}
	since, err1 := http.ParseTime(ims)
	modified, err2 := http.ParseTime(h.Get("Last-Modified"))
	return err1 == nil && err2 == nil && !modified.After(since)
}

// Issuer is the server's URL, which its OpenID configuration names.
func (s *Server) Issuer() string { return s.URL }

// JWKSURI is where the key set is published.
func (s *Server) JWKSURI() string { return s.URL + "/jwks" }

// SetKeys publishes these keys' public JWKs.
func (s *Server) SetKeys(keys ...*Key) {
	jwks := make([]any, len(keys))
	for i, k := range keys {
		jwks[i] = k.JWK()
	}
	s.SetJWKs(jwks...)
}

// SetJWKs publishes arbitrary JWK objects (for malformed-key cases).
func (s *Server) SetJWKs(jwks ...any) {
	body, err := json.Marshal(map[string]any{"keys": jwks})
	if err != nil {
		panic(err)
	}
	s.SetBody(body)
}

// SetBody publishes exactly these bytes at /jwks.
func (s *Server) SetBody(body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body = body
}

// SetStatus makes /jwks answer with this status (and the current body).
// With a Location header (SetHeader) and a 3xx status it redirects.
func (s *Server) SetStatus(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status = code
}

// SetDelay makes /jwks wait this long before answering.
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// SetHeader adds a response header to /jwks answers (Cache-Control,
// Expires, ETag, Last-Modified, Location...); an empty value removes it.
func (s *Server) SetHeader(name, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if value == "" {
		s.header.Del(name)
	} else {
		s.header.Set(name, value)
	}
}

// Hold makes /jwks requests wait, once counted, until Release (or until
// the client gives up), so a test can act while a fetch is in flight.
func (s *Server) Hold() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold == nil {
		s.hold = make(chan struct{})
	}
}

// Release lets held requests, and later ones, proceed.
func (s *Server) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold != nil {
		close(s.hold)
		s.hold = nil
	}
}

// Down takes the server off the network as a crash would: the listener
// closes and open connections are cut, so fetches fail with a network
// error until Up.
func (s *Server) Down() {
	s.mu.Lock()
	live := s.live
	s.live = nil
	s.mu.Unlock()
	if live != nil {
		live.CloseClientConnections()
		live.Close()
	}
}

// Up brings the server back on the same address (and certificate) after
// Down, serving whatever the server is now set to publish.
func (s *Server) Up() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.live != nil {
		return
	}
	l, err := net.Listen("tcp", s.Listener.Addr().String())
	if err != nil {
		s.tb.Fatalf("jwkstest: listening again on %s: %v", s.Listener.Addr(), err)
	}
	srv := httptest.NewUnstartedServer(s.handler)
	srv.Listener.Close()
	srv.Listener = l
	if s.Server.TLS != nil {
		srv.TLS = s.Server.TLS
		srv.StartTLS()
	} else {
		srv.Start()
	}
	s.live = srv
}

// Close shuts the server down for good (held requests are released first).
func (s *Server) Close() {
	s.Release()
	s.Down()
}

// Fetches counts requests to /jwks.
func (s *Server) Fetches() int { return int(s.fetches.Load()) }

// Conditional counts requests to /jwks that carried If-None-Match or
// If-Modified-Since.
func (s *Server) Conditional() int { return int(s.conditional.Load()) }

// NotModified counts 304 answers from /jwks.
func (s *Server) NotModified() int { return int(s.notModified.Load()) }

// LastRequestHeader returns the request headers of the last /jwks request.
func (s *Server) LastRequestHeader() http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastHeader.Clone()
}
