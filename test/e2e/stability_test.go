package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/agent"
	"github.com/anycast-operator/anycast-operator/internal/netlab"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bird/birdtest"
	"github.com/anycast-operator/anycast-operator/internal/speaker/embedded"
)

// TestSessionStability runs a claim with every optional setting (MD5, timers, multihop, graceful restart, BFD) over
// an IPv4 and an IPv6 session, and makes 50 route changes through the whole product: health flips, attribute edits,
// a prefix added and removed, a second claim added. The router counts each session's established connections: one
// each, none dropped, for the embedded speaker and for BIRD. On the way it checks the next hops of both families on
// both sessions.
func TestSessionStability(t *testing.T) {
	for _, backend := range []string{"embedded", "bird"} {
		t.Run(backend, func(t *testing.T) { testSessionStability(t, backend) })
	}
}

func testSessionStability(t *testing.T, backend string) {
	env, k8s := startCluster(t)
	lab := netlab.New(t, 1)
	n4, n6 := lab.Nodes4[0], lab.Nodes6[0]
	const password = "stable-md5 {};#"
	router := bgptest.StartWith(t, bgptest.Options{Addresses: []netip.Addr{lab.Router4, lab.Router6}, ASN: 65001, Netns: lab.NetnsPath,
		Neighbors: map[netip.Addr]uint32{n4: 64512, n6: 64512}, Password: password})
	second := bgptest.StartWith(t, bgptest.Options{Addresses: []netip.Addr{lab.AddRouterAddress(t, false)}, ASN: 65002, Netns: lab.NetnsPath,
		Neighbors: map[netip.Addr]uint32{n4: 64512}})
	svc := newService(t)
	claim := &anycastv1.BGPSessionClaim{ObjectMeta: metav1.ObjectMeta{Name: "edge"}}
	claim.Spec.LocalASN = 64512
	ref := &anycastv1.SecretKeyRef{Name: "bgp-md5", Key: "password"}
	claim.Spec.Static = &anycastv1.StaticSessions{Peers: []anycastv1.BGPPeer{
		{Address: anycastv1.IPAddress(lab.Router4.String()), ASN: 65001, Port: ptr.To(int32(router.Port)), PasswordSecretRef: ref},
		{Address: anycastv1.IPAddress(lab.Router6.String()), ASN: 65001, Port: ptr.To(int32(router.Port)), PasswordSecretRef: ref},
	}}
	claim.Spec.Timers = &anycastv1.BGPTimers{HoldTime: &metav1.Duration{Duration: 9 * time.Second}, KeepaliveTime: &metav1.Duration{Duration: 3 * time.Second},
		ConnectRetry: &metav1.Duration{Duration: time.Second}}
	claim.Spec.EBGPMultihop = ptr.To[int32](2)
	claim.Spec.GracefulRestart = &anycastv1.GracefulRestart{RestartTime: metav1.Duration{Duration: 30 * time.Second}}
	claim.Spec.BFD = &anycastv1.BFD{MinRx: &metav1.Duration{Duration: 300 * time.Millisecond}, MinTx: &metav1.Duration{Duration: 300 * time.Millisecond}, Multiplier: ptr.To[int32](3)}
	claim2 := edgeClaim(second)
	claim2.Name = "edge-2"
	p4, p6, extra := netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8:100::/48"), netip.MustParsePrefix("198.51.102.0/24")
	ap := &anycastv1.AnycastPrefix{ObjectMeta: metav1.ObjectMeta{Name: "web"}}
	ap.Spec.Prefixes = []anycastv1.CIDR{anycastv1.CIDR(p4.String()), anycastv1.CIDR(p6.String())}
	ap.Spec.SessionClaims = []anycastv1.LocalObjectName{"edge"}
	ap.Spec.HealthPolicyRef = &anycastv1.ObjectReference{Name: "web"}
	ap.Spec.Attributes = &anycastv1.BGPAttributes{Communities: []anycastv1.Community{"64512:100"}}
	create(t, k8s, claim, ap, fastPolicy("web", svc.URL+"/healthz", 2), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-1"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bgp-md5", Namespace: namespace}, StringData: map[string]string{"password": password}})
	startManager(t, env)
	log := testr.NewWithOptions(t, testr.Options{Verbosity: 0})
	var sp speaker.Speaker
	switch backend {
	case "embedded":
		sp = embedded.New(n4, log)
	case "bird":
		d := birdtest.StartDaemon(t, n4)
		d.Speaker.Log = log
		sp = d.Speaker
	}
	cfg := agent.Config{NodeName: "edge-1", Namespace: namespace, LocalAddress: n4, NodeAddresses: []netip.Addr{n6}, Version: "e2e",
		SessionPoll: 100 * time.Millisecond}
	_, stop, err := agent.Start(context.Background(), env.Config, cfg, sp, clock.RealClock{}, log.WithValues("node", "edge-1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)

	// Both prefixes over both sessions, each with the node's own address of its family as next hop.
	from := func(paths []bgptest.Path, neighbor, nextHop netip.Addr) bool {
		return slices.ContainsFunc(paths, func(p bgptest.Path) bool { return p.Neighbor == neighbor.String() && p.NextHop == nextHop.String() })
	}
	announced := func(what string) {
		t.Helper()
		router.WaitFor(t, p4, what+": IPv4 prefix on both sessions via "+n4.String(), func(p []bgptest.Path) bool { return len(p) == 2 && from(p, n4, n4) && from(p, n6, n4) })
		router.WaitFor(t, p6, what+": IPv6 prefix on both sessions via "+n6.String(), func(p []bgptest.Path) bool { return len(p) == 2 && from(p, n4, n6) && from(p, n6, n6) })
	}
	withdrawn := func(what string) {
		t.Helper()
		for _, p := range []netip.Prefix{p4, p6} {
			router.WaitFor(t, p, what+": "+p.String()+" withdrawn", func(p []bgptest.Path) bool { return len(p) == 0 })
		}
	}
	announced("start")
	changes := 0
	// Health flips: the route goes and comes back, the sessions stay.
	for range 15 {
		svc.healthy.Store(false)
		withdrawn("health failed")
		svc.healthy.Store(true)
		announced("health recovered")
		changes += 2
	}
	// Attribute edits: every path carries the new community.
	for i := range 10 {
		community := anycastv1.Community(fmt.Sprintf("64512:%d", 200+i))
		editPrefix(t, k8s, "web", func(s *anycastv1.AnycastPrefixSpec) {
			s.Attributes.Communities = []anycastv1.Community{"64512:100", community}
		})
		want, _ := speaker.ParseCommunity(string(community))
		router.WaitFor(t, p4, "community "+string(community), func(p []bgptest.Path) bool {
			return len(p) == 2 && slices.Contains(p[0].Communities, want) && slices.Contains(p[1].Communities, want)
		})
		changes++
	}
	// A prefix added and removed, twice.
	for range 2 {
		editPrefix(t, k8s, "web", func(s *anycastv1.AnycastPrefixSpec) { s.Prefixes = append(s.Prefixes, anycastv1.CIDR(extra.String())) })
		router.WaitFor(t, extra, "prefix added", func(p []bgptest.Path) bool { return len(p) == 2 })
		editPrefix(t, k8s, "web", func(s *anycastv1.AnycastPrefixSpec) { s.Prefixes = s.Prefixes[:2] })
		router.WaitFor(t, extra, "prefix removed", func(p []bgptest.Path) bool { return len(p) == 0 })
		changes += 2
	}
	// A second claim added: a new session to another router; the first claim's sessions stay.
	create(t, k8s, claim2)
	editPrefix(t, k8s, "web", func(s *anycastv1.AnycastPrefixSpec) { s.SessionClaims = append(s.SessionClaims, "edge-2") })
	second.WaitFor(t, p4, "the second claim's session carries the prefix", func(p []bgptest.Path) bool { return len(p) == 1 })
	changes++
	for range 3 {
		svc.healthy.Store(false)
		withdrawn("health failed with two claims")
		second.WaitFor(t, p4, "withdrawn on the second claim", func(p []bgptest.Path) bool { return len(p) == 0 })
		svc.healthy.Store(true)
		announced("health recovered with two claims")
		second.WaitFor(t, p4, "back on the second claim", func(p []bgptest.Path) bool { return len(p) == 1 })
		changes += 2
	}
	if changes < 50 {
		t.Fatalf("only %d route changes", changes)
	}
	for _, n := range []netip.Addr{n4, n6} {
		if e, d := router.Established(n), router.Downs(n); e != 1 || d != 0 {
			t.Errorf("%s: the session from %s was established %d times and went down %d times over %d route changes; want 1 and 0", backend, n, e, d, changes)
		}
	}
	if e, d := second.Established(n4), second.Downs(n4); e != 1 || d != 0 {
		t.Errorf("%s: the second claim's session was established %d times and went down %d times; want 1 and 0", backend, e, d)
	}
	t.Logf("%s: %d route changes; sessions established once each, none dropped", backend, changes)
}

func editPrefix(t *testing.T, k8s client.Client, name string, change func(*anycastv1.AnycastPrefixSpec)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var ap anycastv1.AnycastPrefix
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, &ap); err != nil {
			return err
		}
		change(&ap.Spec)
		return k8s.Update(context.Background(), &ap)
	})
	if err != nil {
		t.Fatal(err)
	}
}
