package speaker

import (
	"math"
	"net/netip"
	"reflect"
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
			MED: ptr.To[uint32](1010), LocalPref: ptr.To[uint32](200), Prepend: 5}},
		{"deprefered without attributes", nil, true, Route{Prefix: pfx, Claims: []string{"edge"}, Communities: []uint32{GracefulShutdown}, MED: ptr.To[uint32](1000), Prepend: 3}},
		{"MED saturates", &anycastv1.BGPAttributes{MED: ptr.To[int64](math.MaxUint32 - 5)}, true, Route{Prefix: pfx, Claims: []string{"edge"}, Communities: []uint32{GracefulShutdown}, MED: ptr.To[uint32](math.MaxUint32), Prepend: 3}},
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
