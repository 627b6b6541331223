package authz

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// maxPathLen bounds a request path (without its query) before and after
// normalization: a longer path is bad_path. 8 KiB is Envoy's and nginx's
// usual request-line budget; bounding the output too keeps normalization
// idempotent (an output is never too long to be normalized again).
const maxPathLen = 8 << 10

// normalizePath returns the path as the upstream will see it, in one
// canonical spelling, for route matching. The request is not changed: the
// upstream still gets the path the client sent.
//
//   - The query ("?…") and fragment ("#…") are removed; the path must then
//     start with "/".
//   - An escape of a character that may stand unescaped in a path segment
//     is decoded: the unreserved characters (ALPHA DIGIT "-" "." "_" "~",
//     RFC 3986 §6.2.2.2) and also the sub-delimiters other than ";", ":"
//     and "@". Every other byte is written as an escape with upper-case hex,
//     whether it came escaped or raw (raw non-ASCII, space, `"`, "<", …).
//     So one decoded path has exactly one spelling, and the output is ASCII.
//   - Empty segments ("//") are dropped; "." and ".." segments are resolved
//     (RFC 3986 §5.2.4), a trailing one leaving a trailing "/".
//
// Anything whose meaning depends on the server reading it is an error
// wrapping ErrBadPath, never a guess: an encoded "/" or "\", a raw "\", a
// ";" (raw or encoded: Tomcat and Spring read "/admin;x/" as "/admin/"),
// ".." above the root, ".." after "//" (servers that merge slashes first
// and servers that do not resolve it differently), a segment ending in "."
// or a space other than "." and ".." (Windows and IIS strip those),
// invalid percent-encoding, a control byte (C0, DEL, or C1 once decoded;
// raw or escaped, NUL included), bytes that are not UTF-8 once decoded,
// and a path longer than maxPathLen. The error's detail, for the log,
// quotes at most the three bytes of an escape.
//
// normalizePath is idempotent. When raw's path is already canonical it
// returns that prefix of raw, without allocating unless the path holds
// escapes and is longer than 256 bytes.
func normalizePath(raw string) (string, error) {
	p := raw
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	if len(p) > maxPathLen {
		return "", fmt.Errorf("%w: %d bytes, limit %d", ErrBadPath, len(p), maxPathLen)
	}
	if p == "" || p[0] != '/' {
		return "", fmt.Errorf("%w: does not start with /", ErrBadPath)
	}
	if canonicalPath(p) {
		return p, nil
	}
	// The output is usually no longer than p: on the stack when short.
	var stack [256]byte
	buf := stack[:0]
	if len(p) > len(stack) {
		buf = make([]byte, 0, len(p))
	}
	out, err := appendNormalPath(buf, p)
	if err != nil {
		return "", err
	}
	if len(out) > maxPathLen {
		return "", fmt.Errorf("%w: %d bytes once normalized, limit %d", ErrBadPath, len(out), maxPathLen)
	}
	if string(out) == p {
		return p, nil
	}
	return string(out), nil
}

// Byte classes of a path.
const (
	pathUnreserved = 1 << iota // ALPHA DIGIT - . _ ~
	pathSubDelim               // ! $ & ' ( ) * + , = : @ (pchar, less unreserved and ";")
	pathControl                // C0 and DEL

	// pathPlain bytes stand unescaped in a canonical path segment.
	pathPlain = pathUnreserved | pathSubDelim
)

var pathClass = func() (t [256]uint8) {
	for c := range 256 {
		b := byte(c)
		switch {
		case isAlnum(b) || strings.IndexByte("-._~", b) >= 0:
			t[c] = pathUnreserved
		case strings.IndexByte("!$&'()*+,=:@", b) >= 0:
			t[c] = pathSubDelim
		case b < 0x20 || b == 0x7f:
			t[c] = pathControl
		}
	}
	return t
}()

// canonicalPath reports whether p, which starts with "/", is its own
// normalization: plain bytes only (so no escape, no ";" and no "\"), no
// empty segment but a trailing one, no dot segment, no segment ending in
// ".". It errs on the side of false; appendNormalPath decides those.
func canonicalPath(p string) bool {
	start := 1 // of the current segment
	for i := 1; i <= len(p); i++ {
		if i < len(p) && p[i] != '/' {
			if pathClass[p[i]]&pathPlain == 0 {
				return false
			}
			continue
		}
		seg := p[start:i]
		if seg == "" && i < len(p) || seg != "" && seg[len(seg)-1] == '.' {
			return false // "//", or ".", "..", "x."
		}
		start = i + 1
	}
	return true
}

// appendNormalPath appends the normalization of p (which starts with "/")
// to dst; see normalizePath.
func appendNormalPath(dst []byte, p string) ([]byte, error) {
	base := len(dst)
	var (
		u          utf8Seq
		afterEmpty bool // a "//" has been seen
		dotEnd     bool // the last segment was "." or ".."
	)
	for i := 0; i < len(p); {
		i++ // the "/" before this segment
		if i < len(p) && p[i] == '/' {
			afterEmpty = true
			continue
		}
		dst = append(dst, '/')
		segStart := len(dst)
		var last byte // last decoded byte of the segment
		for i < len(p) && p[i] != '/' {
			c, at := p[i], i
			escaped := c == '%'
			if escaped {
				if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
					return nil, fmt.Errorf("%w: invalid percent-encoding %q at byte %d", ErrBadPath, p[i:min(i+3, len(p))], i)
				}
				c = unhex(p[i+1])<<4 | unhex(p[i+2])
				i += 3
			} else {
				i++
			}
			if c < utf8.RuneSelf && u.need > 0 {
				return nil, fmt.Errorf("%w: bytes before byte %d are not UTF-8", ErrBadPath, at)
			}
			switch {
			case c == '/' && escaped:
				return nil, fmt.Errorf("%w: encoded slash (%%2F) at byte %d", ErrBadPath, at)
			case c == '\\':
				if escaped {
					return nil, fmt.Errorf("%w: encoded backslash (%%5C) at byte %d", ErrBadPath, at)
				}
				return nil, fmt.Errorf("%w: backslash at byte %d", ErrBadPath, at)
			case c == ';':
				return nil, fmt.Errorf("%w: semicolon (path parameter) at byte %d", ErrBadPath, at)
			case c == 0:
				return nil, fmt.Errorf("%w: NUL byte at byte %d", ErrBadPath, at)
			case pathClass[c]&pathControl != 0:
				return nil, fmt.Errorf("%w: control byte 0x%02X at byte %d", ErrBadPath, c, at)
			case c >= utf8.RuneSelf:
				if err := u.add(c); err != nil {
					return nil, fmt.Errorf("%w: %v at byte %d", ErrBadPath, err, at)
				}
				dst = appendEscape(dst, c)
			case pathClass[c]&pathPlain != 0:
				dst = append(dst, c)
			default:
				dst = appendEscape(dst, c)
			}
			last = c
		}
		if u.need > 0 {
			return nil, fmt.Errorf("%w: bytes before byte %d are not UTF-8", ErrBadPath, i)
		}
		seg := dst[segStart:]
		dotEnd = false
		switch {
		case string(seg) == ".":
			dst, dotEnd = dst[:segStart-1], true
		case string(seg) == "..":
			if afterEmpty {
				return nil, fmt.Errorf("%w: \"..\" after \"//\"", ErrBadPath)
			}
			prev := dst[base : segStart-1]
			if len(prev) == 0 {
				return nil, fmt.Errorf("%w: \"..\" above the root", ErrBadPath)
			}
			dst, dotEnd = dst[:base+bytes.LastIndexByte(prev, '/')], true
		case last == '.' && len(seg) > 0:
			return nil, fmt.Errorf("%w: a segment ends in \".\"", ErrBadPath)
		case last == ' ':
			return nil, fmt.Errorf("%w: a segment ends in a space", ErrBadPath)
		}
	}
	if dotEnd {
		dst = append(dst, '/')
	}
	return dst, nil
}

// utf8Seq checks the decoded bytes of a path, one at a time, as UTF-8
// without C1 controls.
type utf8Seq struct {
	buf  [utf8.UTFMax]byte
	n    int
	need int // bytes of the current sequence; 0 between sequences
}

func (u *utf8Seq) add(c byte) error {
	if u.need == 0 {
		switch {
		case c&0xe0 == 0xc0:
			u.need = 2
		case c&0xf0 == 0xe0:
			u.need = 3
		case c&0xf8 == 0xf0:
			u.need = 4
		default:
			return fmt.Errorf("byte 0x%02X does not start a UTF-8 sequence", c)
		}
		u.buf[0], u.n = c, 1
		return nil
	}
	if c&0xc0 != 0x80 {
		return fmt.Errorf("byte 0x%02X does not continue a UTF-8 sequence", c)
	}
	u.buf[u.n] = c
	u.n++
	if u.n < u.need {
		return nil
	}
	u.need = 0
	r, size := utf8.DecodeRune(u.buf[:u.n])
	switch {
	case r == utf8.RuneError && size <= 1:
		return errors.New("invalid UTF-8 sequence")
	case r <= 0x9f:
		return fmt.Errorf("C1 control U+%04X", r)
	}
	return nil
}

const upperHex = "0123456789ABCDEF"

func appendEscape(dst []byte, c byte) []byte {
	return append(dst, '%', upperHex[c>>4], upperHex[c&0xf])
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}
