// Package bgptest runs a real BGP router (the GoBGP library) on loopback for tests, and reads what it received.
package bgptest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Router is an upstream router that accepts sessions from the given neighbors. Tests start it with Start; the demo,
// which is no test, with New.
type Router struct {
	Address netip.Addr
	Port    int
	ASN     uint32
	bgp     *server.BgpServer

	mu          sync.Mutex
	established map[netip.Addr]int // sessions that reached Established, by neighbor
	downs       map[netip.Addr]int // Established sessions that went down, by neighbor
	stopWatch   context.CancelFunc
	updatesLost atomic.Int64
}

// Options configure a router.
type Options struct {
	// Addresses it listens on (the first is Address); Port 0: a free port on the first.
	Addresses []netip.Addr
	Port      int
	ASN       uint32
	// Neighbors (address to ASN) connect to it (passive sessions), offering IPv4 and IPv6 unicast.
	Neighbors map[netip.Addr]uint32
	// Password is the TCP MD5 password of every session ("": none).
	Password string
	// Netns is the path of a network namespace the router's sockets live in ("": the caller's).
	Netns string
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
	return StartWith(t, Options{Addresses: []netip.Addr{addr}, ASN: asn, Neighbors: neighbors, Password: password})
}

// StartWith starts a router with the options until the test ends.
func StartWith(t testing.TB, o Options) *Router {
	t.Helper()
	r, err := NewWith(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// New starts a router listening on addr and port (0: a free port), with passive sessions to the neighbors (address
// to ASN), each offering IPv4 and IPv6 unicast. Close stops it.
func New(addr netip.Addr, port int, asn uint32, neighbors map[netip.Addr]uint32, password string) (*Router, error) {
	return NewWith(Options{Addresses: []netip.Addr{addr}, Port: port, ASN: asn, Neighbors: neighbors, Password: password})
}

// NewWith starts a router with the options. Close stops it.
func NewWith(o Options) (*Router, error) {
	addr := o.Addresses[0]
	level := new(slog.LevelVar)
	level.Set(slog.LevelError)
	r := &Router{Address: addr, Port: o.Port, ASN: o.ASN, established: map[netip.Addr]int{}, downs: map[netip.Addr]int{},
		bgp: server.NewBgpServer(server.LoggerOption(slog.New(slog.DiscardHandler), level))}
	if err := serve(r.bgp, o.Netns); err != nil {
		return nil, err
	}
	if r.Port == 0 {
		var err error
		if r.Port, err = freePortIn(o.Netns, addr); err != nil {
			r.bgp.Stop()
			return nil, err
		}
	}
	ctx := context.Background()
	routerID := "127.255.255.254" // a router ID is an IPv4-shaped identifier, whatever the session's family
	listen := make([]string, 0, len(o.Addresses))
	for _, a := range o.Addresses {
		listen = append(listen, a.String())
		if a.Is4() {
			routerID = a.String()
		}
	}
	if err := r.bgp.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: o.ASN, RouterId: routerID, ListenPort: int32(r.Port), ListenAddresses: listen,
	}}); err != nil {
		r.bgp.Stop()
		return nil, fmt.Errorf("starting the router on %s: %w", netip.AddrPortFrom(addr, uint16(r.Port)), err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	r.stopWatch = cancel
	if err := r.bgp.WatchEvent(wctx, server.WatchEventMessageCallbacks{OnPeerUpdate: r.peerEvent}, server.WatchPeer()); err != nil {
		r.Close()
		return nil, err
	}
	for n, peerASN := range o.Neighbors {
		local := addr
		for _, a := range o.Addresses {
			if a.Is6() == n.Is6() {
				local = a
				break
			}
		}
		if err := r.bgp.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
			Conf:      &api.PeerConf{NeighborAddress: n.String(), PeerAsn: peerASN, AuthPassword: o.Password},
			Transport: &api.Transport{PassiveMode: true, LocalAddress: local.String()},
			AfiSafis:  unicastFamilies(),
		}}); err != nil {
			r.Close()
			return nil, fmt.Errorf("adding neighbor %s: %w", n, err)
		}
	}
	return r, nil
}

// serve runs the server's loop, in the network namespace when one is given: GoBGP opens its listeners from that
// loop, so they live where the loop's thread does. The thread stays locked to the loop's goroutine and ends with it,
// so no other goroutine ever runs in the namespace.
func serve(s *server.BgpServer, netns string) error {
	if netns == "" {
		go s.Serve()
		return nil
	}
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := enterNetns(netns); err != nil {
			ready <- err
			return // the locked thread ends here
		}
		ready <- nil
		s.Serve()
	}()
	return <-ready
}

// freePortIn returns a TCP port free on the address inside the network namespace.
func freePortIn(netns string, addr netip.Addr) (int, error) {
	if netns == "" {
		return freePort(addr)
	}
	type result struct {
		port int
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if err := enterNetns(netns); err != nil {
			ch <- result{err: err}
			return
		}
		p, err := freePort(addr)
		ch <- result{p, err}
	}()
	r := <-ch
	return r.port, r.err
}

func enterNetns(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("entering network namespace %s: %w", path, err)
	}
	return nil
}

func (r *Router) peerEvent(e *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
	if e.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	n := e.Peer.State.NeighborAddress.Unmap()
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.Peer.State.SessionState == bgp.BGP_FSM_ESTABLISHED {
		r.established[n]++
	} else if r.established[n] > r.downs[n] {
		r.downs[n]++
	}
}

// Established counts how often the session with a neighbor reached Established; Downs how often an established
// one went down. A session that drops is a bug even when the routes come back.
func (r *Router) Established(neighbor netip.Addr) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.established[neighbor]
}

// Downs counts the established sessions with a neighbor that went down.
func (r *Router) Downs(neighbor netip.Addr) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.downs[neighbor]
}

// Close ends every session and stops the router.
func (r *Router) Close() {
	if r.stopWatch != nil {
		r.stopWatch()
	}
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
	// LocalPref is LOCAL_PREF, which only an iBGP session carries.
	LocalPref *uint32
}

func (p Path) String() string {
	med := "-"
	if p.MED != nil {
		med = fmt.Sprint(*p.MED)
	}
	pref := "-"
	if p.LocalPref != nil {
		pref = fmt.Sprint(*p.LocalPref)
	}
	return fmt.Sprintf("%s from %s via %s as-path %v communities %v large %v med %s local-pref %s", p.Prefix, p.Neighbor, p.NextHop, p.ASPath, p.Communities, p.LargeCommunities, med, pref)
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
				case *bgp.PathAttributeLocalPref:
					v := a.Value
					got.LocalPref = &v
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

// Change is a best-path change in the router's RIB, or (from Updates) a path a neighbor sent or withdrew.
type Change struct {
	Prefix    string
	Withdrawn bool
	At        time.Time
	// Neighbor is the session the path came on (for a best-path change, the new best path's; "" for the router's own).
	Neighbor string
	// Communities are the path's standard communities.
	Communities []uint32
}

// Changes streams the router's best-path changes from now on, until the test ends. Benchmarks wait on it instead of
// polling the RIB, whose listing alone costs hundreds of microseconds.
func (r *Router) Changes(t testing.TB) <-chan Change {
	ch := make(chan Change, 1024)
	r.stream(t, ch, server.WatchBestPath(false), func(cb func([]*apiutil.Path, time.Time)) server.WatchEventMessageCallbacks {
		return server.WatchEventMessageCallbacks{OnBestPath: cb}
	}, nil)
	return ch
}

// Updates streams every path the neighbors send or withdraw from now on (what arrives in their UPDATE messages, before
// import policy), until the test ends: a withdrawal that a new path replaces a moment later shows here, where the
// RIB's state, looked at, may never show it. UpdatesLost counts what did not fit in the stream's buffer.
func (r *Router) Updates(t testing.TB) <-chan Change {
	ch := make(chan Change, 4096)
	r.stream(t, ch, server.WatchUpdate(false, "", ""), func(cb func([]*apiutil.Path, time.Time)) server.WatchEventMessageCallbacks {
		return server.WatchEventMessageCallbacks{OnPathUpdate: cb}
	}, &r.updatesLost)
	return ch
}

// stream sends the paths of one kind of watch event to ch, never blocking the router: what does not fit is dropped
// (and counted in lost, if given).
func (r *Router) stream(t testing.TB, ch chan<- Change, opt server.WatchOption, callbacks func(func([]*apiutil.Path, time.Time)) server.WatchEventMessageCallbacks, lost *atomic.Int64) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	err := r.bgp.WatchEvent(ctx, callbacks(func(paths []*apiutil.Path, _ time.Time) {
		now := time.Now()
		for _, p := range paths {
			c := Change{Prefix: p.Nlri.String(), Withdrawn: p.Withdrawal, At: now}
			if p.PeerAddress.IsValid() {
				c.Neighbor = p.PeerAddress.String()
			}
			for _, a := range p.Attrs {
				if cs, ok := a.(*bgp.PathAttributeCommunities); ok {
					c.Communities = slices.Clone(cs.Value)
				}
			}
			select {
			case ch <- c:
			default:
				if lost != nil {
					lost.Add(1)
				}
			}
		}
	}), opt)
	if err != nil {
		t.Fatal(err)
	}
}

// UpdatesLost is how many updates Updates could not stream because its reader fell behind.
func (r *Router) UpdatesLost() int64 { return r.updatesLost.Load() }
