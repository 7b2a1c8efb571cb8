// Package deathsig starts child processes that the kernel kills when this process dies (PR_SET_PDEATHSIG), for
// tests that run daemons: a test binary killed before its cleanup leaves none of them running.
//
// Linux sends the signal when the child's parent *thread* ends, not the process, and Go ends a thread whenever a
// goroutine locked to it returns, as the test routers' network-namespace goroutines do (bgptest): a daemon forked
// from such a thread is killed in the middle of the test (containerd was, in CI). So every child is forked from one
// thread that stays locked to a goroutine that never returns; the thread is a per-process resource, hence the
// package-level starter.
package deathsig

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

type request struct {
	cmd  *exec.Cmd
	done chan error
}

var (
	once     sync.Once
	requests chan request
)

// Start starts cmd with sig as its parent-death signal, forked from a thread that lives as long as this process.
// Any SysProcAttr of cmd is kept (Setpgid, for example); Pdeathsig is set.
func Start(cmd *exec.Cmd, sig syscall.Signal) error {
	once.Do(func() {
		requests = make(chan request)
		go func() {
			runtime.LockOSThread() // never unlocked, and the goroutine never returns
			for r := range requests {
				r.done <- r.cmd.Start()
			}
		}()
	})
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = sig
	done := make(chan error, 1)
	requests <- request{cmd, done}
	return <-done
}
