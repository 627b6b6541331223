package authz

import (
	"context"
	"errors"
	"net/http"
)

// Denial reasons. Every denial wraps exactly one of these, so the metric
// label, the response and the log line agree. The wrapped detail goes to
// the log only: responses carry the fixed description from the table, never
// text taken from the request.
var (
	ErrNoToken               = errors.New("no token")
	ErrBadAuthorization      = errors.New("authorization header is not a single bearer token")
	ErrDuplicateCookie       = errors.New("token cookie sent more than once")
	ErrTokenTooLarge         = errors.New("token too large")
	ErrMalformed             = errors.New("malformed token")
	ErrForbiddenHeader       = errors.New("forbidden token header")
	ErrMissingKeyID          = errors.New("token has no kid")
	ErrAlgorithm             = errors.New("algorithm not allowed")
	ErrUnknownIssuer         = errors.New("unknown issuer")
	ErrTokenType             = errors.New("token type not accepted")
	ErrUnknownKey            = errors.New("unknown signing key")
	ErrKeysUnavailable       = errors.New("issuer keys unavailable")
	ErrBadSignature          = errors.New("bad signature")
	ErrInvalidClaims         = errors.New("invalid claims")
	ErrExpired               = errors.New("token expired")
	ErrNotYetValid           = errors.New("token not yet valid")
	ErrLifetime              = errors.New("token lifetime too long")
	ErrAudience              = errors.New("audience not accepted")
	ErrTokenMismatch         = errors.New("header and cookie tokens disagree")
	ErrRevoked               = errors.New("token revoked")
	ErrRevocationUnavailable = errors.New("revocation feed unavailable")
	ErrCanceled              = errors.New("request canceled")

	// Route policy (route.go, path.go, csrf.go).
	ErrBadPath           = errors.New("ambiguous request path")
	ErrUnknownRoute      = errors.New("unknown route")
	ErrInsufficientScope = errors.New("insufficient scope")
	ErrClaimMismatch     = errors.New("required claim not present")
	ErrCSRF              = errors.New("cross-site request with a cookie token")
	// ErrRouteIssuer: the token's issuer is trusted, but not on this
	// route (its issuers list).
	ErrRouteIssuer = errors.New("issuer not accepted on this route")
)

// Reason is how one kind of decision is reported.
type Reason struct {
	// Code is the stable reason code: the metric label, the "reason" field
	// of the JSON body and the log attribute.
	Code string
	// Status is the HTTP status of the response.
	Status int
	// Error and Description are the RFC 6750 §3 error attributes of
	// WWW-Authenticate; Error is empty when no credentials were sent (§3.1).
	Error       string
	Description string
	err         error
}

// ReasonOK is the reason of every allowed decision.
var ReasonOK = Reason{Code: "ok", Status: http.StatusOK}

// reasons is the one table that maps a denial to its response and metric
// label. 401 is used even for malformed requests (where RFC 6750 suggests
// 400) because nginx auth_request passes only 401 and 403 through.
var reasons = []Reason{
	{err: ErrNoToken, Code: "no_token", Status: 401},
	{err: ErrBadAuthorization, Code: "bad_authorization_header", Status: 401, Error: "invalid_request", Description: "the Authorization header must be exactly one Bearer token"},
	{err: ErrDuplicateCookie, Code: "duplicate_cookie", Status: 401, Error: "invalid_request", Description: "the token cookie was sent more than once"},
	{err: ErrTokenTooLarge, Code: "token_too_large", Status: 401, Error: "invalid_token", Description: "the token is too large"},
	{err: ErrMalformed, Code: "malformed_token", Status: 401, Error: "invalid_token", Description: "the token is not a compact JWS"},
	{err: ErrForbiddenHeader, Code: "forbidden_header", Status: 401, Error: "invalid_token", Description: "the token header carries a parameter that is not accepted"},
	{err: ErrMissingKeyID, Code: "missing_kid", Status: 401, Error: "invalid_token", Description: "the token header has no key id"},
	{err: ErrAlgorithm, Code: "algorithm_not_allowed", Status: 401, Error: "invalid_token", Description: "the token algorithm is not allowed"},
	{err: ErrUnknownIssuer, Code: "unknown_issuer", Status: 401, Error: "invalid_token", Description: "the token issuer is not trusted"},
	{err: ErrTokenType, Code: "wrong_token_type", Status: 401, Error: "invalid_token", Description: "the token type is not accepted"},
	{err: ErrUnknownKey, Code: "unknown_key", Status: 401, Error: "invalid_token", Description: "the token signing key is unknown"},
	// No RFC 6750 error: the token may be fine, and "invalid_token" would
	// tell clients to discard it and log in again, against an identity
	// provider that is likely down.
	{err: ErrKeysUnavailable, Code: "keys_unavailable", Status: 503, Description: "the issuer's signing keys are not available"},
	{err: ErrBadSignature, Code: "bad_signature", Status: 401, Error: "invalid_token", Description: "the token signature is invalid"},
	{err: ErrInvalidClaims, Code: "invalid_claims", Status: 401, Error: "invalid_token", Description: "the token claims are invalid"},
	{err: ErrExpired, Code: "expired", Status: 401, Error: "invalid_token", Description: "the token has expired"},
	{err: ErrNotYetValid, Code: "not_yet_valid", Status: 401, Error: "invalid_token", Description: "the token is not valid yet"},
	{err: ErrLifetime, Code: "lifetime_too_long", Status: 401, Error: "invalid_token", Description: "the token lifetime is too long"},
	{err: ErrAudience, Code: "audience_mismatch", Status: 401, Error: "invalid_token", Description: "the token is not meant for this audience"},
	{err: ErrTokenMismatch, Code: "token_mismatch", Status: 401, Error: "invalid_token", Description: "the header and cookie tokens do not match"},
	{err: ErrRevoked, Code: "revoked", Status: 401, Error: "invalid_token", Description: "the token has been revoked"},
	// Like keys_unavailable: no RFC 6750 error, the token may well be good.
	{err: ErrRevocationUnavailable, Code: "revocation_unavailable", Status: 503, Description: "revocations cannot be checked right now"},
	{err: ErrCanceled, Code: "canceled", Status: 503},
	// Policy denials are 403: nginx auth_request passes only 401 and 403
	// (so no 400), and a 401 would send the client for a new token that
	// would not help.
	{err: ErrBadPath, Code: "bad_path", Status: 403, Description: "the request path is ambiguous"},
	// A configuration error between the proxy and sidegate: denied, never
	// allowed.
	{err: ErrUnknownRoute, Code: "unknown_route", Status: 500, Description: "the route the proxy named is not configured"},
	{err: ErrInsufficientScope, Code: "insufficient_scope", Status: 403, Error: "insufficient_scope", Description: "the token lacks a scope this route requires"},
	// RFC 6750 has no closer error than insufficient_scope.
	{err: ErrClaimMismatch, Code: "claim_mismatch", Status: 403, Error: "insufficient_scope", Description: "the token lacks a claim this route requires"},
	{err: ErrCSRF, Code: "csrf", Status: 403, Description: "a cross-site request may not use the session cookie for this method"},
	// The token is good; this route wants one from another issuer.
	{err: ErrRouteIssuer, Code: "route_issuer", Status: 403, Error: "insufficient_scope", Description: "the token issuer is not accepted on this route"},
}

// reasonInternal answers an error outside the table: deny, never allow.
var reasonInternal = Reason{Code: "internal", Status: http.StatusInternalServerError}

// ReasonFor maps a denial error to its reason.
func ReasonFor(err error) Reason {
	if err == nil {
		return ReasonOK
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		err = ErrCanceled
	}
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r
		}
	}
	return reasonInternal
}

// Reasons lists every reason code, for documentation and tests.
func Reasons() []Reason {
	out := append([]Reason{ReasonOK}, reasons...)
	return append(out, reasonInternal)
}
