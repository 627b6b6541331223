package authz

import (
	"io"
	"net/http"
	"strings"
)

// ServeHTTP is the HTTP check, on any path. The token comes from the
// request's own Authorization and Cookie headers, so it works as the
// subrequest target of nginx auth_request, Caddy forward_auth, Traefik
// forwardAuth and Envoy's HTTP ext_authz mode. Allowed: 200 with the
// identity headers (and, for Envoy, x-envoy-auth-headers-to-remove naming
// client-sent identity headers nothing replaces). Denied: the reason's
// status, WWW-Authenticate and a JSON body.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The body is never read; drain a little so the connection can be reused.
	_, _ = io.CopyN(io.Discard, r.Body, 64<<10)
	d := s.decide(r.Context(), TransportHTTP, httpInput(r))
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	if d.Allowed {
		for _, ih := range d.Headers {
			h.Set(ih.Name, ih.Value)
		}
		if len(d.Remove) > 0 {
			h.Set("X-Envoy-Auth-Headers-To-Remove", strings.Join(d.Remove, ","))
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	re := d.requirement()
	h.Set("WWW-Authenticate", d.challenge(re))
	h.Set("Content-Type", "application/json")
	w.WriteHeader(d.Reason.Status)
	if r.Method != http.MethodHead {
		_, _ = io.WriteString(w, d.body(re))
	}
}

// httpInput is the client's request as the proxy in front describes it.
// A subrequest (nginx auth_request, Caddy forward_auth, Traefik
// forwardAuth) has a method, path and host of its own; the client's are in
// X-Forwarded-Method, X-Forwarded-Uri and X-Forwarded-Host, which Caddy and
// Traefik set (replacing any the client sent) and the shipped nginx snippet
// sets with proxy_set_header. Without them (Envoy's HTTP ext_authz, which
// forwards the original method and path), the request's own are used.
//
// Only these are trusted. A proxy that passes client headers through
// without setting them lets the client choose its route and method: set
// them in front of sidegate.
func httpInput(r *http.Request) Input {
	in := Input{Headers: requestHeaders(r), Method: r.Method, Host: r.Host, Path: r.URL.RequestURI()}
	if v := in.Headers["x-forwarded-method"]; v != "" {
		in.Method = v
	}
	if v := in.Headers["x-forwarded-uri"]; v != "" {
		in.Path = v
	}
	if v := in.Headers["x-forwarded-host"]; v != "" {
		in.Host = v
	}
	// No header names a route: a client could send it. Over HTTP routes
	// are matched by path only.
	return in
}

// requestHeaders turns net/http's header into Envoy's form: lower-case
// names, repeated values joined with "," (Cookie with "; ").
func requestHeaders(r *http.Request) map[string]string {
	m := make(map[string]string, len(r.Header))
	for k, vs := range r.Header {
		sep := ","
		if k == "Cookie" {
			sep = "; "
		}
		m[strings.ToLower(k)] = strings.Join(vs, sep)
	}
	return m
}
