package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestAgentStaysSmall: the agent runs on every node and must stay small (issue 16: every package linked is
// initialised, and its pages resident, whether the agent uses it or not). The MetalLB, Calico and Cilium types
// belong to the manager's backends; the agent reaches the API through client-go's REST client alone, speaks BGP
// through GoBGP's packet package (never its server, gRPC API or configuration loaders), probes gRPC and DNS without
// gRPC's or miekg's libraries, and writes its metrics without client_golang.
func TestAgentStaysSmall(t *testing.T) {
	pkgs := deps(t)
	for _, pkg := range pkgs {
		for _, banned := range []string{"go.universe.tf/metallb", "github.com/projectcalico", "github.com/cilium/cilium",
			"github.com/anycast-operator/anycast-operator/internal/backend", "github.com/anycast-operator/anycast-operator/controllers",
			"sigs.k8s.io/controller-runtime", "k8s.io/client-go/kubernetes", "k8s.io/client-go/informers",
			"google.golang.org/grpc", "github.com/osrg/gobgp/v4/pkg/server", "github.com/osrg/gobgp/v4/api",
			"github.com/osrg/gobgp/v4/pkg/config", "github.com/osrg/gobgp/v4/pkg/apiutil", "github.com/spf13/viper",
			"github.com/prometheus/client_golang", "github.com/miekg/dns"} {
			if pkg == banned || strings.HasPrefix(pkg, banned+"/") {
				t.Errorf("the agent links %s", pkg)
			}
		}
	}
	// The agent had 356 packages when this bound was set (issue 16; 543 before), and a heavy dependency brings
	// dozens.
	if n := len(pkgs); n > maxAgentPackages {
		t.Errorf("the agent links %d packages, more than %d: what came in? (go list -deps ./cmd/agent)", n, maxAgentPackages)
	}
}

const maxAgentPackages = 380

func deps(t *testing.T, tags ...string) []string {
	t.Helper()
	args := []string{"list", "-deps"}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	return strings.Fields(string(out))
}

// TestDelegatedAgentLinksNoBGP: the agent built with -tags delegated (the agent-delegated image, for MetalLB,
// Calico and Cilium clusters) links no BGP code at all, and refuses the backends that need it with a clear error.
func TestDelegatedAgentLinksNoBGP(t *testing.T) {
	for _, pkg := range deps(t, "delegated") {
		for _, banned := range []string{"github.com/osrg/gobgp", "github.com/anycast-operator/anycast-operator/internal/speaker/embedded",
			"github.com/anycast-operator/anycast-operator/internal/speaker/bird"} {
			if pkg == banned || strings.HasPrefix(pkg, banned+"/") {
				t.Errorf("the delegated agent links %s", pkg)
			}
		}
	}
	bin := filepath.Join(t.TempDir(), "agent-delegated")
	if out, err := exec.Command("go", "build", "-tags", "delegated", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build -tags delegated: %v\n%s", err, out)
	}
	for _, backend := range []string{"embedded", "bird"} {
		out, err := exec.Command(bin, "--node-name=n1", "--local-address=127.0.0.2", "--backend="+backend).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "built for the delegated backends only") {
			t.Errorf("the delegated agent with --backend=%s: %v\n%s", backend, err, out)
		}
	}
}

func TestAgentRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--node-name=", "--local-address=127.0.0.2"},
		{"--node-name=n1", "--local-address=not-an-ip"},
		{"--node-name=n1", "--local-address=127.0.0.2", "--backend=frr"},
	} {
		if err := run(context.Background(), args); err == nil {
			t.Errorf("run(%v) accepted", args)
		}
	}
}

// TestPrepareStateDirWithOnlyChown runs --prepare-state-dir as the DaemonSet's init container runs it: root, with
// every capability dropped but CHOWN (setpriv narrows the bounding set, as runc does), on a directory root owns
// (the kubelet creates the hostPath). The directory must end up the agent's, mode 0700, with its state file.
func TestPrepareStateDirWithOnlyChown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: the init container runs as root (make test runs as root)")
	}
	if os.Getenv("PREPARE_STATE_DIR") != "" {
		if err := run(context.Background(), []string{"--prepare-state-dir=" + os.Getenv("PREPARE_STATE_DIR"), "--state-dir-owner=65532"}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	dir := filepath.Join(t.TempDir(), "anycast-agent")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "state.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Twice: the second is every later start of the pod, on a directory that is already the agent's.
	for i := range 2 {
		cmd := exec.Command("setpriv", "--bounding-set=-all,+chown", "--inh-caps=-all", os.Args[0], "-test.run=^TestPrepareStateDirWithOnlyChown$")
		cmd.Env = append(os.Environ(), "PREPARE_STATE_DIR="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("--prepare-state-dir with only CHOWN, run %d: %v\n%s", i+1, err, out)
		}
	}
	for _, p := range []string{dir, filepath.Join(dir, "state.json")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 65532 || st.Gid != 65532 {
			t.Errorf("%s is owned by %d:%d, want 65532:65532", p, st.Uid, st.Gid)
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("%s has mode %v, want 0700", dir, fi.Mode().Perm())
	}
}
