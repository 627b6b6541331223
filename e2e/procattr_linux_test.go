//go:build linux

package e2e

import "syscall"

// procAttr makes the kernel kill a sidegate process if the test binary dies
// without running its cleanups (a panic, or go test's -timeout), so no
// process outlives the run.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
