package main

import (
	"runtime"
	"syscall"
	"time"
)

// benchProcAttr makes the kernel kill a bench child if the bench dies
// without stopping it (SIGKILL, a crash), so no server outlives the run.
func benchProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// prSetTimerSlack is PR_SET_TIMERSLACK from <linux/prctl.h>.
const prSetTimerSlack = 29

// preciseSleeper gives the open-loop dispatcher sleeps accurate to tens of
// microseconds. time.Sleep wakes up to a millisecond late when the process
// is otherwise idle (the runtime's poller waits in whole milliseconds),
// and every request of an open-loop run would carry that lateness in its
// latency. nanosleep on a thread of our own, with the thread's timer slack
// cut from 50 µs to 1 µs, is late by about 20 µs here.
func preciseSleeper() (sleep func(time.Duration), release func()) {
	runtime.LockOSThread()
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, 1000, 0)
	sleep = func(d time.Duration) {
		ts := syscall.NsecToTimespec(int64(d))
		for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
		}
	}
	release = func() {
		syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, 0, 0) // 0: back to the default
		// Unlocked, the thread goes back to the runtime instead of
		// exiting: a child started from it would get Pdeathsig.
		runtime.UnlockOSThread()
	}
	return sleep, release
}
