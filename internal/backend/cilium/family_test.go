package cilium

import (
	"net/netip"
	"testing"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/backend"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
)

func TestPrefixesWithoutPeers(t *testing.T) {
	v4, v6 := netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8:100::/48")
	planned := func(p netip.Prefix, claims ...string) backend.PlannedPrefix {
		return backend.PlannedPrefix{Source: "web", Prefix: p, BGP: speaker.Route{Prefix: p, Claims: claims}}
	}
	session := func(claim, addr string) backend.Session {
		return backend.Session{Claim: claim, Peer: anycastv1.BGPPeer{Address: anycastv1.IPAddress(addr)}}
	}
	for _, tc := range []struct {
		name     string
		planned  []backend.PlannedPrefix
		sessions []backend.Session
		want     []netip.Prefix
	}{
		{"each family has its peer", []backend.PlannedPrefix{planned(v4, "edge"), planned(v6, "edge")},
			[]backend.Session{session("edge", "192.0.2.1"), session("edge", "2001:db8::1")}, nil},
		{"IPv6 prefix, IPv4 peers only", []backend.PlannedPrefix{planned(v4, "edge"), planned(v6, "edge")},
			[]backend.Session{session("edge", "192.0.2.1")}, []netip.Prefix{v6}},
		{"IPv4 prefix, IPv6 peers only", []backend.PlannedPrefix{planned(v4, "edge")},
			[]backend.Session{session("edge", "2001:db8::1")}, []netip.Prefix{v4}},
		{"the IPv6 peer is another claim's", []backend.PlannedPrefix{planned(v6, "edge")},
			[]backend.Session{session("edge", "192.0.2.1"), session("transit", "2001:db8::1")}, []netip.Prefix{v6}},
		{"one of its claims has one", []backend.PlannedPrefix{planned(v6, "edge", "transit")},
			[]backend.Session{session("edge", "192.0.2.1"), session("transit", "2001:db8::1")}, nil},
		{"an IPv4-mapped peer address is IPv4", []backend.PlannedPrefix{planned(v4, "edge")},
			[]backend.Session{session("edge", "::ffff:192.0.2.1")}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []netip.Prefix
			for _, p := range prefixesWithoutPeers(backend.Desired{Planned: tc.planned, Sessions: tc.sessions}) {
				got = append(got, p.Prefix)
			}
			if len(got) != len(tc.want) || (len(got) > 0 && got[0] != tc.want[0]) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}
