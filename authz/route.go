package authz

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// RouteConfig is one entry of `routes:` (and `default_route:`).
type RouteConfig struct {
	// Name is the route's label in metrics and logs, and the value Envoy's
	// context_extensions["sidegate.route"] selects it by: 1 to 64 of
	// A-Z a-z 0-9 _ - . :, unique. The default route is "default".
	Name  string     `yaml:"name"`
	Match RouteMatch `yaml:"match"`
	// Auth is required (the default), optional (no token: allowed
	// anonymously; a token present must be good) or none (no token is
	// looked at).
	Auth string `yaml:"auth"`
	// Issuers, when set, are the only configured issuers (by iss) whose
	// tokens this route accepts.
	Issuers []string     `yaml:"issuers"`
	Require Requirements `yaml:"require"`
	// Mode is enforce or shadow; empty inherits policy.mode.
	Mode string `yaml:"mode"`
	// CSRF is enforce, report or off; empty inherits csrf.mode.
	CSRF string `yaml:"csrf"`
}

// RouteMatch says which requests a route applies to. Every condition set
// must hold; an empty list is no condition, and a match with no condition
// at all is refused.
type RouteMatch struct {
	// Paths match the normalized path exactly; PathPrefix matches it as a
	// plain string prefix, as Envoy's prefix match does: "/admin/" does not
	// match "/admin", and "/admin" also matches "/administrator". A request
	// matches when it matches one of Paths or PathPrefix. Both must be
	// written normalized (see normalizePath).
	Paths      []string `yaml:"paths"`
	PathPrefix string   `yaml:"path_prefix"`
	// Methods are compared exactly (methods are case-sensitive) and must
	// be written in upper case.
	Methods []string `yaml:"methods"`
	// Hosts are host names or IP literals ("[::1]" for IPv6), compared
	// case-insensitively with the request's host less its port and a
	// trailing dot; "*.example.com" matches any name ending in
	// ".example.com" (not example.com itself).
	Hosts []string `yaml:"hosts"`
	// IgnoreCase compares paths with ASCII case folded.
	IgnoreCase bool `yaml:"ignore_case"`
}

// Requirements are what a token must hold on a route.
type Requirements struct {
	// Scopes must all be granted, by `scope` (a space-separated string) or
	// `scp` (an array of strings, or a space-separated string).
	Scopes []string `yaml:"scopes"`
	// Claims map a claim path (see parseClaimPath) to its expected value.
	// A list: the claim is an array holding one of the values, or a single
	// value equal to one of them. A string, bool or number: the claim
	// equals it exactly, of the same JSON type (numbers compared by value).
	Claims map[string]any `yaml:"claims"`
}

// CSRFConfig is `csrf:`; see csrfGuard.
type CSRFConfig struct {
	Mode                string   `yaml:"mode"` // enforce (the default), report or off
	TrustedOrigins      []string `yaml:"trusted_origins"`
	AllowMissingHeaders bool     `yaml:"allow_missing_headers"`
}

// PolicyConfig is the route policy, gathered by the configuration loader
// from `routes:`, `default_route:`, `policy.mode` and `csrf:`.
type PolicyConfig struct {
	Routes  []RouteConfig
	Default RouteConfig
	Mode    string // enforce (the default) or shadow
	CSRF    CSRFConfig
}

// AuthMode is what a route asks of the token. The zero value is the
// strictest.
type AuthMode uint8

const (
	AuthRequired AuthMode = iota // a good token is needed
	AuthOptional                 // no token is fine; a token present must be good
	AuthNone                     // no token is looked at
)

var authModes = []string{"required", "optional", "none"}

func (a AuthMode) String() string { return authModes[a] }

// CSRFMode is what a route does with a cross-site cookie request. The zero
// value is the strictest.
type CSRFMode uint8

const (
	CSRFEnforce CSRFMode = iota // deny it
	CSRFReport                  // record it, allow it
	CSRFOff                     // do not check
)

var csrfModes = []string{"enforce", "report", "off"}

func (m CSRFMode) String() string { return csrfModes[m] }

// Policy is a compiled, immutable route policy: safe for concurrent use,
// swapped whole on reload.
type Policy struct {
	routes []*Route // in order; first match wins
	def    *Route
	byName map[string]*Route // every route, the default included
	idx    *claimIndex
	// csrf checks cookie requests; the route's CSRF mode says whether its
	// answer is enforced.
	csrf *csrfGuard
	// unknown answers a route name that is not configured; ambiguous, a
	// path that cannot be matched. Both are named unrouted.
	unknown, ambiguous *Route
}

// unrouted is the name of the route Select returns with its error when no
// configured route applies. It cannot be a configured name.
const unrouted = "(none)"

// defaultRouteName is the name of the default route.
const defaultRouteName = "default"

// Route is one compiled route. Its exported fields are read-only: the
// Route is shared by every request that selects it.
type Route struct {
	Name   string
	Auth   AuthMode
	Shadow bool     // decide fully, but allow (the route's mode, else policy.mode)
	CSRF   CSRFMode // the route's csrf, else csrf.mode
	// Issuers is the route's allowlist of iss values; nil allows every
	// configured issuer. See AllowsIssuer.
	Issuers []string

	match  routeMatch
	scopes []string
	claims []claimRequirement // sorted by path
	idx    *claimIndex
}

// AllowsIssuer reports whether the route accepts tokens from iss.
func (r *Route) AllowsIssuer(iss string) bool {
	return r.Issuers == nil || slices.Contains(r.Issuers, iss)
}

// RouteRequest is what selects a route.
type RouteRequest struct {
	Method string
	Host   string // Host or :authority, port and all
	Path   string // as sent, query and all
	// Name is Envoy's context_extensions["sidegate.route"]; empty when
	// absent.
	Name string
}

// Select returns the route for a request. It always returns a route, so
// that every decision has a route label; with an error, the request is to
// be denied with that error's reason, on that route.
//
// When r.Name is set, that route applies and its match is not looked at
// (Envoy has matched already). An unknown name is a configuration error:
// ErrUnknownRoute, on route "(none)", which is never in shadow: an unknown
// name is never allowed. The path of a named route must still be
// unambiguous (ErrBadPath on that route, in its mode) unless the route is
// auth: none, whose answer does not depend on it.
//
// Otherwise the routes are matched in order against the normalized path;
// the first that matches applies, else the default route. A path that
// cannot be normalized is ErrBadPath on route "(none)", whatever route its
// raw text seems to aim at: "/public/..%2Fadmin" must not pass as public,
// nor be judged by any route's rules. That denial is in shadow only when
// every route is, as the path might have been aimed at any of them.
func (p *Policy) Select(r RouteRequest) (*Route, error) {
	if r.Name != "" {
		rt, ok := p.byName[r.Name]
		if !ok {
			return p.unknown, fmt.Errorf("%w: %s (context extension sidegate.route)", ErrUnknownRoute, quoteExcerpt(r.Name, 64))
		}
		if rt.Auth != AuthNone {
			if _, err := normalizePath(r.Path); err != nil {
				return rt, err
			}
		}
		return rt, nil
	}
	path, err := normalizePath(r.Path)
	if err != nil {
		return p.ambiguous, err
	}
	host := requestHost(r.Host)
	for _, rt := range p.routes {
		if rt.match.matches(r.Method, host, path) {
			return rt, nil
		}
	}
	return p.def, nil
}

// requestHost is a Host header's host, less its port and one trailing dot.
func requestHost(h string) string {
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			return h[:i+1]
		}
		return h
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 && strings.IndexByte(h[:i], ':') < 0 {
		h = h[:i]
	}
	return strings.TrimSuffix(h, ".")
}

type routeMatch struct {
	methods    []string
	hosts      []hostPattern
	paths      []string
	prefix     string
	anyPath    bool // no paths and no prefix
	ignoreCase bool
}

// hostPattern is an exact host, or for "*.example.com" the suffix
// ".example.com"; lower-case.
type hostPattern struct {
	name     string
	wildcard bool
}

func (m *routeMatch) matches(method, host, path string) bool {
	if len(m.methods) > 0 && !slices.Contains(m.methods, method) {
		return false
	}
	if len(m.hosts) > 0 && !slices.ContainsFunc(m.hosts, func(h hostPattern) bool { return h.matches(host) }) {
		return false
	}
	return m.matchesPath(path)
}

func (m *routeMatch) matchesPath(path string) bool {
	if m.anyPath {
		return true
	}
	for _, p := range m.paths {
		if m.equal(path, p) {
			return true
		}
	}
	return m.prefix != "" && m.hasPrefix(path)
}

func (m *routeMatch) hasPrefix(path string) bool {
	return len(path) >= len(m.prefix) && m.equal(path[:len(m.prefix)], m.prefix)
}

func (m *routeMatch) equal(a, b string) bool {
	if m.ignoreCase {
		return asciiEqualFold(a, b)
	}
	return a == b
}

func (h hostPattern) matches(host string) bool {
	if !h.wildcard {
		return asciiEqualFold(host, h.name)
	}
	return len(host) > len(h.name) && asciiEqualFold(host[len(host)-len(h.name):], h.name)
}

// asciiEqualFold is strings.EqualFold for ASCII only: Unicode folding
// would let "\u212Aube.example.com" (Kelvin sign) match kube.example.com,
// which no proxy routes as the same host.
func asciiEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x == y {
			continue
		}
		if x|0x20 != y|0x20 || x|0x20 < 'a' || x|0x20 > 'z' {
			return false
		}
	}
	return true
}

// covers reports whether m matches every request n matches (so that a
// route with n after one with m never matches). It may miss a cover,
// never invent one.
func (m *routeMatch) covers(n *routeMatch) bool {
	if len(m.methods) > 0 {
		if len(n.methods) == 0 {
			return false
		}
		for _, x := range n.methods {
			if !slices.Contains(m.methods, x) {
				return false
			}
		}
	}
	if len(m.hosts) > 0 {
		if len(n.hosts) == 0 {
			return false
		}
		for _, h := range n.hosts {
			if !slices.ContainsFunc(m.hosts, func(g hostPattern) bool { return g.covers(h) }) {
				return false
			}
		}
	}
	switch {
	case m.anyPath:
		return true
	case n.anyPath, n.ignoreCase && !m.ignoreCase:
		return false
	}
	for _, p := range n.paths {
		if !m.matchesPath(p) {
			return false
		}
	}
	return n.prefix == "" || m.prefix != "" && m.hasPrefix(n.prefix)
}

func (g hostPattern) covers(h hostPattern) bool {
	switch {
	case !g.wildcard:
		return !h.wildcard && g.name == h.name
	case h.wildcard:
		return strings.HasSuffix(h.name, g.name)
	}
	return g.matches(h.name)
}

// CompilePolicy validates cfg against the configured issuers (their iss
// values) and compiles it. It reports every problem at once: err joins
// one error per problem, each naming its route ("routes[2] (admin): …").
// Warnings (a route that can never match, …) do not stop compilation;
// they are returned with or without an error.
func CompilePolicy(cfg PolicyConfig, issuers []string) (*Policy, []string, error) {
	c := &policyCompiler{issuers: issuers, ids: map[string]int{}, idx: &claimIndex{}}
	shadow := false
	switch cfg.Mode {
	case "", "enforce":
	case "shadow":
		shadow = true
	default:
		c.fail("policy.mode", "%q is not enforce or shadow", cfg.Mode)
	}
	csrfMode, ok := parseCSRFMode(cfg.CSRF.Mode)
	if !ok {
		c.fail("csrf.mode", "%q is not enforce, report or off", cfg.CSRF.Mode)
	}
	guard, err := newCSRF(cfg.CSRF)
	if err != nil {
		c.errs = append(c.errs, err)
	}
	p := &Policy{byName: map[string]*Route{}, idx: c.idx, csrf: guard}
	where := make([]string, len(cfg.Routes))
	for i, rc := range cfg.Routes {
		where[i] = fmt.Sprintf("routes[%d]", i)
		if rc.Name != "" {
			where[i] += " (" + rc.Name + ")"
		}
		rt := c.route(where[i], rc, shadow, csrfMode)
		rt.match = c.match(where[i], rc.Match)
		if pre := rt.match.prefix; rt.Auth == AuthNone && pre != "" && !strings.HasSuffix(pre, "/") {
			c.warn(where[i], "match.path_prefix %q of this auth: none route also matches %q", pre, pre+"-anything")
		}
		if rc.Name == "" {
			c.fail(where[i], "name is required")
		} else if j := slices.IndexFunc(cfg.Routes[:i], func(o RouteConfig) bool { return o.Name == rc.Name }); j >= 0 {
			c.fail(where[i], "name %q is already used by routes[%d]", rc.Name, j)
		} else if rc.Name == defaultRouteName {
			c.fail(where[i], "name \"default\" is the default route's")
		} else if !validRouteName(rc.Name) {
			c.fail(where[i], "name %q is not 1 to 64 of A-Z a-z 0-9 _ - . :", rc.Name)
		}
		for j, earlier := range p.routes {
			if earlier.match.covers(&rt.match) {
				c.warn(where[i], "never matches: %s matches every request it does", where[j])
				break
			}
		}
		p.routes = append(p.routes, rt)
		p.byName[rc.Name] = rt
	}
	def := cfg.Default
	if def.Name != "" && def.Name != defaultRouteName {
		c.fail("default_route", "name is always \"default\", not %q", def.Name)
	}
	if !def.Match.empty() {
		c.fail("default_route", "match: the default route applies when no route matches; it has no match")
	}
	def.Name = defaultRouteName
	p.def = c.route("default_route", def, shadow, csrfMode)
	p.byName[defaultRouteName] = p.def

	allShadow := p.def.Shadow
	for _, rt := range p.routes {
		allShadow = allShadow && rt.Shadow
	}
	p.unknown = &Route{Name: unrouted, CSRF: csrfMode, idx: c.idx}
	p.ambiguous = &Route{Name: unrouted, Shadow: allShadow, CSRF: csrfMode, idx: c.idx}

	var key strings.Builder
	fmt.Fprintf(&key, "scopes=%t", c.idx.scopes)
	for _, names := range c.idx.paths {
		fmt.Fprintf(&key, "\x00%q", names)
	}
	c.idx.key = key.String()

	if len(c.errs) > 0 {
		return nil, c.warns, errors.Join(c.errs...)
	}
	return p, c.warns, nil
}

type policyCompiler struct {
	issuers []string
	ids     map[string]int // claim path id by canonical spelling
	idx     *claimIndex
	errs    []error
	warns   []string
}

func (c *policyCompiler) fail(where, format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("%s: %s", where, fmt.Sprintf(format, args...)))
}

func (c *policyCompiler) warn(where, format string, args ...any) {
	c.warns = append(c.warns, where+": "+fmt.Sprintf(format, args...))
}

func (m RouteMatch) empty() bool {
	return len(m.Paths) == 0 && m.PathPrefix == "" && len(m.Methods) == 0 && len(m.Hosts) == 0
}

// validRouteName: 1 to 64 of A-Z a-z 0-9 _ - . : (a metric label value
// that reads well in a log line).
func validRouteName(name string) bool {
	return len(name) <= 64 && allBytes(name, func(c byte) bool { return isAlnum(c) || strings.IndexByte("_-.:", c) >= 0 })
}

// allBytes reports whether s is not empty and ok holds for each of its
// bytes.
func allBytes(s string, ok func(byte) bool) bool {
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return false
		}
	}
	return s != ""
}

func parseCSRFMode(s string) (CSRFMode, bool) {
	if s == "" {
		return CSRFEnforce, true
	}
	i := slices.Index(csrfModes, s)
	return CSRFMode(max(i, 0)), i >= 0
}

// route compiles one route but its match; problems go to c under where.
func (c *policyCompiler) route(where string, rc RouteConfig, policyShadow bool, csrfMode CSRFMode) *Route {
	rt := &Route{Name: rc.Name, Shadow: policyShadow, CSRF: csrfMode, idx: c.idx}
	switch i := slices.Index(authModes, rc.Auth); {
	case rc.Auth == "":
	case i < 0:
		c.fail(where, "auth: %q is not required, optional or none", rc.Auth)
	default:
		rt.Auth = AuthMode(i)
	}
	switch rc.Mode {
	case "":
	case "enforce":
		rt.Shadow = false
	case "shadow":
		rt.Shadow = true
	default:
		c.fail(where, "mode: %q is not enforce or shadow", rc.Mode)
	}
	if rc.CSRF != "" {
		m, ok := parseCSRFMode(rc.CSRF)
		if !ok {
			c.fail(where, "csrf: %q is not enforce, report or off", rc.CSRF)
		}
		rt.CSRF = m
	}
	none := rt.Auth == AuthNone
	if none && len(rc.Issuers) > 0 {
		c.fail(where, "issuers: an auth: none route looks at no token")
	}
	rt.Issuers = c.list(where, "issuers", rc.Issuers, func(iss string) string {
		if !slices.Contains(c.issuers, iss) {
			return "is not a configured issuer"
		}
		return ""
	})
	req := rc.Require
	if none && (len(req.Scopes) > 0 || len(req.Claims) > 0) {
		c.fail(where, "require: an auth: none route has no token to require anything of")
	}
	if rt.Auth == AuthOptional && (len(req.Scopes) > 0 || len(req.Claims) > 0) {
		c.warn(where, "require is checked only when a token is present; a request without one is allowed")
	}
	rt.scopes = c.list(where, "require.scopes", req.Scopes, func(s string) string {
		if !validScope(s) {
			return `is not a scope (RFC 6749 §3.3: printable ASCII, no space, " or \)`
		}
		return ""
	})
	c.idx.scopes = c.idx.scopes || len(rt.scopes) > 0
	for _, path := range slices.Sorted(maps.Keys(req.Claims)) {
		names, err := parseClaimPath(path)
		if err != nil {
			c.fail(where, "require.claims: %q: %v", path, err)
			continue
		}
		want, list, err := parseExpected(req.Claims[path])
		if err != nil {
			c.fail(where, "require.claims: %s: %v", path, err)
			continue
		}
		key := strings.Join(names, "\x00")
		id, ok := c.ids[key]
		if !ok {
			id = len(c.idx.paths)
			c.ids[key] = id
			c.idx.paths = append(c.idx.paths, names)
		}
		if slices.ContainsFunc(rt.claims, func(r claimRequirement) bool { return r.id == id }) {
			c.fail(where, "require.claims: %s names the same claim as another entry", path)
			continue
		}
		rt.claims = append(rt.claims, claimRequirement{path: path, id: id, list: list, want: want})
	}
	return rt
}

func (c *policyCompiler) match(where string, m RouteMatch) routeMatch {
	if m.empty() {
		c.fail(where, "match: no paths, path_prefix, methods or hosts (a route that matches everything shadows every later one; use default_route)")
	}
	out := routeMatch{ignoreCase: m.IgnoreCase, anyPath: len(m.Paths) == 0 && m.PathPrefix == ""}
	out.paths = c.list(where, "match.paths", m.Paths, pathProblem)
	if m.PathPrefix != "" {
		if why := pathProblem(m.PathPrefix); why != "" {
			c.fail(where, "match.path_prefix: %q %s", m.PathPrefix, why)
		} else {
			out.prefix = m.PathPrefix
		}
	}
	out.methods = c.list(where, "match.methods", m.Methods, func(x string) string {
		if !validMethod(x) {
			return "is not an upper-case method (methods are case-sensitive)"
		}
		return ""
	})
	for i, h := range m.Hosts {
		hp, err := parseHostPattern(h)
		switch {
		case err != nil:
			c.fail(where, "match.hosts: %q: %v", h, err)
		case slices.Contains(out.hosts, hp):
			c.fail(where, "match.hosts: %q is listed twice", m.Hosts[i])
		default:
			out.hosts = append(out.hosts, hp)
		}
	}
	return out
}

// list returns the items of a configured list that are good (problem
// returns "") and not repeated, failing on the others.
func (c *policyCompiler) list(where, key string, items []string, problem func(string) string) []string {
	var out []string
	for i, x := range items {
		switch why := problem(x); {
		case why != "":
			c.fail(where, "%s: %q %s", key, x, why)
		case slices.Contains(items[:i], x):
			c.fail(where, "%s: %q is listed twice", key, x)
		default:
			out = append(out, x)
		}
	}
	return out
}

// pathProblem says why p is not a normalized path, or "".
func pathProblem(p string) string {
	n, err := normalizePath(p)
	switch {
	case err != nil:
		return "is not a valid path: " + err.Error()
	case n != p:
		return fmt.Sprintf("is not normalized; write %q", n)
	}
	return ""
}

// validMethod: an upper-case RFC 9110 token of letters, digits, "-" and "_".
func validMethod(m string) bool {
	return allBytes(m, func(c byte) bool { return c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' })
}

// validScope: RFC 6749 §3.3 scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
func validScope(s string) bool {
	return allBytes(s, func(c byte) bool { return c >= 0x21 && c <= 0x7e && c != '"' && c != '\\' })
}

// parseHostPattern reads "name", "*.name", an IPv4 literal or "[IPv6]".
func parseHostPattern(h string) (hostPattern, error) {
	name, wildcard := strings.CutPrefix(strings.ToLower(h), "*.")
	if strings.HasPrefix(name, "[") && !wildcard {
		a, err := netip.ParseAddr(strings.TrimSuffix(name[1:], "]"))
		if err != nil || !strings.HasSuffix(name, "]") || !a.Is6() || a.Zone() != "" {
			return hostPattern{}, errors.New("not an IPv6 address in brackets")
		}
		return hostPattern{name: name}, nil
	}
	if strings.Contains(name, ":") {
		return hostPattern{}, errors.New("no port: the request's port is ignored")
	}
	if err := checkDNSName(name); err != nil {
		return hostPattern{}, err
	}
	if wildcard {
		return hostPattern{name: "." + name, wildcard: true}, nil
	}
	return hostPattern{name: name}, nil
}

func checkDNSName(name string) error {
	if name == "" || len(name) > 253 {
		return errors.New("not a host name (* is allowed only as the first label: *.example.com)")
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("a label is empty or longer than 63 bytes (no trailing dot)")
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isAlnum(c) && c != '-' && c != '_' {
				return fmt.Errorf("%q is not allowed in a host name (* only as the first label: *.example.com)", c)
			}
		}
	}
	return nil
}

// quoteExcerpt quotes at most n bytes of s for a log line, escaping
// anything unprintable.
func quoteExcerpt(s string, n int) string {
	if len(s) <= n {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:n]) + "…"
}
