package e2e

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bird/birdtest"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

// TestBIRDAnnounceWithdrawReannounce: the agent drives a real BIRD 2, which peers with the router; the prefix follows
// the service's health at the router.
func TestBIRDAnnounceWithdrawReannounce(t *testing.T) {
	env, err := testenv.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	k8s, err := client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	node := netip.MustParseAddr("127.0.0.2")
	router := bgptest.Start(t, routerAddr, 65001, map[netip.Addr]uint32{node: 64512})
	svc := newService(t)
	claim := &anycastv1.BGPSessionClaim{ObjectMeta: metav1.ObjectMeta{Name: "edge"}}
	claim.Spec.LocalASN = 64512
	claim.Spec.Static = &anycastv1.StaticSessions{Peers: []anycastv1.BGPPeer{{Address: anycastv1.IPAddress(routerAddr.String()), ASN: 65001, Port: ptr.To(int32(router.Port))}}}
	claim.Spec.Timers = &anycastv1.BGPTimers{HoldTime: &metav1.Duration{Duration: 9 * time.Second}, KeepaliveTime: &metav1.Duration{Duration: 3 * time.Second},
		ConnectRetry: &metav1.Duration{Duration: time.Second}}
	claim.Spec.EBGPMultihop = ptr.To[int32](2) // 127.0.0.2 is on no interface; BIRD needs multihop to pick the next hop
	hp := &anycastv1.HealthPolicy{ObjectMeta: metav1.ObjectMeta{Name: "web"}}
	hp.Spec.Checks = []anycastv1.HealthCheck{{Name: "web", HTTP: &anycastv1.HTTPCheck{URL: svc.URL + "/healthz"}}}
	hp.Spec.Interval = &metav1.Duration{Duration: 100 * time.Millisecond}
	hp.Spec.Timeout = &metav1.Duration{Duration: 80 * time.Millisecond}
	hp.Spec.RiseThreshold, hp.Spec.FallThreshold = ptr.To[int32](1), ptr.To[int32](2)
	hp.Spec.Dampening = &anycastv1.Dampening{WithdrawDelay: &metav1.Duration{}, ReannounceDelay: &metav1.Duration{}, MinAnnounceDuration: &metav1.Duration{}}
	ap := &anycastv1.AnycastPrefix{ObjectMeta: metav1.ObjectMeta{Name: "dns"}}
	ap.Spec.Prefixes = []anycastv1.CIDR{"198.51.100.0/24"}
	ap.Spec.SessionClaims = []anycastv1.LocalObjectName{"edge"}
	ap.Spec.HealthPolicyRef = &anycastv1.ObjectReference{Name: "web"}
	ap.Spec.Attributes = &anycastv1.BGPAttributes{Communities: []anycastv1.Community{"64512:100"}, MED: ptr.To[int64](10)}
	for _, o := range []client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-1"}}, claim, hp, ap} {
		if err := k8s.Create(context.Background(), o); err != nil {
			t.Fatal(err)
		}
	}
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
