// Package bird announces through a BIRD 2 daemon the host already runs: the agent writes three include files
// (export filters, static routes with their attributes, BGP peers) and asks BIRD to reload them with
// `birdc configure`. The user's bird.conf includes them, in this order:
//
//	include "/etc/bird/anycast/filters.conf";
//	include "/etc/bird/anycast/routes.conf";
//	include "/etc/bird/anycast/peers.conf";
package bird

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/go-logr/logr"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
)

// Files are the include files the speaker owns, in the order bird.conf must include them.
var Files = []string{"filters.conf", "routes.conf", "peers.conf"}

// Speaker drives a running BIRD 2.
type Speaker struct {
	// Dir holds the include files.
	Dir string
	// Socket is BIRD's control socket.
	Socket string
	// Birdc is the birdc binary.
	Birdc string
	// ListenPort is where BIRD listens for the sessions' incoming connections; 0: 179. (Two BIRDs on one host, as
	// in tests, need different ports.)
	ListenPort uint16
	Log        logr.Logger

	mu      sync.Mutex
	applied map[string][]byte // file → content BIRD accepted last (nil: unknown)
	held    speaker.State     // the state those files render
	names   map[string]string // protocol name → session key, for Sessions
	claims  map[string]speaker.Session
}

var _ speaker.Speaker = (*Speaker)(nil)

// Apply renders the state, and when it differs from what BIRD runs, writes it and reloads BIRD. A session BIRD could
// not read as intended (a password its lexer would cut short) is left out and reported. If BIRD refuses the new
// configuration, the sessions it runs already are kept, the new and changed ones are tried one at a time, and those
// BIRD refuses are reported and left out; the routes are applied whatever happened to the sessions. If BIRD refuses
// even that, the last good files are put back (BIRD keeps running them) and the error says why.
func (s *Speaker) Apply(ctx context.Context, st speaker.State) speaker.Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	rep := speaker.Report{SessionErrors: map[string]string{}, RouteErrors: map[netip.Prefix]string{}}
	var valid []speaker.Session
	seen := map[string]string{}
	for _, x := range st.Sessions {
		name := protocolName(x)
		if err := checkSession(x); err != nil {
			rep.SessionErrors[x.Key()] = err.Error()
			continue
		}
		if other, dup := seen[name]; dup {
			rep.SessionErrors[x.Key()] = fmt.Sprintf("its BIRD protocol name %s is taken by session %s", name, other)
			continue
		}
		seen[name] = x.Key()
		valid = append(valid, x)
	}
	held, err := s.configureWith(ctx, st, valid, rep.SessionErrors)
	rep.Held, rep.Err = held, err
	return rep
}

// configureWith makes BIRD run st with the given sessions, or as many of them as it accepts; it returns the state in
// force afterwards.
func (s *Speaker) configureWith(ctx context.Context, st speaker.State, sessions []speaker.Session, errs map[string]string) (speaker.State, error) {
	want := withSessions(st, sessions)
	if s.applied != nil && want.Equal(s.held) {
		return s.held, nil
	}
	msg, err := s.try(ctx, want)
	if err == nil {
		return s.held, nil
	}
	// Keep what BIRD runs now and add the rest one session at a time.
	var kept, added []speaker.Session
	for _, x := range sessions {
		if slices.Contains(s.held.Sessions, x) {
			kept = append(kept, x)
		} else {
			added = append(added, x)
		}
	}
	if len(added) == 0 {
		return s.held, fmt.Errorf("BIRD refused the new configuration (the last good one stays): %s", msg)
	}
	if base := withSessions(st, kept); !base.Equal(s.held) {
		if msg, err := s.try(ctx, base); err != nil {
			return s.held, fmt.Errorf("BIRD refused the new configuration (the last good one stays): %s", msg)
		}
	}
	for _, x := range added {
		if msg, err := s.try(ctx, withSessions(st, append(slices.Clone(s.held.Sessions), x))); err != nil {
			errs[x.Key()] = "BIRD refused the session: " + msg
		}
	}
	return s.held, nil
}

// withSessions is st with its sessions replaced, in a fixed order.
func withSessions(st speaker.State, sessions []speaker.Session) speaker.State {
	st.Sessions = slices.Clone(sessions)
	slices.SortFunc(st.Sessions, func(a, b speaker.Session) int { return strings.Compare(a.Key(), b.Key()) })
	return st
}

// try writes the files of st and reloads BIRD. On success st is what BIRD runs; on a refusal the previous files are
// put back and BIRD's message returned.
func (s *Speaker) try(ctx context.Context, st speaker.State) (string, error) {
	files, names := render(st, s.ListenPort)
	previous := s.applied
	if previous == nil {
		previous = map[string][]byte{} // unknown: BIRD started with empty files or ours from an earlier run
	}
	if err := s.write(files, s.applied); err != nil {
		return err.Error(), err
	}
	if err := s.configure(ctx); err != nil {
		_ = s.write(previous, files)
		return err.Error(), err
	}
	s.applied, s.names, s.held = files, names, st
	s.claims = map[string]speaker.Session{}
	for _, x := range st.Sessions {
		s.claims[x.Key()] = x
	}
	return "", nil
}

// checkSession refuses what BIRD's lexer would read otherwise than meant. Its strings have no escape sequences: a
// string ends at the first double quote and may not span lines, so a password holding either would end early and
// let the rest of it be read as configuration. Everything else it is given is typed (addresses, numbers) or a
// symbol built here.
func checkSession(x speaker.Session) error {
	if err := speaker.CheckPassword(x.Password); err != nil {
		return err
	}
	if strings.ContainsRune(x.Password, '"') {
		return errors.New(`the MD5 password holds a double quote ("), which BIRD cannot read inside a string; change the Secret`)
	}
	return nil
}

// write replaces the include files that differ from current (nil: all of them) atomically: each is written beside
// its final name and renamed over it.
func (s *Speaker) write(files, current map[string][]byte) error {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return err
	}
	for _, f := range Files {
		if current != nil && bytes.Equal(files[f], current[f]) {
			continue
		}
		tmp, err := os.CreateTemp(s.Dir, "."+f+".*")
		if err != nil {
			return err
		}
		_, werr := tmp.Write(files[f])
		cerr := tmp.Close()
		if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), 0o600)); err != nil { // peers.conf holds MD5 passwords
			_ = os.Remove(tmp.Name())
			return err
		}
		if err := os.Rename(tmp.Name(), filepath.Join(s.Dir, f)); err != nil {
			_ = os.Remove(tmp.Name())
			return err
		}
	}
	return nil
}

// configure asks BIRD to reload and checks its answer.
func (s *Speaker) configure(ctx context.Context) error {
	out, err := s.birdc(ctx, "configure")
	if err != nil {
		return err
	}
	if !strings.Contains(out, "Reconfigured") && !strings.Contains(out, "Reconfiguration in progress") {
		return fmt.Errorf("birdc configure: %s", strings.TrimSpace(out))
	}
	return nil
}

func (s *Speaker) birdc(ctx context.Context, args ...string) (string, error) {
	bin := s.Birdc
	if bin == "" {
		bin = "birdc"
	}
	out, err := exec.CommandContext(ctx, bin, append([]string{"-s", s.Socket}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("birdc %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// showProtocol matches a line of `birdc show protocols`: name, protocol, table, state, since, info.
var showProtocol = regexp.MustCompile(`^(\S+)\s+BGP\s+\S+\s+(\S+)\s+\S+(?:\s+\S+)?\s*(\S*)`)

// Sessions reads the state of the speaker's BGP protocols from `birdc show protocols`.
func (s *Speaker) Sessions(ctx context.Context) ([]speaker.SessionStatus, error) {
	s.mu.Lock()
	names, claims := s.names, s.claims
	s.mu.Unlock()
	if len(names) == 0 {
		return nil, nil
	}
	out, err := s.birdc(ctx, "show", "protocols")
	if err != nil {
		return nil, err
	}
	var res []speaker.SessionStatus
	for _, line := range strings.Split(out, "\n") {
		m := showProtocol.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		key, ok := names[m[1]]
		if !ok {
			continue
		}
		x := claims[key]
		state := anycastv1.SessionUnknown
		if m[2] == "up" {
			state = anycastv1.SessionEstablished
		} else {
			state = bgpState(line)
		}
		res = append(res, speaker.SessionStatus{Claim: x.Claim, PeerAddress: x.PeerAddress.String(), PeerASN: x.PeerASN,
			LocalAddress: addrString(x.LocalAddress), State: state})
	}
	sort.Slice(res, func(i, j int) bool { return res[i].Claim+res[i].PeerAddress < res[j].Claim+res[j].PeerAddress })
	return res, nil
}

// bgpState reads the BGP state BIRD shows in the info column of a protocol that is not up.
func bgpState(line string) anycastv1.SessionState {
	for _, st := range []anycastv1.SessionState{anycastv1.SessionConnect, anycastv1.SessionActive, anycastv1.SessionOpenSent,
		anycastv1.SessionOpenConfirm, anycastv1.SessionIdle} {
		if strings.Contains(line, string(st)) {
			return st
		}
	}
	return anycastv1.SessionIdle
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// Close withdraws everything: empty include files, reloaded.
func (s *Speaker) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	empty := map[string][]byte{}
	if err := s.write(empty, nil); err != nil {
		return err
	}
	s.applied, s.held, s.names = empty, speaker.State{}, nil
	return s.configure(context.Background())
}

// render turns the state into the three files, and names each BGP protocol.
func render(st speaker.State, listenPort uint16) (map[string][]byte, map[string]string) {
	var filters, routes, peers bytes.Buffer
	claims := slices.Sorted(maps.Keys(st.Exports))
	// MED of each route: BIRD sends MED to an eBGP peer only when the export filter sets it.
	med := map[netip.Prefix]uint32{}
	for _, r := range st.Routes {
		if r.MED != nil {
			med[r.Prefix] = *r.MED
		}
	}
	for _, c := range claims {
		// Only our own static routes, and only the prefixes the plan gives this claim: the route-leak guard.
		fmt.Fprintf(&filters, "filter %s {\n", filterName(c))
		for _, family := range []string{"4", "6"} {
			var list []string
			var meds strings.Builder
			for _, p := range st.Exports[c] {
				if p.Addr().Is4() != (family == "4") {
					continue
				}
				list = append(list, p.String())
				if v, ok := med[p]; ok {
					fmt.Fprintf(&meds, "    if net = %s then bgp_med = %d;\n", p, v)
				}
			}
			if len(list) > 0 {
				fmt.Fprintf(&filters, "  if proto = \"anycast_routes%s\" && net ~ [ %s ] then {\n%s    accept;\n  }\n", family, strings.Join(list, ", "), meds.String())
			}
		}
		filters.WriteString("  reject;\n}\n")
	}
	asnOf := map[string]uint32{}
	for _, x := range st.Sessions {
		asnOf[x.Claim] = x.LocalASN
	}
	for _, family := range []string{"ipv4", "ipv6"} {
		suffix := map[string]string{"ipv4": "4", "ipv6": "6"}[family]
		fmt.Fprintf(&routes, "protocol static anycast_routes%s {\n  %s;\n", suffix, family)
		for _, r := range st.Routes {
			if r.Prefix.Addr().Is4() != (family == "ipv4") {
				continue
			}
			fmt.Fprintf(&routes, "  route %s blackhole {%s };\n", r.Prefix, attributes(r, asnOf))
		}
		routes.WriteString("}\n")
	}
	names := map[string]string{}
	if slices.ContainsFunc(st.Sessions, func(x speaker.Session) bool { return x.BFD.Enabled }) {
		// BGP asks a BFD protocol for its sessions; this one is the operator's, beside any of bird.conf's own.
		peers.WriteString("protocol bfd anycast_bfd {\n}\n")
	}
	for _, x := range st.Sessions {
		name := protocolName(x)
		names[name] = x.Key()
		fmt.Fprintf(&peers, "protocol bgp %s {\n", name)
		local := "  local"
		if x.LocalAddress.IsValid() {
			local += " " + x.LocalAddress.String()
		}
		if listenPort != 0 {
			local += fmt.Sprintf(" port %d", listenPort)
		}
		fmt.Fprintf(&peers, "%s as %d;\n", local, x.LocalASN)
		port := x.Port
		if port == 0 {
			port = 179
		}
		fmt.Fprintf(&peers, "  neighbor %s port %d as %d;\n", x.PeerAddress, port, x.PeerASN)
		if x.Password != "" {
			fmt.Fprintf(&peers, "  password \"%s\";\n", x.Password) // checkSession: no quote, no line break
		}
		fmt.Fprintf(&peers, "  hold time %d; keepalive time %d; connect retry time %d;\n",
			int(x.HoldTime.Seconds()), int(x.KeepaliveTime.Seconds()), max(int(x.ConnectRetry.Seconds()), 1))
		if x.EBGPMultihop > 0 {
			fmt.Fprintf(&peers, "  multihop %d;\n", x.EBGPMultihop)
		}
		if x.GracefulRestart > 0 {
			fmt.Fprintf(&peers, "  graceful restart on; graceful restart time %d;\n", int(x.GracefulRestart.Seconds()))
		}
		if b := x.BFD; b.Enabled {
			var opts []string
			if b.MinRx > 0 {
				opts = append(opts, fmt.Sprintf("min rx interval %d ms;", b.MinRx.Milliseconds()))
			}
			if b.MinTx > 0 {
				opts = append(opts, fmt.Sprintf("min tx interval %d ms;", b.MinTx.Milliseconds()))
			}
			if b.Multiplier > 0 {
				opts = append(opts, fmt.Sprintf("multiplier %d;", b.Multiplier))
			}
			fmt.Fprintf(&peers, "  bfd { %s };\n", strings.Join(opts, " "))
		}
		exportFilter := "none"
		if _, ok := st.Exports[x.Claim]; ok {
			exportFilter = "filter " + filterName(x.Claim)
		}
		// The session's own family, and the other one when the node has an address of it to give as next hop. The
		// channels depend on the session and the node only, so adding a prefix never renegotiates a session.
		own, other := "ipv4", "ipv6"
		if x.PeerAddress.Is6() {
			own, other = other, own
		}
		fmt.Fprintf(&peers, "  %s { import none; export %s; };\n", own, exportFilter)
		if nh := st.CrossFamilyNextHop(other == "ipv6"); nh.IsValid() {
			fmt.Fprintf(&peers, "  %s { next hop address %s; import none; export %s; };\n", other, nh, exportFilter)
		}
		peers.WriteString("}\n")
	}
	return map[string][]byte{"filters.conf": filters.Bytes(), "routes.conf": routes.Bytes(), "peers.conf": peers.Bytes()}, names
}

// attributes renders a route's BGP attributes as BIRD filter commands.
func attributes(r speaker.Route, asnOf map[string]uint32) string {
	var b strings.Builder // MED is set by the export filter (see render)
	if r.LocalPref != nil {
		fmt.Fprintf(&b, " bgp_local_pref = %d;", *r.LocalPref)
	}
	for _, c := range r.Communities {
		fmt.Fprintf(&b, " bgp_community.add((%d,%d));", c>>16, c&0xFFFF)
	}
	for _, c := range r.LargeCommunities {
		fmt.Fprintf(&b, " bgp_large_community.add((%d,%d,%d));", c[0], c[1], c[2])
	}
	if len(r.Claims) > 0 {
		for range r.Prepend {
			fmt.Fprintf(&b, " bgp_path.prepend(%d);", asnOf[r.Claims[0]])
		}
	}
	return b.String()
}

// BIRD symbols are at most 64 characters (longer ones are refused) of letters, digits and '_'. Names are built from
// the claim (readable, cut short) and a hash of what they stand for (unique), so that each session's protocol keeps
// its name whatever other sessions come and go: BIRD then leaves it running across reconfigurations.
const symbolClaimChars = 24

func filterName(claim string) string {
	return "anycast_export_" + symbol(claim) + "_" + hash(claim, 8)
}

// protocolName names a session's BGP protocol after its claim and peer (its Key).
func protocolName(x speaker.Session) string {
	return "anycast_" + symbol(x.Claim) + "_" + hash(x.Key(), 12)
}

func symbol(s string) string {
	s = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, s)
	if len(s) > symbolClaimChars {
		s = s[:symbolClaimChars]
	}
	return s
}

func hash(s string, n int) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:n]
}
