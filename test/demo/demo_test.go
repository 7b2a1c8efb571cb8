// Package demo_test guards `make demo`: it runs the demo binary's scripted scenario with short timings, stops it
// with Ctrl-C (SIGINT) as a person would, and checks that nothing is left behind.
package demo_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

func TestDemoCheck(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := testenv.AssetsDir(root); err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	for _, cmd := range []string{"manager", "agent", "kubectl-anycast", "demo"} {
		build := exec.Command("go", "build", "-o", filepath.Join(bin, cmd), "./cmd/"+cmd)
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", cmd, err, out)
		}
	}
	// The demo's own temporary directory, so that what it leaves behind can be seen.
	tmp := t.TempDir()
	demo := exec.Command(filepath.Join(bin, "demo"), "--check", "--stay")
	demo.Dir = root
	demo.Env = append(os.Environ(), "TMPDIR="+tmp)
	demo.Stderr = os.Stderr
	stdout, err := demo.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- demo.Wait()
	}()
	completed := false
	var children map[int]string
	var kubeconfig, path string
	var demoOutput []string
	for line := range lines {
		t.Log(line)
		demoOutput = append(demoOutput, line)
		completed = completed || strings.Contains(line, "Scenario complete: all 4 steps observed at the router")
		if strings.HasPrefix(strings.TrimSpace(line), "export KUBECONFIG=") {
			kubeconfig, path = exportedVars(line)
		}
		if strings.HasPrefix(line, "Ctrl-C stops everything") {
			if !completed {
				t.Fatal("the demo stays up without having completed its scenario")
			}
			// What the demo tells a person to try works.
			kubectl := func(args ...string) (string, error) {
				cmd := exec.Command("kubectl", args...)
				cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "PATH="+path+":"+os.Getenv("PATH"))
				if cmd.Path, err = lookPath("kubectl", path); err != nil {
					return "", err
				}
				out, err := cmd.CombinedOutput()
				return string(out), err
			}
			out, err := kubectl("get", "anycast")
			if err != nil || !strings.Contains(out, "anycastprefix.anycast.dev/web") {
				t.Errorf("kubectl get anycast, as the demo suggests: %v\n%s", err, out)
			}
			t.Logf("kubectl get anycast:\n%s", out)
			if out, err = kubectl("anycast", "status"); err != nil || !strings.Contains(out, "web: announced from 3 of 3 eligible nodes") {
				t.Errorf("kubectl anycast status, as the demo suggests: %v\n%s", err, out)
			}
			t.Logf("kubectl anycast status:\n%s", out)
			if planCmd := suggested(demoOutput, "kubectl anycast plan"); planCmd == nil {
				t.Error("the demo does not suggest kubectl anycast plan")
			} else {
				out, err = kubectl(planCmd[1:]...)
				var exit *exec.ExitError
				if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(out, "refused: the change takes") {
					t.Errorf("%s: want exit 2 (refused by --max-withdraw 0): %v\n%s", strings.Join(planCmd, " "), err, out)
				}
				t.Logf("%s:\n%s", strings.Join(planCmd, " "), out)
			}
			children = descendants(t, demo.Process.Pid)
			var names []string
			for pid, cmd := range children {
				names = append(names, fmt.Sprintf("%d %s", pid, filepath.Base(strings.Fields(cmd + " ?")[0])))
			}
			t.Logf("the demo runs %d processes (%s); sending it SIGINT", len(children), strings.Join(names, ", "))
			if err := demo.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
		}
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("the demo exited with %v", err)
		}
	case <-time.After(2 * time.Minute):
		_ = demo.Process.Kill()
		t.Fatal("the demo did not exit within 2 minutes of SIGINT")
	}
	if !completed || children == nil {
		t.Fatal("the demo ended without completing its scenario")
	}
	// kube-apiserver, etcd, the manager and three agents.
	if len(children) < 6 {
		t.Errorf("the demo ran %d processes, want at least 6 (kube-apiserver, etcd, manager, 3 agents)", len(children))
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var alive []string
		for pid, was := range children {
			if cmd, ok := running(pid); ok && cmd == was { // the same command: not a recycled PID
				alive = append(alive, strconv.Itoa(pid)+" "+cmd)
			}
		}
		if len(alive) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left behind after Ctrl-C: %v", alive)
		}
		time.Sleep(100 * time.Millisecond)
	}
	left, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range left {
		t.Errorf("left behind in the temporary directory: %s", e.Name())
	}
}

// exportedVars reads KUBECONFIG and the first PATH entry from the demo's "export KUBECONFIG=... PATH=...:$PATH".
func exportedVars(line string) (kubeconfig, path string) {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "KUBECONFIG="); ok {
			kubeconfig = v
		}
		if v, ok := strings.CutPrefix(f, "PATH="); ok {
			path = strings.TrimSuffix(v, ":$PATH")
		}
	}
	return kubeconfig, path
}

// lookPath finds a command in the directories the demo adds to PATH.
func lookPath(name, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		if fi, err := os.Stat(filepath.Join(dir, name)); err == nil && fi.Mode()&0o111 != 0 {
			return filepath.Join(dir, name), nil
		}
	}
	return "", fmt.Errorf("%s not in the demo's PATH %s", name, path)
}

// suggested returns the words of the command the demo suggests that starts with prefix (before its # comment).
func suggested(lines []string, prefix string) []string {
	for _, l := range lines {
		if cmd, ok := strings.CutPrefix(strings.TrimSpace(l), prefix); ok {
			cmd, _, _ = strings.Cut(prefix+cmd, "#")
			return strings.Fields(cmd)
		}
	}
	return nil
}

// descendants lists the processes below pid with their command lines, from /proc.
func descendants(t *testing.T, pid int) map[int]string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	parent := map[int]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, ok := ppid(p); ok {
			parent[p] = pp
		}
	}
	out := map[int]string{}
	for p := range parent {
		for q := parent[p]; q > 1; q = parent[q] {
			if q == pid {
				out[p], _ = running(p)
				break
			}
		}
	}
	return out
}

// ppid reads a process's parent from /proc/PID/stat, whose second field (the command) may hold spaces.
func ppid(pid int) (int, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, false
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 2 {
		return 0, false
	}
	pp, err := strconv.Atoi(fields[1])
	return pp, err == nil
}

// running reports whether pid is a live process (not a zombie) and its command line.
func running(pid int) (string, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return "", false
	}
	s := string(b)
	if fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); len(fields) > 0 && fields[0] == "Z" {
		return "", false
	}
	cmd, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	return strings.ReplaceAll(string(cmd), "\x00", " "), true
}
