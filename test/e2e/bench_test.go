package e2e

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

// BenchmarkServiceDeathToWithdrawal measures, through the whole product (API server, manager, agent, embedded
// speaker, router over loopback), the time from the local service starting to fail to the prefix's best path
// disappearing at the router, with aggressive settings: interval 100ms, timeout 80ms, fall 3, no delays. Recovery
// between iterations is not timed.
func BenchmarkServiceDeathToWithdrawal(b *testing.B) {
	env, err := testenv.Start()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = env.Stop() })
	k8s, err := client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		b.Fatal(err)
	}
	node := netip.MustParseAddr("127.0.0.2")
	router := bgptest.Start(b, routerAddr, 65001, map[netip.Addr]uint32{node: 64512})
	svc := newService(b)
	claim := &anycastv1.BGPSessionClaim{ObjectMeta: metav1.ObjectMeta{Name: "edge"}}
	claim.Spec.LocalASN = 64512
	claim.Spec.Static = &anycastv1.StaticSessions{Peers: []anycastv1.BGPPeer{{Address: anycastv1.IPAddress(routerAddr.String()), ASN: 65001, Port: ptr.To(int32(router.Port))}}}
	claim.Spec.Timers = &anycastv1.BGPTimers{ConnectRetry: &metav1.Duration{Duration: time.Second}}
	hp := &anycastv1.HealthPolicy{ObjectMeta: metav1.ObjectMeta{Name: "web"}}
	hp.Spec.Checks = []anycastv1.HealthCheck{{Name: "web", HTTP: &anycastv1.HTTPCheck{URL: svc.URL + "/healthz"}}}
	hp.Spec.Interval = &metav1.Duration{Duration: 100 * time.Millisecond}
	hp.Spec.Timeout = &metav1.Duration{Duration: 80 * time.Millisecond}
	hp.Spec.RiseThreshold, hp.Spec.FallThreshold = ptr.To[int32](1), ptr.To[int32](3)
	hp.Spec.Dampening = &anycastv1.Dampening{WithdrawDelay: &metav1.Duration{}, ReannounceDelay: &metav1.Duration{}, MinAnnounceDuration: &metav1.Duration{}}
	ap := &anycastv1.AnycastPrefix{ObjectMeta: metav1.ObjectMeta{Name: "dns"}}
	ap.Spec.Prefixes = []anycastv1.CIDR{"198.51.100.0/24"}
	ap.Spec.SessionClaims = []anycastv1.LocalObjectName{"edge"}
	ap.Spec.HealthPolicyRef = &anycastv1.ObjectReference{Name: "web"}
	for _, o := range []client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-1"}}, claim, hp, ap} {
		if err := k8s.Create(context.Background(), o); err != nil {
			b.Fatal(err)
		}
	}
	startManager(b, env)
	startAgent(b, env, "edge-1", node, logr.Discard())
	prefix := netip.MustParsePrefix("198.51.100.0/24")
	router.WaitFor(b, prefix, "announced", func(p []bgptest.Path) bool { return len(p) == 1 })
	changes := router.Changes(b)
	next := func(withdrawn bool) time.Time {
		for c := range changes {
			if c.Prefix == prefix.String() && c.Withdrawn == withdrawn {
				return c.At
			}
		}
		b.Fatal("the router's event stream ended")
		return time.Time{}
	}
	var lat bgptest.Latencies
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		svc.healthy.Store(false)
		lat = append(lat, next(true).Sub(start))
		b.StopTimer()
		svc.healthy.Store(true)
		next(false)
		b.StartTimer()
	}
	lat.Report(b, "death-to-withdrawal")
}
