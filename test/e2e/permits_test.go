package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
)

// TestMaxWithdrawnHoldsAtTheRouter: ten nodes, maxWithdrawn 30%, every node's check failing: exactly three paths
// disappear at the router, seven stay, and the prefix reports the nodes held back.
func TestMaxWithdrawnHoldsAtTheRouter(t *testing.T) {
	env, k8s := startCluster(t)
	ctx := context.Background()
	const n = 10
	nodes := map[string]netip.Addr{}
	neighbors := map[netip.Addr]uint32{}
	for i := range n {
		addr := netip.AddrFrom4([4]byte{127, 0, 1, byte(10 + i)})
		nodes[fmt.Sprintf("site-%02d", i)] = addr
		neighbors[addr] = 64512
	}
	router := bgptest.Start(t, routerAddr, 65001, neighbors)
	svc := newService(t) // one service behind every node's check: failing it fails every node

	ap := dnsPrefix("web")
	ap.Spec.Safety = &anycastv1.PrefixSafety{MaxWithdrawn: ptr.To(intstr.FromString("30%"))}
	create(t, k8s, edgeClaim(router), fastPolicy("web", svc.URL+"/healthz", 2), ap)
	for node := range nodes {
		create(t, k8s, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}})
	}
	startManager(t, env)
	log := testr.NewWithOptions(t, testr.Options{Verbosity: -1})
	for node, addr := range nodes {
		startAgent(t, env, node, addr, log)
	}
	prefix := netip.MustParsePrefix("198.51.100.0/24")
	router.WaitFor(t, prefix, "all ten nodes announce", func(p []bgptest.Path) bool { return len(p) == n })

	svc.healthy.Store(false)
	router.WaitFor(t, prefix, "exactly three withdrawn", func(p []bgptest.Path) bool { return len(p) == n-3 })
	poll(t, "the prefix reports the seven nodes held back", func() (bool, string) {
		var got anycastv1.AnycastPrefix
		if err := k8s.Get(ctx, client.ObjectKey{Name: "dns"}, &got); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(got.Status.Conditions, anycastv1.ConditionDegraded)
		return c != nil && c.Reason == anycastv1.ReasonMaxWithdrawnReached && strings.Contains(c.Message, "7 nodes want to withdraw but are kept announcing: maxWithdrawn allows 3 of 10"),
			fmt.Sprintf("%+v", got.Status.Conditions)
	})
	// The budget is not exceeded a moment later either: the permits do not move while their holders use them.
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if p := router.Paths(prefix); len(p) < n-3 {
			t.Fatalf("%d paths at the router, fewer than the %d maxWithdrawn allows", len(p), n-3)
		}
		time.Sleep(20 * time.Millisecond)
	}

	svc.healthy.Store(true)
	router.WaitFor(t, prefix, "all ten announce again", func(p []bgptest.Path) bool { return len(p) == n })
}
