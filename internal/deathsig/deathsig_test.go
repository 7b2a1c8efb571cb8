package deathsig

import (
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// TestChildOutlivesEndedThreads: a child started here keeps running while goroutines locked to threads end (each
// takes its thread with it), which kills a child whose Pdeathsig was set from such a thread.
func TestChildOutlivesEndedThreads(t *testing.T) {
	// The hazard first: a child forked with Pdeathsig from a thread that then ends is killed.
	victim := forkFromEndingThread(t)
	exited := make(chan error, 1)
	go func() { exited <- victim.Wait() }()
	select {
	case err := <-exited:
		if ws, ok := victim.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Errorf("the child of an ended thread exited with %v, want SIGKILL", err)
		}
	case <-time.After(10 * time.Second):
		_ = victim.Process.Kill()
		t.Fatal("the child of an ended thread was not killed: the kernel's rule this package works around has changed")
	}

	cmd := exec.Command("sleep", "60")
	if err := Start(cmd, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for range 4 * runtime.GOMAXPROCS(0) {
		done := make(chan struct{})
		go func() {
			runtime.LockOSThread() // the thread ends with this goroutine
			close(done)
		}()
		<-done
	}
	time.Sleep(100 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the child died when threads ended: %v", err)
	}
	var ws syscall.WaitStatus
	if pid, _ := syscall.Wait4(cmd.Process.Pid, &ws, syscall.WNOHANG, nil); pid != 0 {
		t.Fatalf("the child exited: %v", ws)
	}
}

// forkFromEndingThread starts a child with Pdeathsig from a goroutine locked to its thread, which then returns, so
// that Go ends the thread. Not the main thread: Go never ends that one (it parks it), so a goroutine that lands there
// keeps it until the fork is done elsewhere.
func forkFromEndingThread(t *testing.T) *exec.Cmd {
	t.Helper()
	var parked []chan struct{}
	defer func() {
		for _, p := range parked {
			close(p)
		}
	}()
	for range 16 {
		forked, release := make(chan *exec.Cmd), make(chan struct{})
		go func() {
			runtime.LockOSThread()
			if syscall.Gettid() == syscall.Getpid() {
				forked <- nil
				<-release
				runtime.UnlockOSThread()
				return
			}
			c := exec.Command("sleep", "60")
			c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := c.Start(); err != nil {
				t.Error(err)
				c = nil
			}
			forked <- c // and the thread ends with this goroutine
		}()
		if c := <-forked; c != nil {
			return c
		}
		parked = append(parked, release)
	}
	t.Fatal("every goroutine ran on the main thread")
	return nil
}
