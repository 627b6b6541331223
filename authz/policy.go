package authz

import (
	"errors"
	"fmt"
	"strings"
)

// defaultPolicy is the policy of an engine configured without one: every
// request needs a good token, as before routes existed.
var defaultPolicy = func() *Policy {
	p, _, err := CompilePolicy(PolicyConfig{}, nil)
	if err != nil {
		panic("authz: the empty policy does not compile: " + err.Error())
	}
	return p
}()

// RouteNames lists the names of the policy's routes, the default route
// last: the values of the route label.
func (p *Policy) RouteNames() []string {
	out := make([]string, 0, len(p.routes)+1)
	for _, r := range p.routes {
		out = append(out, r.Name)
	}
	return append(out, p.def.Name)
}

// extractFrom takes the claim values p's requirements look at from a
// token's members, decoding only the members they start from.
// It is nil when no route has requirements.
func (p *Policy) extractFrom(o object) *claimValues {
	if len(p.idx.paths) == 0 && !p.idx.scopes {
		return nil
	}
	raw := make(map[string]any, len(p.idx.paths)+2)
	take := func(name string) {
		if v, ok := o.decode(name); ok {
			// A string member is a substring of the token; the values may
			// be kept by the verified-token cache.
			if s, ok := v.(string); ok {
				v = strings.Clone(s)
			}
			raw[name] = v
		}
	}
	for _, names := range p.idx.paths {
		take(names[0])
	}
	if p.idx.scopes {
		take("scope")
		take("scp")
	}
	v := p.extract(raw)
	return &v
}

// checkCSRF judges a cookie-token request by its method, host,
// Sec-Fetch-Site and Origin.
func (p *Policy) checkCSRF(in Input) error {
	return p.csrf.check(in.Method, in.Host, in.Headers["sec-fetch-site"], in.Headers["origin"])
}

// requirement is the route requirement the decision's denial is about, or
// nil.
func (d *Decision) requirement() *RequirementError {
	var re *RequirementError
	if errors.As(d.Err, &re) {
		return re
	}
	return nil
}

// challenge is the WWW-Authenticate value of the decision's denial, re
// being d.requirement(): the reason's, with the scopes the route requires
// for insufficient_scope (RFC 6750 §3).
func (d *Decision) challenge(re *RequirementError) string {
	if re != nil && d.Reason.Error == "insufficient_scope" && len(re.Scopes) > 0 {
		return fmt.Sprintf(`Bearer realm="sidegate", error=%q, error_description=%q, scope=%q`,
			d.Reason.Error, d.Reason.Description, strings.Join(re.Scopes, " "))
	}
	return d.Reason.Challenge()
}

// body is the JSON body of the decision's denial, re being
// d.requirement(): the reason's, and for a route requirement also the
// route and which requirement failed (never a claim's value).
func (d *Decision) body(re *RequirementError) string {
	b := d.Reason.Body()
	if re != nil {
		return fmt.Sprintf(`%s,"route":%q,"requirement":%q}`, b[:len(b)-1], re.Route, re.Requirement)
	}
	return b
}
