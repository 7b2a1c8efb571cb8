package e2e

import (
	"net/netip"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
)

// BenchmarkServiceDeathToWithdrawal measures, through the whole product (API server, manager, agent, embedded
// speaker, router over loopback), the time from the local service starting to fail to the prefix's best path
// disappearing at the router, with aggressive settings: interval 100ms, timeout 80ms, fall 3, no delays. Recovery
// between iterations is not timed.
func BenchmarkServiceDeathToWithdrawal(b *testing.B) {
	env, k8s := startCluster(b)
	node := netip.MustParseAddr("127.0.0.2")
	router := bgptest.Start(b, routerAddr, 65001, map[netip.Addr]uint32{node: 64512})
	svc := newService(b)
	create(b, k8s, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-1"}}, edgeClaim(router), fastPolicy("web", svc.URL+"/healthz", 3), dnsPrefix("web"))
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
