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
	"k8s.io/utils/ptr"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bird/birdtest"
)

var (
	node   = netip.MustParseAddr("127.0.0.2")
	router = netip.MustParseAddr("127.0.0.1")
	dns    = netip.MustParsePrefix("198.51.100.0/24")
	web    = netip.MustParsePrefix("203.0.113.0/24")
)

func TestBIRDAgainstARouter(t *testing.T) {
	r := bgptest.Start(t, router, 65001, map[netip.Addr]uint32{node: 64512})
	s := birdtest.Start(t, node)
	ctx := context.Background()
	// Multihop: BIRD derives a directly connected eBGP session's next hop from an interface address, and 127.0.0.2
	// is on no interface here (on a node, the local address is).
	session := speaker.Session{Claim: "transit-a", PeerAddress: router, PeerASN: 65001, LocalASN: 64512, Port: uint16(r.Port), LocalAddress: node,
		HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second, ConnectRetry: time.Second, EBGPMultihop: 2,
		// The router runs no BFD: BIRD still establishes the session, and tears it down only when a BFD session
		// that was up goes down.
		BFD: speaker.BFD{Enabled: true, MinRx: 300 * time.Millisecond, MinTx: 200 * time.Millisecond, Multiplier: 4}}
	attrs := &anycastv1.BGPAttributes{Communities: []anycastv1.Community{"64512:100", "no-export"}, LargeCommunities: []anycastv1.LargeCommunity{"64512:1:2"},
		MED: ptr.To[int64](10), ASPathPrepend: ptr.To[int32](1)}
	route := func(p netip.Prefix, deprefer bool) speaker.Route {
		x, err := speaker.RouteFor(p, []string{"transit-a"}, attrs, deprefer)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	// web is announced but outside transit-a's exports: the filter holds it back.
	exports := map[string][]netip.Prefix{"transit-a": {dns}}
	apply := func(routes ...speaker.Route) {
		t.Helper()
		if err := s.Apply(ctx, speaker.State{Sessions: []speaker.Session{session}, Exports: exports, Routes: routes}).Error(); err != nil {
			t.Fatal(err)
		}
	}
	apply(route(dns, false), route(web, false))
	got := r.WaitFor(t, dns, "dns announced", func(p []bgptest.Path) bool { return len(p) == 1 })[0]
	if got.NextHop != "127.0.0.2" || !slices.Equal(got.ASPath, []uint32{64512, 64512}) || !slices.Equal(got.Communities, []uint32{64512<<16 | 100, 0xFFFFFF01}) ||
		!slices.Equal(got.LargeCommunities, []string{"64512:1:2"}) || got.MED == nil || *got.MED != 10 {
		t.Errorf("router received %s", got)
	}
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		st, err := s.Sessions(ctx)
		return err == nil && len(st) == 1 && st[0].State == anycastv1.SessionEstablished, nil
	})
	if err != nil {
		st, err := s.Sessions(ctx)
		t.Errorf("session not reported Established: %+v %v", st, err)
	}
	if p := r.Paths(web); len(p) != 0 {
		t.Errorf("web leaked past the export filter: %s", p[0])
	}
	// BFD runs for the session, with the claim's timers.
	out, err := exec.Command("birdc", "-s", s.Socket, "show", "bfd", "sessions").CombinedOutput()
	if err != nil || !strings.Contains(string(out), router.String()) {
		t.Errorf("BIRD runs no BFD session to the router: %v\n%s", err, out)
	}
	if peers, _ := os.ReadFile(filepath.Join(s.Dir, "peers.conf")); !strings.Contains(string(peers), "bfd { min rx interval 300 ms; min tx interval 200 ms; multiplier 4; };") {
		t.Errorf("peers.conf without the claim's BFD settings:\n%s", peers)
	}

	apply(route(dns, true))
	r.WaitFor(t, dns, "dns deprefered", func(p []bgptest.Path) bool {
		return len(p) == 1 && len(p[0].ASPath) == 5 && p[0].MED != nil && *p[0].MED == 1010 && slices.Contains(p[0].Communities, speaker.GracefulShutdown)
	})
	apply()
	r.WaitFor(t, dns, "dns withdrawn", func(p []bgptest.Path) bool { return len(p) == 0 })
	apply(route(dns, false))
	r.WaitFor(t, dns, "dns announced again", func(p []bgptest.Path) bool { return len(p) == 1 })

	// A session BIRD refuses (a link-local neighbor without an interface): that session is reported and left out,
	// the one BIRD runs stays up, and the routes are applied.
	bad := session
	bad.Claim, bad.PeerAddress = "transit-b", netip.MustParseAddr("fe80::1")
	rep := s.Apply(ctx, speaker.State{Sessions: []speaker.Session{session, bad}, Exports: exports, Routes: []speaker.Route{route(dns, false)}})
	if msg := rep.SessionErrors[bad.Key()]; rep.Err != nil || !strings.Contains(msg, "BIRD refused the session") || len(rep.SessionErrors) != 1 {
		t.Fatalf("Apply with a session BIRD refuses reported %+v", rep)
	}
	if !slices.Equal(rep.Held.Sessions, []speaker.Session{session}) || len(rep.Held.Routes) != 1 {
		t.Errorf("held after a refused session: %+v", rep.Held)
	}
	peers, _ := os.ReadFile(filepath.Join(s.Dir, "peers.conf"))
	if strings.Contains(string(peers), "fe80::1") {
		t.Errorf("the refused configuration was left in place:\n%s", peers)
	}
	if p := r.Paths(dns); len(p) != 1 {
		t.Errorf("dns lost after a refused reload")
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	r.WaitFor(t, dns, "dns withdrawn on Close", func(p []bgptest.Path) bool { return len(p) == 0 })
}
