package authz

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

const (
	csrfTestHost    = "app.example.com"
	csrfTestTrusted = "https://login.example.com"
)

// TestCSRFMatrix runs every method kind × Sec-Fetch-Site × Origin ×
// allow_missing_headers against the rules, written out plainly here.
func TestCSRFMatrix(t *testing.T) {
	origins := map[string]string{
		"same":    "https://" + csrfTestHost,
		"trusted": csrfTestTrusted,
		"foreign": "https://evil.example",
		"null":    "null",
		"absent":  "",
	}
	sites := []string{"same-origin", "none", "same-site", "cross-site", ""}
	methods := []string{"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"}
	for _, allowMissing := range []bool{false, true} {
		g, err := newCSRF(CSRFConfig{TrustedOrigins: []string{csrfTestTrusted}, AllowMissingHeaders: allowMissing})
		if err != nil {
			t.Fatal(err)
		}
		for _, method := range methods {
			for _, site := range sites {
				for kind, origin := range origins {
					var want bool
					switch {
					case method == "GET" || method == "HEAD" || method == "OPTIONS":
						want = true
					case site == "same-origin" || site == "none":
						want = true
					case site != "":
						want = kind == "trusted"
					case kind == "absent":
						want = allowMissing
					default:
						want = kind == "same" || kind == "trusted"
					}
					err := g.check(method, csrfTestHost, site, origin)
					if got := err == nil; got != want {
						t.Errorf("allow_missing_headers %t, %s, Sec-Fetch-Site %q, Origin %s: %v, want allowed %t",
							allowMissing, method, site, kind, err, want)
					}
					if err != nil {
						if r := ReasonFor(err); !errors.Is(err, ErrCSRF) || r.Code != "csrf" || r.Status != 403 || r.Error != "" {
							t.Errorf("%v: reason %+v", err, r)
						}
					}
				}
			}
		}
	}
}

func TestCSRFEdges(t *testing.T) {
	g, err := newCSRF(CSRFConfig{TrustedOrigins: []string{csrfTestTrusted, "http://localhost:3000", "https://[::1]:8443"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		method, host, site, origin string
		allowed                    bool
	}{
		{"POST", "app.example.com:8443", "", "https://app.example.com:8443", true},
		{"POST", "app.example.com:8443", "", "https://app.example.com", false},
		{"POST", "app.example.com", "", "https://app.example.com:8443", false},
		{"POST", "App.Example.COM", "", "https://app.example.com", true},
		{"POST", "app.example.com", "", "http://app.example.com", true}, // as CrossOriginProtection: Host has no scheme
		{"POST", "app.example.com", "", "https://app.example.com.evil.example", false},
		{"POST", "app.example.com", "", "https://evil.example@app.example.com", true}, // no browser sends this; a non-browser can send anything
		{"POST", "", "", "null", false},
		{"POST", "", "", "https://", false},
		{"POST", "", "", csrfTestTrusted, true},
		{"POST", "", "cross-site", csrfTestTrusted, true},
		{"POST", "app.example.com", "", "http://localhost:3000", true},
		{"POST", "app.example.com", "cross-site", "https://[::1]:8443", true},
		{"POST", "app.example.com", "cross-site", "https://login.example.com/", false},
		{"POST", "app.example.com", "cross-site", "https://LOGIN.example.com", false},
		// Envoy joins repeated headers with ",".
		{"POST", "app.example.com", "same-origin,cross-site", "", false},
		{"POST", "app.example.com", "", "https://app.example.com,https://evil.example", false},
		{"POST", "app.example.com", "Same-Origin", "", false},
		{"POST", "app.example.com", "bogus", "https://app.example.com", false},
		// Methods are case-sensitive: "get" is not GET.
		{"get", "app.example.com", "cross-site", "", false},
		{"PROPFIND", "app.example.com", "cross-site", "", false},
		{"", "app.example.com", "cross-site", "", false},
	}
	for _, tt := range tests {
		err := g.check(tt.method, tt.host, tt.site, tt.origin)
		if (err == nil) != tt.allowed {
			t.Errorf("check(%q, %q, %q, %q) = %v, want allowed %t", tt.method, tt.host, tt.site, tt.origin, err, tt.allowed)
		}
	}
	long := "https://" + strings.Repeat("x", 1000) + "\x00"
	if err := g.check("POST", "h", "", long); err == nil || len(err.Error()) > 400 || strings.Contains(err.Error(), "\x00") {
		t.Errorf("detail of a long Origin: %v", err)
	}
}

func TestNewCSRF(t *testing.T) {
	for _, o := range []string{"https://a.example.com", "http://localhost:3000", "https://[::1]:8443", "http://10.0.0.1", "chrome-extension://abcdefgh"} {
		if _, err := newCSRF(CSRFConfig{TrustedOrigins: []string{o}}); err != nil {
			t.Errorf("%q: %v", o, err)
		}
	}
	bad := []string{
		"", "null", "a.example.com", "https://", "https://a.example.com/", "https://a.example.com/x",
		"https://a.example.com?x", "https://u@a.example.com", "HTTPS://a.example.com", "https://A.example.com",
		"https://a.example.com:443", "http://a.example.com:80", "https://a.example.com:0", "https://a.example.com:65536",
		"https://a.example.com:08", "https://a.example.com:", "https://*.example.com", "1https://a.example.com",
		"https://a b", "https://[::1", "https://a.example.com.",
	}
	_, err := newCSRF(CSRFConfig{TrustedOrigins: bad})
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(bad) {
		t.Errorf("%d errors for %d bad origins:\n%s", len(lines), len(bad), err)
	}
	for i, o := range bad {
		if want := fmt.Sprintf("csrf.trusted_origins[%d]: %q: ", i, o); !strings.Contains(err.Error(), want) {
			t.Errorf("no error for %q", o)
		}
	}
}

func BenchmarkCSRFCheck(b *testing.B) {
	g, err := newCSRF(CSRFConfig{TrustedOrigins: []string{csrfTestTrusted}})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := g.check("POST", csrfTestHost, "same-origin", "https://"+csrfTestHost); err != nil {
			b.Fatal(err)
		}
	}
}
