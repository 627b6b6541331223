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

// defaultRouteName is the name of the default route.
const defaultRouteName = "default"

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

// csrfHeaders are what the CSRF check reads from a request.
func csrfCheck(p *Policy, in Input) error {
	return p.csrf.check(in.Method, in.Host, in.Headers["sec-fetch-site"], in.Headers["origin"])
}

// Challenge is the WWW-Authenticate value of the decision's denial: the
// reason's, with the scopes the route requires for insufficient_scope
// (RFC 6750 §3).
func (d *Decision) Challenge() string {
	var re *RequirementError
	if d.Reason.Error == "insufficient_scope" && errors.As(d.Err, &re) && len(re.Scopes) > 0 {
		return fmt.Sprintf(`Bearer realm="sidegate", error=%q, error_description=%q, scope=%q`,
			d.Reason.Error, d.Reason.Description, strings.Join(re.Scopes, " "))
	}
	return d.Reason.Challenge()
}

// Body is the JSON body of the decision's denial: the reason's, and for a
// route requirement also the route and which requirement failed (never a
// claim's value).
func (d *Decision) Body() string {
	var re *RequirementError
	if errors.As(d.Err, &re) {
		b := d.Reason.Body()
		return fmt.Sprintf(`%s,"route":%q,"requirement":%q}`, b[:len(b)-1], re.Route, re.Requirement)
	}
	return d.Reason.Body()
}

// detailed reports whether the decision's response depends on more than
// its reason, so that it cannot be shared.
func (d *Decision) detailed() bool {
	var re *RequirementError
	return errors.As(d.Err, &re)
}
