//go:build !linux

package main

import (
	"syscall"
	"time"
)

func benchProcAttr() *syscall.SysProcAttr { return nil }

// preciseSleeper is time.Sleep where nanosleep and timer slack are not
// available: open-loop latencies then include up to a millisecond of
// timer lateness.
func preciseSleeper() (sleep func(time.Duration), release func()) {
	return time.Sleep, func() {}
}
