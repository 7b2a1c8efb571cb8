// Package speaker is what the node agent announces through: a declarative desired state (sessions and routes) that
// a backend (the embedded GoBGP speaker, BIRD 2) makes true. The translation of the API's attributes and of
// Deprefer into BGP values lives here, once, for every backend.
package speaker

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// Session is one BGP neighbor of one claim.
type Session struct {
	Claim        string
	PeerAddress  netip.Addr
	PeerASN      uint32
	LocalASN     uint32
	Port         uint16 // 0: 179
	LocalAddress netip.Addr
	// Password is the TCP MD5 password, read from the claim's Secret. It is never logged.
	Password        string
	HoldTime        time.Duration
	KeepaliveTime   time.Duration
	ConnectRetry    time.Duration
	EBGPMultihop    uint8 // 0: directly connected
	GracefulRestart time.Duration
	// BFD, when set, runs Bidirectional Forwarding Detection on the session (where the speaker can).
	BFD *BFD
}

// BFD settings; zero values leave the speaker's defaults.
type BFD struct {
	MinRx, MinTx time.Duration
	Multiplier   int
}

// BFDOf reads a claim's BFD settings; nil when the claim sets none.
func BFDOf(b *anycastv1.BFD) *BFD {
	if b == nil {
		return nil
	}
	out := &BFD{}
	if b.MinRx != nil {
		out.MinRx = b.MinRx.Duration
	}
	if b.MinTx != nil {
		out.MinTx = b.MinTx.Duration
	}
	if b.Multiplier != nil {
		out.Multiplier = int(*b.Multiplier)
	}
	return out
}

// Key identifies a session: one per claim and peer address.
func (s Session) Key() string { return s.Claim + "/" + s.PeerAddress.String() }

// Route is one prefix as the node announces it now.
type Route struct {
	Prefix netip.Prefix
	// Claims whose sessions carry the route; no other session ever sees it.
	Claims           []string
	Communities      []uint32
	LargeCommunities [][3]uint32
	MED              *uint32
	LocalPref        *uint32
	Prepend          int
}

// State is everything a speaker announces.
type State struct {
	Sessions []Session
	// Exports lists, per claim, every prefix its sessions may ever carry on this node (the plan, not the moment's
	// decisions): the speaker's route-leak guard. It changes with the plan only, so announcing and withdrawing never
	// touch it.
	Exports map[string][]netip.Prefix
	// Routes are announced now; a route outside its claims' Exports is never sent.
	Routes []Route
}

// SessionStatus is a session as the speaker sees it.
type SessionStatus struct {
	Claim        string
	PeerAddress  string
	PeerASN      uint32
	LocalAddress string
	State        anycastv1.SessionState
}

// Speaker makes a desired State true.
type Speaker interface {
	// Apply converges on the state; it is idempotent and cheap when nothing changed.
	Apply(ctx context.Context, s State) error
	// Sessions reports the state of every session.
	Sessions(ctx context.Context) ([]SessionStatus, error)
	// Close withdraws everything and ends the sessions.
	Close() error
}

// Deprefer makes a route less preferred without withdrawing it (onUnhealthy: Deprefer, minAnnounceDuration,
// drains): AS path prepended 3 more times, MED + 1000, and the GRACEFUL_SHUTDOWN community (RFC 8326), which
// well-behaved peers turn into LOCAL_PREF 0.
const (
	DepreferPrepend  = 3
	DepreferMED      = 1000
	GracefulShutdown = uint32(0xFFFF0000) // 65535:0
)

// RouteFor builds the route of one prefix from its group's attributes, deprefered or not.
func RouteFor(prefix netip.Prefix, claims []string, a *anycastv1.BGPAttributes, deprefer bool) (Route, error) {
	r := Route{Prefix: prefix, Claims: slices.Clone(claims)}
	if a != nil {
		for _, c := range a.Communities {
			v, err := ParseCommunity(string(c))
			if err != nil {
				return Route{}, err
			}
			r.Communities = append(r.Communities, v)
		}
		for _, c := range a.LargeCommunities {
			v, err := parseLargeCommunity(string(c))
			if err != nil {
				return Route{}, err
			}
			r.LargeCommunities = append(r.LargeCommunities, v)
		}
		if a.MED != nil {
			v := uint32(*a.MED)
			r.MED = &v
		}
		if a.LocalPreference != nil {
			v := uint32(*a.LocalPreference)
			r.LocalPref = &v
		}
		if a.ASPathPrepend != nil {
			r.Prepend = int(*a.ASPathPrepend)
		}
	}
	if deprefer {
		r.Prepend += DepreferPrepend
		med := uint32(0)
		if r.MED != nil {
			med = *r.MED
		}
		med = uint32(min(uint64(med)+DepreferMED, math.MaxUint32))
		r.MED = &med
		if !slices.Contains(r.Communities, GracefulShutdown) {
			r.Communities = append(r.Communities, GracefulShutdown)
		}
	}
	return r, nil
}

// wellKnown are the community names the API accepts (RFC 1997, 3765, 7611, 8326, 9494).
var wellKnown = map[string]uint32{
	"no-export":           0xFFFFFF01,
	"no-advertise":        0xFFFFFF02,
	"no-export-subconfed": 0xFFFFFF03,
	"no-peer":             0xFFFFFF04,
	"graceful-shutdown":   0xFFFF0000,
	"accept-own":          0xFFFF0001,
	"llgr-stale":          0xFFFF0006,
	"no-llgr":             0xFFFF0007,
}

// ParseCommunity parses ASN:VALUE or a well-known name. BLACKHOLE is refused here too: it never leaves a node.
func ParseCommunity(s string) (uint32, error) {
	if v, ok := wellKnown[s]; ok {
		return v, nil
	}
	hi, lo, ok := strings.Cut(s, ":")
	a, errA := strconv.ParseUint(hi, 10, 16)
	b, errB := strconv.ParseUint(lo, 10, 16)
	if !ok || errA != nil || errB != nil {
		return 0, fmt.Errorf("invalid community %q", s)
	}
	v := uint32(a)<<16 | uint32(b)
	if v == 0xFFFF029A {
		return 0, fmt.Errorf("community %q is BLACKHOLE and is never sent", s)
	}
	return v, nil
}

func parseLargeCommunity(s string) ([3]uint32, error) {
	parts := strings.Split(s, ":")
	var v [3]uint32
	if len(parts) != 3 {
		return v, fmt.Errorf("invalid large community %q", s)
	}
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return v, fmt.Errorf("invalid large community %q", s)
		}
		v[i] = uint32(n)
	}
	return v, nil
}

// Delegated is the agent's speaker when the cluster's BGP stack announces (MetalLB, Calico, Cilium): the agent
// still probes, decides and reports in its NodeAnnouncement status, and the manager turns the reports into the
// stack's objects. It announces nothing itself and has no sessions to report.
type Delegated struct{}

// Apply does nothing: the manager carries the decision to the BGP stack.
func (Delegated) Apply(context.Context, State) error { return nil }

// Sessions reports none: the BGP stack owns the sessions.
func (Delegated) Sessions(context.Context) ([]SessionStatus, error) { return nil, nil }

// Close does nothing.
func (Delegated) Close() error { return nil }
