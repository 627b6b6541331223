package authz

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Claim requirements are checked in two steps, because the verified-token
// cache keeps no claim map: Policy.extract takes, once per verified token,
// just the values the policy's requirements look at (claimValues, which
// the cache keeps), and Route.check judges a route's requirements on them.

// claimIndex numbers the claim paths a policy's routes refer to.
type claimIndex struct {
	paths  [][]string // by path id: member names from the top-level claims
	scopes bool       // some route requires scopes
	// key spells paths and scopes: values extracted under one policy are
	// good for another whose key is the same.
	key string
}

// claimValues are the values of a policy's claim paths in one token.
// Immutable once extracted.
type claimValues struct {
	idx *claimIndex
	// vals, by path id: nil (missing or null), a scalar (string, bool,
	// json.Number, float64), an []any of scalars (a JSON array less any
	// member that is not a scalar), or claimOther.
	vals   []any
	scopes []string // granted by scope and scp
}

// claimOther stands for a claim value no requirement can equal (an
// object).
type claimOther struct{}

// extract takes the values p's requirements look at from a verified
// token's claims (numbers as json.Number).
func (p *Policy) extract(raw map[string]any) claimValues {
	v := claimValues{idx: p.idx}
	if len(p.idx.paths) > 0 {
		v.vals = make([]any, len(p.idx.paths))
		for id, names := range p.idx.paths {
			v.vals[id] = claimAt(raw, names)
		}
	}
	if p.idx.scopes {
		v.scopes = grantedScopes(raw)
	}
	return v
}

func claimAt(raw map[string]any, names []string) any {
	var cur any = raw
	for _, name := range names {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = obj[name]
	}
	switch c := cur.(type) {
	case nil, string, bool, json.Number, float64:
		return c
	case []any:
		out := make([]any, 0, len(c))
		for _, e := range c {
			if isClaimScalar(e) {
				out = append(out, e)
			}
		}
		return out
	}
	return claimOther{}
}

func isClaimScalar(v any) bool {
	switch v.(type) {
	case string, bool, json.Number, float64:
		return true
	}
	return false
}

// grantedScopes reads scope (a space-separated string, RFC 8693 §4.2) and
// scp (an array of strings or a space-separated string). Members of any
// other type grant nothing.
func grantedScopes(raw map[string]any) []string {
	var out []string
	if s, ok := raw["scope"].(string); ok {
		out = appendScopes(out, s)
	}
	switch scp := raw["scp"].(type) {
	case string:
		out = appendScopes(out, scp)
	case []any:
		for _, e := range scp {
			if s, ok := e.(string); ok && s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

func appendScopes(out []string, s string) []string {
	for f := range strings.SplitSeq(s, " ") {
		if f != "" {
			out = append(out, f)
		}
	}
	return out
}

// claimRequirement is one `claims:` entry.
type claimRequirement struct {
	path string // as configured
	id   int
	list bool // the expected value was a list
	want []claimScalar
}

// claimScalar is an expected value.
type claimScalar struct {
	kind claimKind
	s    string
	b    bool
	i    int64   // claimInt
	u    uint64  // claimUint: above math.MaxInt64
	f    float64 // claimFloat
}

type claimKind uint8

const (
	claimString claimKind = iota
	claimBool
	claimInt
	claimUint
	claimFloat
)

// RequirementError is a route requirement a token does not meet. Its
// text names the route and the requirement, never a claim's value.
type RequirementError struct {
	Route       string
	Requirement string // "scope admin:write", "claim realm_access.roles"
	// Scopes are all the scopes the route requires, for the
	// WWW-Authenticate scope attribute. Read-only.
	Scopes []string
	detail string // why, for the log
	err    error  // ErrInsufficientScope or ErrClaimMismatch
}

func (e *RequirementError) Error() string {
	return fmt.Sprintf("%v: route %s: %s %s", e.err, e.Route, e.Requirement, e.detail)
}

func (e *RequirementError) Unwrap() error { return e.err }

// fits reports whether p's routes can check v: v was extracted by p, or
// by a policy with the same claim paths (so a reload that keeps them keeps
// the verified-token cache good). Values that do not fit, a cache entry
// from before a reload that changed the claim paths, must be extracted
// again from a fresh verification.
func (v claimValues) fits(p *Policy) bool { return v.fitsIndex(p.idx) }

func (v claimValues) fitsIndex(idx *claimIndex) bool {
	return v.idx == idx || v.idx != nil && v.idx.key == idx.key
}

// errForeignClaims is a programming error: values that do not fit the
// route's policy. Not in the reason table: denied as internal.
var errForeignClaims = errors.New("authz: claim values were extracted under a policy with other claim paths")

// check judges r's requirements on values extracted by r's policy (or one
// with the same claim paths).
func (r *Route) check(v claimValues) error {
	if len(r.scopes) == 0 && len(r.claims) == 0 {
		return nil
	}
	if !v.fitsIndex(r.idx) {
		return errForeignClaims // see fits
	}
	for _, s := range r.scopes {
		if !slices.Contains(v.scopes, s) {
			return r.unmet(ErrInsufficientScope, "scope "+s, "is not granted")
		}
	}
	for i := range r.claims {
		c := &r.claims[i]
		if why := c.test(v.vals[c.id]); why != "" {
			return r.unmet(ErrClaimMismatch, "claim "+c.path, why)
		}
	}
	return nil
}

func (r *Route) unmet(err error, requirement, detail string) error {
	return &RequirementError{Route: r.Name, Requirement: requirement, Scopes: r.scopes, detail: detail, err: err}
}

// test returns "" when v meets c, else why not (without v).
func (c *claimRequirement) test(v any) string {
	switch v := v.(type) {
	case nil:
		return "is missing"
	case claimOther:
		return "is not a string, bool, number or array"
	case []any:
		if !c.list {
			return "is an array, not a single value"
		}
		for _, e := range v {
			if c.equalsOne(e) {
				return ""
			}
		}
		return "holds none of the required values"
	}
	if c.equalsOne(v) {
		return ""
	}
	if c.list {
		return "is none of the required values"
	}
	return "is not the required value"
}

func (c *claimRequirement) equalsOne(v any) bool {
	for _, w := range c.want {
		if w.equal(v) {
			return true
		}
	}
	return false
}

// equal compares a claim scalar with w: same JSON type, numbers by value.
func (w claimScalar) equal(v any) bool {
	switch v := v.(type) {
	case string:
		return w.kind == claimString && v == w.s
	case bool:
		return w.kind == claimBool && v == w.b
	case json.Number:
		return w.equalNumber(string(v))
	case float64:
		return w.equalNumber(strconv.FormatFloat(v, 'g', -1, 64))
	}
	return false
}

// maxExact is the largest integer magnitude below which every integer is
// a float64.
const maxExact = 1 << 53

func (w claimScalar) equalNumber(n string) bool {
	switch w.kind {
	case claimInt:
		if i, err := strconv.ParseInt(n, 10, 64); err == nil {
			return i == w.i
		}
		// 1.0, 1e2: by value, where float64 holds w exactly.
		f, err := strconv.ParseFloat(n, 64)
		return err == nil && w.i >= -maxExact && w.i <= maxExact && f == float64(w.i)
	case claimUint:
		u, err := strconv.ParseUint(n, 10, 64)
		return err == nil && u == w.u
	case claimFloat:
		f, err := strconv.ParseFloat(n, 64)
		return err == nil && f == w.f
	}
	return false
}

// parseClaimPath reads a claim path into member names:
//
//	path   = first *( "." name / "[" quoted "]" )
//	first  = name / "[" quoted "]"
//	name   = 1*( any character but "." "[" "]" DQUOTE "\" space or control )
//	quoted = DQUOTE 1*( any character but DQUOTE "\" or control
//	                    / "\" DQUOTE / "\" "\" ) DQUOTE
//
// So realm_access.roles is realm_access → roles, and a member whose name
// holds dots is bracket-quoted: resource_access["my.client"].roles,
// ["https://example.com/roles"]. Arrays are not indexed into. (In YAML, a
// key that starts with "[" must itself be quoted:
// '["https://example.com/roles"]': [admin].)
func parseClaimPath(s string) ([]string, error) {
	if !utf8.ValidString(s) {
		return nil, errors.New("not UTF-8")
	}
	var names []string
	for i := 0; i < len(s); {
		if s[i] == '[' {
			name, n, err := parseQuotedName(s[i+1:])
			if err != nil {
				return nil, fmt.Errorf("at byte %d: %v", i, err)
			}
			names = append(names, name)
			i += 1 + n
			continue
		}
		if len(names) > 0 {
			if s[i] != '.' {
				return nil, fmt.Errorf("at byte %d: want \".\" or \"[\" after a name", i)
			}
			i++
		}
		start := i
		for i < len(s) && !strings.ContainsRune(`.[]"\`, rune(s[i])) && s[i] > ' ' && s[i] != 0x7f {
			i++
		}
		if i == start {
			return nil, fmt.Errorf("at byte %d: want a name (names with dots, spaces or quotes go in [\"…\"])", i)
		}
		names = append(names, s[start:i])
	}
	if len(names) == 0 {
		return nil, errors.New("empty")
	}
	return names, nil
}

// parseQuotedName reads `"…"]` from the start of s: the name and how many
// bytes it took.
func parseQuotedName(s string) (string, int, error) {
	if s == "" || s[0] != '"' {
		return "", 0, errors.New(`want ["…"]`)
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			if !strings.HasPrefix(s[i+1:], "]") {
				return "", 0, errors.New(`want "]" after the quoted name`)
			}
			if b.Len() == 0 {
				return "", 0, errors.New("empty quoted name")
			}
			return b.String(), i + 2, nil
		case c == '\\':
			if i+1 == len(s) || s[i+1] != '"' && s[i+1] != '\\' {
				return "", 0, errors.New(`only \" and \\ are escapes`)
			}
			i++
			b.WriteByte(s[i])
		case c < ' ' || c == 0x7f:
			return "", 0, errors.New("control character in a quoted name")
		default:
			b.WriteByte(c)
		}
	}
	return "", 0, errors.New("unterminated quoted name")
}

// parseExpected reads an expected claim value as YAML (or JSON) decodes it.
func parseExpected(v any) ([]claimScalar, bool, error) {
	var list []any
	switch v := v.(type) {
	case []any:
		list = v
	case []string:
		for _, s := range v {
			list = append(list, s)
		}
	default:
		w, err := parseScalar(v)
		return []claimScalar{w}, false, err
	}
	if len(list) == 0 {
		return nil, true, errors.New("an empty list can never match")
	}
	out := make([]claimScalar, len(list))
	for i, e := range list {
		var err error
		if out[i], err = parseScalar(e); err != nil {
			return nil, true, fmt.Errorf("[%d]: %v", i, err)
		}
	}
	return out, true, nil
}

func parseScalar(v any) (claimScalar, error) {
	switch v := v.(type) {
	case string:
		return claimScalar{kind: claimString, s: v}, nil
	case bool:
		return claimScalar{kind: claimBool, b: v}, nil
	case int:
		return claimScalar{kind: claimInt, i: int64(v)}, nil
	case int64:
		return claimScalar{kind: claimInt, i: v}, nil
	case int32:
		return claimScalar{kind: claimInt, i: int64(v)}, nil
	case uint64:
		if v <= math.MaxInt64 {
			return claimScalar{kind: claimInt, i: int64(v)}, nil
		}
		return claimScalar{kind: claimUint, u: v}, nil
	case uint:
		return parseScalar(uint64(v))
	case uint32:
		return claimScalar{kind: claimInt, i: int64(v)}, nil
	case float32:
		return parseScalar(float64(v))
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return claimScalar{}, errors.New("not a finite number")
		}
		return claimScalar{kind: claimFloat, f: v}, nil
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return claimScalar{kind: claimInt, i: i}, nil
		}
		f, err := v.Float64()
		if err != nil {
			return claimScalar{}, err
		}
		return parseScalar(f)
	case nil:
		return claimScalar{}, errors.New("no expected value (null)")
	}
	return claimScalar{}, fmt.Errorf("expected a string, bool, number or a list of them, not %T", v)
}
