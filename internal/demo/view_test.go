package demo

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
)

func TestRenderNodes(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 30, 0, time.UTC)
	since := metav1.NewTime(now.Add(-12 * time.Second))
	s := snapshot{At: now, Sites: sites, Prefixes: prefixes[:1], Nodes: map[string][]anycastv1.NodePrefixStatus{
		"ams-1": {{Prefix: "198.51.100.0/24", State: anycastv1.PrefixAnnounced, Since: &since, Reason: "Healthy"}},
		"fra-1": {{Prefix: "198.51.100.0/24", State: anycastv1.PrefixWithdrawn, Since: &since, Reason: "Unhealthy"}},
	}}
	got := renderNodes(s)
	for _, want := range []string{
		"198.51.100.0/24  ams-1  ams   Announced  12:00:18 (12s ago)  Healthy",
		"198.51.100.0/24  fra-1  fra   Withdrawn  12:00:18 (12s ago)  Unhealthy",
		"198.51.100.0/24  nyc-1  nyc   -          -                   no status yet",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
}

func TestRenderRouter(t *testing.T) {
	med := uint32(1010)
	s := snapshot{Sites: sites, Prefixes: prefixes, Router: map[netip.Prefix][]bgptest.Path{
		prefixes[0]: {
			{Neighbor: "127.0.0.13", NextHop: "127.0.0.13", ASPath: []uint32{64512, 64512, 64512, 64512}, MED: &med,
				Communities: []uint32{64512<<16 | 100, 0xFFFF0000}},
			{Neighbor: "127.0.0.11", NextHop: "127.0.0.11", ASPath: []uint32{64512}, Best: true, Communities: []uint32{64512<<16 | 100}},
		},
	}}
	got := renderRouter(s, "127.0.0.10:1179 AS65000")
	lines := strings.Split(got, "\n")
	for i, want := range []string{
		"*  198.51.100.0/24    ams-1 (ams)  127.0.0.11  64512                    -     64512:100",
		"   198.51.100.0/24    nyc-1 (nyc)  127.0.0.13  64512 64512 64512 64512  1010  64512:100 graceful-shutdown",
		"   2001:db8:100::/48  (no path: nobody announces it)",
	} {
		if strings.TrimRight(lines[i+2], " ") != want {
			t.Errorf("line %d:\n got %q\nwant %q", i+2, lines[i+2], want)
		}
	}
}

func TestAge(t *testing.T) {
	for d, want := range map[time.Duration]string{
		-time.Second:             "0s",
		853 * time.Millisecond:   "850ms",
		2160 * time.Millisecond:  "2.2s",
		12400 * time.Millisecond: "12s",
		185 * time.Second:        "3m05s",
	} {
		if got := age(d); got != want {
			t.Errorf("age(%s) = %q, want %q", d, got, want)
		}
	}
}
