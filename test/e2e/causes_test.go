package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
)

// TestConfigurationWithdrawalsAreBudgeted: four nodes announce a prefix with maxWithdrawn 50% (two nodes at once).
// Relabelling every node out of the claim at once withdraws nothing (one change would take the prefix off more
// nodes than the budget: it is held whole, and says so); bringing two back lets the other two withdraw, and the
// router never lacks more than two paths; a NodeAnnouncement deleted by someone withdraws nothing, and the manager
// writes it again.
func TestConfigurationWithdrawalsAreBudgeted(t *testing.T) {
	env, k8s := startCluster(t)
	nodes := map[string]netip.Addr{"n1": netip.MustParseAddr("127.0.0.2"), "n2": netip.MustParseAddr("127.0.0.4"),
		"n3": netip.MustParseAddr("127.0.0.5"), "n4": netip.MustParseAddr("127.0.0.6")}
	neighbors := map[netip.Addr]uint32{}
	for _, a := range nodes {
		neighbors[a] = 64512
	}
	router := bgptest.Start(t, routerAddr, 65001, neighbors)
	claim := edgeClaim(router)
	claim.Spec.NodeSelector = metav1.LabelSelector{MatchLabels: map[string]string{"site": "a"}}
	ap := dnsPrefix("web")
	ap.Spec.HealthPolicyRef = nil // announced unconditionally: only the configuration changes here
	ap.Spec.Safety = &anycastv1.PrefixSafety{MaxWithdrawn: ptrIntOrString(intstr.FromString("50%"))}
	create(t, k8s, claim, ap)
	for n := range nodes {
		create(t, k8s, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{"site": "a"}}})
	}
	startManager(t, env)
	log := testr.NewWithOptions(t, testr.Options{Verbosity: -1})
	for n, a := range nodes {
		startAgent(t, env, n, a, log)
	}
	dns := netip.MustParsePrefix("198.51.100.0/24")
	all := []string{"127.0.0.2", "127.0.0.4", "127.0.0.5", "127.0.0.6"}
	router.WaitFor(t, dns, "every node announces", func(p []bgptest.Path) bool { return announcedBy(p, all...) })
	// The fewest paths the router held at any moment, sampled until the test ends.
	var fewest atomic.Int32
	fewest.Store(4)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		for ctx.Err() == nil {
			if n := int32(len(router.Paths(dns))); n < fewest.Load() {
				fewest.Store(n)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	relabel := func(site string, names ...string) {
		t.Helper()
		for _, n := range names {
			err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
				var node corev1.Node
				if err := k8s.Get(context.Background(), client.ObjectKey{Name: n}, &node); err != nil {
					return err
				}
				node.Labels["site"] = site
				return k8s.Update(context.Background(), &node)
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	// Every node leaves the claim at once, in one write (relabelling the nodes one by one would let the manager
	// see, and rightly withdraw, the first within the budget): held whole.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var c anycastv1.BGPSessionClaim
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(claim), &c); err != nil {
			return err
		}
		c.Spec.NodeSelector = metav1.LabelSelector{MatchLabels: map[string]string{"site": "b"}}
		return k8s.Update(context.Background(), &c)
	})
	if err != nil {
		t.Fatal(err)
	}
	poll(t, "the prefix reports the change held by maxWithdrawn", func() (bool, string) {
		ap := getPrefix(t, k8s, "dns")
		c := meta.FindStatusCondition(ap.Status.Conditions, anycastv1.ConditionDegraded)
		return c != nil && c.Reason == anycastv1.ReasonMaxWithdrawnReached && strings.Contains(c.Message, "takes the prefix off 4 of 4 nodes"), fmt.Sprintf("%+v", c)
	})
	if n := len(router.Paths(dns)); n != 4 {
		t.Fatalf("with every node leaving at once, %d of 4 paths are left at the router", n)
	}
	// Two come back: the two still leaving are within the budget, and withdraw.
	relabel("b", "n1", "n2")
	router.WaitFor(t, dns, "the two leaving nodes withdrawn", func(p []bgptest.Path) bool { return announcedBy(p, "127.0.0.2", "127.0.0.4") })
	poll(t, "the leaving entries gone", func() (bool, string) {
		return !hasPrefix(getNA(t, k8s, "n3"), dns.String()) && !hasPrefix(getNA(t, k8s, "n4"), dns.String()), "still planned"
	})
	if n := fewest.Load(); n < 2 {
		t.Errorf("the router held only %d of 4 paths at some moment; maxWithdrawn allows 2 withdrawn at once", n)
	}

	// A NodeAnnouncement deleted by someone: its agent rides it out, the manager writes it again.
	if err := k8s.Delete(context.Background(), getNA(t, k8s, "n1")); err != nil {
		t.Fatal(err)
	}
	poll(t, "n1's NodeAnnouncement written again", func() (bool, string) {
		var na anycastv1.NodeAnnouncement
		err := k8s.Get(context.Background(), client.ObjectKey{Name: "n1"}, &na)
		return err == nil && hasPrefix(&na, dns.String()), fmt.Sprint(err)
	})
	if p := router.Paths(dns); !announcedBy(p, "127.0.0.2", "127.0.0.4") {
		t.Errorf("a deleted NodeAnnouncement withdrew the prefix: the router holds %v", p)
	}
	if n := fewest.Load(); n < 2 {
		t.Errorf("the router held only %d paths at some moment", n)
	}
}
