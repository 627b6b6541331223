package e2e

import (
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

var (
	devToken  = regexp.MustCompile(`export TOKEN='([^']+)'`)
	devHTTP   = regexp.MustCompile(`HTTP check\s+(http://\S+)`)
	devCookie = regexp.MustCompile(`--cookie "([^"=]+)=\$TOKEN"`)
)

// TestDev: "sidegate dev" with no arguments and nothing else installed
// prints a token and curl commands that do what they say: the token is
// allowed as a bearer header and as the cookie, no token is a 401; and
// Ctrl-C (SIGINT) ends it cleanly.
func TestDev(t *testing.T) {
	t.Parallel()
	var p *proc
	var out string
	for attempt := 1; ; attempt++ {
		p = start(t, nil, "dev", "--log-format", "json")
		eventually(t, startDeadline, "sidegate dev prints its instructions", func() (bool, string) {
			out = p.out.String()
			return p.exited() || devToken.MatchString(out) && devHTTP.MatchString(out), out
		})
		if !p.exited() {
			break
		}
		// dev takes the usual ports when they look free; another program may
		// bind one in the meantime (another test run, a developer's demo).
		if !strings.Contains(p.errb.String(), "address already in use") || attempt == 3 {
			t.Fatalf("sidegate dev exited with %d before printing its instructions", p.code)
		}
	}
	token := devToken.FindStringSubmatch(out)[1]
	url := devHTTP.FindStringSubmatch(out)[1]
	hc := httpClient(t)

	code, hdr, body, err := get(hc, url, map[string]string{"Authorization": "Bearer " + token})
	if err != nil || code != http.StatusOK || hdr.Get("X-User-Id") != "dev-user" {
		t.Errorf("the printed bearer curl: %d, X-User-Id %q, %v (body %s); want 200 and dev-user", code, hdr.Get("X-User-Id"), err, body)
	}
	if m := devCookie.FindStringSubmatch(out); m == nil {
		t.Errorf("no cookie example in:\n%s", out)
	} else {
		code, hdr, body, err = get(hc, url, map[string]string{"Cookie": m[1] + "=" + token})
		if err != nil || code != http.StatusOK || hdr.Get("X-User-Id") != "dev-user" {
			t.Errorf("the printed cookie curl: %d, X-User-Id %q, %v (body %s); want 200 and dev-user", code, hdr.Get("X-User-Id"), err, body)
		}
	}
	code, hdr, body, err = get(hc, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	denial{status: 401, reason: "no_token"}.assertHTTP(t, code, hdr, body)

	p.signal(os.Interrupt)
	began := time.Now()
	if code := p.wait(exitDeadline); code != 0 {
		t.Errorf("exit %d after Ctrl-C, want 0", code)
	}
	report(t, "token allowed as bearer and cookie, no token 401; exit 0 %s after SIGINT", time.Since(began).Round(time.Millisecond))
}
