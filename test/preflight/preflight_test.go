// Package preflight_test checks what a newcomer meets first: `make test` on a machine without the system packages
// stops before building anything, naming what is missing and the one command that installs it.
package preflight_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

// barePath is a PATH with the tools a Debian base image and Go give, and none of the packages the tests need
// beyond them (no bird, birdc, ip, vtysh).
func barePath(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, tool := range []string{"go", "make", "git", "bash", "env", "sed", "sort", "tr", "id", "tar", "gzip", "sha256sum", "cat", "uname", "apt-get", "dpkg-deb"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatalf("%s is needed to run this test: %v", tool, err)
		}
		if err := os.Symlink(p, filepath.Join(dir, tool)); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// freshMakeEnv is this process's environment without what an enclosing make passes to its children (jobserver
// descriptors, flags, the nesting level): the make started here behaves as a newcomer's would.
func freshMakeEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "GNUMAKEFLAGS", "PATH":
			continue
		}
		env = append(env, kv)
	}
	return env
}

func TestMakeTestStopsFirstWithTheInstallCommand(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{"test", "bench"} {
		// A deadline, so that a preflight that wrongly passes cannot turn this into a whole second make test.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "make", "--no-print-directory", target)
		cmd.Dir = root
		cmd.Env = append(freshMakeEnv(), "PATH="+barePath(t))
		start := time.Now()
		out, err := cmd.CombinedOutput()
		t.Logf("make %s stopped after %s:\n%s", target, time.Since(start).Round(time.Millisecond), out)
		if err == nil {
			t.Fatalf("make %s passed without BIRD and iproute2", target)
		}
		for _, want := range []string{
			"make " + target + " needs what this machine lacks:",
			"bird (Debian package bird2)", "birdc (Debian package bird2)", "ip (Debian package iproute2)", "vtysh (Debian package frr)",
			"make deps",
		} {
			if !strings.Contains(string(out), want) {
				t.Errorf("make %s: no %q in what it says", target, want)
			}
		}
		// make test also runs a real kubelet over containerd (test/install/singlenode); make bench does not.
		install := map[string]string{"test": "bird2 containerd frr iproute2 iptables runc util-linux", "bench": "bird2 frr iproute2"}[target]
		if !strings.Contains(string(out), "apt-get install -y --no-install-recommends "+install+"\n") {
			t.Errorf("make %s: does not say to install exactly %s", target, install)
		}
		// Nothing ran before the preflight: no generator, no build, no test.
		for _, ran := range []string{"controller-gen", "go test", "go build", "build-envtest-assets", "gofmt"} {
			if strings.Contains(string(out), ran) {
				t.Errorf("make %s ran %s before stopping", target, ran)
			}
		}
	}
}

func TestPreflightNeedsRootForTheNetworkTests(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		t.Fatal("make test runs as root (network namespaces); this test checks what a non-root user is told")
	}
	// As nobody, with everything installed: only root is missing. The demo needs no root.
	for _, tc := range []struct {
		target string
		fails  bool
	}{{"test", true}, {"demo", false}} {
		cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", filepath.Join(root, "hack", "preflight.sh"), tc.target)
		cmd.Env = append(os.Environ(), "HOME=/nonexistent", "GOCACHE="+t.TempDir(), "GOPATH="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if tc.fails != (err != nil) || tc.fails && !strings.Contains(string(out), "root: the tests create network namespaces") {
			t.Errorf("preflight %s as nobody: %v\n%s", tc.target, err, out)
		}
	}
}

func TestDepsHasNothingToDoWhenEverythingIsThere(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("make", "--no-print-directory", "deps")
	cmd.Dir = root
	cmd.Env = append(freshMakeEnv(), "PATH="+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "every package make test needs is installed") {
		t.Fatalf("make deps: %v\n%s", err, out)
	}
}
