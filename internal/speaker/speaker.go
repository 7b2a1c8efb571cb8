// Package speaker is what the node agent announces through: a declarative desired state (sessions and routes) that
// a backend (the embedded GoBGP speaker, BIRD 2) makes true. The translation of the API's attributes and of
// Deprefer into BGP values lives here, once, for every backend.
package speaker

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// Session is one BGP neighbor of one claim. It is a value: two sessions with the same settings are ==, and a speaker
// touches a running session only when one of its own settings changed.
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
	// BFD runs Bidirectional Forwarding Detection on the session (where the speaker can) when Enabled.
	BFD BFD
}

// BFD settings; zero durations and multiplier leave the speaker's defaults.
type BFD struct {
	Enabled      bool
	MinRx, MinTx time.Duration
	Multiplier   int
}

// BFDOf reads a claim's BFD settings; disabled when the claim sets none.
func BFDOf(b *anycastv1.BFD) BFD {
	if b == nil {
		return BFD{}
	}
	out := BFD{Enabled: true}
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
func (s Session) Key() string { return SessionKey(s.Claim, s.PeerAddress) }

// SessionKey is the Key of the session of a claim to a peer.
func SessionKey(claim string, peer netip.Addr) string { return claim + "/" + peer.String() }

// Canonical returns the address in the one form every comparison uses: an IPv4-mapped IPv6 address is the IPv4
// address, and no zone.
func Canonical(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }

// ParsePeer parses an address as written in a claim or reported by a provider or a speaker, canonicalised.
func ParsePeer(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, err
	}
	return Canonical(a), nil
}

// MaxPasswordLength is the longest TCP MD5 key Linux accepts (TCP_MD5SIG_MAXKEYLEN).
const MaxPasswordLength = 80

// CheckPassword refuses a password no speaker can use: longer than Linux's TCP MD5 key, or holding a NUL byte or a
// line break (which no configuration file can carry, and which are never meant). The message never quotes it.
func CheckPassword(pw string) error {
	switch {
	case len(pw) > MaxPasswordLength:
		return fmt.Errorf("the MD5 password is %d bytes long; Linux accepts at most %d", len(pw), MaxPasswordLength)
	case strings.ContainsAny(pw, "\x00\r\n"):
		return fmt.Errorf("the MD5 password holds a NUL byte or a line break; remove it from the Secret")
	}
	return nil
}

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
	// Deprefered: the attributes include the Deprefer additions (what the status reports).
	Deprefered bool
}

// Equal reports whether two routes announce the same thing.
func (r Route) Equal(o Route) bool {
	return r.Prefix == o.Prefix && slices.Equal(r.Claims, o.Claims) && slices.Equal(r.Communities, o.Communities) &&
		slices.Equal(r.LargeCommunities, o.LargeCommunities) && equalPtr(r.MED, o.MED) && equalPtr(r.LocalPref, o.LocalPref) &&
		r.Prepend == o.Prepend && r.Deprefered == o.Deprefered
}

func equalPtr(a, b *uint32) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

// State is everything a speaker announces.
type State struct {
	Sessions []Session
	// Exports lists, per claim, every prefix its sessions may ever carry on this node (the plan, not the moment's
	// decisions): the speaker's route-leak guard. It changes with the plan only, so announcing and withdrawing never
	// touch it.
	Exports map[string][]netip.Prefix
	// Routes are announced now; a route outside its claims' Exports is never sent.
	Routes []Route
	// NextHop4 and NextHop6 are the node's own addresses. A route goes out on a session of its own family with the
	// session's local address as next hop; on a session of the other family with the node's address of the
	// route's family, and not at all when the node has none (never an IPv4-mapped IPv6 next hop).
	NextHop4, NextHop6 netip.Addr
}

// CrossFamilyNextHop is the next hop of a route of family v6 (true: IPv6) on a session of the other family: the
// node's address of the route's family, invalid when the node has none (then the route is not sent on the session).
func (st State) CrossFamilyNextHop(v6 bool) netip.Addr {
	if v6 {
		return st.NextHop6
	}
	return st.NextHop4
}

// Carries reports whether a session may carry a prefix's family at all (its export list aside): always for the
// session's own family, for the other one only with a next hop of that family.
func (st State) Carries(s Session, prefix netip.Prefix) bool {
	v6 := prefix.Addr().Is6()
	return s.PeerAddress.Is6() == v6 || st.CrossFamilyNextHop(v6).IsValid()
}

// Equal reports whether two states are the same.
func (st State) Equal(o State) bool {
	if !slices.Equal(st.Sessions, o.Sessions) || !slices.EqualFunc(st.Routes, o.Routes, Route.Equal) ||
		st.NextHop4 != o.NextHop4 || st.NextHop6 != o.NextHop6 || len(st.Exports) != len(o.Exports) {
		return false
	}
	for c, l := range st.Exports {
		if ol, ok := o.Exports[c]; !ok || !slices.Equal(l, ol) {
			return false
		}
	}
	return true
}

// Report is what a speaker holds after Apply: what its peers were told, which may fall short of what was asked.
type Report struct {
	// Held is the state in force: the sessions configured and the routes announced.
	Held State
	// SessionErrors says, by session Key, why a session asked for is not configured as asked.
	SessionErrors map[string]string
	// RouteErrors says why a route is not announced, or not withdrawn, as asked.
	RouteErrors map[netip.Prefix]string
	// Err is an error of the whole configuration (BIRD refused it), or nil.
	Err error
}

// OK reports whether everything asked for is in force.
func (r Report) OK() bool {
	return r.Err == nil && len(r.SessionErrors) == 0 && len(r.RouteErrors) == 0
}

// Error sums the report's errors up in one line, nil when OK. It names peers and prefixes, never passwords.
func (r Report) Error() error {
	if r.OK() {
		return nil
	}
	var parts []string
	if r.Err != nil {
		parts = append(parts, r.Err.Error())
	}
	for _, k := range slices.Sorted(maps.Keys(r.SessionErrors)) {
		parts = append(parts, "session "+k+": "+r.SessionErrors[k])
	}
	for _, p := range slices.SortedFunc(maps.Keys(r.RouteErrors), ComparePrefixes) {
		parts = append(parts, "route "+p.String()+": "+r.RouteErrors[p])
	}
	return errors.New(strings.Join(parts, "; "))
}

// ComparePrefixes orders prefixes by address, then length.
func ComparePrefixes(x, y netip.Prefix) int {
	if c := x.Addr().Compare(y.Addr()); c != 0 {
		return c
	}
	return x.Bits() - y.Bits()
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
	// Apply converges on the state as far as it can: one session it cannot configure keeps neither the others nor
	// the routes from being applied. It is idempotent and cheap when nothing changed. The context bounds it.
	Apply(ctx context.Context, s State) Report
	// Sessions reports the state of every session.
	Sessions(ctx context.Context) ([]SessionStatus, error)
	// Close withdraws everything and ends the sessions.
	Close() error
}

// RouterID is the BGP identifier of a node: the router ID given, else its IPv4 address, else (an IPv6-only node)
// 32 bits derived from its IPv6 address (RFC 6286 asks only for a non-zero value unique in the AS; a hash of the
// node's own address is as unique as the address).
func RouterID(given netip.Addr, addrs ...netip.Addr) netip.Addr {
	if given.Is4() && !given.IsUnspecified() {
		return given
	}
	for _, a := range addrs {
		if a = Canonical(a); a.Is4() && !a.IsUnspecified() {
			return a
		}
	}
	for _, a := range addrs {
		if a.IsValid() {
			h := fnv.New32a()
			_, _ = h.Write(a.AsSlice())
			v := h.Sum32()
			if v == 0 || v == math.MaxUint32 {
				v = 1
			}
			return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		}
	}
	return netip.AddrFrom4([4]byte{127, 0, 0, 1})
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
	r := Route{Prefix: prefix, Claims: slices.Clone(claims), Deprefered: deprefer}
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

// Apply holds everything at once: the manager carries the decision to the BGP stack.
func (Delegated) Apply(_ context.Context, s State) Report { return Report{Held: s} }

// Sessions reports none: the BGP stack owns the sessions.
func (Delegated) Sessions(context.Context) ([]SessionStatus, error) { return nil, nil }

// Close does nothing.
func (Delegated) Close() error { return nil }
