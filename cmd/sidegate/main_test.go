package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// writeConfig writes a configuration file in a fresh directory and returns
// its path.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sidegate.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// runCmd runs the command line in process and returns its exit code and
// output.
func runCmd(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// badConfig has three problems, of three kinds.
const badConfig = `
tokens:
  cookie: [session]
issuers:
  - issuer: https://a.example/
    jwks_uri: https://a.example/jwks
    algorithms: [none]
`

func TestCheckConfig(t *testing.T) {
	t.Setenv("SIDEGATE_CONFIG", "")
	good := writeConfig(t, designConfig)
	bad := writeConfig(t, badConfig)

	t.Run("good", func(t *testing.T) {
		code, stdout, stderr := runCmd(t, "check-config", "--config", good)
		if code != 0 {
			t.Fatalf("exit %d; stderr:\n%s", code, stderr)
		}
		want := good + ": ok: 1 issuer(s); tokens from bearer, cookie ll_session_token; 2 identity header(s); grpc 127.0.0.1:9191, http 127.0.0.1:9192, admin 127.0.0.1:9090\n"
		if stdout != want {
			t.Errorf("stdout = %q, want %q", stdout, want)
		}
		if stderr != "" {
			t.Errorf("stderr = %q, want nothing", stderr)
		}
	})
	t.Run("single-dash flag and = form", func(t *testing.T) {
		if code, _, stderr := runCmd(t, "check-config", "-config="+good); code != 0 {
			t.Fatalf("exit %d; stderr:\n%s", code, stderr)
		}
	})
	t.Run("bad", func(t *testing.T) {
		code, stdout, stderr := runCmd(t, "check-config", "--config", bad)
		if code != 1 {
			t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
		}
		if stdout != "" {
			t.Errorf("stdout = %q, want nothing", stdout)
		}
		want := bad + ": 3 problem(s):\n" +
			`  tokens.cookie: unknown key (line 3); did you mean "cookies"?` + "\n" +
			"  issuers[0].audiences: must not be empty\n" +
			"  issuers[0].algorithms[0]: none is never accepted\n"
		if stderr != want {
			t.Errorf("stderr =\n%s\nwant\n%s", stderr, want)
		}
	})
	t.Run("not yaml", func(t *testing.T) {
		path := writeConfig(t, "listen: [\n")
		code, _, stderr := runCmd(t, "check-config", "--config", path)
		if code != 1 || !strings.HasPrefix(stderr, path+": config: yaml:") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
	t.Run("empty file", func(t *testing.T) {
		path := writeConfig(t, "")
		code, _, stderr := runCmd(t, "check-config", "--config", path)
		if code != 1 || stderr != path+": config: the file is empty\n" {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "nope.yaml")
		code, stdout, stderr := runCmd(t, "check-config", "--config", path)
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		if stdout != "" || !strings.Contains(stderr, path) || !strings.Contains(stderr, "no such file") {
			t.Errorf("stdout %q, stderr %q", stdout, stderr)
		}
	})
	t.Run("a directory", func(t *testing.T) {
		code, _, stderr := runCmd(t, "check-config", "--config", t.TempDir())
		if code != 1 || stderr == "" {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
	t.Run("no config", func(t *testing.T) {
		code, stdout, stderr := runCmd(t, "check-config")
		if code != 2 {
			t.Errorf("exit %d, want 2", code)
		}
		if stdout != "" || !strings.Contains(stderr, "--config FILE (or SIDEGATE_CONFIG) is required") {
			t.Errorf("stdout %q, stderr %q", stdout, stderr)
		}
	})
	t.Run("unknown flag", func(t *testing.T) {
		code, _, stderr := runCmd(t, "check-config", "--confg", good)
		if code != 2 || !strings.Contains(stderr, "flag provided but not defined: -confg") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
}

func TestCheckConfigFromEnvironment(t *testing.T) {
	good := writeConfig(t, designConfig)
	bad := writeConfig(t, badConfig)

	t.Setenv("SIDEGATE_CONFIG", good)
	code, stdout, stderr := runCmd(t, "check-config")
	if code != 0 || !strings.HasPrefix(stdout, good+": ok: ") {
		t.Errorf("SIDEGATE_CONFIG=good: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	t.Setenv("SIDEGATE_CONFIG", bad)
	code, _, stderr = runCmd(t, "check-config")
	if code != 1 || !strings.HasPrefix(stderr, bad+": 3 problem(s):\n") {
		t.Errorf("SIDEGATE_CONFIG=bad: exit %d, stderr %q", code, stderr)
	}

	// --config wins over the environment.
	code, stdout, _ = runCmd(t, "check-config", "--config", good)
	if code != 0 || !strings.HasPrefix(stdout, good+": ok: ") {
		t.Errorf("--config good with SIDEGATE_CONFIG=bad: exit %d, stdout %q", code, stdout)
	}

	t.Setenv("SIDEGATE_CONFIG", filepath.Join(t.TempDir(), "missing.yaml"))
	if code, _, _ := runCmd(t, "check-config"); code != 1 {
		t.Errorf("SIDEGATE_CONFIG=missing: exit %d, want 1", code)
	}
}

func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version", "-version"} {
		code, stdout, stderr := runCmd(t, arg)
		if code != 0 || stderr != "" || !regexp.MustCompile(`^sidegate \S+\n$`).MatchString(stdout) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q", arg, code, stdout, stderr)
		}
	}

	old := version
	t.Cleanup(func() { version = old })
	version = "v1.2.3"
	if code, stdout, _ := runCmd(t, "version"); code != 0 || stdout != "sidegate v1.2.3\n" {
		t.Errorf("with -X main.version=v1.2.3: exit %d, stdout %q", code, stdout)
	}
}

func TestUsage(t *testing.T) {
	code, stdout, stderr := runCmd(t)
	if code != 2 || stdout != "" || !strings.HasPrefix(stderr, "sidegate verifies the JWT") {
		t.Errorf("no command: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	for _, arg := range []string{"help", "-h", "--help"} {
		code, stdout, _ := runCmd(t, arg)
		if code != 0 || !strings.Contains(stdout, "sidegate serve --config FILE") {
			t.Errorf("%s: exit %d, stdout %q", arg, code, stdout)
		}
	}
	code, stdout, stderr = runCmd(t, "frobnicate", "--config", "x")
	if code != 2 || stdout != "" || !strings.HasPrefix(stderr, `sidegate: unknown command "frobnicate"`) || !strings.Contains(stderr, "Usage:") {
		t.Errorf("unknown command: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func TestServeRefusesBadArguments(t *testing.T) {
	t.Setenv("SIDEGATE_CONFIG", "")
	good := writeConfig(t, designConfig)
	tests := []struct {
		name string
		args []string
		code int
		want string // in stderr
	}{
		{"bad log level", []string{"--config", good, "--log-level", "loud"}, 2, `--log-level: "loud" is not debug, info, warn or error`},
		{"bad log format", []string{"--config", good, "--log-format", "xml"}, 2, `--log-format: "xml" is not text or json`},
		{"no config", nil, 2, `--config FILE (or SIDEGATE_CONFIG) is required; try "sidegate dev"`},
		{"unknown flag", []string{"--port", "1"}, 2, "flag provided but not defined: -port"},
		{"missing config", []string{"--config", filepath.Join(t.TempDir(), "missing.yaml")}, 1, "no such file"},
		{"bad config", []string{"--config", writeConfig(t, badConfig)}, 1, "3 problem(s):\n  tokens.cookie: unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(t, append([]string{"serve"}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			if stdout != "" {
				t.Errorf("stdout = %q", stdout)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr = %q, want it to contain %q", stderr, tt.want)
			}
		})
	}
}

func TestServeCannotBind(t *testing.T) {
	// Every listener refuses: the first bind error is reported, exit 1.
	path := writeConfig(t, minimalConfig+"listen: {grpc: \"192.0.2.1:1\", http: \"127.0.0.1:0\", admin: \"127.0.0.1:0\"}\n")
	code, _, stderr := runCmd(t, "serve", "--config", path, "--log-format", "json")
	if code != 1 || !strings.Contains(stderr, `"msg":"cannot start"`) || !strings.Contains(stderr, "listen.grpc") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestDevRefusesBadArguments(t *testing.T) {
	if code, _, stderr := runCmd(t, "dev", "--log-level", "chatty"); code != 2 || !strings.Contains(stderr, "--log-level") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	if code, _, stderr := runCmd(t, "dev", "--nope"); code != 2 || !strings.Contains(stderr, "flag provided but not defined: -nope") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}
