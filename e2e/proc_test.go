package e2e

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// Deadlines. They are generous on purpose: the suite must pass on a
// loaded two-core machine with the race detector on, and no test asserts
// how fast anything is, only that it happens before its deadline.
const (
	startDeadline = 60 * time.Second // process start to /healthz 200
	readyDeadline = 60 * time.Second // /readyz 200 (or back to 200)
	exitDeadline  = 30 * time.Second // a short command, or a failing start
	killDeadline  = 30 * time.Second // a process to exit after SIGKILL
)

// proc is one sidegate process. Its stdout and stderr are captured; the
// process is killed at the end of the test that started it, and its stderr
// goes to the test log when the test failed.
type proc struct {
	t    *testing.T
	bin  string
	env  []string
	args []string
	cmd  *exec.Cmd
	out  *syncBuffer
	errb *syncBuffer
	done chan struct{} // closed once the process has exited
	code int           // exit code, valid after done
	err  error         // Wait's error, valid after done

	// Listener addresses of a serving process.
	GRPC, HTTP, Admin string
	// ConfigPath is the configuration file of a serving process.
	ConfigPath string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// baseEnv is the environment of every sidegate process: the test's own,
// without SIDEGATE_* variables, so the caller's shell cannot steer a test.
func baseEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SIDEGATE_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// start runs the sidegate binary with args and registers its cleanup.
func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	return startBinary(t, sidegateBin, env, args...)
}

// startBinary is start with another build of sidegate.
func startBinary(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	trackSources()
	p := &proc{t: t, bin: bin, env: env, args: args, out: &syncBuffer{}, errb: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = baseEnv(env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.errb
	p.cmd.SysProcAttr = procAttr()
	p.cmd.Dir = t.TempDir()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start sidegate %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		p.err = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(p.cleanup)
	return p
}

func (p *proc) cleanup() {
	t := p.t
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(killDeadline):
			t.Errorf("sidegate (pid %d) still running %s after SIGKILL", p.cmd.Process.Pid, killDeadline)
		}
	}
	stderr := p.errb.String()
	switch {
	case strings.Contains(stderr, "WARNING: DATA RACE"):
		t.Errorf("data race in sidegate %s:\n%s", strings.Join(p.args, " "), stderr)
	case t.Failed():
		t.Logf("sidegate %s (exit %d)\n--- stdout:\n%s--- stderr:\n%s", strings.Join(p.args, " "), p.code, p.out.String(), stderr)
	}
}

// wait waits up to timeout for the process to exit and returns its exit
// code; it fails the test when the process is still running.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(timeout):
		p.t.Fatalf("sidegate %s still running after %s", strings.Join(p.args, " "), timeout)
		return -1
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// run runs a short sidegate command to completion.
func run(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	p := start(t, env, args...)
	code = p.wait(exitDeadline)
	return p.out.String(), p.errb.String(), code
}

// serveConfig is what a test varies in the configuration it serves with.
type serveConfig struct {
	Issuer          string
	JWKSURI         string
	RefreshInterval string // jwks.refresh_interval; default 2s
	KidWait         string // jwks.kid_wait; default sidegate's (500ms)
	JWKSTimeout     string // jwks.timeout; default 5s
	ShutdownTimeout string // listen.shutdown_timeout; default 10s
	ViaEnv          bool   // pass the file as SIDEGATE_CONFIG, not --config
	NATSURL         string // revocation.nats.url (stream created); "" for no revocation
	RebuildInterval string // revocation.rebuild_interval; default sidegate's (1m)
	Binary          string // the sidegate build to run; "" for the suite's
}

var configTemplate = template.Must(template.New("config").Parse(`# written by the sidegate e2e suite
listen:
  grpc: {{.GRPC}}
  http: {{.HTTP}}
  admin: {{.Admin}}
  shutdown_timeout: {{.ShutdownTimeout}}
issuers:
  - issuer: {{.Issuer}}
    jwks_uri: {{.JWKSURI}}
    audiences: [` + audience + `]
    algorithms: [RS256, ES256, EdDSA]
tokens:
  bearer: true
  cookies: [` + cookieName + `]
  leeway: 5s
forward:
  claims:
    x-user-id: sub
jwks:
  refresh_interval: {{.RefreshInterval}}
  timeout: {{.JWKSTimeout}}
{{- if .KidWait}}
  kid_wait: {{.KidWait}}
{{- end}}
{{- if .NATSURL}}
revocation:
  nats: {url: "{{.NATSURL}}", create_stream: true}
{{- if .RebuildInterval}}
  rebuild_interval: {{.RebuildInterval}}
{{- end}}
{{- end}}
`))

// writeConfig renders the configuration for the given listener addresses.
func writeConfig(t *testing.T, sc serveConfig, grpcAddr, httpAddr, adminAddr string) string {
	t.Helper()
	if sc.RefreshInterval == "" {
		sc.RefreshInterval = "2s"
	}
	if sc.ShutdownTimeout == "" {
		sc.ShutdownTimeout = "10s"
	}
	if sc.JWKSTimeout == "" {
		sc.JWKSTimeout = "5s"
	}
	var b bytes.Buffer
	err := configTemplate.Execute(&b, struct {
		serveConfig
		GRPC, HTTP, Admin string
	}{sc, grpcAddr, httpAddr, adminAddr})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sidegate.yaml")
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// serve starts "sidegate serve" on three free loopback ports picked for
// it and waits until its admin listener answers /healthz (the listeners
// are bound before any of them serves). If another program takes one of
// the ports between picking and binding, it starts again on new ones.
func serve(t *testing.T, sc serveConfig) *proc {
	t.Helper()
	for attempt := 1; ; attempt++ {
		ports := freePorts(t, 3)
		path := writeConfig(t, sc, ports[0], ports[1], ports[2])
		var env []string
		args := []string{"serve", "--log-format", "json"}
		if sc.ViaEnv {
			env = append(env, "SIDEGATE_CONFIG="+path)
		} else {
			args = append(args, "--config", path)
		}
		p := startBinary(t, cmp.Or(sc.Binary, sidegateBin), env, args...)
		p.GRPC, p.HTTP, p.Admin, p.ConfigPath = ports[0], ports[1], ports[2], path
		err := p.waitHealthy(startDeadline)
		if err == nil {
			return p
		}
		if p.exited() && strings.Contains(p.errb.String(), "address already in use") && attempt < 3 {
			t.Logf("a picked port was taken before sidegate bound it; trying new ports (%v)", err)
			continue
		}
		t.Fatal(err)
	}
}

// restart runs an exited sidegate's command again, with the same
// configuration and listeners, without waiting for /healthz.
func (p *proc) restart() *proc {
	p.t.Helper()
	if !p.exited() {
		p.t.Fatal("restart: sidegate is still running")
	}
	q := startBinary(p.t, p.bin, p.env, p.args...)
	q.GRPC, q.HTTP, q.Admin, q.ConfigPath = p.GRPC, p.HTTP, p.Admin, p.ConfigPath
	return q
}

// waitHealthy polls /healthz until it answers 200, the process exits, or
// the deadline passes.
func (p *proc) waitHealthy(timeout time.Duration) error {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("sidegate exited with code %d before it served /healthz", p.code)
		}
		resp, err := c.Get("http://" + p.Admin + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("/healthz: %s", resp.Status)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("/healthz not 200 within %s: %v", timeout, last)
}

// waitReady polls /readyz until it answers 200.
func (p *proc) waitReady(c *http.Client) {
	p.t.Helper()
	eventually(p.t, readyDeadline, "/readyz 200", func() (bool, string) {
		if p.exited() {
			p.t.Fatalf("sidegate exited with code %d while waiting for /readyz", p.code)
		}
		code, _, body, err := get(c, "http://"+p.Admin+"/readyz", nil)
		if err != nil {
			return false, err.Error()
		}
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})
}

// eventually polls cond until it holds, failing the test at the deadline
// with the last state cond described.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s (last: %s)", what, timeout, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Ports are picked below the kernel's ephemeral range when it is known,
// so that neither outgoing connections nor other programs' ":0" listeners
// can take a port between picking and sidegate binding it, and never twice
// in one run.
var ports struct {
	sync.Mutex
	used map[int]bool
}

// freePorts returns n distinct loopback addresses that could be bound now.
func freePorts(t *testing.T, n int) []string {
	t.Helper()
	ports.Lock()
	defer ports.Unlock()
	if ports.used == nil {
		ports.used = map[int]bool{}
	}
	lo, hi := pickRange()
	var held []net.Listener
	defer func() {
		for _, ln := range held {
			ln.Close()
		}
	}()
	var out []string
	for tries := 0; len(out) < n; tries++ {
		if tries > 1000 {
			t.Fatalf("no free loopback port in %d-%d", lo, hi)
		}
		addr := "127.0.0.1:0"
		if hi > lo {
			addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(lo+rand.IntN(hi-lo+1)))
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		port := ln.Addr().(*net.TCPAddr).Port
		if ports.used[port] {
			ln.Close()
			continue
		}
		ports.used[port] = true
		held = append(held, ln)
		out = append(out, ln.Addr().String())
	}
	return out
}

// pickRange is the range below the ephemeral ports, or (0, 0) for ":0".
func pickRange() (lo, hi int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0
	}
	eph, err := strconv.Atoi(f[0])
	if err != nil || eph < 12000 {
		return 0, 0
	}
	return eph - 10000, eph - 1
}

// portsFree reports whether every address can be bound again.
func portsFree(addrs ...string) error {
	var errs []error
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ln.Close()
	}
	return errors.Join(errs...)
}

// sigterm sends SIGTERM and returns when it was sent.
func (p *proc) sigterm() time.Time {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	return time.Now()
}
