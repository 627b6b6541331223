package authz

import (
	"errors"
	"strings"
	"testing"
)

// FuzzNormalizePath: normalizePath never panics; a success is a path with
// no empty or dot segment, no escape that would be decoded and nothing that
// would be escaped, no longer than the limit, and its own normalization; a
// failure is ErrBadPath. The fast path agrees with the full one.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{
		"/", "/a/b/", "/a/b?x#y", "//admin/x", "/admin/../admin/x", "/%61dmin/x",
		"/admin;x/y", "/ADMIN/x", "/admin./x", "/admin%2e/x", "/admin%2Fx",
		"/x/../../admin", "/admin/%2e%2e/secret", "/public/..%2fadmin",
		"/a//../b", "/caf%c3%a9", "/caf\xc3\xa9", "/a%C0%AF", "/a%20/", "/a b",
		"/a%3Ab%40c", "/a%25%41", "/.well-known/../x/.", "/a\\b", "/a%00", "/a%",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := normalizePath(in)
		if err != nil {
			if !errors.Is(err, ErrBadPath) {
				t.Fatalf("normalizePath(%q): %v is not ErrBadPath", in, err)
			}
			return
		}
		if !strings.HasPrefix(out, "/") || len(out) > maxPathLen {
			t.Fatalf("normalizePath(%q) = %q", in, out)
		}
		for _, bad := range []string{"//", "/./", "/../", ";", "\\"} {
			if strings.Contains(out, bad) {
				t.Fatalf("normalizePath(%q) = %q holds %q", in, out, bad)
			}
		}
		if strings.HasSuffix(out, "/.") || strings.HasSuffix(out, "/..") {
			t.Fatalf("normalizePath(%q) = %q ends in a dot segment", in, out)
		}
		for i := 0; i < len(out); i++ {
			c := out[i]
			switch {
			case c == '%':
				e := out[i+1 : i+3]
				if e != strings.ToUpper(e) || pathClass[unhex(e[0])<<4|unhex(e[1])]&pathPlain != 0 {
					t.Fatalf("normalizePath(%q) = %q keeps escape %%%s", in, out, e)
				}
				i += 2
			case c != '/' && pathClass[c]&pathPlain == 0:
				t.Fatalf("normalizePath(%q) = %q holds byte %q unescaped", in, out, c)
			}
		}
		again, err := normalizePath(out)
		if err != nil || again != out {
			t.Fatalf("normalizePath(%q) = %q, but normalizing that gives %q, %v", in, out, again, err)
		}
		if canonicalPath(out) {
			if slow, err := appendNormalPath(nil, out); err != nil || string(slow) != out {
				t.Fatalf("canonicalPath(%q), but appendNormalPath gives %q, %v", out, slow, err)
			}
		}
	})
}
