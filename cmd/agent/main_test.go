package main

import (
	"context"
	"os/exec"
	"strings"
	"testing"
)

// TestAgentLinksNoKubernetesBGPStack: the agent runs on every node and must stay small; the MetalLB, Calico and
// Cilium types belong to the manager's backends only.
func TestAgentLinksNoKubernetesBGPStack(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{"go.universe.tf/metallb", "github.com/projectcalico", "github.com/cilium/cilium",
			"github.com/anycast-operator/anycast-operator/internal/backend"} {
			if strings.HasPrefix(pkg, banned) {
				t.Errorf("the agent links %s", pkg)
			}
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
