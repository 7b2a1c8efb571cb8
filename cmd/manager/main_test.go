package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

// TestManagerBinary runs the manager's own wiring (flags, cache, leader election, recorder, planner) against a
// real API server until it has planned a node, then stops it.
func TestManagerBinary(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	kubeconfig, err := env.Kubeconfig()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBECONFIG", kubeconfig)
	k8s, err := client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	claim := &anycastv1.BGPSessionClaim{ObjectMeta: metav1.ObjectMeta{Name: "edge"}}
	claim.Spec.LocalASN = 64512
	claim.Spec.Static = &anycastv1.StaticSessions{Peers: []anycastv1.BGPPeer{{Address: "192.0.2.1", ASN: 65001}}}
	prefix := &anycastv1.AnycastPrefix{ObjectMeta: metav1.ObjectMeta{Name: "dns"}}
	prefix.Spec.Prefixes = []anycastv1.CIDR{"198.51.100.0/24"}
	prefix.Spec.SessionClaims = []anycastv1.LocalObjectName{"edge"}
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "anycast-test"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}},
		claim, prefix,
	} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}

	if err := run(ctx, []string{"--backend=nonsense"}); err == nil {
		t.Fatal("an unknown backend was accepted")
	}
	// A stack whose CRDs the cluster does not serve is refused at start, with the reason.
	for _, b := range []string{"metallb", "calico", "cilium"} {
		err := run(ctx, []string{"--backend=" + b, "--namespace=anycast-test", "--metrics-bind-address=0", "--health-probe-bind-address=0"})
		if err == nil || !strings.Contains(err.Error(), "does not serve") {
			t.Errorf("--backend=%s without its CRDs: %v", b, err)
		}
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- run(runCtx, []string{"--leader-elect", "--namespace=anycast-test", "--metrics-bind-address=0", "--health-probe-bind-address=127.0.0.1:0",
			"--agent-image=registry.example/anycast/agent:v9"})
	}()
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var na anycastv1.NodeAnnouncement
		if err := k8s.Get(ctx, client.ObjectKey{Name: "node-1"}, &na); err != nil {
			return false, nil
		}
		return na.Spec.PrefixCount() == 1, nil
	})
	if err != nil {
		t.Fatalf("the manager did not plan node-1: %v", err)
	}
	var lease coordinationv1.Lease
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "anycast-test", Name: "anycast-manager.anycast.dev"}, &lease); err != nil {
		t.Errorf("no leader-election Lease: %v", err)
	}
	// With --agent-image the manager deploys the agents' DaemonSet (OLM installs), and puts it back when deleted.
	agentDS := func() *appsv1.DaemonSet {
		var ds appsv1.DaemonSet
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			return k8s.Get(ctx, client.ObjectKey{Namespace: "anycast-test", Name: "anycast-agent"}, &ds) == nil && ds.DeletionTimestamp == nil, nil
		})
		if err != nil {
			t.Fatalf("the manager did not deploy the agents' DaemonSet: %v", err)
		}
		return &ds
	}
	ds := agentDS()
	c := ds.Spec.Template.Spec.Containers[0]
	if c.Image != "registry.example/anycast/agent:v9" || !slices.Contains(c.Args, "--backend=embedded") || !ds.Spec.Template.Spec.HostNetwork {
		t.Errorf("the agents' DaemonSet: image %s, args %v, hostNetwork %v", c.Image, c.Args, ds.Spec.Template.Spec.HostNetwork)
	}
	if err := k8s.Delete(ctx, ds); err != nil {
		t.Fatal(err)
	}
	again := agentDS()
	if again.UID == ds.UID {
		t.Errorf("the deleted DaemonSet was not put back")
	}
	// An edit of what the manager applied is undone.
	again.Spec.Template.Spec.Containers[0].Image = "registry.example/someone-else:v1"
	if err := k8s.Update(ctx, again); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var cur appsv1.DaemonSet
		return k8s.Get(ctx, client.ObjectKeyFromObject(again), &cur) == nil && cur.Spec.Template.Spec.Containers[0].Image == "registry.example/anycast/agent:v9", nil
	})
	if err != nil {
		t.Errorf("the edited DaemonSet was not put back: %v", err)
	}
	// And the admission policies that confine the agents, which a bundle cannot carry either; put back when deleted.
	policy := func() *admissionregistrationv1.ValidatingAdmissionPolicy {
		var p admissionregistrationv1.ValidatingAdmissionPolicy
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			return k8s.Get(ctx, client.ObjectKey{Name: "anycast-agent-own-node"}, &p) == nil && p.DeletionTimestamp == nil, nil
		})
		if err != nil {
			t.Fatalf("the manager did not apply the agents' admission policy: %v", err)
		}
		return &p
	}
	vap := policy()
	// Owned by the manager's namespace, so that they go with it (an OLM uninstall removes only what OLM created).
	var ns corev1.Namespace
	if err := k8s.Get(ctx, client.ObjectKey{Name: "anycast-test"}, &ns); err != nil {
		t.Fatal(err)
	}
	if refs := vap.OwnerReferences; len(refs) != 1 || refs[0].Kind != "Namespace" || refs[0].UID != ns.UID {
		t.Errorf("the agents' admission policy is owned by %+v, want the namespace anycast-test (%s)", refs, ns.UID)
	}
	if err := k8s.Delete(ctx, vap); err != nil {
		t.Fatal(err)
	}
	if policy().UID == vap.UID {
		t.Errorf("the deleted admission policy was not put back")
	}
	var binding admissionregistrationv1.ValidatingAdmissionPolicyBinding
	if err := k8s.Get(ctx, client.ObjectKey{Name: "anycast-agent-own-node"}, &binding); err != nil {
		t.Errorf("no binding of the agents' admission policy: %v", err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("the manager stopped with %v", err)
	}
}
