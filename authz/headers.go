package authz

import (
	"encoding/json"
	"strings"
)

// identityHeaders renders forward.claims and payload_header for verified
// claims. A claim that is absent, null or empty sets no header.
func (e *Engine) identityHeaders(c *Claims) []Header {
	out := make([]Header, 0, len(e.identity))
	for _, f := range e.cfg.ForwardClaims {
		v, ok := c.Claim(f.Claim)
		if !ok || v == nil {
			continue
		}
		// An empty value ("" or []) is no identity: leave the header unset
		// (and the client's copy stripped) rather than set it to "".
		if hv := HeaderValue(v); hv != "" {
			out = append(out, Header{Name: f.Header, Value: hv})
		}
	}
	if e.cfg.PayloadHeader != "" {
		// The payload segment is the base64url of the exact verified bytes.
		out = append(out, Header{Name: e.cfg.PayloadHeader, Value: c.payload})
	}
	return out
}

// Claim returns a claim of a token verified by this decision, as
// encoding/json decodes it with UseNumber, by exact name first (names such
// as "https://example.com/roles" contain dots), then as a dotted path into
// nested objects. Claims served from the verified-token cache have none.
func (c *Claims) Claim(name string) (any, bool) {
	if v, ok := c.claims.decode(name); ok {
		return v, true
	}
	first, rest, nested := strings.Cut(name, ".")
	if !nested {
		return nil, false
	}
	cur, ok := c.claims.decode(first)
	if !ok {
		return nil, false
	}
	for part := range strings.SplitSeq(rest, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// HeaderValue renders a claim value as a header value: strings as they
// are, numbers and booleans in their JSON form, arrays as their elements
// joined by ",", objects as compact JSON.
//
// Header values cannot carry every byte, so the result is percent-encoded
// (RFC 3986 §2.1): every byte outside visible ASCII (0x21-0x7E), and "%"
// itself, becomes %XX; inside array elements "," does too. The common
// case (ids, emails, plain names without spaces) is unchanged, and a
// consumer that percent-decodes every value (not form-decoding: "+" is
// literal) gets the exact claim back. CR, LF, NUL and other controls can
// therefore never reach a header.
func HeaderValue(v any) string {
	switch v := v.(type) {
	case string:
		return escape(v, false)
	case []any:
		var b strings.Builder
		for i, el := range v {
			if i > 0 {
				b.WriteByte(',')
			}
			if s, ok := el.(string); ok {
				b.WriteString(escape(s, true))
			} else {
				b.WriteString(escape(compactJSON(el), true))
			}
		}
		return b.String()
	default:
		return escape(compactJSON(v), false)
	}
}

func compactJSON(v any) string {
	switch v := v.(type) {
	case json.Number:
		return string(v)
	case bool:
		if v {
			return "true"
		}
		return "false"
	case nil:
		return "null"
	}
	// Compact JSON without HTML escaping, so "<", ">" and "&" stay as sent.
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return ""
	}
	return strings.TrimSuffix(b.String(), "\n")
}

const hexDigits = "0123456789ABCDEF"

func escape(s string, comma bool) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if needsEscape(s[i], comma) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if needsEscape(c, comma) {
			b = append(b, '%', hexDigits[c>>4], hexDigits[c&15])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

func needsEscape(c byte, comma bool) bool {
	return c <= 0x20 || c >= 0x7F || c == '%' || comma && c == ','
}
