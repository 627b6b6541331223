//go:build linux

package e2e

import "syscall"

// procAttr makes the kernel kill a sidegate process if the test binary dies
// without running its cleanups (a panic, or go test's -timeout), so no
// process outlives the run.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// peerProcAttr is procAttr for a peer (nginx, caddy, nats-server) that may fork
// workers: the process also leads a new process group, so that its cleanup
// can kill any worker left behind by the master.
func peerProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}

// killGroup sends SIGKILL to the process group led by pid.
func killGroup(pid int) { _ = syscall.Kill(-pid, syscall.SIGKILL) }
