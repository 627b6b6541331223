//go:build !linux

package e2e

import "syscall"

// procAttr: only Linux can tie a child's life to its parent; elsewhere the
// cleanups alone stop sidegate processes.
func procAttr() *syscall.SysProcAttr { return nil }
