package e2e

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// TestVersion: the version stamped in at build time is what users see.
func TestVersion(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"version", "--version"} {
		stdout, stderr, code := run(t, nil, arg)
		if code != 0 || strings.TrimSpace(stdout) != "sidegate "+version {
			t.Errorf("sidegate %s: exit %d, stdout %q, stderr %q; want 0 and %q", arg, code, stdout, stderr, "sidegate "+version)
		}
	}
	report(t, "prints %q", "sidegate "+version)
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// badConfig has an unknown key, a typo'd key and an empty audience list:
// check-config must name each of them at once.
const badConfig = `listen:
  grpc: 127.0.0.1:0
issuers:
  - issuer: https://login.example.com/
    jwks_uri: https://login.example.com/jwks
    audiences: []
    algorithm: [RS256]
tokens:
  cookie: [ll_session_token]
`

// TestCheckConfig: check-config exits 1 naming every bad key, exits 0 on
// a good file, and reads SIDEGATE_CONFIG like --config; serve reads
// SIDEGATE_CONFIG too.
func TestCheckConfig(t *testing.T) {
	t.Parallel()
	bad := writeFile(t, "bad.yaml", badConfig)
	for _, tc := range []struct {
		name string
		env  []string
		args []string
	}{
		{"flag", nil, []string{"check-config", "--config", bad}},
		{"env", []string{"SIDEGATE_CONFIG=" + bad}, []string{"check-config"}},
	} {
		t.Run("bad/"+tc.name, func(t *testing.T) {
			stdout, stderr, code := run(t, tc.env, tc.args...)
			if code != 1 {
				t.Errorf("exit %d, want 1 (stdout %q)", code, stdout)
			}
			for _, want := range []string{"issuers[0].algorithm", "tokens.cookie", "unknown key", `did you mean "cookies"`} {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr does not name %q:\n%s", want, stderr)
				}
			}
			assertNoPanic(t, stderr)
		})
	}

	// Once the keys are spelled right, the remaining value problem shows.
	fixed := strings.NewReplacer("algorithm:", "algorithms:", "cookie:", "cookies:").Replace(badConfig)
	_, stderr, code := run(t, nil, "check-config", "--config", writeFile(t, "fixed.yaml", fixed))
	if code != 1 || !strings.Contains(stderr, "issuers[0].audiences") {
		t.Errorf("empty audiences: exit %d, stderr %q; want 1 naming issuers[0].audiences", code, stderr)
	}

	p := newIDP(t)
	good := writeConfig(t, p.config(), "127.0.0.1:9191", "127.0.0.1:9192", "127.0.0.1:9090")
	for _, tc := range []struct {
		name string
		env  []string
		args []string
	}{
		{"flag", nil, []string{"check-config", "--config", good}},
		{"env", []string{"SIDEGATE_CONFIG=" + good}, []string{"check-config"}},
	} {
		t.Run("good/"+tc.name, func(t *testing.T) {
			stdout, stderr, code := run(t, tc.env, tc.args...)
			if code != 0 || !strings.Contains(stdout, "ok: 1 issuer(s)") {
				t.Errorf("exit %d, stdout %q, stderr %q; want 0 and a summary", code, stdout, stderr)
			}
		})
	}

	t.Run("serve reads SIDEGATE_CONFIG", func(t *testing.T) {
		sc := p.config()
		sc.ViaEnv = true
		sg := serve(t, sc)
		hc := httpClient(t)
		sg.waitReady(hc)
		resp, err := check(t, authv3.NewAuthorizationClient(dialGRPC(t, sg.GRPC)),
			map[string]string{"authorization": "Bearer " + p.token(t, "EdDSA", p.claims("env-user"))})
		if err != nil {
			t.Fatal(err)
		}
		if got := okHeaders(t, resp)["x-user-id"]; got != "env-user" {
			t.Errorf("x-user-id %q, want env-user", got)
		}
		sg.sigterm()
		if code := sg.wait(exitDeadline); code != 0 {
			t.Errorf("exit %d after SIGTERM, want 0", code)
		}
	})
	report(t, "bad file: exit 1 naming every bad key (--config and SIDEGATE_CONFIG); good file: exit 0; serve with SIDEGATE_CONFIG allows")
}

// assertNoPanic fails when output looks like a Go panic or crash trace.
func assertNoPanic(t *testing.T, output string) {
	t.Helper()
	for _, sign := range []string{"panic:", "goroutine ", "SIGSEGV", "fatal error:"} {
		if strings.Contains(output, sign) {
			t.Errorf("output has %q, a crash trace:\n%s", sign, output)
		}
	}
}

// TestStartFailures: a malformed file or a port already in use ends
// "sidegate serve" at once with exit 1 and a message naming the problem,
// not a crash trace and not a process that lingers.
func TestStartFailures(t *testing.T) {
	t.Parallel()
	p := newIDP(t)

	t.Run("malformed YAML", func(t *testing.T) {
		path := writeFile(t, "broken.yaml", "listen:\n  grpc: 127.0.0.1:0\n  http: [unclosed\nissuers: {\n")
		began := time.Now()
		_, stderr, code := run(t, nil, "serve", "--config", path)
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		if !strings.Contains(stderr, path) || !strings.Contains(stderr, "yaml") || !strings.Contains(stderr, "line ") {
			t.Errorf("stderr does not name the file, YAML and a line:\n%s", stderr)
		}
		assertNoPanic(t, stderr)
		report(t, "malformed YAML: exit %d after %s", code, time.Since(began).Round(time.Millisecond))
	})

	t.Run("invalid value", func(t *testing.T) {
		sc := p.config()
		sc.RefreshInterval = "soon"
		path := writeConfig(t, sc, "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0")
		_, stderr, code := run(t, nil, "serve", "--config", path)
		if code != 1 || !strings.Contains(stderr, `"soon" is not a duration`) {
			t.Errorf("exit %d, want 1 and a message about the duration:\n%s", code, stderr)
		}
		assertNoPanic(t, stderr)
	})

	for _, which := range []string{"grpc", "http", "admin"} {
		t.Run("port in use/"+which, func(t *testing.T) {
			held, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			addrs := freePorts(t, 3)
			i := map[string]int{"grpc": 0, "http": 1, "admin": 2}[which]
			addrs[i] = held.Addr().String()
			path := writeConfig(t, p.config(), addrs[0], addrs[1], addrs[2])
			began := time.Now()
			_, stderr, code := run(t, nil, "serve", "--config", path, "--log-format", "json")
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			for _, want := range []string{"listen." + which, held.Addr().String(), "address already in use"} {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr does not name %q:\n%s", want, stderr)
				}
			}
			assertNoPanic(t, stderr)
			// Nothing it bound before failing is left bound.
			free := []string{}
			for j, a := range addrs {
				if j != i {
					free = append(free, a)
				}
			}
			if err := portsFree(free...); err != nil {
				t.Errorf("ports still bound after the failed start: %v", err)
			}
			report(t, "port in use (%s): exit %d after %s", which, code, time.Since(began).Round(time.Millisecond))
		})
	}
}
