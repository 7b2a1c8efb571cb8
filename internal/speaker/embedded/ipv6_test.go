package embedded

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/anycast-operator/anycast-operator/internal/speaker"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
)

// TestIPv6 announces and withdraws an IPv6 prefix over an IPv6 session. Loopback has a single IPv6 address, so the
// router and the speaker both use ::1, on different ports.
func TestIPv6(t *testing.T) {
	lo := netip.MustParseAddr("::1")
	r := bgptest.Start(t, lo, 65001, map[netip.Addr]uint32{lo: 64512})
	s := New(netip.MustParseAddr("127.0.0.2"), logr.Discard())
	t.Cleanup(func() { _ = s.Close() })
	v6 := netip.MustParsePrefix("2001:db8:100::/48")
	sess := speaker.Session{Claim: "v6", PeerAddress: lo, PeerASN: 65001, LocalASN: 64512, Port: uint16(r.Port), LocalAddress: lo,
		HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second, ConnectRetry: time.Second}
	route, err := speaker.RouteFor(v6, []string{"v6"}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	exports := map[string][]netip.Prefix{"v6": {v6}}
	if err := s.Apply(context.Background(), speaker.State{Sessions: []speaker.Session{sess}, Exports: exports, Routes: []speaker.Route{route}}).Error(); err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, s, 1)
	got := r.WaitFor(t, v6, "IPv6 prefix announced", func(p []bgptest.Path) bool { return len(p) == 1 })[0]
	if got.NextHop != "::1" || !slices.Equal(got.ASPath, []uint32{64512}) {
		t.Errorf("router received %s", got)
	}
	if err := s.Apply(context.Background(), speaker.State{Sessions: []speaker.Session{sess}, Exports: exports}).Error(); err != nil {
		t.Fatal(err)
	}
	r.WaitFor(t, v6, "IPv6 prefix withdrawn", func(p []bgptest.Path) bool { return len(p) == 0 })
}

// TestIPv6OverIPv4Session carries an IPv6 prefix on an IPv4 session (multiprotocol BGP): with the node's IPv6
// address as its next hop, never an IPv4-mapped one; without an IPv6 address on the node, not at all.
func TestIPv6OverIPv4Session(t *testing.T) {
	r := bgptest.Start(t, routerA, 65001, map[netip.Addr]uint32{node: 64512})
	s := New(node, logr.Discard())
	t.Cleanup(func() { _ = s.Close() })
	v6 := netip.MustParsePrefix("2001:db8:100::/48")
	sess := session("dual", r)
	routes := []speaker.Route{}
	for _, p := range []netip.Prefix{dns, v6} {
		route, err := speaker.RouteFor(p, []string{"dual"}, nil, false)
		if err != nil {
			t.Fatal(err)
		}
		routes = append(routes, route)
	}
	exports := map[string][]netip.Prefix{"dual": {dns, v6}}
	nodeV6 := netip.MustParseAddr("2001:db8:ffff::2")
	st := speaker.State{Sessions: []speaker.Session{sess}, Exports: exports, Routes: routes, NextHop4: node, NextHop6: nodeV6}
	if err := s.Apply(context.Background(), st).Error(); err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, s, 1)
	r.WaitFor(t, dns, "IPv4 prefix announced", func(p []bgptest.Path) bool { return len(p) == 1 && p[0].NextHop == node.String() })
	r.WaitFor(t, v6, "IPv6 prefix announced over IPv4 with the node's IPv6 next hop", func(p []bgptest.Path) bool {
		return len(p) == 1 && p[0].NextHop == nodeV6.String()
	})

	// The node has no IPv6 address: the IPv6 prefix leaves the session, the IPv4 one stays.
	st.NextHop6 = netip.Addr{}
	if err := s.Apply(context.Background(), st).Error(); err != nil {
		t.Fatal(err)
	}
	r.WaitFor(t, v6, "IPv6 prefix not sent without an IPv6 next hop", func(p []bgptest.Path) bool { return len(p) == 0 })
	if p := r.Paths(dns); len(p) != 1 {
		t.Errorf("the IPv4 prefix went too: %v", p)
	}
	st.NextHop6 = nodeV6
	if err := s.Apply(context.Background(), st).Error(); err != nil {
		t.Fatal(err)
	}
	r.WaitFor(t, v6, "IPv6 prefix back with a next hop", func(p []bgptest.Path) bool { return len(p) == 1 && p[0].NextHop == nodeV6.String() })
	st.Routes = routes[:1]
	if err := s.Apply(context.Background(), st).Error(); err != nil {
		t.Fatal(err)
	}
	r.WaitFor(t, v6, "IPv6 prefix withdrawn", func(p []bgptest.Path) bool { return len(p) == 0 })
}
