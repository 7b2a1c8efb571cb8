package e2e

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bird/birdtest"
)

// TestBIRDAnnounceWithdrawReannounce: the agent drives a real BIRD 2, which peers with the router; the prefix follows
// the service's health at the router.
func TestBIRDAnnounceWithdrawReannounce(t *testing.T) {
	env, k8s := startCluster(t)
	node := netip.MustParseAddr("127.0.0.2")
	router := bgptest.Start(t, routerAddr, 65001, map[netip.Addr]uint32{node: 64512})
	svc := newService(t)
	claim := edgeClaim(router)
	claim.Spec.EBGPMultihop = ptr.To[int32](2) // 127.0.0.2 is on no interface; BIRD needs multihop to pick the next hop
	ap := dnsPrefix("web")
	ap.Spec.Attributes = &anycastv1.BGPAttributes{Communities: []anycastv1.Community{"64512:100"}, MED: ptr.To[int64](10)}
	create(t, k8s, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-1"}}, claim, fastPolicy("web", svc.URL+"/healthz", 2), ap)
	startManager(t, env)
	log := testr.NewWithOptions(t, testr.Options{Verbosity: -1})
	startAgentWith(t, env, "edge-1", node, birdtest.Start(t, node), log)
	prefix := netip.MustParsePrefix("198.51.100.0/24")

	got := router.WaitFor(t, prefix, "announced through BIRD", func(p []bgptest.Path) bool { return announcedBy(p, "127.0.0.2") })[0]
	if !slices.Equal(got.ASPath, []uint32{64512}) || !slices.Equal(got.Communities, []uint32{64512<<16 | 100}) || got.MED == nil || *got.MED != 10 {
		t.Errorf("router received %s", got)
	}
	waitNodeState(t, k8s, "edge-1", "198.51.100.0/24", anycastv1.PrefixAnnounced)
	svc.healthy.Store(false)
	router.WaitFor(t, prefix, "withdrawn through BIRD", func(p []bgptest.Path) bool { return len(p) == 0 })
	svc.healthy.Store(true)
	router.WaitFor(t, prefix, "announced again through BIRD", func(p []bgptest.Path) bool { return announcedBy(p, "127.0.0.2") })
	poll(t, "the BIRD session reported Established", func() (bool, string) {
		var na anycastv1.NodeAnnouncement
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: "edge-1"}, &na); err != nil {
			return false, err.Error()
		}
		return len(na.Status.Sessions) == 1 && na.Status.Sessions[0].State == anycastv1.SessionEstablished, ""
	})
}
