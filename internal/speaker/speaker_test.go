package speaker

import (
	"math"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"k8s.io/utils/ptr"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

func TestRouteFor(t *testing.T) {
	pfx := netip.MustParsePrefix("198.51.100.0/24")
	attrs := &anycastv1.BGPAttributes{
		Communities:      []anycastv1.Community{"64512:100", "no-export"},
		LargeCommunities: []anycastv1.LargeCommunity{"64512:1:2"},
		MED:              ptr.To[int64](10),
		LocalPreference:  ptr.To[int64](200),
		ASPathPrepend:    ptr.To[int32](2),
	}
	tests := []struct {
		name     string
		attrs    *anycastv1.BGPAttributes
		deprefer bool
		want     Route
	}{
		{"plain", nil, false, Route{Prefix: pfx, Claims: []string{"edge"}}},
		{"attributes", attrs, false, Route{Prefix: pfx, Claims: []string{"edge"}, Communities: []uint32{64512<<16 | 100, 0xFFFFFF01},
			LargeCommunities: [][3]uint32{{64512, 1, 2}}, MED: ptr.To[uint32](10), LocalPref: ptr.To[uint32](200), Prepend: 2}},
		{"deprefered: +3 prepends, MED +1000, GRACEFUL_SHUTDOWN", attrs, true, Route{Prefix: pfx, Claims: []string{"edge"},
			Communities: []uint32{64512<<16 | 100, 0xFFFFFF01, GracefulShutdown}, LargeCommunities: [][3]uint32{{64512, 1, 2}},
			MED: ptr.To[uint32](1010), LocalPref: ptr.To[uint32](200), Prepend: 5, Deprefered: true}},
		{"deprefered without attributes", nil, true, Route{Prefix: pfx, Claims: []string{"edge"}, Communities: []uint32{GracefulShutdown}, MED: ptr.To[uint32](1000), Prepend: 3, Deprefered: true}},
		{"MED saturates", &anycastv1.BGPAttributes{MED: ptr.To[int64](math.MaxUint32 - 5)}, true, Route{Prefix: pfx, Claims: []string{"edge"}, Communities: []uint32{GracefulShutdown}, MED: ptr.To[uint32](math.MaxUint32), Prepend: 3, Deprefered: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RouteFor(pfx, []string{"edge"}, tc.attrs, tc.deprefer)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseCommunity(t *testing.T) {
	for s, want := range map[string]uint32{"0:0": 0, "65535:65535": 0xFFFFFFFF, "64512:100": 64512<<16 | 100, "graceful-shutdown": 0xFFFF0000, "no-peer": 0xFFFFFF04} {
		if got, err := ParseCommunity(s); err != nil || got != want {
			t.Errorf("ParseCommunity(%q) = %x, %v; want %x", s, got, err, want)
		}
	}
	for _, s := range []string{"65536:1", "1:2:3", "blackhole", "65535:666", "x:1", ""} {
		if _, err := ParseCommunity(s); err == nil {
			t.Errorf("ParseCommunity(%q) accepted", s)
		}
	}
}

func TestCheckPassword(t *testing.T) {
	for pw, ok := range map[string]bool{
		"":                                       true,
		"s3cret with spaces {};#\\":              true,
		strings.Repeat("p", MaxPasswordLength):   true,
		strings.Repeat("p", MaxPasswordLength+1): false,
		"two\nlines":                             false,
		"carriage\rreturn":                       false,
		"nul\x00byte":                            false,
	} {
		err := CheckPassword(pw)
		if (err == nil) != ok {
			t.Errorf("CheckPassword(%q) = %v, want ok=%v", pw, err, ok)
		}
		if err != nil && strings.Contains(err.Error(), pw) {
			t.Errorf("the error quotes the password: %v", err)
		}
	}
}

func TestRouterID(t *testing.T) {
	v4, v6 := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")
	tests := []struct {
		name  string
		given netip.Addr
		addrs []netip.Addr
		want  string
	}{
		{"given", netip.MustParseAddr("10.0.0.1"), []netip.Addr{v4}, "10.0.0.1"},
		{"IPv4 address", netip.Addr{}, []netip.Addr{v6, v4}, "192.0.2.10"},
		{"IPv4-mapped", netip.Addr{}, []netip.Addr{netip.MustParseAddr("::ffff:192.0.2.10")}, "192.0.2.10"},
		{"IPv6 only: derived, stable", netip.Addr{}, []netip.Addr{v6}, RouterID(netip.Addr{}, v6).String()},
	}
	for _, tc := range tests {
		if got := RouterID(tc.given, tc.addrs...); got.String() != tc.want || !got.Is4() || got.IsUnspecified() {
			t.Errorf("%s: RouterID = %s, want %s", tc.name, got, tc.want)
		}
	}
	if a, b := RouterID(netip.Addr{}, v6), RouterID(netip.Addr{}, netip.MustParseAddr("2001:db8::11")); a == b {
		t.Errorf("two IPv6 addresses derive the same router ID %s", a)
	}
}

func TestCarries(t *testing.T) {
	v4s := Session{PeerAddress: netip.MustParseAddr("192.0.2.1")}
	v6s := Session{PeerAddress: netip.MustParseAddr("2001:db8::1")}
	p4, p6 := netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8:100::/48")
	none := State{}
	both := State{NextHop4: netip.MustParseAddr("192.0.2.10"), NextHop6: netip.MustParseAddr("2001:db8::10")}
	tests := []struct {
		st   State
		s    Session
		p    netip.Prefix
		want bool
	}{
		{none, v4s, p4, true}, {none, v6s, p6, true}, // a session's own family: its local address is the next hop
		{none, v4s, p6, false}, {none, v6s, p4, false}, // the other family: only with a node address of it
		{both, v4s, p6, true}, {both, v6s, p4, true},
	}
	for _, tc := range tests {
		if got := tc.st.Carries(tc.s, tc.p); got != tc.want {
			t.Errorf("Carries(session %s, %s, next hops %s/%s) = %v", tc.s.PeerAddress, tc.p, tc.st.NextHop4, tc.st.NextHop6, got)
		}
	}
}

func TestParsePeerCanonical(t *testing.T) {
	for in, want := range map[string]string{"2001:DB8::1": "2001:db8::1", "::ffff:192.0.2.1": "192.0.2.1", " 192.0.2.1 ": "192.0.2.1", "fe80::1%eth0": "fe80::1"} {
		got, err := ParsePeer(in)
		if err != nil || got.String() != want {
			t.Errorf("ParsePeer(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
}
