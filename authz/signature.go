package authz

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	_ "crypto/sha512" // registers SHA-384 and SHA-512
	"errors"
	"fmt"
	"math/big"
	"unsafe"
)

// verifySignature checks a JWS signature (RFC 7518 §3) over the signing
// input with the standard library's verifiers. The key has already been
// chosen by kid and its algorithms checked against alg; the key type is
// checked here again so that no mismatch can reach a verifier.
//
// This is what jwx's jws.VerifyCompactFast does after it parses the header
// a second time and decodes the payload again; calling the verifiers
// directly skips both.
func verifySignature(pub any, alg, input, sigSeg string) error {
	sig, err := b64.DecodeString(sigSeg)
	if err != nil {
		return fmt.Errorf("signature is not base64url: %v", err)
	}
	// The verifiers only read the message; it is not copied.
	msg := unsafe.Slice(unsafe.StringData(input), len(input))
	if len(alg) != 5 {
		return fmt.Errorf("unsupported algorithm %q", alg)
	}
	if alg == "EdDSA" {
		k, ok := pub.(ed25519.PublicKey)
		if !ok || len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("key type %T for %s", pub, alg)
		}
		if !ed25519.Verify(k, msg, sig) {
			return errors.New("Ed25519 signature does not verify")
		}
		return nil
	}
	var h crypto.Hash
	switch alg[2:] {
	case "256":
		h = crypto.SHA256
	case "384":
		h = crypto.SHA384
	case "512":
		h = crypto.SHA512
	default:
		return fmt.Errorf("unsupported algorithm %q", alg)
	}
	var digest []byte
	if h == crypto.SHA256 {
		// Most tokens are RS256 or ES256: no hash.Hash to allocate.
		sum := sha256.Sum256(msg)
		digest = sum[:]
	} else {
		d := h.New()
		d.Write(msg)
		digest = d.Sum(nil)
	}
	switch alg[:2] {
	case "RS", "PS":
		k, ok := pub.(*rsa.PublicKey)
		if !ok {
			return fmt.Errorf("key type %T for %s", pub, alg)
		}
		if alg[0] == 'R' {
			return rsa.VerifyPKCS1v15(k, h, digest, sig)
		}
		// RFC 7518 §3.5: the salt is as long as the hash.
		return rsa.VerifyPSS(k, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: h})
	case "ES":
		k, ok := pub.(*ecdsa.PublicKey)
		if !ok {
			return fmt.Errorf("key type %T for %s", pub, alg)
		}
		// RFC 7518 §3.4: R and S, each as long as the curve's order, side
		// by side; nothing else (no ASN.1) is a JWS ECDSA signature.
		n := (k.Curve.Params().BitSize + 7) / 8
		if len(sig) != 2*n {
			return fmt.Errorf("ECDSA signature is %d bytes, want %d", len(sig), 2*n)
		}
		r, s := new(big.Int).SetBytes(sig[:n]), new(big.Int).SetBytes(sig[n:])
		if !ecdsa.Verify(k, digest, r, s) {
			return errors.New("ECDSA signature does not verify")
		}
		return nil
	}
	return fmt.Errorf("unsupported algorithm %q", alg)
}
