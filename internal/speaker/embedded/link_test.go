package embedded

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/anycast-operator/anycast-operator/internal/netlab"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
)

// TestNextHopsOnALink announces an IPv4 and an IPv6 prefix over an IPv4 and an IPv6 session to a router in a network
// namespace across a veth pair: each arrives with the node's own address of its family as next hop, on both
// sessions, never an IPv4-mapped one; an IPv6-only speaker (no IPv4 router ID) does the same over IPv6.
func TestNextHopsOnALink(t *testing.T) {
	lab := netlab.New(t, 2)
	n4, n6 := lab.Nodes4[0], lab.Nodes6[0]
	only6 := lab.Nodes6[1]
	r := bgptest.StartWith(t, bgptest.Options{Addresses: []netip.Addr{lab.Router4, lab.Router6}, ASN: 65001, Netns: lab.NetnsPath,
		Neighbors: map[netip.Addr]uint32{n4: 64512, n6: 64512, only6: 64513}})
	p4, p6 := netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8:100::/48")
	sess := func(claim string, peer, local netip.Addr, asn uint32) speaker.Session {
		return speaker.Session{Claim: claim, PeerAddress: peer, PeerASN: 65001, LocalASN: asn, Port: uint16(r.Port), LocalAddress: local,
			HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second, ConnectRetry: time.Second}
	}
	routes := func(claim string) []speaker.Route {
		var out []speaker.Route
		for _, p := range []netip.Prefix{p4, p6} {
			x, err := speaker.RouteFor(p, []string{claim}, nil, false)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, x)
		}
		return out
	}

	dual := New(speaker.RouterID(netip.Addr{}, n4), logr.Discard())
	t.Cleanup(func() { _ = dual.Close() })
	st := speaker.State{Sessions: []speaker.Session{sess("v4", lab.Router4, n4, 64512), sess("v6", lab.Router6, n6, 64512)},
		Exports: map[string][]netip.Prefix{"v4": {p4, p6}, "v6": {p4, p6}}, NextHop4: n4, NextHop6: n6}
	st.Routes = append(routes("v4"), routes("v6")...)
	// One route per prefix in the RIB, carried by both claims.
	st.Routes = []speaker.Route{st.Routes[0], st.Routes[1]}
	st.Routes[0].Claims, st.Routes[1].Claims = []string{"v4", "v6"}, []string{"v4", "v6"}
	if rep := dual.Apply(context.Background(), st); !rep.OK() || len(rep.Held.Routes) != 2 || len(rep.Held.Sessions) != 2 {
		t.Fatalf("Apply: %v, held %+v", rep.Error(), rep.Held)
	}
	want := func(prefix netip.Prefix, neighbor, nextHop netip.Addr) {
		t.Helper()
		r.WaitFor(t, prefix, prefix.String()+" from "+neighbor.String()+" via "+nextHop.String(), func(paths []bgptest.Path) bool {
			for _, p := range paths {
				if p.Neighbor == neighbor.String() && p.NextHop == nextHop.String() {
					return true
				}
			}
			return false
		})
	}
	want(p4, n4, n4) // IPv4 over IPv4: the session's address
	want(p6, n4, n6) // IPv6 over IPv4: the node's IPv6 address, not ::ffff:n4
	want(p6, n6, n6) // IPv6 over IPv6
	want(p4, n6, n4) // IPv4 over IPv6: the node's IPv4 address

	// An IPv6-only node: its router ID is derived from its IPv6 address, its IPv4 prefix has no next hop to go out
	// with (not sent), its IPv6 prefix goes out with its address.
	v6only := New(speaker.RouterID(netip.Addr{}, only6), logr.Discard())
	t.Cleanup(func() { _ = v6only.Close() })
	st6 := speaker.State{Sessions: []speaker.Session{sess("v6only", lab.Router6, only6, 64513)},
		Exports: map[string][]netip.Prefix{"v6only": {p4, p6}}, Routes: routes("v6only"), NextHop6: only6}
	if rep := v6only.Apply(context.Background(), st6); !rep.OK() {
		t.Fatalf("Apply on an IPv6-only node: %v", rep.Error())
	}
	want(p6, only6, only6)
	// What the speaker sends to the router after its route-leak guard (Adj-RIB-Out): the IPv6 prefix, not the IPv4
	// one. The session sends prefixes in address order, IPv4 first, so with the IPv6 one at the router the IPv4
	// one would be there too.
	if out := adjOut(v6only, lab.Router6, bgp.RF_IPv4_UC); len(out) != 0 {
		t.Errorf("the IPv6-only node sends its IPv4 prefix without an IPv4 next hop: %v", out)
	}
	if out := adjOut(v6only, lab.Router6, bgp.RF_IPv6_UC); len(out) != 1 {
		t.Errorf("the IPv6-only node's Adj-RIB-Out for IPv6: %v", out)
	}
	for _, p := range r.Paths(p4) {
		if p.Neighbor == only6.String() {
			t.Errorf("the router received the IPv4 prefix from the IPv6-only node: %s", p)
		}
	}
	if st6.Carries(st6.Sessions[0], p4) {
		t.Errorf("State.Carries says an IPv6 session of a node without IPv4 carries an IPv4 prefix")
	}
}

// adjOut lists the prefixes the speaker's session to a peer carries in a family, after its route-leak guard.
func adjOut(s *Speaker, peer netip.Addr, family bgp.Family) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, p := range s.peers {
		if p.s.PeerAddress != peer {
			continue
		}
		p.mu.Lock()
		for pfx := range p.rib {
			if familyOf(pfx) == family {
				out = append(out, pfx.String())
			}
		}
		p.mu.Unlock()
	}
	return out
}
