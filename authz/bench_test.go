package authz

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"math/big"
	"strings"
	"testing"
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
