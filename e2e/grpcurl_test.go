package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// grpcurlModule is the pinned grpcurl that .ci/run installs, and that this
// test installs when it finds none.
const grpcurlModule = "github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4"

// grpcurl finds grpcurl on PATH or in the Go bin directory, or installs
// the pinned version there; it skips the test when neither works.
func grpcurl(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("grpcurl"); err == nil {
		return p
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("grpcurl is not on PATH and there is no go command to install it: %v", err)
	}
	gobin := goEnv(goTool, "GOBIN")
	if gobin == "" {
		gopath := filepath.SplitList(goEnv(goTool, "GOPATH"))
		if len(gopath) == 0 || gopath[0] == "" {
			t.Skip("grpcurl is not on PATH and GOPATH is unknown; .ci/run installs it")
		}
		gobin = filepath.Join(gopath[0], "bin")
	}
	bin := filepath.Join(gobin, "grpcurl")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if testing.Short() {
		t.Skipf("grpcurl is not on PATH or in %s, and -short does not install it (go install %s; .ci/run does)", gobin, grpcurlModule)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, "install", grpcurlModule)
	cmd.Dir = t.TempDir() // outside this module: its go.mod must not change
	cmd.Env = append(os.Environ(), "GOBIN="+gobin)
	began := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Skipf("grpcurl is not on PATH and go install %s failed (%v); .ci/run installs it:\n%s", grpcurlModule, err, tail(out, 2000))
	}
	t.Logf("installed %s into %s in %s", grpcurlModule, gobin, time.Since(began).Round(time.Second))
	return bin
}

func goEnv(goTool, name string) string {
	out, err := exec.Command(goTool, "env", name).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// grpcurlRun runs grpcurl with a deadline and the request on stdin.
func grpcurlRun(t *testing.T, bin, stdin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"-plaintext", "-max-time", "30"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("grpcurl %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// grpcurlCheck is the JSON grpcurl prints for a CheckResponse.
type grpcurlCheck struct {
	Status struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"status"`
	OkResponse *struct {
		Headers []struct {
			Header struct {
				Key   string `json:"key"`
				Value string `json:"value"`
			} `json:"header"`
			AppendAction string `json:"appendAction"`
		} `json:"headers"`
		HeadersToRemove []string `json:"headersToRemove"`
	} `json:"okResponse"`
	DeniedResponse *struct {
		Status struct {
			Code string `json:"code"`
		} `json:"status"`
		Body string `json:"body"`
	} `json:"deniedResponse"`
}

// TestGRPCurl calls the Check service the way an operator would: grpcurl,
// with the service found through server reflection and the request in
// JSON.
func TestGRPCurl(t *testing.T) {
	t.Parallel()
	bin := grpcurl(t)
	p := newIDP(t)
	sg := serve(t, p.config())
	sg.waitReady(httpClient(t))

	list := grpcurlRun(t, bin, "", sg.GRPC, "list")
	for _, svc := range []string{"envoy.service.auth.v3.Authorization", "grpc.health.v1.Health"} {
		if !strings.Contains(list, svc) {
			t.Errorf("grpcurl list does not show %s:\n%s", svc, list)
		}
	}

	call := func(t *testing.T, headers map[string]string) grpcurlCheck {
		t.Helper()
		req, err := json.Marshal(map[string]any{"attributes": map[string]any{"request": map[string]any{"http": map[string]any{
			"method": "GET", "path": "/orders/42", "host": "orders.example.com", "headers": headers,
		}}}})
		if err != nil {
			t.Fatal(err)
		}
		out := grpcurlRun(t, bin, string(req), "-d", "@", sg.GRPC, "envoy.service.auth.v3.Authorization/Check")
		var resp grpcurlCheck
		if err := json.Unmarshal([]byte(out), &resp); err != nil {
			t.Fatalf("grpcurl output is not a CheckResponse in JSON: %v\n%s", err, out)
		}
		return resp
	}

	t.Run("allow", func(t *testing.T) {
		tok := p.token(t, "ES256", p.claims("dave"))
		resp := call(t, map[string]string{"authorization": "Bearer " + tok, "x-user-id": "mallory"})
		if resp.OkResponse == nil || resp.Status.Code != 0 {
			t.Fatalf("want okResponse with status OK, got %+v", resp)
		}
		found := false
		for _, h := range resp.OkResponse.Headers {
			if h.Header.Key == "x-user-id" {
				found = true
				if h.Header.Value != "dave" || h.AppendAction != "OVERWRITE_IF_EXISTS_OR_ADD" {
					t.Errorf("x-user-id %q with %q, want dave with OVERWRITE_IF_EXISTS_OR_ADD", h.Header.Value, h.AppendAction)
				}
			}
		}
		if !found {
			t.Errorf("okResponse sets no x-user-id: %+v", resp.OkResponse)
		}
	})

	t.Run("deny", func(t *testing.T) {
		resp := call(t, map[string]string{"authorization": "Bearer " + p.token(t, "EdDSA", jsonMinus(p.claims("dave"), "exp"))})
		if resp.DeniedResponse == nil || resp.DeniedResponse.Status.Code != "Unauthorized" || resp.Status.Code != 16 {
			t.Fatalf("want deniedResponse Unauthorized with status 16, got %+v", resp)
		}
		if err := invalid("invalid_claims").checkBody(resp.DeniedResponse.Body); err != nil {
			t.Error(err)
		}
	})
	report(t, "%s: services listed through reflection; Check allowed with x-user-id set, and denied as a 401 DeniedHttpResponse", bin)
}

// jsonMinus returns claims without the named ones.
func jsonMinus(claims map[string]any, names ...string) map[string]any {
	for _, n := range names {
		delete(claims, n)
	}
	return claims
}
