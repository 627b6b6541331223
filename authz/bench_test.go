package authz

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math/big"
	"runtime"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
)

var benchAlgs = []string{"RS256", "ES256", "EdDSA"}

// BenchmarkDecide is one full decision for a valid bearer token: extract,
// pre-parse checks, header and payload parse, key lookup, signature
// verification, claim checks and identity headers. No cache (yet).
func BenchmarkDecide(b *testing.B) {
	f := newFixture(b, nil)
	for _, alg := range benchAlgs {
		headers := bearer(f.token(b, alg, f.claims(), nil))
		headers["cookie"] = "theme=dark; lang=en"
		headers["user-agent"] = "bench"
		if d := f.decide(headers); !d.Allowed {
			b.Fatalf("%s: %v", alg, d.Err)
		}
		b.Run(alg, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if d := f.decide(headers); !d.Allowed {
					b.Fatal(d.Err)
				}
			}
		})
	}
}

// BenchmarkCrypto is the raw signature check with the standard library
// alone, over the same signing input: the floor under BenchmarkDecide.
func BenchmarkCrypto(b *testing.B) {
	f := newFixture(b, nil)
	for _, alg := range benchAlgs {
		tok := f.token(b, alg, f.claims(), nil)
		i := strings.LastIndexByte(tok, '.')
		input := []byte(tok[:i])
		sig, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
		if err != nil {
			b.Fatal(err)
		}
		pub := f.keys[alg].Private.Public()
		var verify func() bool
		switch k := pub.(type) {
		case *rsa.PublicKey:
			verify = func() bool {
				h := sha256.Sum256(input)
				return rsa.VerifyPKCS1v15(k, crypto.SHA256, h[:], sig) == nil
			}
		case *ecdsa.PublicKey:
			r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
			verify = func() bool {
				h := sha256.Sum256(input)
				return ecdsa.Verify(k, h[:], r, s)
			}
		case ed25519.PublicKey:
			verify = func() bool { return ed25519.Verify(k, input, sig) }
		}
		if !verify() {
			b.Fatalf("%s: signature does not verify", alg)
		}
		b.Run(alg, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !verify() {
					b.Fatal("verify failed")
				}
			}
		})
	}
}

// BenchmarkDeny measures cheap denials, the cost of hostile traffic.
func BenchmarkDeny(b *testing.B) {
	f := newFixture(b, nil)
	cases := map[string]map[string]string{
		"no_token":  {"user-agent": "bench"},
		"malformed": bearer("not-a-jwt"),
		"expired": bearer(f.token(b, "ES256", func() map[string]any {
			c := f.claims()
			c["iat"], c["exp"] = testNow.Unix()-7200, testNow.Unix()-3600
			return c
		}(), nil)),
	}
	for name, h := range cases {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if d := f.decide(h); d.Allowed {
					b.Fatal("allowed")
				}
			}
		})
	}
}

// benchCacheConfig is the cache as sidegate's defaults set it.
func benchCacheConfig(c *Config) {
	c.Cache = CacheConfig{MaxEntries: 100_000, MaxTTL: 5 * time.Minute, NegativeEntries: 10_000, NegativeTTL: 10 * time.Second}
}

// benchClaims are claims shaped like a real access token's (about 15, a
// 700-byte RS256 token), distinct by n.
func benchClaims(f *fixture, n int) map[string]any {
	c := f.claims()
	c["sub"] = fmt.Sprintf("user-%08d", n)
	c["jti"] = fmt.Sprintf("4f1c7a2e-9b3d-4c11-a5e0-%012x", n)
	c["email"] = fmt.Sprintf("user-%08d@example.com", n)
	c["name"] = "Ada Lovelace"
	c["scope"] = "openid profile email orders:read orders:write"
	c["roles"] = []string{"customer", "beta"}
	c["azp"] = "web-frontend"
	c["sid"] = fmt.Sprintf("sess-%d", n)
	c["email_verified"] = true
	return c
}

// BenchmarkDecideMiss is a full decision (no cache) for the realistic
// ~700-byte RS256 token that `sidegate bench` sends: what every new token
// costs.
func BenchmarkDecideMiss(b *testing.B) {
	f := newFixture(b, nil)
	headers := bearer(f.token(b, "RS256", benchClaims(f, 1), nil))
	if d := f.decide(headers); !d.Allowed {
		b.Fatal(d.Err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if d := f.decide(headers); !d.Allowed {
			b.Fatal(d.Err)
		}
	}
}

// BenchmarkDecideCached is a decision for a token already verified: the
// cache hit every repeated request takes (hash, shard lookup, key check,
// identity headers already built).
func BenchmarkDecideCached(b *testing.B) {
	f := newFixture(b, benchCacheConfig)
	headers := bearer(f.token(b, "RS256", benchClaims(f, 1), nil))
	headers["cookie"] = "theme=dark; lang=en"
	headers["user-agent"] = "bench"
	if d := f.decide(headers); !d.Allowed {
		b.Fatal(d.Err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if d := f.decide(headers); !d.Allowed || d.cached == nil {
			b.Fatal("not a cache hit", d.Err)
		}
	}
}

// BenchmarkGRPCCheckCached is the gRPC Check method for a cached token, as
// grpc-go calls it with the decoded request: allocs/op is what sidegate
// allocates per cached check beyond gRPC's own decoding and encoding.
func BenchmarkGRPCCheckCached(b *testing.B) {
	f := newFixture(b, benchCacheConfig)
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	s := NewServer(f.engine, m, nil)
	headers := map[string]string{
		":authority": "shop.example.com", ":method": "GET", ":path": "/orders/42?expand=items", ":scheme": "https",
		"user-agent": "Mozilla/5.0 (X11; Linux x86_64)", "accept": "application/json", "accept-encoding": "gzip, br",
		"accept-language": "en-GB,en;q=0.9", "x-request-id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
		"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https", "x-envoy-expected-rq-timeout-ms": "15000",
		"cookie": "theme=dark; lang=en", "authorization": "Bearer " + f.token(b, "RS256", benchClaims(f, 1), nil),
		"content-length": "0",
	}
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/orders/42", Headers: headers},
	}}}
	ctx := context.Background()
	if resp, _ := s.Check(ctx, req); resp.GetStatus().GetCode() != 0 {
		b.Fatal(resp.GetStatus())
	}
	b.ReportAllocs()
	for b.Loop() {
		if resp, _ := s.Check(ctx, req); resp.GetStatus().GetCode() != 0 {
			b.Fatal(resp.GetStatus())
		}
	}
}

// BenchmarkCacheMemory fills the cache with 100k distinct verified tokens
// (EdDSA, to mint them quickly; the entry is the same for any algorithm)
// and reports the live heap they hold: bytes-per-entry and heap-MiB. One
// op is the whole fill.
func BenchmarkCacheMemory(b *testing.B) {
	const n = 100_000
	f := newFixture(b, benchCacheConfig)
	toks := make([]string, n)
	for i := range toks {
		toks[i] = f.token(b, "EdDSA", benchClaims(f, i), nil)
	}
	var perEntry, heap float64
	for b.Loop() {
		f.build(b)
		base := benchHeap()
		for _, tok := range toks {
			// The header value arrives as its own string, as from gRPC.
			if d := f.decide(map[string]string{"authorization": "Bearer " + strings.Clone(tok)}); !d.Allowed {
				b.Fatal(d.Err)
			}
		}
		if got := f.engine.cache.len(); got < n*95/100 {
			b.Fatalf("cache holds %d of %d", got, n)
		}
		live := benchHeap() - base
		perEntry, heap = float64(live)/float64(f.engine.cache.len()), float64(live)/(1<<20)
	}
	b.ReportMetric(perEntry, "bytes-per-entry")
	b.ReportMetric(heap, "heap-MiB")
}

func benchHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
