package singlenode

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/anycast-operator/anycast-operator/internal/deathsig"
)

// process is one daemon of the cluster, its output in a log file of the cluster's directory.
type process struct {
	name, log string
	cmd       *exec.Cmd
	done      chan struct{}
	err       error
}

func startProcess(dir, name, bin string, args ...string) (*process, error) {
	log := filepath.Join(dir, name+".log")
	f, err := os.Create(log)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group, so that a stop reaches what it forks (containerd's shims leave it on purpose), and
	// killed with the test binary (deathsig says why it must fork from its own thread: containerd was killed in CI
	// when forked from a thread a test router's goroutine later ended). Containers outlive it anyway: a run killed
	// before its cleanup is cleaned up by the next one (removeStale).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := deathsig.Start(cmd, syscall.SIGKILL); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, log: log, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, and SIGKILL after grace.
func (p *process) stop(grace time.Duration) {
	if p == nil || p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// tail is the end of the process's log, for a failure message.
func (p *process) tail(n int) string {
	data, _ := os.ReadFile(p.log)
	ls := lastLines(data, n)
	return fmt.Sprintf("--- %s (%s), last %d lines:\n%s", p.name, p.log, len(ls), strings.Join(ls, "\n"))
}

// killMatching kills every process whose command line contains all of words: containerd's shims re-parent to PID 1
// and outlive containerd when a sandbox could not be removed.
func killMatching(words ...string) []int {
	var killed []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		all := true
		for _, w := range words {
			all = all && bytes.Contains(cmdline, []byte(w))
		}
		if all {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			killed = append(killed, pid)
		}
	}
	return killed
}
