// Package embedded is the agent's in-process BGP speaker: no routing daemon on the host, sessions straight from
// the agent. It is a speaker of origin only, like MetalLB's native one: it connects out to the peers of the node's
// claims, announces the node's routes and learns nothing (UPDATEs from peers are read and dropped undecoded). The
// wire format is GoBGP's packet package; GoBGP's server, with its gRPC API, protobuf and configuration packages,
// is not linked (issue 16: the agent runs on every node and must stay small).
package embedded

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/anycast-operator/anycast-operator/internal/speaker"
)

// Speaker runs one BGP session per session asked for, each on its own goroutine (peer.go). Every route leaves
// only on the sessions of its claims whose exports list it, and on a session of the other family only with the
// node's address of the route's family as next hop: the route-leak guard is applied per session when its routes
// are computed, before anything is sent.
type Speaker struct {
	log      logr.Logger
	routerID netip.Addr

	mu     sync.Mutex
	closed bool
	peers  map[string]*peer // by Session.Key
	routes []speaker.Route
	held   speaker.State // the exports and next hops in force
}

// New returns a speaker with the given router ID (usually the node's IPv4 address; an IPv6 address, as on an
// IPv6-only node, is turned into a 32-bit identifier by speaker.RouterID).
func New(routerID netip.Addr, log logr.Logger) *Speaker {
	return &Speaker{log: log, routerID: speaker.RouterID(routerID, routerID), peers: map[string]*peer{}}
}

var _ speaker.Speaker = (*Speaker)(nil)

// Apply converges on st: sessions whose settings changed are restarted, the others are left alone, and every
// session is handed the routes it should carry. It never waits on a peer, except for the second at most that a
// removed session takes to send its Cease. A session that cannot run is reported and left out; the routes are
// applied whatever happened to the sessions.
func (e *Speaker) Apply(ctx context.Context, st speaker.State) (rep speaker.Report) {
	e.mu.Lock()
	defer e.mu.Unlock()
	rep = speaker.Report{SessionErrors: map[string]string{}, RouteErrors: map[netip.Prefix]string{}}
	defer func() { rep.Held = e.heldState() }()
	if e.closed {
		rep.Err = errors.New("the speaker is closed")
		return rep
	}
	e.applySessions(st.Sessions, rep.SessionErrors)
	e.routes = e.routes[:0]
	for _, r := range st.Routes {
		if !r.Prefix.IsValid() || r.Prefix != r.Prefix.Masked() {
			rep.RouteErrors[r.Prefix] = "not a network prefix"
			continue
		}
		e.routes = append(e.routes, r)
	}
	st.Routes = e.routes
	e.held.Exports, e.held.NextHop4, e.held.NextHop6 = maps.Clone(st.Exports), st.NextHop4, st.NextHop6
	for _, p := range e.peers {
		p.setRIB(ribFor(st, p.s))
	}
	return rep
}

// ribFor is what one session carries of a state.
func ribFor(st speaker.State, s speaker.Session) map[netip.Prefix]out {
	rib := map[netip.Prefix]out{}
	exports := make(map[netip.Prefix]bool, len(st.Exports[s.Claim]))
	for _, p := range st.Exports[s.Claim] {
		exports[p] = true
	}
	for _, r := range st.Routes {
		if !slices.Contains(r.Claims, s.Claim) || !exports[r.Prefix] {
			continue
		}
		o := out{route: r}
		if v6 := r.Prefix.Addr().Is6(); v6 != s.PeerAddress.Is6() {
			// Never an IPv4-mapped next hop: the node's own address of the route's family, or nothing.
			if o.nextHop = st.CrossFamilyNextHop(v6); !o.nextHop.IsValid() {
				continue
			}
		}
		rib[r.Prefix] = o
	}
	return rib
}

// heldState is what the speaker runs, in the State's order (sessions by key, routes by prefix).
func (e *Speaker) heldState() speaker.State {
	h := e.held
	h.Sessions = make([]speaker.Session, 0, len(e.peers))
	for _, k := range slices.Sorted(maps.Keys(e.peers)) {
		h.Sessions = append(h.Sessions, e.peers[k].s)
	}
	h.Routes = slices.SortedFunc(slices.Values(e.routes), func(a, b speaker.Route) int { return speaker.ComparePrefixes(a.Prefix, b.Prefix) })
	return h
}

// applySessions stops the sessions no longer wanted or whose settings changed, and starts the missing ones. A
// session whose settings did not change is never touched. Errors go to errs by session key.
func (e *Speaker) applySessions(desired []speaker.Session, errs map[string]string) {
	want := make(map[string]speaker.Session, len(desired))
	for _, s := range desired {
		want[s.Key()] = s
	}
	var stopping sync.WaitGroup
	for key, p := range e.peers {
		s, ok := want[key]
		if ok && s == p.s {
			continue
		}
		sub := uint8(bgp.BGP_ERROR_SUB_PEER_DECONFIGURED)
		if ok {
			sub = bgp.BGP_ERROR_SUB_OTHER_CONFIGURATION_CHANGE
		}
		stopping.Go(func() { p.stop(sub) })
		delete(e.peers, key)
		e.log.Info("Removed BGP session", "claim", p.s.Claim, "peer", p.s.PeerAddress)
	}
	stopping.Wait()
	byAddr := map[netip.Addr]string{}
	for key, p := range e.peers {
		byAddr[p.s.PeerAddress] = key
	}
	for _, key := range slices.Sorted(maps.Keys(want)) {
		s := want[key]
		if _, ok := e.peers[key]; ok {
			continue
		}
		if other, ok := byAddr[s.PeerAddress]; ok {
			errs[key] = fmt.Sprintf("the session %s already peers with %s; the speaker runs one session per peer address", other, s.PeerAddress)
			continue
		}
		if err := check(s); err != nil {
			errs[key] = err.Error()
			continue
		}
		e.peers[key] = startPeer(s, e.routerID, nil, e.log)
		byAddr[s.PeerAddress] = key
		e.log.Info("Added BGP session", "claim", s.Claim, "peer", s.PeerAddress, "peerASN", s.PeerASN, "localASN", s.LocalASN)
	}
}

// check refuses a session no BGP speaker could run; the message never quotes the password.
func check(s speaker.Session) error {
	var problems []string
	if !s.PeerAddress.IsValid() || s.PeerAddress.IsUnspecified() {
		problems = append(problems, "no peer address")
	}
	if s.PeerASN == 0 || s.LocalASN == 0 {
		problems = append(problems, "AS number 0")
	}
	if s.LocalAddress.IsValid() && s.LocalAddress.Is4() != s.PeerAddress.Is4() {
		problems = append(problems, fmt.Sprintf("local address %s is not of the peer's family", s.LocalAddress))
	}
	if s.HoldTime > 0 && s.HoldTime.Seconds() < 3 {
		problems = append(problems, "hold time under 3 s (RFC 4271: 0 or at least 3 s)")
	}
	if err := speaker.CheckPassword(s.Password); err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// Sessions reports every configured session's state.
func (e *Speaker) Sessions(context.Context) ([]speaker.SessionStatus, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]speaker.SessionStatus, 0, len(e.peers))
	for _, k := range slices.Sorted(maps.Keys(e.peers)) {
		out = append(out, e.peers[k].status())
	}
	return out, nil
}

// Close ends every session with a Cease (administrative shutdown), so that peers drop the routes at once.
func (e *Speaker) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	var stopping sync.WaitGroup
	for _, p := range e.peers {
		stopping.Go(func() { p.stop(bgp.BGP_ERROR_SUB_ADMINISTRATIVE_SHUTDOWN) })
	}
	stopping.Wait()
	clear(e.peers)
	return nil
}
