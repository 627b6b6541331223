//go:build !linux

package e2e

import "syscall"

// procAttr: only Linux can tie a child's life to its parent; elsewhere the
// cleanups alone stop sidegate processes.
func procAttr() *syscall.SysProcAttr { return nil }

// peerProcAttr: see the Linux version.
func peerProcAttr() *syscall.SysProcAttr { return nil }

// killGroup: without process groups, the cleanup's kill of the process
// itself has to do.
func killGroup(int) {}
