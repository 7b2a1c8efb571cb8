package bird_test

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/netlab"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bird/birdtest"
)

// TestBIRDHostileInputOnALink drives a real BIRD with claim names and passwords chosen to break its configuration
// (quotes, line breaks, braces, semicolons, comment markers, backslashes, 253-character names, names equal once
// made symbols): BIRD runs exactly the intended peers, each session with a password it can read is established
// with it, the others are refused with a reason and no configuration is written for them, and adding or removing a
// session leaves the others up. Across the veth pair, IPv6 prefixes leave IPv4 sessions with the node's IPv6
// address as next hop.
func TestBIRDHostileInputOnALink(t *testing.T) {
	lab := netlab.New(t, 1)
	n4, n6 := lab.Nodes4[0], lab.Nodes6[0]
	long := strings.Repeat("edge.", 50) + "end" // 253 characters, a valid object name
	const md5 = `p{};#/* "x`                    // a quote: refused
	const md5OK = `p{}; #/*\x` + "\t"
	addrs := []netip.Addr{lab.Router4, lab.AddRouterAddress(t, false), lab.AddRouterAddress(t, false), lab.AddRouterAddress(t, false), lab.AddRouterAddress(t, false)}
	routers := map[string]*bgptest.Router{}
	for i, claim := range []string{"a-b", "a.b", long, "quote", "newline"} {
		pw := ""
		if i == 0 {
			pw = md5OK
		}
		routers[claim] = bgptest.StartWith(t, bgptest.Options{Addresses: []netip.Addr{addrs[i]}, ASN: 65001, Netns: lab.NetnsPath,
			Neighbors: map[netip.Addr]uint32{n4: 64512}, Password: pw})
	}
	routers["v6"] = bgptest.StartWith(t, bgptest.Options{Addresses: []netip.Addr{lab.Router6}, ASN: 65001, Netns: lab.NetnsPath,
		Neighbors: map[netip.Addr]uint32{n6: 64512}})
	s := birdtest.Start(t, n4)
	ctx := context.Background()
	p4, p6 := netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8:100::/48")
	session := func(claim, password string) speaker.Session {
		r := routers[claim]
		local := n4
		if r.Address.Is6() {
			local = n6
		}
		return speaker.Session{Claim: claim, PeerAddress: r.Address, PeerASN: 65001, LocalASN: 64512, Port: uint16(r.Port), LocalAddress: local,
			Password: password, HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second, ConnectRetry: time.Second,
			GracefulRestart: 30 * time.Second, BFD: speaker.BFD{Enabled: true, MinRx: 300 * time.Millisecond}}
	}
	good := []speaker.Session{session("a-b", md5OK), session("a.b", ""), session(long, ""), session("v6", "")}
	bad := []speaker.Session{session("quote", md5), session("newline", "line\nprotocol bgp evil {"), session("quote", strings.Repeat("x", 81))}
	bad[2].Claim = "toolong"
	claims := []string{"a-b", "a.b", long, "v6", "quote", "newline", "toolong"}
	state := func(sessions ...speaker.Session) speaker.State {
		st := speaker.State{Sessions: sessions, Exports: map[string][]netip.Prefix{}, NextHop4: n4, NextHop6: n6}
		for _, c := range claims {
			st.Exports[c] = []netip.Prefix{p4, p6}
		}
		for _, p := range []netip.Prefix{p4, p6} {
			r, err := speaker.RouteFor(p, claims, nil, false)
			if err != nil {
				t.Fatal(err)
			}
			st.Routes = append(st.Routes, r)
		}
		return st
	}
	rep := s.Apply(ctx, state(append(slices.Clone(good), bad...)...))
	if rep.Err != nil || len(rep.SessionErrors) != 3 {
		t.Fatalf("Apply: want the three bad sessions refused, got %v", rep.Error())
	}
	for _, b := range bad {
		msg := rep.SessionErrors[b.Key()]
		if msg == "" || strings.Contains(msg, b.Password) {
			t.Errorf("session %s: refusal %q (it must say why, never quote the password)", b.Key(), msg)
		}
	}
	if len(rep.Held.Sessions) != len(good) || len(rep.Held.Routes) != 2 {
		t.Errorf("held %d sessions and %d routes, want %d and 2", len(rep.Held.Sessions), len(rep.Held.Routes), len(good))
	}
	// BIRD runs exactly the intended peers.
	out, err := exec.Command("birdc", "-s", s.Socket, "show", "protocols").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	var protocols []string
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[1] == "BGP" {
			protocols = append(protocols, f[0])
			if len(f[0]) > 64 {
				t.Errorf("protocol name %s is longer than BIRD's 64 characters", f[0])
			}
		}
	}
	if len(protocols) != len(good) {
		t.Errorf("BIRD runs BGP protocols %v, want %d", protocols, len(good))
	}
	peers, _ := os.ReadFile(filepath.Join(s.Dir, "peers.conf"))
	if strings.Contains(string(peers), "evil") || strings.Count(string(peers), `"`) != 2 {
		t.Errorf("peers.conf holds more than the one password it can hold:\n%s", peers)
	}
	// Each good session is established (the MD5 one with its password) and carries both prefixes with the node's
	// own next hops.
	for _, g := range good {
		r := routers[g.Claim]
		from := g.LocalAddress
		r.WaitFor(t, p4, g.Claim+": IPv4 prefix via "+n4.String(), func(p []bgptest.Path) bool {
			return len(p) == 1 && p[0].Neighbor == from.String() && p[0].NextHop == n4.String()
		})
		r.WaitFor(t, p6, g.Claim+": IPv6 prefix via "+n6.String(), func(p []bgptest.Path) bool {
			return len(p) == 1 && p[0].Neighbor == from.String() && p[0].NextHop == n6.String()
		})
	}
	for _, claim := range []string{"quote", "newline"} {
		if n := routers[claim].Established(n4); n != 0 {
			t.Errorf("a refused session reached router %s", claim)
		}
	}
	before := map[string]int{}
	for _, g := range good {
		before[g.Claim] = routers[g.Claim].Established(g.LocalAddress)
	}
	// Removing one session and changing the routes leaves the others up.
	st := state(good[0], good[2], good[3])
	st.Routes = st.Routes[:1]
	if rep := s.Apply(ctx, st); !rep.OK() {
		t.Fatal(rep.Error())
	}
	routers["a-b"].WaitFor(t, p6, "IPv6 prefix withdrawn", func(p []bgptest.Path) bool { return len(p) == 0 })
	routers["a.b"].WaitFor(t, p4, "the removed session's routes gone", func(p []bgptest.Path) bool { return len(p) == 0 })
	if rep := s.Apply(ctx, state(good...)); !rep.OK() {
		t.Fatal(rep.Error())
	}
	routers["a.b"].WaitFor(t, p4, "the session added back", func(p []bgptest.Path) bool { return len(p) == 1 })
	for _, g := range []speaker.Session{good[0], good[2], good[3]} {
		r := routers[g.Claim]
		if got := r.Established(g.LocalAddress); got != before[g.Claim] || r.Downs(g.LocalAddress) != 0 {
			t.Errorf("session %s: established %d times (before %d), down %d times, while other sessions came and went", g.Claim, got, before[g.Claim], r.Downs(g.LocalAddress))
		}
	}
	err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		st, err := s.Sessions(ctx)
		up := 0
		for _, x := range st {
			if x.State == anycastv1.SessionEstablished {
				up++
			}
		}
		return err == nil && up == len(good), nil
	})
	if err != nil {
		st, err := s.Sessions(ctx)
		t.Errorf("sessions not all reported Established: %+v %v", st, err)
	}
}
