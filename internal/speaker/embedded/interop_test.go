package embedded

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/netlab"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
)

// The speaker is its own BGP implementation, so it is judged by other ones: BIRD 2 and FRR's bgpd as the upstream
// router, each in a network namespace across a veth pair (so that next hops are checked as on a real link), with
// an IPv4 and an IPv6 session. The GoBGP router of bgptest judges it everywhere else.

// heard is one path as an upstream router holds it.
type heard struct {
	neighbor, nextHop string
	asPath            []uint32
	communities       []string // "a:b"
	large             []string // "a:b:c"
	med               *uint32
}

func (r heard) String() string {
	med := "-"
	if r.med != nil {
		med = strconv.Itoa(int(*r.med))
	}
	return fmt.Sprintf("from %s via %s as-path %v communities %v large %v med %s", r.neighbor, r.nextHop, r.asPath, r.communities, r.large, med)
}

type upstream interface {
	// paths lists the paths the router holds for a prefix.
	paths(t *testing.T, p netip.Prefix) []heard
	// sessions reports, by neighbor, whether the session is established and how many times it was: once, for a
	// session that never dropped.
	sessions(t *testing.T) map[string]sessionCount
	// lastError is the router's account of why the session from a neighbor last ended.
	lastError(t *testing.T, neighbor netip.Addr) string
}

type sessionCount struct {
	established bool
	ups         int
}

func TestInteroperatesWithBIRDAndFRR(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(t *testing.T, lab *netlab.Lab, asn uint32, neighbors map[netip.Addr]uint32) upstream
	}{{"BIRD 2", startBIRDRouter}, {"FRR", startFRRRouter}} {
		t.Run(tc.name, func(t *testing.T) {
			lab := netlab.New(t, 1)
			n4, n6 := lab.Nodes4[0], lab.Nodes6[0]
			r := tc.start(t, lab, 65001, map[netip.Addr]uint32{n4: 64512, n6: 64512})
			s := New(n4, logr.Discard())
			t.Cleanup(func() { _ = s.Close() })
			sess := func(claim string, peer, local netip.Addr) speaker.Session {
				return speaker.Session{Claim: claim, PeerAddress: peer, PeerASN: 65001, LocalASN: 64512, LocalAddress: local,
					HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second, ConnectRetry: time.Second, GracefulRestart: 120 * time.Second}
			}
			p4, p6 := netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8:100::/48")
			attrs := &anycastv1.BGPAttributes{Communities: []anycastv1.Community{"64512:100", "no-export"},
				LargeCommunities: []anycastv1.LargeCommunity{"64512:1:2"}, MED: ptr.To[int64](10), ASPathPrepend: ptr.To[int32](1)}
			route := func(p netip.Prefix, deprefer bool) speaker.Route {
				x, err := speaker.RouteFor(p, []string{"v4", "v6"}, attrs, deprefer)
				if err != nil {
					t.Fatal(err)
				}
				return x
			}
			st := speaker.State{Sessions: []speaker.Session{sess("v4", lab.Router4, n4), sess("v6", lab.Router6, n6)},
				Exports: map[string][]netip.Prefix{"v4": {p4, p6}, "v6": {p4, p6}}, NextHop4: n4, NextHop6: n6,
				Routes: []speaker.Route{route(p4, false), route(p6, false)}}
			apply := func() {
				t.Helper()
				if err := s.Apply(context.Background(), st).Error(); err != nil {
					t.Fatal(err)
				}
			}
			apply()
			waitEstablished(t, s, 2)
			waitPaths := func(what string, p netip.Prefix, ok func([]heard) bool) []heard {
				t.Helper()
				var got []heard
				err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
					got = r.paths(t, p)
					return ok(got), nil
				})
				if err != nil {
					t.Fatalf("%s: not reached; the router holds %v", what, got)
				}
				return got
			}
			from := func(paths []heard, neighbor netip.Addr) *heard {
				for i := range paths {
					if paths[i].neighbor == neighbor.String() {
						return &paths[i]
					}
				}
				return nil
			}
			both := func(paths []heard) bool { return from(paths, n4) != nil && from(paths, n6) != nil }
			// Each prefix on each session, with the node's address of the prefix's family as next hop.
			for _, p := range []netip.Prefix{p4, p6} {
				paths := waitPaths(p.String()+" from both sessions", p, both)
				t.Logf("%s at the router: %v", p, paths)
				want := n4
				if p.Addr().Is6() {
					want = n6
				}
				for _, n := range []netip.Addr{n4, n6} {
					got := from(paths, n)
					if got.nextHop != want.String() || !slices.Equal(got.asPath, []uint32{64512, 64512}) ||
						!slices.Equal(got.communities, []string{"64512:100", "65535:65281"}) || !slices.Equal(got.large, []string{"64512:1:2"}) ||
						got.med == nil || *got.med != 10 {
						t.Errorf("%s %s", p, got)
					}
				}
			}
			// The sessions as the router counts them now; checked again at the end.
			checkSessions := func() {
				t.Helper()
				got := r.sessions(t)
				for _, n := range []netip.Addr{n4, n6} {
					if c, ok := got[n.String()]; !ok || !c.established || c.ups != 1 {
						t.Errorf("session from %s at the router: %+v (present %v); want established once, never dropped", n, c, ok)
					}
				}
			}
			checkSessions()
			// Deprefer: three more prepends, MED + 1000, GRACEFUL_SHUTDOWN.
			st.Routes[0] = route(p4, true)
			apply()
			waitPaths("deprefered", p4, func(paths []heard) bool {
				x := from(paths, n4)
				return x != nil && len(x.asPath) == 5 && x.med != nil && *x.med == 1010 && slices.Contains(x.communities, "65535:0")
			})
			// Withdraw the IPv4 prefix, then the IPv6 one; announce both again.
			st.Routes = []speaker.Route{route(p6, false)}
			apply()
			waitPaths("IPv4 prefix withdrawn", p4, func(paths []heard) bool { return len(paths) == 0 })
			st.Routes = nil
			apply()
			waitPaths("IPv6 prefix withdrawn", p6, func(paths []heard) bool { return len(paths) == 0 })
			st.Routes = []speaker.Route{route(p4, false), route(p6, false)}
			apply()
			waitPaths("IPv4 prefix back", p4, both)
			waitPaths("IPv6 prefix back", p6, both)
			// Neither session dropped on the way.
			checkSessions()
			// Close: the router drops the paths, and says it was told why (a Cease, administrative shutdown), not
			// that the connection merely went away or the hold timer expired.
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			waitPaths("gone after Close", p4, func(paths []heard) bool { return len(paths) == 0 })
			for _, n := range []netip.Addr{n4, n6} {
				if why := r.lastError(t, n); !strings.Contains(strings.ToLower(why), "administrative") {
					t.Errorf("the router says the session from %s ended with %q, want the Cease (administrative shutdown)", n, why)
				}
			}
		})
	}
}

// startBIRDRouter runs BIRD 2 in the lab's namespace as the upstream router: passive sessions from the
// neighbors, every route imported (nothing exported), next hops checked against the link like any router's.
func startBIRDRouter(t *testing.T, lab *netlab.Lab, asn uint32, neighbors map[netip.Addr]uint32) upstream {
	t.Helper()
	if _, err := exec.LookPath("bird"); err != nil {
		t.Fatalf("bird is not installed (Debian package bird2; make deps installs it): %v", err)
	}
	dir := t.TempDir()
	var conf strings.Builder
	fmt.Fprintf(&conf, "router id %s;\ntimeformat protocol iso long ms;\nprotocol device { scan time 1; }\n", lab.Router4)
	names := map[string]string{}
	i := 0
	for _, n := range slices.SortedFunc(func(yield func(netip.Addr) bool) {
		for a := range neighbors {
			if !yield(a) {
				return
			}
		}
	}, netip.Addr.Compare) {
		i++
		name := fmt.Sprintf("n%d", i)
		names[name] = n.String()
		local := lab.Router4
		if n.Is6() {
			local = lab.Router6
		}
		fmt.Fprintf(&conf, "protocol bgp %s {\n  local %s as %d;\n  neighbor %s as %d;\n  passive on;\n", name, local, asn, n, neighbors[n])
		conf.WriteString("  ipv4 { import all; export none; };\n  ipv6 { import all; export none; };\n}\n")
	}
	path := filepath.Join(dir, "bird.conf")
	if err := os.WriteFile(path, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "bird.ctl")
	cmd := lab.Command("bird", "-f", "-c", path, "-s", sock, "-P", filepath.Join(dir, "bird.pid"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("bird: %s", stderr.String())
		}
	})
	b := &birdRouter{sock: sock, names: names, ups: map[string]int{}, since: map[string]string{}}
	if err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		_, err := b.birdc("show status")
		return err == nil, nil
	}); err != nil {
		t.Fatalf("bird did not start: %s", stderr.String())
	}
	return b
}

type birdRouter struct {
	sock  string
	names map[string]string // protocol → neighbor
	ups   map[string]int
	since map[string]string
}

func (b *birdRouter) birdc(cmd string) (string, error) {
	out, err := exec.Command("birdc", "-s", b.sock, cmd).CombinedOutput()
	return string(out), err
}

var (
	birdRouteLine = regexp.MustCompile(`^\S*\s+unicast \[(\S+) `)
	birdAttr      = regexp.MustCompile(`^\s+BGP\.(\w+): (.*)$`)
	birdPair      = regexp.MustCompile(`\((\d+),\s*(\d+)\)`)
	birdTriple    = regexp.MustCompile(`\((\d+),\s*(\d+),\s*(\d+)\)`)
)

func (b *birdRouter) paths(t *testing.T, p netip.Prefix) []heard {
	t.Helper()
	out, err := b.birdc("show route " + p.String() + " all")
	if strings.Contains(out, "Network not found") {
		return nil
	}
	if err != nil {
		t.Fatalf("birdc show route: %v: %s", err, out)
	}
	var paths []heard
	var cur *heard
	for _, line := range strings.Split(out, "\n") {
		if m := birdRouteLine.FindStringSubmatch(line); m != nil {
			paths = append(paths, heard{neighbor: b.names[m[1]]})
			cur = &paths[len(paths)-1]
			continue
		}
		m := birdAttr.FindStringSubmatch(line)
		if m == nil || cur == nil {
			continue
		}
		switch v := strings.TrimSpace(m[2]); m[1] {
		case "next_hop":
			cur.nextHop = strings.Fields(v)[0] // an IPv6 next hop may be followed by a link-local one
		case "as_path":
			for _, f := range strings.Fields(v) {
				n, _ := strconv.ParseUint(f, 10, 32)
				cur.asPath = append(cur.asPath, uint32(n))
			}
		case "med":
			n, _ := strconv.ParseUint(v, 10, 32)
			cur.med = ptr.To(uint32(n))
		case "community":
			for _, c := range birdPair.FindAllStringSubmatch(v, -1) {
				cur.communities = append(cur.communities, c[1]+":"+c[2])
			}
		case "large_community":
			for _, c := range birdTriple.FindAllStringSubmatch(v, -1) {
				cur.large = append(cur.large, c[1]+":"+c[2]+":"+c[3])
			}
		}
	}
	return paths
}

// sessions reads `show protocols`: BIRD keeps no count of establishments, but the time a protocol last changed
// state moves whenever a session drops and comes back; each change seen counts as one more.
func (b *birdRouter) sessions(t *testing.T) map[string]sessionCount {
	t.Helper()
	out, err := b.birdc("show protocols")
	if err != nil {
		t.Fatalf("birdc show protocols: %v: %s", err, out)
	}
	got := map[string]sessionCount{}
	for _, line := range strings.Split(out, "\n") {
		// name, protocol, table, state, date and time of the last change (iso long ms), info
		f := strings.Fields(line)
		if len(f) < 7 || f[1] != "BGP" || b.names[f[0]] == "" {
			continue
		}
		n := b.names[f[0]]
		established := f[6] == "Established"
		if since := f[4] + " " + f[5]; b.since[n] != since {
			b.since[n] = since
			if established {
				b.ups[n]++
			}
		}
		got[n] = sessionCount{established: established, ups: b.ups[n]}
	}
	return got
}

func (b *birdRouter) lastError(t *testing.T, neighbor netip.Addr) string {
	t.Helper()
	for name, n := range b.names {
		if n != neighbor.String() {
			continue
		}
		out, err := b.birdc("show protocols all " + name)
		if err != nil {
			t.Fatalf("birdc show protocols all: %v: %s", err, out)
		}
		for _, line := range strings.Split(out, "\n") {
			if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "Last error:"); ok {
				return strings.TrimSpace(rest)
			}
		}
		return ""
	}
	t.Fatalf("no protocol for %s", neighbor)
	return ""
}

// startFRRRouter runs FRR's bgpd (without zebra) in the lab's namespace as the upstream router, likewise.
func startFRRRouter(t *testing.T, lab *netlab.Lab, asn uint32, neighbors map[netip.Addr]uint32) upstream {
	t.Helper()
	bgpd := "/usr/lib/frr/bgpd"
	if _, err := os.Stat(bgpd); err != nil {
		t.Fatalf("FRR's bgpd is not installed (Debian package frr; make deps installs it): %v", err)
	}
	dir := t.TempDir()
	var conf strings.Builder
	fmt.Fprintf(&conf, "frr defaults traditional\nhostname upstream\n!\nrouter bgp %d\n bgp router-id %s\n no bgp ebgp-requires-policy\n", asn, lab.Router4)
	for n, as := range neighbors {
		fmt.Fprintf(&conf, " neighbor %s remote-as %d\n neighbor %s passive\n", n, as, n)
	}
	for _, af := range []string{"ipv4", "ipv6"} {
		fmt.Fprintf(&conf, " address-family %s unicast\n", af)
		for n := range neighbors {
			fmt.Fprintf(&conf, "  neighbor %s activate\n", n)
		}
		conf.WriteString(" exit-address-family\n")
	}
	path := filepath.Join(dir, "bgpd.conf")
	if err := os.WriteFile(path, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := lab.Command(bgpd, "-Z", "-S", "-n", "-p", "179", "-l", lab.Router4.String(), "-l", lab.Router6.String(), "-P", "0",
		"--vty_socket", dir, "-f", path, "-i", filepath.Join(dir, "bgpd.pid"), "--log", "stdout")
	var output strings.Builder
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("bgpd: %s", output.String())
		}
	})
	f := &frrRouter{dir: dir}
	if err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		_, err := f.vtysh("show bgp summary")
		return err == nil, nil
	}); err != nil {
		t.Fatalf("bgpd did not start: %s", output.String())
	}
	return f
}

type frrRouter struct{ dir string }

func (f *frrRouter) vtysh(cmd string) ([]byte, error) {
	return exec.Command("vtysh", "--vty_socket", f.dir, "-c", cmd).CombinedOutput()
}

func (f *frrRouter) paths(t *testing.T, p netip.Prefix) []heard {
	t.Helper()
	af := "ipv4"
	if p.Addr().Is6() {
		af = "ipv6"
	}
	out, err := f.vtysh(fmt.Sprintf("show bgp %s unicast %s json", af, p))
	if err != nil {
		t.Fatalf("vtysh: %v: %s", err, out)
	}
	var doc struct {
		Paths []struct {
			ASPath struct {
				Segments []struct {
					List []uint32 `json:"list"`
				} `json:"segments"`
			} `json:"aspath"`
			MED       *uint32 `json:"metric"`
			Community struct {
				String string `json:"string"`
			} `json:"community"`
			LargeCommunity struct {
				String string `json:"string"`
			} `json:"largeCommunity"`
			Nexthops []struct {
				IP    string `json:"ip"`
				Scope string `json:"scope"`
			} `json:"nexthops"`
			Peer struct {
				PeerID string `json:"peerId"`
			} `json:"peer"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("vtysh output: %v: %s", err, out)
	}
	var paths []heard
	for _, x := range doc.Paths {
		r := heard{neighbor: x.Peer.PeerID, med: x.MED}
		for _, s := range x.ASPath.Segments {
			r.asPath = append(r.asPath, s.List...)
		}
		for _, c := range strings.Fields(x.Community.String) {
			r.communities = append(r.communities, frrCommunity(c))
		}
		r.large = strings.Fields(x.LargeCommunity.String)
		for _, nh := range x.Nexthops {
			if nh.Scope != "link-local" {
				r.nextHop = nh.IP
				break
			}
		}
		paths = append(paths, r)
	}
	return paths
}

// frrCommunity turns FRR's names of well-known communities back into numbers.
func frrCommunity(c string) string {
	switch c {
	case "no-export":
		return "65535:65281"
	case "no-advertise":
		return "65535:65282"
	case "graceful-shutdown":
		return "65535:0"
	}
	return c
}

func (f *frrRouter) sessions(t *testing.T) map[string]sessionCount {
	t.Helper()
	out, err := f.vtysh("show bgp neighbors json")
	if err != nil {
		t.Fatalf("vtysh: %v: %s", err, out)
	}
	var doc map[string]struct {
		State       string `json:"bgpState"`
		Established int    `json:"connectionsEstablished"`
		Dropped     int    `json:"connectionsDropped"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("vtysh output: %v: %s", err, out)
	}
	got := map[string]sessionCount{}
	for n, x := range doc {
		got[n] = sessionCount{established: x.State == "Established" && x.Dropped == 0, ups: x.Established}
	}
	return got
}

func (f *frrRouter) lastError(t *testing.T, neighbor netip.Addr) string {
	t.Helper()
	out, err := f.vtysh("show bgp neighbors " + neighbor.String() + " json")
	if err != nil {
		t.Fatalf("vtysh: %v: %s", err, out)
	}
	var doc map[string]struct {
		LastReset      string `json:"lastResetDueTo"`
		LastReasonRecv string `json:"lastNotificationReason"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("vtysh output: %v: %s", err, out)
	}
	x := doc[neighbor.String()]
	return x.LastReset + " " + x.LastReasonRecv
}
