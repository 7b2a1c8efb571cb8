package embedded

import (
	"context"
	"net/netip"
	"testing"

	"github.com/go-logr/logr"

	"github.com/anycast-operator/anycast-operator/internal/speaker"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
)

// BenchmarkDecisionToRouter measures the time from the agent's decision (Apply with or without the route) to the
// best-path change in a GoBGP router's RIB over a loopback session, for withdrawals and announcements.
func BenchmarkDecisionToRouter(b *testing.B) {
	router := bgptest.Start(b, routerA, 65001, map[netip.Addr]uint32{node: 64512})
	s := New(node, logr.Discard())
	b.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	sessions := []speaker.Session{session("transit-a", router)}
	r, err := speaker.RouteFor(dns, []string{"transit-a"}, nil, false)
	if err != nil {
		b.Fatal(err)
	}
	exports := map[string][]netip.Prefix{"transit-a": {dns}}
	with := speaker.State{Sessions: sessions, Exports: exports, Routes: []speaker.Route{r}}
	without := speaker.State{Sessions: sessions, Exports: exports}
	if err := s.Apply(ctx, with).Error(); err != nil {
		b.Fatal(err)
	}
	waitEstablished(b, s, 1)
	router.WaitFor(b, dns, "announced", func(p []bgptest.Path) bool { return len(p) == 1 })

	withdraw, announce := router.MeasureToggles(b, dns.String(), func(on bool) error {
		if on {
			return s.Apply(ctx, with).Error()
		}
		return s.Apply(ctx, without).Error()
	})
	withdraw.Report(b, "withdraw")
	announce.Report(b, "announce")
}
