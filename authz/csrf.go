package authz

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// csrfGuard refuses cross-site browser requests that would act with the
// user's session cookie. A browser attaches cookies to requests by itself,
// whichever page sends them (SameSite keeps a cookie off requests from
// other sites, but a sibling subdomain is the same site), so a cookie
// token says nothing about which page sent the request. It is net/http's
// CrossOriginProtection, fed from the ext_authz request's headers, with one
// rule tightened: a request with neither Sec-Fetch-Site nor Origin, which
// CrossOriginProtection allows, is allowed only with allow_missing_headers.
//
// The caller applies it to cookie tokens only (a browser never attaches a
// bearer header by itself) and applies the route's CSRF mode to its answer.
type csrfGuard struct {
	cop          *http.CrossOriginProtection // no bypass patterns: Check never reads req.URL
	allowMissing bool
}

// newCSRF builds the guard from cfg's trusted origins and
// allow_missing_headers, reporting every bad origin. cfg.Mode is resolved
// per route by CompilePolicy.
func newCSRF(cfg CSRFConfig) (*csrfGuard, error) {
	g := &csrfGuard{cop: http.NewCrossOriginProtection(), allowMissing: cfg.AllowMissingHeaders}
	var errs []error
	for i, o := range cfg.TrustedOrigins {
		err := checkOrigin(o)
		if err == nil {
			err = g.cop.AddTrustedOrigin(o)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("csrf.trusted_origins[%d]: %q: %v", i, o, err))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return g, nil
}

// checkOrigin accepts an origin as browsers serialize it in the Origin
// header (RFC 6454 §6.1): scheme://host[:port], lower case, no default
// port. CrossOriginProtection compares the header with it byte for byte,
// so any other spelling would never match.
func checkOrigin(o string) error {
	scheme, rest, ok := strings.Cut(o, "://")
	if !ok || !validScheme(scheme) {
		return errors.New("want scheme://host[:port]")
	}
	if o != strings.ToLower(o) {
		return errors.New("browsers send origins in lower case")
	}
	if strings.ContainsAny(rest, "/?#@") {
		return errors.New("an origin has no user info, path, query or fragment (not even a trailing /)")
	}
	host, port := rest, ""
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && !strings.HasSuffix(rest, "]") {
		host, port = rest[:i], rest[i+1:]
		n, err := strconv.Atoi(port)
		switch {
		case err != nil || n < 1 || n > 65535 || port[0] == '0':
			return fmt.Errorf("port %q is not 1 to 65535", port)
		case scheme == "https" && n == 443, scheme == "http" && n == 80:
			return fmt.Errorf("browsers leave out the default port %d", n)
		}
	}
	if hp, err := parseHostPattern(host); err != nil || hp.wildcard {
		return errors.New("the host is not a host name or IP literal (no wildcards)")
	}
	return nil
}

// validScheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) (RFC 3986 §3.1).
func validScheme(s string) bool {
	if s == "" || !(s[0] >= 'a' && s[0] <= 'z' || s[0] >= 'A' && s[0] <= 'Z') {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

// check judges one request that carries a cookie token: nil, or an error
// wrapping ErrCSRF. host is the request's Host (or :authority), port and
// all; secFetchSite and origin are the header values, "" when absent.
//
// GET, HEAD and OPTIONS pass. Otherwise Sec-Fetch-Site must be same-origin
// or none; without it, Origin must be the request's host or a trusted
// origin; without either, the request passes only with
// allow_missing_headers. A cross-site request from a trusted origin passes
// too. An Origin of "null" (sandboxed documents, cross-origin redirects)
// is never the request's host.
func (g *csrfGuard) check(method, host, secFetchSite, origin string) error {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	if secFetchSite == "" && origin == "" {
		if g.allowMissing {
			return nil
		}
		return fmt.Errorf("%w: %s request with neither Sec-Fetch-Site nor Origin", ErrCSRF, quoteExcerpt(method, 16))
	}
	if host == "" {
		// CrossOriginProtection would find an empty Host equal to the host
		// of Origin "null"; no parsed Origin has a NUL in its host.
		host = "\x00"
	}
	h := make(http.Header, 2)
	if secFetchSite != "" {
		h["Sec-Fetch-Site"] = []string{secFetchSite}
	}
	if origin != "" {
		h["Origin"] = []string{origin}
	}
	req := &http.Request{Method: method, Host: strings.ToLower(host), Header: h}
	if err := g.cop.Check(req); err != nil {
		return fmt.Errorf("%w: %v (Sec-Fetch-Site %s, Origin %s)", ErrCSRF, err, quoteExcerpt(secFetchSite, 32), quoteExcerpt(origin, 128))
	}
	return nil
}
