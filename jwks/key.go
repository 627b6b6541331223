// Package jwks holds the signing keys of each configured issuer: it fetches
// their JWKS documents in the background, keeps only keys that are safe to
// verify with, and serves them by exact kid from an atomically swapped
// snapshot, so the request path never waits on I/O or a lock.
package jwks

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
)

// Errors returned by Lookup. The authz package maps them to denial reasons.
var (
	// ErrUnknownKey: the issuer has keys, but none with the requested kid.
	ErrUnknownKey = errors.New("jwks: no key with this kid")
	// ErrKeysUnavailable: the issuer has no usable key set (never fetched,
	// or every fetch so far failed).
	ErrKeysUnavailable = errors.New("jwks: no usable key set for issuer")
	// ErrUnknownIssuer: the issuer is not configured.
	ErrUnknownIssuer = errors.New("jwks: issuer not configured")
	// ErrNoUsableKeys: a JWKS document parsed but yielded no usable key.
	ErrNoUsableKeys = errors.New("jwks: no usable key in set")
)

// Minimum RSA modulus size accepted (RFC 7518 §3.3 asks for 2048).
const minRSABits = 2048

// Key is one verification key, already checked for safety.
type Key struct {
	ID string
	// Algorithms are the JWS algorithms this key may verify: exactly the
	// JWK's "alg" when it has one, otherwise every signature algorithm of
	// its key type and curve.
	Algorithms []jwa.SignatureAlgorithm
	// Public is the raw public key: *rsa.PublicKey, *ecdsa.PublicKey or
	// ed25519.PublicKey.
	Public any
	// jwk is the JWK's exact bytes, to tell an unchanged key on refresh.
	jwk []byte
}

// Algorithm returns the key's algorithm named alg, if the key may verify it.
func (k *Key) Algorithm(alg string) (jwa.SignatureAlgorithm, bool) {
	for _, a := range k.Algorithms {
		if a.String() == alg {
			return a, true
		}
	}
	return jwa.SignatureAlgorithm{}, false
}

// Set is an immutable snapshot of an issuer's usable keys.
type Set struct {
	Keys map[string]*Key
	// FetchedAt is when the server last confirmed these keys (200 or 304).
	FetchedAt time.Time
	// URI, ETag and LastModified are where the keys came from and the
	// validators for a conditional refetch.
	URI, ETag, LastModified string
	raw                     []byte // the JWKS document, for snapshots
}

// DefaultMaxKeys is the most keys a JWKS may hold (Options.MaxKeys).
// Identity providers publish a handful; thousands are an attack on CPU.
const DefaultMaxKeys = 100

// Dropped describes a key that ParseSet refused, for the log.
type Dropped struct {
	Index  int
	KeyID  string
	Reason string
}

func (d Dropped) String() string {
	return fmt.Sprintf("keys[%d] (kid %q): %s", d.Index, d.KeyID, d.Reason)
}

// ParseSet parses a JWKS document of at most DefaultMaxKeys keys and keeps only keys that are safe to
// verify signatures with. One bad key does not spoil the rest; each refused
// key is reported in dropped. A document with no usable key is an error
// (ErrNoUsableKeys), so that it can never replace a good set.
func ParseSet(body []byte) (set *Set, dropped []Dropped, err error) {
	return parseSet(body, DefaultMaxKeys)
}

func parseSet(body []byte, maxKeys int) (set *Set, dropped []Dropped, err error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, nil, fmt.Errorf("jwks: not a JWKS document: %w", err)
	}
	if doc.Keys == nil {
		return nil, nil, errors.New(`jwks: not a JWKS document: no "keys" array`)
	}
	if len(doc.Keys) > maxKeys {
		return nil, nil, fmt.Errorf("jwks: %d keys, more than the %d allowed", len(doc.Keys), maxKeys)
	}
	set = &Set{Keys: make(map[string]*Key, len(doc.Keys)), raw: body}
	for i, raw := range doc.Keys {
		k, kid, err := parseKey(raw)
		if err != nil {
			dropped = append(dropped, Dropped{Index: i, KeyID: kid, Reason: err.Error()})
			continue
		}
		if _, dup := set.Keys[k.ID]; dup {
			dropped = append(dropped, Dropped{Index: i, KeyID: kid, Reason: "duplicate kid; the first key with it is kept"})
			continue
		}
		set.Keys[k.ID] = k
	}
	if len(set.Keys) == 0 {
		return nil, dropped, ErrNoUsableKeys
	}
	return set, dropped, nil
}

// keep makes s reuse old's *Key for every kid whose JWK is byte for byte
// the same, so that a refresh that changes nothing, or one key, leaves the
// others' identity alone: tokens cached as verified by a key stay cached
// while it is served unchanged.
func (s *Set) keep(old *Set) {
	for kid, k := range s.Keys {
		if o, ok := old.Keys[kid]; ok && bytes.Equal(o.jwk, k.jwk) {
			s.Keys[kid] = o
		}
	}
}

// parseKey applies the ingest rules to one JWK. It returns the kid it could
// read even on error, for the log.
func parseKey(raw json.RawMessage) (*Key, string, error) {
	var probe struct {
		Kty string `json:"kty"`
		Kid any    `json:"kid"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, "", fmt.Errorf("not a JSON object: %w", err)
	}
	kid, _ := probe.Kid.(string)
	switch probe.Kty {
	case "RSA", "EC", "OKP":
	case "oct":
		return nil, kid, errors.New("symmetric (oct) keys are never used for verification")
	default:
		return nil, kid, fmt.Errorf("unsupported key type %q", probe.Kty)
	}
	if kid == "" {
		return nil, kid, errors.New(`no "kid": tokens select keys by kid, so this key could never be used`)
	}
	jk, err := jwk.ParseKey(raw)
	if err != nil {
		return nil, kid, fmt.Errorf("invalid JWK: %w", err)
	}
	// encoding/json matched "kid" case-insensitively above, so a member such
	// as "KID" could have named the key; JWK member names are case-sensitive
	// (RFC 7517 §4), and the key must be filed under the kid jwx read.
	if jkid, _ := jk.KeyID(); jkid != kid {
		return nil, kid, fmt.Errorf("ambiguous kid: %q, or %q by a member name in another case", jkid, kid)
	}
	if use, ok := jk.KeyUsage(); ok && use != "sig" {
		return nil, kid, fmt.Errorf("use %q is not \"sig\"", use)
	}
	if ops, ok := jk.KeyOps(); ok && !slices.Contains(ops, jwk.KeyOpVerify) {
		return nil, kid, errors.New(`key_ops does not include "verify"`)
	}
	var pub any
	if err := jwk.Export(jk, &pub); err != nil {
		return nil, kid, fmt.Errorf("unusable key material: %w", err)
	}
	pub, err = publicOnly(pub)
	if err != nil {
		return nil, kid, err
	}
	algs, err := algorithmsFor(pub)
	if err != nil {
		return nil, kid, err
	}
	if a, ok := jk.Algorithm(); ok {
		sa, ok := jwa.LookupSignatureAlgorithm(a.String())
		if !ok || !slices.Contains(algs, sa) {
			return nil, kid, fmt.Errorf("alg %q does not fit a %s key", a.String(), probe.Kty)
		}
		algs = []jwa.SignatureAlgorithm{sa}
	}
	return &Key{ID: kid, Algorithms: algs, Public: pub, jwk: raw}, kid, nil
}

// publicOnly accepts public keys only. A JWKS that publishes private key
// material has leaked it: anyone who fetched the set can sign tokens, so
// such a key is refused (fail closed), not reduced to its public half.
func publicOnly(k any) (any, error) {
	switch k := k.(type) {
	case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
		return nil, fmt.Errorf("private key material is published (anyone can sign with it): key refused")
	case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		return k, nil
	default:
		return nil, fmt.Errorf("unsupported key material %T", k)
	}
}

// algorithmsFor checks key strength and returns the algorithms its type allows.
func algorithmsFor(pub any) ([]jwa.SignatureAlgorithm, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N == nil || k.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("RSA modulus is %d bits, under %d", bitLen(k), minRSABits)
		}
		if k.E != 65537 {
			return nil, fmt.Errorf("RSA public exponent is %d, not 65537", k.E)
		}
		return []jwa.SignatureAlgorithm{jwa.RS256(), jwa.RS384(), jwa.RS512(), jwa.PS256(), jwa.PS384(), jwa.PS512()}, nil
	case *ecdsa.PublicKey:
		// ECDH() refuses points that are not on the curve (and the point at
		// infinity), which is the check invalid-curve attacks rely on us skipping.
		if _, err := k.ECDH(); err != nil {
			return nil, fmt.Errorf("EC point is not on the curve: %w", err)
		}
		switch k.Curve.Params().Name {
		case "P-256":
			return []jwa.SignatureAlgorithm{jwa.ES256()}, nil
		case "P-384":
			return []jwa.SignatureAlgorithm{jwa.ES384()}, nil
		case "P-521":
			return []jwa.SignatureAlgorithm{jwa.ES512()}, nil
		}
		return nil, fmt.Errorf("unsupported curve %s", k.Curve.Params().Name)
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("Ed25519 key is %d bytes, not %d", len(k), ed25519.PublicKeySize)
		}
		return []jwa.SignatureAlgorithm{jwa.EdDSA()}, nil
	}
	return nil, fmt.Errorf("unsupported key material %T", pub)
}

func bitLen(k *rsa.PublicKey) int {
	if k.N == nil {
		return 0
	}
	return k.N.BitLen()
}
