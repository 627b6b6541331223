package authz

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unsafe"

	"github.com/sidegate/sidegate/jwks"
)

// Claims are the verified contents of a token.
type Claims struct {
	Issuer   string
	Subject  string
	ID       string // jti
	Audience []string
	// Expiry, NotBefore and IssuedAt are NumericDates in seconds; NotBefore
	// and IssuedAt are 0 when absent.
	Expiry, NotBefore, IssuedAt float64
	KeyID                       string
	Algorithm                   string
	// claims are every claim of the token, as JSON text, when the token
	// was verified by this decision; nil on claims served from the
	// verified-token cache, which keeps only what it needs.
	claims object
	// payload is the base64url payload segment of the token: the exact
	// verified bytes, already in the encoding payload_header forwards.
	payload string
	// jwk is the key the signature verified with.
	jwk *jwks.Key
	// values are the claims the engine's route requirements look at,
	// taken out at verification so that cached claims keep them; nil when
	// no route has requirements.
	values *claimValues
}

// b64 is base64url without padding, rejecting non-canonical trailing bits
// so that one token has exactly one encoding.
var b64 = base64.RawURLEncoding.Strict()

// header parameters that name or carry keys, certificates or URLs. They are
// never used; a token carrying one is refused so that no key or fetch can
// ever be steered by a token (RFC 8725 §3.10).
var keyHeaders = []string{"jwk", "jku", "x5u", "x5c"}

// checkShape is the pre-parse gate: a token must be at most maxSize bytes
// and exactly three non-empty, canonical base64url segments. This refuses
// the JWS JSON serialization, JWE, unsigned tokens and anything with
// padding, whitespace, foreign characters or non-zero pad bits before any
// decoding happens.
func checkShape(tok string, maxSize int) error {
	if len(tok) > maxSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTokenTooLarge, len(tok), maxSize)
	}
	if strings.HasPrefix(tok, "{") {
		return fmt.Errorf("%w: JWS JSON serialization is not accepted", ErrMalformed)
	}
	segs, start := 0, 0
	for i := 0; i <= len(tok); i++ {
		i = skip8(tok, i, base64URLChar)
		if i == len(tok) || tok[i] == '.' {
			if i == start {
				return fmt.Errorf("%w: empty segment", ErrMalformed)
			}
			if !canonical(tok[start:i]) {
				return fmt.Errorf("%w: segment %d is not canonical base64url", ErrMalformed, segs+1)
			}
			segs++
			start = i + 1
			continue
		}
		if c := tok[i]; charClass[c]&base64URLChar == 0 {
			return fmt.Errorf("%w: character %q is not base64url", ErrMalformed, c)
		}
	}
	if segs != 3 {
		return fmt.Errorf("%w: %d segments, want 3", ErrMalformed, segs)
	}
	return nil
}

// canonical reports whether seg, already known to hold only base64url
// characters, has a length base64url can produce and leaves the unused bits
// of its last character zero (RFC 4648 §3.5). Otherwise up to 16 strings
// would decode to the same bytes: the header and payload are decoded
// strictly below, but jwx decodes the signature leniently, so without this
// one signed token would have many accepted encodings.
func canonical(seg string) bool {
	var unused byte
	switch len(seg) % 4 {
	case 1:
		return false
	case 2:
		unused = 0x0f
	case 3:
		unused = 0x03
	default:
		return true
	}
	c := seg[len(seg)-1]
	var v byte
	switch {
	case c >= 'A' && c <= 'Z':
		v = c - 'A'
	case c >= 'a' && c <= 'z':
		v = c - 'a' + 26
	case c >= '0' && c <= '9':
		v = c - '0' + 52
	case c == '-':
		v = 62
	default: // '_'
		v = 63
	}
	return v&unused == 0
}

// tokenHeader is the part of the protected header sidegate acts on.
type tokenHeader struct {
	alg, kid, typ string
}

// decodeSegment decodes a header or payload segment and parses it as one
// JSON object.
func decodeSegment(seg string) (object, error) {
	raw, err := b64.DecodeString(seg)
	if err != nil {
		return nil, fmt.Errorf("not base64url: %v", err)
	}
	// raw is never written again: the parsed object's strings can be
	// views of it instead of a second copy of the segment.
	return parseObject(unsafe.String(unsafe.SliceData(raw), len(raw)))
}

// parseHeader decodes and checks the protected header. Duplicate member
// names are refused (RFC 7515 §5.2), so no other parser can read a
// different alg or kid from the same bytes.
func parseHeader(seg string) (tokenHeader, error) {
	members, err := decodeSegment(seg)
	if err != nil {
		return tokenHeader{}, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	for _, name := range keyHeaders {
		if members.has(name) {
			return tokenHeader{}, fmt.Errorf("%w: %q", ErrForbiddenHeader, name)
		}
	}
	// No extension is understood, so any crit is refused (RFC 7515
	// §4.1.11); b64=false (RFC 7797) changes what is signed.
	for _, name := range []string{"crit", "b64"} {
		if members.has(name) {
			return tokenHeader{}, fmt.Errorf("%w: %q", ErrForbiddenHeader, name)
		}
	}
	var h tokenHeader
	if h.alg, _, err = members.stringMember("alg"); err != nil || h.alg == "" {
		return tokenHeader{}, fmt.Errorf("%w: alg missing or not a string", ErrMalformed)
	}
	if strings.EqualFold(h.alg, "none") {
		return tokenHeader{}, fmt.Errorf("%w: alg none", ErrAlgorithm)
	}
	if h.kid, _, err = members.stringMember("kid"); err != nil || h.kid == "" {
		return tokenHeader{}, fmt.Errorf("%w: kid missing, empty or not a string", ErrMissingKeyID)
	}
	if h.typ, _, err = members.stringMember("typ"); err != nil {
		return tokenHeader{}, fmt.Errorf("%w: typ is not a string", ErrMalformed)
	}
	return h, nil
}

// verify checks one token completely: shape, header, issuer, key, algorithm,
// signature and claims, in that order. Before the signature only what is
// needed to find the key is read (the header, and iss from the payload);
// every other claim is judged only once the signature holds.
//
// now is the decision's clock reading: one per decision, shared by every
// time check in it.
func (e *Engine) verify(ctx context.Context, tok string, now time.Time) (*Claims, error) {
	if err := checkShape(tok, e.cfg.MaxSize); err != nil {
		return nil, err
	}
	hseg, rest, _ := strings.Cut(tok, ".")
	pseg, sseg, _ := strings.Cut(rest, ".")
	h, err := parseHeader(hseg)
	if err != nil {
		return nil, err
	}
	claims, err := decodeSegment(pseg)
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	iss, ok, err := claims.stringMember("iss")
	if !ok || err != nil {
		return nil, fmt.Errorf("%w: iss missing or not a string", ErrInvalidClaims)
	}
	pol, ok := e.issuers[iss]
	if !ok {
		return nil, ErrUnknownIssuer
	}
	if !slices.Contains(pol.Algorithms, h.alg) {
		return nil, fmt.Errorf("%w: %q is not in the issuer's algorithms", ErrAlgorithm, h.alg)
	}
	if len(pol.TokenTypes) > 0 && !typeAllowed(h.typ, pol.TokenTypes) {
		return nil, fmt.Errorf("%w: typ %q", ErrTokenType, h.typ)
	}
	key, err := e.keys.Lookup(ctx, iss, h.kid)
	switch {
	case errors.Is(err, jwks.ErrUnknownKey):
		return nil, fmt.Errorf("%w: kid %q", ErrUnknownKey, h.kid)
	case errors.Is(err, jwks.ErrKeysUnavailable):
		return nil, fmt.Errorf("%w: %v", ErrKeysUnavailable, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return nil, err
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrUnknownKey, err)
	}
	if _, ok := key.Algorithm(h.alg); !ok {
		return nil, fmt.Errorf("%w: key %q is not for %s", ErrAlgorithm, h.kid, h.alg)
	}
	if err := verifySignature(key.Public, h.alg, tok[:len(hseg)+1+len(pseg)], sseg); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	c := &Claims{Issuer: iss, KeyID: h.kid, Algorithm: h.alg, claims: claims, payload: pseg, jwk: key}
	if err := e.checkClaims(c, pol, now); err != nil {
		return nil, err
	}
	c.values = e.policy.extractFrom(claims)
	return c, nil
}

// checkClaims applies RFC 7519 §4.1 and RFC 8725 to verified claims.
func (e *Engine) checkClaims(c *Claims, pol Issuer, now time.Time) error {
	var err error
	if c.Expiry, err = numericDate(c.claims, "exp", true); err != nil {
		return err
	}
	if c.NotBefore, err = numericDate(c.claims, "nbf", false); err != nil {
		return err
	}
	if c.IssuedAt, err = numericDate(c.claims, "iat", e.cfg.RequireIssuedAt); err != nil {
		return err
	}
	if c.Subject, _, err = c.claims.stringMember("sub"); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidClaims, err)
	}
	if c.ID, _, err = c.claims.stringMember("jti"); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidClaims, err)
	}
	if c.Audience, err = audience(c.claims); err != nil {
		return err
	}
	nowSec := float64(now.UnixNano()) / 1e9
	leeway := e.cfg.Leeway.Seconds()
	if nowSec >= c.Expiry+leeway {
		return fmt.Errorf("%w: exp %.0f is %.0fs ago", ErrExpired, c.Expiry, nowSec-c.Expiry)
	}
	if c.NotBefore != 0 && c.NotBefore > nowSec+leeway {
		return fmt.Errorf("%w: nbf %.0f is in the future", ErrNotYetValid, c.NotBefore)
	}
	if c.IssuedAt != 0 && c.IssuedAt > nowSec+leeway {
		return fmt.Errorf("%w: iat %.0f is in the future", ErrNotYetValid, c.IssuedAt)
	}
	maxLife := e.cfg.MaxLifetime.Seconds()
	if c.IssuedAt != 0 {
		if c.Expiry-c.IssuedAt > maxLife {
			return fmt.Errorf("%w: exp-iat is %.0fs, limit %.0fs", ErrLifetime, c.Expiry-c.IssuedAt, maxLife)
		}
	} else if c.Expiry-nowSec > maxLife+leeway {
		return fmt.Errorf("%w: no iat and exp is %.0fs away, limit %.0fs", ErrLifetime, c.Expiry-nowSec, maxLife)
	}
	for _, a := range c.Audience {
		if slices.Contains(pol.Audiences, a) {
			return nil
		}
	}
	return fmt.Errorf("%w: aud %q", ErrAudience, c.Audience)
}

// typeAllowed compares typ with the allowed media types as RFC 7515
// §4.1.9 says: case-insensitively, with "application/" optional. A missing
// typ is not allowed when types are configured (RFC 8725 §3.11: explicit
// typing is what keeps, say, an ID token from being used as an access token).
func typeAllowed(typ string, allowed []string) bool {
	typ = trimApplication(typ)
	for _, a := range allowed {
		if typ != "" && strings.EqualFold(typ, trimApplication(a)) {
			return true
		}
	}
	return false
}

func trimApplication(t string) string {
	if len(t) > len("application/") && strings.EqualFold(t[:len("application/")], "application/") {
		return t[len("application/"):]
	}
	return t
}

// numericDate reads a NumericDate claim: a positive, finite JSON number.
// Strings, dates and other types are refused, not coerced.
func numericDate(claims object, name string, required bool) (float64, error) {
	v, ok := claims.get(name)
	if !ok {
		if required {
			return 0, fmt.Errorf("%w: %s is required", ErrInvalidClaims, name)
		}
		return 0, nil
	}
	f, ok := numericDateValue(v)
	if !ok {
		return 0, fmt.Errorf("%w: %s is not a positive finite number", ErrInvalidClaims, name)
	}
	return f, nil
}

// audience reads aud: one string or an array of strings (RFC 7519 §4.1.3).
func audience(claims object) ([]string, error) {
	v, ok := claims.get("aud")
	if !ok {
		return nil, nil
	}
	switch d := decodeValue(v).(type) {
	case nil:
		return nil, nil
	case string:
		return []string{d}, nil
	case []any:
		out := make([]string, 0, len(d))
		for _, a := range d {
			s, ok := a.(string)
			if !ok {
				return nil, fmt.Errorf("%w: aud holds a non-string", ErrInvalidClaims)
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: aud is neither a string nor an array", ErrInvalidClaims)
}
