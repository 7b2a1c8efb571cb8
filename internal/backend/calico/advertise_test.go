package calico

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/anycast-operator/anycast-operator/internal/backend"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
)

// TestNodeListHoldsEveryPrefix: Calico uses a node's prefixAdvertisements instead of the cluster-wide ones, so a node
// that announces one prefix with attributes of its own (here Deprefer's GRACEFUL_SHUTDOWN) gets a list with every
// listed prefix: those it announces, with its attributes, and those it does not announce yet (its filter may let
// one through before the list is written again), with the cluster-wide ones. The nodes without one get none.
func TestNodeListHoldsEveryPrefix(t *testing.T) {
	a, b, c := netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("192.0.2.0/24")
	route := func(source string, p netip.Prefix, deprefer bool, communities []uint32, nodes ...string) backend.Route {
		return backend.Route{Source: source, Prefix: p, Deprefered: deprefer, Nodes: nodes,
			BGP: speaker.Route{Prefix: p, Claims: []string{"edge"}, Communities: communities}}
	}
	d := backend.Desired{Planned: []backend.PlannedPrefix{
		{Source: "dns", Prefix: a}, {Source: "web", Prefix: b},
		{Source: "api", Prefix: c, BGP: speaker.Route{Prefix: c, Claims: []string{"edge"}, Communities: []uint32{64512<<16 | 300}}},
	}, Routes: []backend.Route{
		route("dns", a, false, []uint32{64512<<16 | 100}, "n1", "n2"),
		route("dns", a, true, []uint32{64512<<16 | 100, speaker.GracefulShutdown}, "n3"),
		route("web", b, false, []uint32{64512<<16 | 200}, "n1", "n2", "n3"),
	}}
	var tr backend.Translation
	Translator{}.advertise(d, &tr)
	lists := map[string]string{}
	for _, l := range tr.Shared {
		if l.Path[1] == "prefixAdvertisements" {
			lists[l.Name] = fmt.Sprint(l.Entries)
		}
	}
	want := map[string]string{
		"default": "[map[cidr:198.51.100.0/24 communities:[64512:100]] map[cidr:203.0.113.0/24 communities:[64512:200]] map[cidr:192.0.2.0/24 communities:[64512:300]]]",
		"node.n3": "[map[cidr:198.51.100.0/24 communities:[64512:100 65535:0]] map[cidr:203.0.113.0/24 communities:[64512:200]] map[cidr:192.0.2.0/24 communities:[64512:300]]]",
	}
	if len(lists) != len(want) {
		t.Errorf("prefixAdvertisements lists: %v, want %v", lists, want)
	}
	for name, w := range want {
		if lists[name] != w {
			t.Errorf("%s: %s, want %s", name, lists[name], w)
		}
	}
}
