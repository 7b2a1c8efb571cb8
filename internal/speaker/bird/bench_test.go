package bird_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/anycast-operator/anycast-operator/internal/speaker"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bird/birdtest"
)

// BenchmarkDecisionToRouter measures the time from the agent's decision (Apply: include files rewritten, `birdc
// configure`) to the best-path change in a GoBGP router's RIB, for withdrawals and announcements.
func BenchmarkDecisionToRouter(b *testing.B) {
	r := bgptest.Start(b, router, 65001, map[netip.Addr]uint32{node: 64512})
	s := birdtest.Start(b, node)
	ctx := context.Background()
	sessions := []speaker.Session{{Claim: "transit-a", PeerAddress: router, PeerASN: 65001, LocalASN: 64512, Port: uint16(r.Port), LocalAddress: node,
		HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second, ConnectRetry: time.Second, EBGPMultihop: 2}}
	route, err := speaker.RouteFor(dns, []string{"transit-a"}, nil, false)
	if err != nil {
		b.Fatal(err)
	}
	exports := map[string][]netip.Prefix{"transit-a": {dns}}
	with := speaker.State{Sessions: sessions, Exports: exports, Routes: []speaker.Route{route}}
	without := speaker.State{Sessions: sessions, Exports: exports}
	if err := s.Apply(ctx, with).Error(); err != nil {
		b.Fatal(err)
	}
	r.WaitFor(b, dns, "announced", func(p []bgptest.Path) bool { return len(p) == 1 })
	withdraw, announce := r.MeasureToggles(b, dns.String(), func(on bool) error {
		if on {
			return s.Apply(ctx, with).Error()
		}
		return s.Apply(ctx, without).Error()
	})
	withdraw.Report(b, "withdraw")
	announce.Report(b, "announce")
}
