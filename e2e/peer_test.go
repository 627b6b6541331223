package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Peers are the real servers the tests run beside sidegate as separate
// processes: nginx and caddy in front of it, nats-server behind it.

// peer is one nginx, caddy or nats-server process.
type peer struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	out  *syncBuffer // stdout and stderr
	done chan struct{}
	code int
	Addr string // the listener clients use
}

// startPeer runs bin and registers a cleanup that stops it (SIGTERM, then
// SIGKILL of its process group), checks its port is free again, and logs
// its output when the test failed.
func startPeer(t *testing.T, name, addr string, env []string, bin string, args ...string) *peer {
	t.Helper()
	p := &peer{t: t, name: name, out: &syncBuffer{}, done: make(chan struct{}), Addr: addr}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = peerProcAttr()
	p.cmd.Dir = t.TempDir()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p
}

func (p *peer) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *peer) stop() {
	t := p.t
	pid := p.cmd.Process.Pid
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(exitDeadline):
			t.Errorf("%s (pid %d) still running %s after SIGTERM; killing it", p.name, pid, exitDeadline)
			_ = p.cmd.Process.Kill()
			select {
			case <-p.done:
			case <-time.After(killDeadline):
				t.Errorf("%s (pid %d) still running %s after SIGKILL", p.name, pid, killDeadline)
			}
		}
	}
	killGroup(pid) // workers the master left behind, if any
	if err := eventuallyErr(killDeadline, func() error { return portsFree(p.Addr) }); err != nil {
		t.Errorf("%s stopped but its port is not free: %v", p.name, err)
	}
	if t.Failed() {
		t.Logf("%s %s (exit %d) output:\n%s", p.name, strings.Join(p.cmd.Args[1:], " "), p.code, p.out.String())
	}
}

// kill ends the process with SIGKILL, as a crash would, and waits until
// it has exited.
func (p *peer) kill() {
	p.t.Helper()
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(killDeadline):
		p.t.Fatalf("%s (pid %d) still running %s after SIGKILL", p.name, p.cmd.Process.Pid, killDeadline)
	}
}

// eventuallyErr polls f until it returns nil or timeout passes.
func eventuallyErr(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitListening waits until the peer accepts connections on Addr.
func (p *peer) waitListening(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited with code %d before listening on %s", p.name, p.code, p.Addr)
		}
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not listening on %s within %s: %v", p.name, p.Addr, timeout, last)
}

// peerBinary finds a peer's binary on PATH or at its Debian path, or
// skips the test.
func peerBinary(t *testing.T, name, debianPath string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if _, err := os.Stat(debianPath); err == nil {
		return debianPath
	}
	t.Skipf("%s is not installed (neither on PATH nor at %s); .ci/run installs it (Debian package %s)", name, debianPath, name)
	return ""
}

// startWithRetry starts a peer on a freshly picked port, waits until it
// listens, and starts again on a new port if another program took the port
// in between.
func startWithRetry(t *testing.T, launch func(addr string) *peer) *peer {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p := launch(freePorts(t, 1)[0])
		err := p.waitListening(startDeadline)
		if err == nil {
			return p
		}
		if p.exited() && strings.Contains(strings.ToLower(p.out.String()), "address already in use") && attempt < 3 {
			t.Logf("the picked port was taken before %s bound it; trying a new one (%v)", p.name, err)
			continue
		}
		t.Fatal(err)
	}
}
