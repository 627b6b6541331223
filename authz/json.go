package authz

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// member is one top-level member of a JSON object: its name, unescaped,
// and its value as the exact JSON text of the token.
type member struct {
	name, value string
}

// object is a parsed JSON object: its top-level members in text order.
// Values stay JSON text; a claim is decoded only when something asks for
// it, so a token costs one pass over its bytes and one slice, not a map of
// every claim.
type object []member

// maxJSONDepth bounds nesting. No header or claim set nests deeper than a
// few levels; the bound only keeps a hostile token from recursing far.
const maxJSONDepth = 64

// parseObject parses s as exactly one JSON object (RFC 8259), with
// whitespace around it allowed and nothing else, and returns its top-level
// members. It refuses what encoding/json would quietly accept or repair:
// invalid UTF-8 (JSON is UTF-8, §8.1; encoding/json turns bad bytes into
// U+FFFD, and the claims would differ from the verified bytes that
// payload_header forwards), and duplicate member names at the top level
// (RFC 7515 §5.2, RFC 7519 §4: an upstream parser that keeps the first of
// two "sub" members must not read a different user than the one sidegate
// verified), spelled the same or not ("sub" and "\u0073ub").
//
// The values returned are substrings of s.
func parseObject(s string) (object, error) {
	if !utf8.ValidString(s) {
		return nil, errors.New("not valid UTF-8")
	}
	p := jsonParser{s: s}
	p.space()
	if p.i >= len(s) || s[p.i] != '{' {
		return nil, errors.New("not a JSON object")
	}
	// Tokens carry about 5 to 20 claims.
	obj := make(object, 0, 16)
	var seen names
	p.i++
	p.space()
	if p.i < len(s) && s[p.i] == '}' {
		p.i++
	} else {
		for {
			if p.i >= len(s) || s[p.i] != '"' {
				return nil, p.errorf("expected a member name")
			}
			raw, err := p.str()
			if err != nil {
				return nil, err
			}
			name, err := unquote(raw)
			if err != nil {
				return nil, p.errorf("%v", err)
			}
			if seen.dup(obj, name) {
				return nil, fmt.Errorf("duplicate member name %q", name)
			}
			p.space()
			if p.i >= len(s) || s[p.i] != ':' {
				return nil, p.errorf("expected ':'")
			}
			p.i++
			p.space()
			start := p.i
			if err := p.value(1); err != nil {
				return nil, err
			}
			obj = append(obj, member{name: name, value: s[start:p.i]})
			p.space()
			if p.i < len(s) && s[p.i] == ',' {
				p.i++
				p.space()
				continue
			}
			if p.i < len(s) && s[p.i] == '}' {
				p.i++
				break
			}
			return nil, p.errorf("expected ',' or '}'")
		}
	}
	p.space()
	if p.i != len(s) {
		return nil, errors.New("data after the object")
	}
	return obj, nil
}

// names finds duplicate member names: by scanning the members before it
// for the usual handful, through a set beyond that, so that a hostile
// object of thousands of members costs linear time before any signature
// is checked.
type names map[string]struct{}

const namesScanMax = 32

func (n *names) dup(before object, name string) bool {
	if len(before) < namesScanMax {
		_, ok := before.get(name)
		return ok
	}
	if *n == nil {
		*n = make(names, 2*namesScanMax)
		for _, m := range before {
			(*n)[m.name] = struct{}{}
		}
	}
	if _, ok := (*n)[name]; ok {
		return true
	}
	(*n)[name] = struct{}{}
	return false
}

// has reports whether the object has a member of that name.
func (o object) has(name string) bool {
	_, ok := o.get(name)
	return ok
}

// get returns the JSON text of the member of that name.
func (o object) get(name string) (string, bool) {
	for i := range o {
		if o[i].name == name {
			return o[i].value, true
		}
	}
	return "", false
}

// stringMember reads a member that must be a string when present.
func (o object) stringMember(name string) (s string, present bool, err error) {
	v, ok := o.get(name)
	if !ok {
		return "", false, nil
	}
	if v[0] != '"' {
		return "", true, fmt.Errorf("%s is not a string", name)
	}
	s, err = unquote(v)
	return s, true, err
}

// decode returns the member's value as encoding/json would give it with
// UseNumber: string, json.Number, bool, nil, []any or map[string]any.
func (o object) decode(name string) (any, bool) {
	v, ok := o.get(name)
	if !ok {
		return nil, false
	}
	return decodeValue(v), true
}

// decodeValue decodes JSON text that parseObject has already accepted.
func decodeValue(v string) any {
	switch v[0] {
	case '"':
		s, _ := unquote(v)
		return s
	case 't':
		return true
	case 'f':
		return false
	case 'n':
		return nil
	case '{', '[':
		dec := json.NewDecoder(strings.NewReader(v))
		dec.UseNumber()
		var out any
		if err := dec.Decode(&out); err != nil {
			return nil // unreachable: the text was validated
		}
		return out
	}
	return json.Number(v)
}

// unquote returns the string a JSON string literal (quotes included,
// already validated) stands for. Without escapes, that is a substring.
func unquote(lit string) (string, error) {
	inner := lit[1 : len(lit)-1]
	if strings.IndexByte(inner, '\\') < 0 {
		return inner, nil
	}
	var s string
	if err := json.Unmarshal([]byte(lit), &s); err != nil {
		return "", err
	}
	return s, nil
}

// numericDateValue reads the JSON text of a NumericDate: a positive,
// finite JSON number. Strings, dates and other types are refused, not
// coerced.
func numericDateValue(v string) (float64, bool) {
	if c := v[0]; c != '-' && (c < '0' || c > '9') {
		return 0, false
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsInf(f, 0) || f <= 0 {
		return 0, false
	}
	return f, true
}

// jsonParser validates JSON text (RFC 8259) in one pass, without building
// anything.
type jsonParser struct {
	s string
	i int
}

func (p *jsonParser) errorf(format string, args ...any) error {
	return fmt.Errorf("offset %d: %s", p.i, fmt.Sprintf(format, args...))
}

func (p *jsonParser) space() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// value consumes one JSON value at nesting depth d.
func (p *jsonParser) value(d int) error {
	if p.i >= len(p.s) {
		return p.errorf("unexpected end")
	}
	switch c := p.s[p.i]; {
	case c == '"':
		_, err := p.str()
		return err
	case c == '{' || c == '[':
		if d >= maxJSONDepth {
			return p.errorf("nested deeper than %d", maxJSONDepth)
		}
		return p.composite(d)
	case c == 't':
		return p.literal("true")
	case c == 'f':
		return p.literal("false")
	case c == 'n':
		return p.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	}
	return p.errorf("unexpected character %q", p.s[p.i])
}

// composite consumes an object or an array below the top level.
func (p *jsonParser) composite(d int) error {
	isObject := p.s[p.i] == '{'
	closing := byte(']')
	if isObject {
		closing = '}'
	}
	p.i++
	p.space()
	if p.i < len(p.s) && p.s[p.i] == closing {
		p.i++
		return nil
	}
	for {
		if isObject {
			if p.i >= len(p.s) || p.s[p.i] != '"' {
				return p.errorf("expected a member name")
			}
			if _, err := p.str(); err != nil {
				return err
			}
			p.space()
			if p.i >= len(p.s) || p.s[p.i] != ':' {
				return p.errorf("expected ':'")
			}
			p.i++
			p.space()
		}
		if err := p.value(d + 1); err != nil {
			return err
		}
		p.space()
		if p.i < len(p.s) && p.s[p.i] == ',' {
			p.i++
			p.space()
			continue
		}
		if p.i < len(p.s) && p.s[p.i] == closing {
			p.i++
			return nil
		}
		return p.errorf("expected ',' or %q", closing)
	}
}

// str consumes a string literal and returns it, quotes included.
func (p *jsonParser) str() (string, error) {
	start := p.i
	p.i++ // the opening quote
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return p.s[start:p.i], nil
		case c == '\\':
			if p.i+1 >= len(p.s) {
				return "", p.errorf("unterminated escape")
			}
			switch p.s[p.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i += 2
			case 'u':
				if p.i+6 > len(p.s) || !isHex4(p.s[p.i+2:p.i+6]) {
					return "", p.errorf(`invalid \u escape`)
				}
				p.i += 6
			default:
				return "", p.errorf("invalid escape")
			}
		case c < 0x20:
			return "", p.errorf("control character in string")
		default:
			p.i++
		}
	}
	return "", p.errorf("unterminated string")
}

func isHex4(s string) bool {
	for i := 0; i < 4; i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

func (p *jsonParser) literal(word string) error {
	if !strings.HasPrefix(p.s[p.i:], word) {
		return p.errorf("invalid literal")
	}
	p.i += len(word)
	return nil
}

// number consumes -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (p *jsonParser) number() error {
	if p.s[p.i] == '-' {
		p.i++
	}
	switch {
	case p.i < len(p.s) && p.s[p.i] == '0':
		p.i++
	case p.i < len(p.s) && p.s[p.i] >= '1' && p.s[p.i] <= '9':
		p.digits()
	default:
		return p.errorf("invalid number")
	}
	if p.i < len(p.s) && p.s[p.i] == '.' {
		p.i++
		if p.digits() == 0 {
			return p.errorf("invalid number")
		}
	}
	if p.i < len(p.s) && (p.s[p.i] == 'e' || p.s[p.i] == 'E') {
		p.i++
		if p.i < len(p.s) && (p.s[p.i] == '+' || p.s[p.i] == '-') {
			p.i++
		}
		if p.digits() == 0 {
			return p.errorf("invalid number")
		}
	}
	return nil
}

func (p *jsonParser) digits() int {
	start := p.i
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		p.i++
	}
	return p.i - start
}
