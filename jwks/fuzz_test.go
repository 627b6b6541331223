package jwks

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/sidegate/sidegate/jwks/jwkstest"
)

// FuzzParseSet feeds JWKS documents (an identity provider's, so untrusted
// input) to ParseSet. It must never panic, and whatever it keeps must be a
// strong public key, named, with algorithms that fit it.
func FuzzParseSet(f *testing.F) {
	rs := jwkstest.NewKey(f, "RS256", "rs")
	es256 := jwkstest.NewKey(f, "ES256", "es256")
	es384 := jwkstest.NewKey(f, "ES384", "es384")
	es512 := jwkstest.NewKey(f, "ES512", "es512")
	ed := jwkstest.NewKey(f, "EdDSA", "ed")
	small := testRSA(f, 1024)

	for _, doc := range [][]byte{
		testDoc(f, rs.JWK(), es256.JWK(), es384.JWK(), es512.JWK(), ed.JWK()),
		testDoc(f, testJWK(rs, "rs", map[string]any{"alg": nil, "use": nil})),
		testDoc(f, testJWK(es256, "k", map[string]any{"key_ops": []string{"verify"}})),
		testDoc(f, testPrivateJWK(f, rs, "rs"), testPrivateJWK(f, es256, "ec"), testPrivateJWK(f, ed, "okp")),
		testDoc(f, testJWK(small, "small", nil), testJWK(rs, "e3", map[string]any{"e": "Aw"}), es256.JWK()),
		testDoc(f, testOffCurve(f, es256.JWK()), testJWK(es384, "mixed", map[string]any{"crv": "P-256"})),
		testDoc(f, map[string]any{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}, testJWK(ed, "dup", nil), testJWK(es256, "dup", nil)),
		testDoc(f, testJWK(rs, "x", map[string]any{"alg": "ES256"}), testJWK(es256, "y", map[string]any{"alg": "none"}), testJWK(ed, "", nil)),
		[]byte(`{"keys":[]}`),
		[]byte(`{"keys":[null,1,"x",[],{}]}`),
		[]byte(`{"keys":[{"kty":"OKP","crv":"X25519","kid":"x","x":"hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"}]}`),
		[]byte(`{"keys":[{"kty":"EC","crv":"P-256","kid":"z","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","y":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}`),
		[]byte(`{}`),
		[]byte(`not json`),
	} {
		f.Add(doc)
	}

	f.Fuzz(func(t *testing.T, body []byte) {
		set, dropped, err := ParseSet(body)

		var doc struct {
			Keys []json.RawMessage `json:"keys"`
		}
		isDoc := json.Unmarshal(body, &doc) == nil && doc.Keys != nil

		if err != nil {
			if set != nil {
				t.Fatalf("error %v with a non-nil set", err)
			}
			if isDoc && !errors.Is(err, ErrNoUsableKeys) {
				t.Fatalf("a JWKS document gave %v, want ErrNoUsableKeys", err)
			}
			if errors.Is(err, ErrNoUsableKeys) && len(dropped) != len(doc.Keys) {
				t.Fatalf("no usable keys, but only %d of %d entries explained", len(dropped), len(doc.Keys))
			}
			return
		}
		if !isDoc {
			t.Fatalf("accepted a document that is not a JWKS: %q", body)
		}
		if set == nil || len(set.Keys) == 0 {
			t.Fatal("success with no keys")
		}
		// Every entry is either kept or explained, once.
		if len(set.Keys)+len(dropped) != len(doc.Keys) {
			t.Fatalf("%d kept + %d dropped != %d entries", len(set.Keys), len(dropped), len(doc.Keys))
		}
		for i, d := range dropped {
			if d.Reason == "" || d.Index < 0 || d.Index >= len(doc.Keys) || (i > 0 && d.Index <= dropped[i-1].Index) {
				t.Fatalf("bad dropped entry %d: %+v", i, d)
			}
		}
		for kid, k := range set.Keys {
			if k == nil || k.ID == "" || k.ID != kid {
				t.Fatalf("key under %q has ID %q", kid, k.ID)
			}
			if len(k.Algorithms) == 0 {
				t.Fatalf("key %q has no algorithm", kid)
			}
			for _, a := range k.Algorithms {
				if !fuzzAlgFits(a.String(), k.Public) {
					t.Fatalf("key %q: algorithm %s on a %T", kid, a, k.Public)
				}
			}
			switch p := k.Public.(type) {
			case *rsa.PublicKey:
				if p.N == nil || p.N.BitLen() < 2048 || p.E != 65537 {
					t.Fatalf("key %q: weak RSA key (%d bits, e=%d)", kid, bitLen(p), p.E)
				}
			case *ecdsa.PublicKey:
				if _, err := p.ECDH(); err != nil {
					t.Fatalf("key %q: EC key not on its curve: %v", kid, err)
				}
			case ed25519.PublicKey:
				if len(p) != ed25519.PublicKeySize {
					t.Fatalf("key %q: Ed25519 key of %d bytes", kid, len(p))
				}
			default:
				t.Fatalf("key %q: Public is %T", kid, p)
			}
		}
	})
}

// fuzzAlgFits says whether a JWS algorithm can be used with this public key.
func fuzzAlgFits(alg string, pub any) bool {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		return map[string]string{"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}[p.Curve.Params().Name] == alg
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}
