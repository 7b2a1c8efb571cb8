package e2e

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/go-logr/logr/testr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/agent"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
	"github.com/anycast-operator/anycast-operator/internal/speaker/embedded"
)

// TestAgentWorksWithItsOwnRBAC runs the agent as its ServiceAccount, bound only by config/agent/rbac.yaml: it must
// read its NodeAnnouncement and its MD5 Secret, announce, write its status and renew its Lease.
func TestAgentWorksWithItsOwnRBAC(t *testing.T) {
	env, k8s := startCluster(t)
	if out, err := env.Kubectl("apply", "-f", filepath.Join(env.Root, "config", "agent", "rbac.yaml")); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	node := netip.MustParseAddr("127.0.0.2")
	const password = "rbac-md5"
	router := bgptest.StartWithPassword(t, routerAddr, 65001, map[netip.Addr]uint32{node: 64512}, password)
	svc := newService(t)
	claim := edgeClaim(router)
	claim.Spec.Static.Peers[0].PasswordSecretRef = &anycastv1.SecretKeyRef{Name: "bgp-md5", Key: "password"}
	create(t, k8s, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-1"}}, claim, fastPolicy("web", svc.URL+"/healthz", 2), dnsPrefix("web"),
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bgp-md5", Namespace: namespace}, StringData: map[string]string{"password": password}})
	startManager(t, env)

	asAgent := rest.CopyConfig(env.Config)
	asAgent.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + namespace + ":anycast-agent"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	log := testr.NewWithOptions(t, testr.Options{Verbosity: -1})
	go func() {
		done <- agent.RunOnNode(ctx, asAgent, agent.Config{NodeName: "edge-1", Namespace: namespace, LocalAddress: node},
			embedded.New(node, log), clock.RealClock{}, log)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})

	router.WaitFor(t, netip.MustParsePrefix("198.51.100.0/24"), "announced by the agent under its own RBAC", func(p []bgptest.Path) bool { return announcedBy(p, "127.0.0.2") })
	waitNodeState(t, k8s, "edge-1", "198.51.100.0/24", anycastv1.PrefixAnnounced)
	poll(t, "the agent's Lease", func() (bool, string) {
		var l coordinationv1.Lease
		err := k8s.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: "anycast-agent-edge-1"}, &l)
		return err == nil && l.Spec.RenewTime != nil, "no Lease"
	})
}
