package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
)

// TestAgentStaysSmall: the agent runs on every node and must stay small (issue 16: every package linked is
// initialised, and its pages resident, whether the agent uses it or not). The MetalLB, Calico and Cilium types
// belong to the manager's backends; the agent reaches the API through client-go's REST client alone, speaks BGP
// through GoBGP's packet package (never its server, gRPC API or configuration loaders), probes gRPC and DNS without
// gRPC's or miekg's libraries, and writes its metrics without client_golang.
func TestAgentStaysSmall(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	pkgs := strings.Fields(string(out))
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
