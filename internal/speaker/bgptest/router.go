// Package bgptest runs a real BGP router (the GoBGP library) on loopback for tests, and reads what it received.
package bgptest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Router is an upstream router that accepts sessions from the given neighbors. Tests start it with Start; the demo,
// which is no test, with New.
type Router struct {
	Address netip.Addr
	Port    int
	ASN     uint32
	bgp     *server.BgpServer
}

// FreePort returns a TCP port free on the address.
func FreePort(t testing.TB, addr netip.Addr) int {
	t.Helper()
	port, err := freePort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func freePort(addr netip.Addr) (int, error) {
	l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start starts a router on addr (a loopback address) that waits for the neighbors to connect (passive).
func Start(t testing.TB, addr netip.Addr, asn uint32, neighbors map[netip.Addr]uint32) *Router {
	return StartWithPassword(t, addr, asn, neighbors, "")
}

// StartWithPassword is Start with a TCP MD5 password (RFC 2385) on every session.
func StartWithPassword(t testing.TB, addr netip.Addr, asn uint32, neighbors map[netip.Addr]uint32, password string) *Router {
	t.Helper()
	r, err := New(addr, 0, asn, neighbors, password)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// New starts a router listening on addr and port (0: a free port), with passive sessions to the neighbors (address
// to ASN), each offering IPv4 and IPv6 unicast. Close stops it.
func New(addr netip.Addr, port int, asn uint32, neighbors map[netip.Addr]uint32, password string) (*Router, error) {
	if port == 0 {
		var err error
		if port, err = freePort(addr); err != nil {
			return nil, err
		}
	}
	level := new(slog.LevelVar)
	level.Set(slog.LevelError)
	r := &Router{Address: addr, Port: port, ASN: asn,
		bgp: server.NewBgpServer(server.LoggerOption(slog.New(slog.DiscardHandler), level))}
	go r.bgp.Serve()
	ctx := context.Background()
	routerID := addr.String()
	if addr.Is6() {
		routerID = "127.255.255.254" // a router ID is an IPv4-shaped identifier, whatever the session's family
	}
	if err := r.bgp.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: asn, RouterId: routerID, ListenPort: int32(r.Port), ListenAddresses: []string{addr.String()},
	}}); err != nil {
		r.bgp.Stop()
		return nil, fmt.Errorf("starting the router on %s: %w", netip.AddrPortFrom(addr, uint16(port)), err)
	}
	for n, peerASN := range neighbors {
		if err := r.bgp.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
			Conf:      &api.PeerConf{NeighborAddress: n.String(), PeerAsn: peerASN, AuthPassword: password},
			Transport: &api.Transport{PassiveMode: true, LocalAddress: addr.String()},
			AfiSafis:  unicastFamilies(),
		}}); err != nil {
			r.Close()
			return nil, fmt.Errorf("adding neighbor %s: %w", n, err)
		}
	}
	return r, nil
}

// Close ends every session and stops the router.
func (r *Router) Close() {
	_ = r.bgp.StopBgp(context.Background(), &api.StopBgpRequest{})
	r.bgp.Stop()
}

func unicastFamilies() []*api.AfiSafi {
	var out []*api.AfiSafi
	for _, afi := range []api.Family_Afi{api.Family_AFI_IP, api.Family_AFI_IP6} {
		out = append(out, &api.AfiSafi{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: afi, Safi: api.Family_SAFI_UNICAST}, Enabled: true}})
	}
	return out
}

// Path is a route as the router received it.
type Path struct {
	Prefix string
	// Neighbor is the session the path came from; Best marks the path the router chose.
	Neighbor         string
	Best             bool
	NextHop          string
	ASPath           []uint32
	Communities      []uint32
	LargeCommunities []string
	MED              *uint32
}

func (p Path) String() string {
	med := "-"
	if p.MED != nil {
		med = fmt.Sprint(*p.MED)
	}
	return fmt.Sprintf("%s from %s via %s as-path %v communities %v large %v med %s", p.Prefix, p.Neighbor, p.NextHop, p.ASPath, p.Communities, p.LargeCommunities, med)
}

// Paths returns what the router holds in its RIB for a prefix (nil when it has none).
func (r *Router) Paths(prefix netip.Prefix) []Path {
	family := bgp.RF_IPv4_UC
	if prefix.Addr().Is6() {
		family = bgp.RF_IPv6_UC
	}
	var out []Path
	_ = r.bgp.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: family,
		Prefixes: []*apiutil.LookupPrefix{{Prefix: prefix.String()}}}, func(nlri bgp.NLRI, paths []*apiutil.Path) {
		for _, p := range paths {
			got := Path{Prefix: nlri.String(), Best: p.Best}
			if p.PeerAddress.IsValid() {
				got.Neighbor = p.PeerAddress.String()
			}
			for _, a := range p.Attrs {
				switch a := a.(type) {
				case *bgp.PathAttributeNextHop:
					got.NextHop = a.Value.String()
				case *bgp.PathAttributeMpReachNLRI:
					got.NextHop = a.Nexthop.String()
				case *bgp.PathAttributeAsPath:
					for _, seg := range a.Value {
						got.ASPath = append(got.ASPath, seg.GetAS()...)
					}
				case *bgp.PathAttributeCommunities:
					got.Communities = slices.Clone(a.Value)
				case *bgp.PathAttributeLargeCommunities:
					for _, c := range a.Values {
						got.LargeCommunities = append(got.LargeCommunities, c.String())
					}
				case *bgp.PathAttributeMultiExitDisc:
					v := a.Value
					got.MED = &v
				}
			}
			out = append(out, got)
		}
	})
	return out
}

// WaitFor waits until the router's paths for prefix satisfy ok and returns them; it fails the test after a minute.
func (r *Router) WaitFor(t testing.TB, prefix netip.Prefix, what string, ok func([]Path) bool) []Path {
	t.Helper()
	var last []Path
	err := wait.PollUntilContextTimeout(context.Background(), 5*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		last = r.Paths(prefix)
		return ok(last), nil
	})
	if err != nil {
		t.Fatalf("router %s: %s: not reached; it holds %s", r.Address, what, describe(last))
	}
	return last
}

func describe(paths []Path) string {
	if len(paths) == 0 {
		return "nothing"
	}
	s := make([]string, len(paths))
	for i, p := range paths {
		s[i] = p.String()
	}
	return strings.Join(s, "; ")
}

// Change is a best-path change in the router's RIB.
type Change struct {
	Prefix    string
	Withdrawn bool
	At        time.Time
}

// Changes streams the router's best-path changes from now on, until the test ends. Benchmarks wait on it instead of
// polling the RIB, whose listing alone costs hundreds of microseconds.
func (r *Router) Changes(t testing.TB) <-chan Change {
	ch := make(chan Change, 1024)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	err := r.bgp.WatchEvent(ctx, server.WatchEventMessageCallbacks{OnBestPath: func(paths []*apiutil.Path, _ time.Time) {
		now := time.Now()
		for _, p := range paths {
			select {
			case ch <- Change{Prefix: p.Nlri.String(), Withdrawn: p.Withdrawal, At: now}:
			default:
			}
		}
	}}, server.WatchBestPath(false))
	if err != nil {
		t.Fatal(err)
	}
	return ch
}
