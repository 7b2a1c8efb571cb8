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
	if err := s.Apply(context.Background(), speaker.State{Sessions: []speaker.Session{sess}, Exports: exports, Routes: []speaker.Route{route}}); err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, s, 1)
	got := r.WaitFor(t, v6, "IPv6 prefix announced", func(p []bgptest.Path) bool { return len(p) == 1 })[0]
	if got.NextHop != "::1" || !slices.Equal(got.ASPath, []uint32{64512}) {
		t.Errorf("router received %s", got)
	}
	if err := s.Apply(context.Background(), speaker.State{Sessions: []speaker.Session{sess}, Exports: exports}); err != nil {
		t.Fatal(err)
	}
	r.WaitFor(t, v6, "IPv6 prefix withdrawn", func(p []bgptest.Path) bool { return len(p) == 0 })
}

// TestIPv6OverIPv4Session carries an IPv6 prefix on an IPv4 session (multiprotocol BGP): the router receives it with
// the speaker's address as an IPv4-mapped IPv6 next hop.
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
	if err := s.Apply(context.Background(), speaker.State{Sessions: []speaker.Session{sess}, Exports: exports, Routes: routes}); err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, s, 1)
	r.WaitFor(t, dns, "IPv4 prefix announced", func(p []bgptest.Path) bool { return len(p) == 1 })
	got := r.WaitFor(t, v6, "IPv6 prefix announced over IPv4", func(p []bgptest.Path) bool { return len(p) == 1 })[0]
	t.Logf("router received %s", got)
	if got.NextHop != "::ffff:127.0.0.2" {
		t.Errorf("next hop %s, want ::ffff:127.0.0.2", got.NextHop)
	}
	if err := s.Apply(context.Background(), speaker.State{Sessions: []speaker.Session{sess}, Exports: exports, Routes: routes[:1]}); err != nil {
		t.Fatal(err)
	}
	r.WaitFor(t, v6, "IPv6 prefix withdrawn", func(p []bgptest.Path) bool { return len(p) == 0 })
}
