package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sidegate/sidegate/jwks/jwkstest"
)

// The proxies in front of sidegate's HTTP check, run from their shipped
// snippets in manifests/. Each test templates the snippet text (ports and
// addresses only), runs the real Debian binary as a separate process in
// front of an echo upstream, and checks what the client and the upstream
// see.

// echoed is what the upstream echo server answers: the request it got.
type echoed struct {
	Method     string      `json:"method"`
	URI        string      `json:"uri"`
	Headers    http.Header `json:"headers"`
	BodyLen    int64       `json:"body_len"`
	BodySHA256 string      `json:"body_sha256"`
}

// echoServer is the upstream application behind the proxy.
type echoServer struct {
	addr  string
	calls atomic.Int64
}

func startEcho(t *testing.T) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{addr: ln.Addr().String()}
	srv := &http.Server{ReadHeaderTimeout: 20 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.calls.Add(1)
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(echoed{Method: r.Method, URI: r.RequestURI, Headers: r.Header, BodyLen: n, BodySHA256: hex.EncodeToString(h.Sum(nil))})
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return e
}

// shipped reads a file of the repository (the tests run in e2e/).
func shipped(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// retarget replaces each old string of the shipped snippet with its new
// one, failing when the snippet no longer contains it: the test must run
// the snippet users copy, changed only in its addresses.
func retarget(t *testing.T, file, text string, oldNew ...string) string {
	t.Helper()
	for i := 0; i < len(oldNew); i += 2 {
		if !strings.Contains(text, oldNew[i]) {
			t.Fatalf("%s no longer contains %q; update the test's templating", file, oldNew[i])
		}
		text = strings.ReplaceAll(text, oldNew[i], oldNew[i+1])
	}
	return text
}

// startNginx runs nginx with manifests/nginx/sidegate.conf included in a
// minimal nginx.conf whose every path is in a temp dir.
func startNginx(t *testing.T, sidegateHTTP, upstream string) *peer {
	t.Helper()
	bin := peerBinary(t, "nginx", "/usr/sbin/nginx")
	const file = "manifests/nginx/sidegate.conf"
	snippet := shipped(t, file)
	return startWithRetry(t, func(addr string) *peer {
		dir := t.TempDir()
		conf := retarget(t, file, snippet,
			"server 127.0.0.1:8081;", "server "+upstream+";",
			"proxy_pass http://127.0.0.1:9192;", "proxy_pass http://"+sidegateHTTP+";",
			"listen 8080;", "listen "+addr+";",
		)
		if err := os.WriteFile(filepath.Join(dir, "sidegate.conf"), []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		user := ""
		if os.Geteuid() == 0 {
			// Workers would run as nobody and could not use the temp dir.
			user = "user root;\n"
		}
		mainConf := fmt.Sprintf(`# written by the sidegate e2e suite
%spid %[2]s/nginx.pid;
error_log stderr notice;
worker_processes 1;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path %[2]s/client_body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    include %[2]s/sidegate.conf;
}
`, user, dir)
		if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(mainConf), 0o600); err != nil {
			t.Fatal(err)
		}
		return startPeer(t, "nginx", addr, nil, bin,
			"-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", "stderr", "-g", "daemon off;")
	})
}

// startCaddy runs caddy with manifests/caddy/Caddyfile, its admin endpoint
// off and its data and config in temp dirs.
func startCaddy(t *testing.T, sidegateHTTP, upstream string) *peer {
	t.Helper()
	bin := peerBinary(t, "caddy", "/usr/bin/caddy")
	const file = "manifests/caddy/Caddyfile"
	snippet := shipped(t, file)
	return startWithRetry(t, func(addr string) *peer {
		dir := t.TempDir()
		conf := "# written by the sidegate e2e suite\n{\n\tadmin off\n}\n\n" + retarget(t, file, snippet,
			// http:// keeps Caddy from serving HTTPS on an IP address.
			":8080 {", "http://"+addr+" {",
			"forward_auth 127.0.0.1:9192 {", "forward_auth "+sidegateHTTP+" {",
			"reverse_proxy 127.0.0.1:8081", "reverse_proxy "+upstream,
		)
		path := filepath.Join(dir, "Caddyfile")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{"home", "data", "config"} {
			if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		env := []string{"HOME=" + filepath.Join(dir, "home"), "XDG_DATA_HOME=" + filepath.Join(dir, "data"), "XDG_CONFIG_HOME=" + filepath.Join(dir, "config")}
		return startPeer(t, "caddy", addr, env, bin, "run", "--adapter", "caddyfile", "--config", path)
	})
}

// TestNginx: nginx auth_request from manifests/nginx/ in front of an echo
// upstream, sidegate's HTTP check deciding.
func TestNginx(t *testing.T) {
	t.Parallel()
	proxyScenarios(t, "nginx", startNginx, proxyTraits{})
}

// TestCaddy: Caddy forward_auth with copy_headers from manifests/caddy/.
func TestCaddy(t *testing.T) {
	t.Parallel()
	// Caddy copies sidegate's denial through (status, headers and body);
	// nginx answers with its own body.
	proxyScenarios(t, "caddy", startCaddy, proxyTraits{denialBody: true})
}

type proxyTraits struct {
	denialBody bool // the client gets sidegate's JSON denial body
}

// readyForProxy skips the test when the proxy is missing, before anything
// starts, then starts an identity provider and a ready sidegate for it.
func readyForProxy(t *testing.T, name string) (*idp, *proc, *http.Client) {
	t.Helper()
	switch name {
	case "nginx":
		peerBinary(t, "nginx", "/usr/sbin/nginx")
	case "caddy":
		peerBinary(t, "caddy", "/usr/bin/caddy")
	}
	p := newIDP(t)
	sg := serve(t, p.config())
	hc := httpClient(t)
	sg.waitReady(hc)
	return p, sg, hc
}

func proxyScenarios(t *testing.T, name string, launch func(*testing.T, string, string) *peer, traits proxyTraits) {
	began := time.Now()
	p, sg, hc := readyForProxy(t, name)
	up := startEcho(t)
	px := launch(t, sg.HTTP, up.addr)
	url := "http://" + px.Addr + "/orders/42?page=1"
	requests := 0

	// pass sends a request that must reach the upstream and returns what
	// the upstream saw.
	pass := func(t *testing.T, method string, headers map[string]string, body []byte) echoed {
		t.Helper()
		before := up.calls.Load()
		code, _, raw, err := do(hc, method, url, headers, body)
		requests++
		if err != nil {
			t.Fatal(err)
		}
		if code != http.StatusOK {
			t.Fatalf("%s through %s: %d, want 200 (body %s)", method, name, code, raw)
		}
		if n := up.calls.Load() - before; n != 1 {
			t.Errorf("upstream called %d times, want 1", n)
		}
		var e echoed
		if err := json.Unmarshal([]byte(raw), &e); err != nil {
			t.Fatalf("upstream answer %q: %v", raw, err)
		}
		if e.Method != method || e.URI != "/orders/42?page=1" {
			t.Errorf("upstream got %s %s, want %s /orders/42?page=1", e.Method, e.URI, method)
		}
		return e
	}
	// deny sends a request that must be denied before the upstream.
	deny := func(t *testing.T, method string, headers map[string]string, body []byte, want denial) {
		t.Helper()
		before := up.calls.Load()
		code, hdr, raw, err := do(hc, method, url, headers, body)
		requests++
		if err != nil {
			t.Fatal(err)
		}
		if code != want.status {
			t.Errorf("%s through %s: %d, want %d (body %s)", method, name, code, want.status, raw)
		}
		if err := want.checkChallenge(hdr.Get("WWW-Authenticate")); err != nil {
			t.Error(err)
		}
		if traits.denialBody {
			if err := want.checkBody(raw); err != nil {
				t.Error(err)
			}
		}
		if n := up.calls.Load() - before; n != 0 {
			t.Errorf("upstream called %d times for a denied request", n)
		}
	}
	identity := func(t *testing.T, e echoed, sub string) {
		t.Helper()
		if got := e.Headers.Values("X-User-Id"); len(got) != 1 || got[0] != sub {
			t.Errorf("upstream X-User-Id %q, want exactly [%q] (the client sent admin)", got, sub)
		}
		if e.Headers.Get("X-Jwt-Payload") == "" {
			t.Error("upstream got no X-Jwt-Payload")
		}
	}

	t.Run("bearer", func(t *testing.T) {
		tok := p.token(t, "ES256", p.claims("alice"))
		e := pass(t, http.MethodGet, map[string]string{"Authorization": "Bearer " + tok, "X-User-Id": "admin"}, nil)
		identity(t, e, "alice")
	})
	t.Run("cookie", func(t *testing.T) {
		tok := p.token(t, "RS256", p.claims("bob"))
		e := pass(t, http.MethodGet, map[string]string{"Cookie": "theme=dark; " + cookieName + "=" + tok, "X-User-Id": "admin"}, nil)
		identity(t, e, "bob")
	})
	t.Run("token without sub", func(t *testing.T) {
		c := p.claims("")
		delete(c, "sub")
		e := pass(t, http.MethodGet, map[string]string{"Authorization": "Bearer " + p.token(t, "EdDSA", c), "X-User-Id": "admin"}, nil)
		// Caddy before 2.9 sets a copied header sidegate did not send to
		// its placeholder text; the shipped Caddyfile removes it.
		for _, h := range []string{"X-User-Id", "X-Jwt-Payload"} {
			if got := e.Headers.Values(h); h == "X-User-Id" && len(got) != 0 {
				t.Errorf("upstream %s %q for a token without sub, want none (the client sent admin)", h, got)
			} else if h == "X-Jwt-Payload" && (len(got) != 1 || strings.HasPrefix(got[0], "{")) {
				t.Errorf("upstream %s %q, want the payload sidegate set", h, got)
			}
		}
	})
	for _, method := range []string{http.MethodPost, http.MethodPut} {
		t.Run(method+" 100 KB body", func(t *testing.T) {
			body := make([]byte, 100<<10)
			_, _ = rand.Read(body)
			sum := sha256.Sum256(body)
			tok := p.token(t, "RS256", p.claims("carol"))
			e := pass(t, method, map[string]string{"Authorization": "Bearer " + tok, "X-User-Id": "admin", "Content-Type": "application/octet-stream"}, body)
			identity(t, e, "carol")
			if e.BodyLen != int64(len(body)) || e.BodySHA256 != hex.EncodeToString(sum[:]) {
				t.Errorf("upstream body: %d bytes sha256 %s, want %d bytes sha256 %x", e.BodyLen, e.BodySHA256, len(body), sum)
			}
		})
	}
	t.Run("no token", func(t *testing.T) {
		deny(t, http.MethodGet, map[string]string{"X-User-Id": "admin"}, nil, denial{status: 401, reason: "no_token"})
	})
	t.Run("no token, POST with a body", func(t *testing.T) {
		deny(t, http.MethodPost, map[string]string{"X-User-Id": "admin"}, bytes.Repeat([]byte("x"), 100<<10), denial{status: 401, reason: "no_token"})
	})
	t.Run("expired", func(t *testing.T) {
		c := jwkstest.Claims(p.srv.Issuer(), audience, "alice", time.Now().Add(-2*time.Hour), time.Hour)
		deny(t, http.MethodGet, map[string]string{"Authorization": "Bearer " + p.token(t, "ES256", c)}, nil, invalid("expired"))
	})
	t.Run("expired cookie", func(t *testing.T) {
		c := jwkstest.Claims(p.srv.Issuer(), audience, "alice", time.Now().Add(-2*time.Hour), time.Hour)
		deny(t, http.MethodGet, map[string]string{"Cookie": cookieName + "=" + p.token(t, "RS256", c)}, nil, invalid("expired"))
	})
	t.Run("garbage", func(t *testing.T) {
		deny(t, http.MethodGet, map[string]string{"Authorization": "Bearer not.a.jwt", "X-User-Id": "admin"}, nil, invalid("malformed_token"))
	})

	report(t, "%d requests through %s in %s (sidegate, %s and upstream started within)", requests, name, time.Since(began).Round(100*time.Millisecond), name)
}
