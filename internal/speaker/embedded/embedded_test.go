package embedded

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
)

var (
	node    = netip.MustParseAddr("127.0.0.2")
	routerA = netip.MustParseAddr("127.0.0.1")
	routerB = netip.MustParseAddr("127.0.0.3")
	dns     = netip.MustParsePrefix("198.51.100.0/24")
	web     = netip.MustParsePrefix("203.0.113.0/24")
)

func session(claim string, r *bgptest.Router) speaker.Session {
	return speaker.Session{Claim: claim, PeerAddress: r.Address, PeerASN: r.ASN, LocalASN: 64512, Port: uint16(r.Port),
		LocalAddress: node, HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second, ConnectRetry: time.Second}
}

func waitEstablished(t testing.TB, s *Speaker, n int) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := s.Sessions(ctx)
		if err != nil {
			return false, nil
		}
		established := 0
		for _, x := range got {
			if x.State == anycastv1.SessionEstablished {
				established++
			}
		}
		return established == n, nil
	})
	if err != nil {
		got, _ := s.Sessions(context.Background())
		t.Fatalf("sessions not established: %+v", got)
	}
}

func TestEmbeddedSpeakerAgainstARouter(t *testing.T) {
	a := bgptest.Start(t, routerA, 65001, map[netip.Addr]uint32{node: 64512})
	b := bgptest.Start(t, routerB, 65002, map[netip.Addr]uint32{node: 64512})
	s := New(node, logr.Discard())
	t.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	sessions := []speaker.Session{session("transit-a", a), session("transit-b", b)}

	attrs := &anycastv1.BGPAttributes{Communities: []anycastv1.Community{"64512:100", "no-export"}, LargeCommunities: []anycastv1.LargeCommunity{"64512:1:2"},
		MED: ptr.To[int64](10), ASPathPrepend: ptr.To[int32](1)}
	// transit-a may carry both prefixes, transit-b only dns.
	exports := map[string][]netip.Prefix{"transit-a": {dns, web}, "transit-b": {dns}}
	announce := func(deprefer bool, routes ...speaker.Route) {
		t.Helper()
		if err := s.Apply(ctx, speaker.State{Sessions: sessions, Exports: exports, Routes: routes}).Error(); err != nil {
			t.Fatal(err)
		}
	}
	route := func(p netip.Prefix, deprefer bool, claims ...string) speaker.Route {
		r, err := speaker.RouteFor(p, claims, attrs, deprefer)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// dns goes to both claims, web only to transit-a; web is also wrongly tagged for transit-b, whose exports do not
	// allow it: the guard holds it back.
	announce(false, route(dns, false, "transit-a", "transit-b"), route(web, false, "transit-a", "transit-b"))
	waitEstablished(t, s, 2)

	got := a.WaitFor(t, dns, "dns announced", func(p []bgptest.Path) bool { return len(p) == 1 })[0]
	if got.NextHop != "127.0.0.2" || !slices.Equal(got.ASPath, []uint32{64512, 64512}) ||
		!slices.Equal(got.Communities, []uint32{64512<<16 | 100, 0xFFFFFF01}) || !slices.Equal(got.LargeCommunities, []string{"64512:1:2"}) ||
		got.MED == nil || *got.MED != 10 {
		t.Errorf("router A received %s", got)
	}
	b.WaitFor(t, dns, "dns announced to B", func(p []bgptest.Path) bool { return len(p) == 1 })
	a.WaitFor(t, web, "web announced to A", func(p []bgptest.Path) bool { return len(p) == 1 })
	if p := b.Paths(web); len(p) != 0 {
		t.Errorf("web leaked to transit-b, whose claim does not carry it: %s", p[0])
	}

	// Deprefer: three more prepends, MED + 1000, GRACEFUL_SHUTDOWN.
	announce(true, route(dns, true, "transit-a", "transit-b"), route(web, false, "transit-a", "transit-b"))
	a.WaitFor(t, dns, "dns deprefered", func(p []bgptest.Path) bool {
		return len(p) == 1 && len(p[0].ASPath) == 5 && p[0].MED != nil && *p[0].MED == 1010 && slices.Contains(p[0].Communities, speaker.GracefulShutdown)
	})

	// Withdraw dns: gone from both routers, web stays.
	announce(false, route(web, false, "transit-a"))
	a.WaitFor(t, dns, "dns withdrawn from A", func(p []bgptest.Path) bool { return len(p) == 0 })
	b.WaitFor(t, dns, "dns withdrawn from B", func(p []bgptest.Path) bool { return len(p) == 0 })
	if p := a.Paths(web); len(p) != 1 {
		t.Errorf("web lost at A")
	}

	// Announce again, then close: the routers drop everything.
	announce(false, route(dns, false, "transit-a", "transit-b"), route(web, false, "transit-a"))
	a.WaitFor(t, dns, "dns re-announced", func(p []bgptest.Path) bool { return len(p) == 1 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	a.WaitFor(t, dns, "dns gone after Close", func(p []bgptest.Path) bool { return len(p) == 0 })
}
