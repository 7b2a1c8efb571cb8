package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/backend"
	"github.com/anycast-operator/anycast-operator/internal/backend/cilium"
	"github.com/anycast-operator/anycast-operator/internal/backend/cilium/ciliumv2"
	"github.com/anycast-operator/anycast-operator/internal/netlab"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

// ciliumHarnessBinary is Cilium's own BGP control plane (its operator's BGP and LB-IPAM cells, its agent's BGP
// cells), built from Cilium's module by hack/build-cilium-bgp.sh (make cilium-bgp; make test builds it first and
// passes its path in CILIUM_BGP_HARNESS).
func ciliumHarnessBinary(t testing.TB) string {
	return builtBinary(t, "CILIUM_BGP_HARNESS", "make cilium-bgp", "bin", "cilium-bgp", testenv.CiliumVersion, "ciliumbgp")
}

// ciliumSetup is a cluster whose BGP stack is Cilium's own code: the test API server with Cilium's CRDs, the
// manager with the Cilium backend, per node an agent that decides and reports (as --backend=cilium runs it) and a
// Cilium BGP agent process, one Cilium operator process, and two routers in a network namespace across a veth pair:
// an eBGP one (AS 65001) and an iBGP one (AS 64512, the claim's own AS, so that LOCAL_PREF reaches it).
type ciliumSetup struct {
	k8s         client.Client
	ebgp, ibgp  *bgptest.Router
	nodes       []string
	addrs       map[string]netip.Addr
	services    map[string]*nodeService
	prefix      netip.Prefix
	prefix6     netip.Prefix // dual stack only
	addrs6      map[string]netip.Addr
	router6     netip.Addr // the eBGP router's IPv6 address, dual stack only
	stopManager func()
}

const (
	ciliumPassword  = "cilium-md5-s3cret"
	ciliumLocalPref = 250
)

// ciliumOptions: dualStack adds an IPv6 session to the eBGP router from each node, an IPv6 prefix and its Service.
type ciliumOptions struct{ dualStack bool }

func startCiliumSetup(t testing.TB, n int, who decider, opts ...ciliumOptions) *ciliumSetup {
	t.Helper()
	ctx := context.Background()
	bin := ciliumHarnessBinary(t)
	dir, err := testenv.CiliumCRDs()
	if err != nil {
		t.Fatal(err)
	}
	dual := len(opts) > 0 && opts[0].dualStack
	lab := netlab.New(t, n)
	env, _ := startCluster(t, testenv.WithCRDs(dir), testenv.WithDualStackServices())
	if err := cilium.AddToScheme(env.Scheme); err != nil {
		t.Fatal(err)
	}
	k8s, err := client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	s := &ciliumSetup{k8s: k8s, addrs: map[string]netip.Addr{}, services: map[string]*nodeService{}, prefix: netip.MustParsePrefix("198.51.100.0/24"),
		addrs6: map[string]netip.Addr{}}
	neighbors, ebgpNeighbors := map[netip.Addr]uint32{}, map[netip.Addr]uint32{}
	for i := range n {
		name := fmt.Sprintf("edge-%d", i+1)
		s.nodes = append(s.nodes, name)
		s.addrs[name] = lab.Nodes4[i]
		neighbors[lab.Nodes4[i]], ebgpNeighbors[lab.Nodes4[i]] = 64512, 64512
		if dual {
			s.addrs6[name] = lab.Nodes6[i]
			ebgpNeighbors[lab.Nodes6[i]] = 64512
		}
	}
	ebgpAddrs := []netip.Addr{lab.Router4}
	if dual {
		s.prefix6, s.router6 = netip.MustParsePrefix("2001:db8:100::/48"), lab.Router6
		ebgpAddrs = append(ebgpAddrs, lab.Router6)
	}
	s.ebgp = bgptest.StartWith(t, bgptest.Options{Addresses: ebgpAddrs, ASN: 65001, Netns: lab.NetnsPath, Neighbors: ebgpNeighbors, Password: ciliumPassword})
	s.ibgp = bgptest.StartWith(t, bgptest.Options{Addresses: []netip.Addr{lab.AddRouterAddress(t, false)}, ASN: 64512, Netns: lab.NetnsPath, Neighbors: neighbors, Password: ciliumPassword})

	var addrs []netip.Addr
	for _, name := range s.nodes {
		addrs = append(addrs, s.addrs[name])
	}
	port, services := startNodeServices(t, addrs...)
	for i, name := range s.nodes {
		s.services[name] = services[i]
	}

	claim := &anycastv1.BGPSessionClaim{ObjectMeta: metav1.ObjectMeta{Name: "edge"}}
	claim.Spec.LocalASN = 64512
	claim.Spec.Static = &anycastv1.StaticSessions{Peers: []anycastv1.BGPPeer{
		{Address: anycastv1.IPAddress(s.ebgp.Address.String()), ASN: 65001, Port: ptr.To(int32(s.ebgp.Port)), PasswordSecretRef: &anycastv1.SecretKeyRef{Name: "bgp-md5", Key: "password"}},
		{Address: anycastv1.IPAddress(s.ibgp.Address.String()), ASN: 64512, Port: ptr.To(int32(s.ibgp.Port)), PasswordSecretRef: &anycastv1.SecretKeyRef{Name: "bgp-md5", Key: "password"}},
	}}
	if dual {
		claim.Spec.Static.Peers = append(claim.Spec.Static.Peers, anycastv1.BGPPeer{Address: anycastv1.IPAddress(s.router6.String()), ASN: 65001, Port: ptr.To(int32(s.ebgp.Port)),
			PasswordSecretRef: &anycastv1.SecretKeyRef{Name: "bgp-md5", Key: "password"}})
	}
	claim.Spec.Timers = &anycastv1.BGPTimers{HoldTime: &metav1.Duration{Duration: 9 * time.Second}, KeepaliveTime: &metav1.Duration{Duration: 3 * time.Second},
		ConnectRetry: &metav1.Duration{Duration: time.Second}}
	ap := dnsPrefix("web")
	ap.Spec.Attributes = &anycastv1.BGPAttributes{Communities: []anycastv1.Community{"64512:100"}, LargeCommunities: []anycastv1.LargeCommunity{"64512:1:2"},
		LocalPreference: ptr.To[int64](ciliumLocalPref)}
	ap.Spec.Safety = &anycastv1.PrefixSafety{MaxWithdrawn: ptr.To(intstr.FromInt32(1))}
	if dual {
		ap.Spec.Prefixes = append(ap.Spec.Prefixes, anycastv1.CIDR(s.prefix6.String()))
	}
	objs := []client.Object{claim, ap, fastPolicy("web", fmt.Sprintf("http://$(NODE_IP):%d/healthz", port), 2),
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bgp-md5", Namespace: namespace}, StringData: map[string]string{"password": ciliumPassword}}}
	for _, name := range s.nodes {
		addr := s.addrs[name].String()
		objs = append(objs, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelHostname: name}}})
		// What cilium-agent would write for its node: Cilium's cluster config selects CiliumNodes, not Nodes, and
		// the router ID comes from the CiliumNode's InternalIP.
		objs = append(objs, ciliumObject("CiliumNode", name, map[string]any{
			"metadata": map[string]any{"labels": map[string]any{corev1.LabelHostname: name}},
			"spec":     map[string]any{"addresses": []any{map[string]any{"type": "InternalIP", "ip": addr}}},
		}))
		// The nodes of this test share one host, so each session's source address is set as a user would when a
		// node has several: without it the kernel would pick the link's first address for every node.
		var peers []any
		for _, r := range []*bgptest.Router{s.ebgp, s.ibgp} {
			peers = append(peers, map[string]any{"name": backend.Sanitize(r.Address.String()), "localAddress": addr})
		}
		if dual {
			peers = append(peers, map[string]any{"name": backend.Sanitize(s.router6.String()), "localAddress": s.addrs6[name].String()})
		}
		objs = append(objs, ciliumObject("CiliumBGPNodeConfigOverride", name, map[string]any{
			"spec": map[string]any{"bgpInstances": []any{map[string]any{"name": "edge", "peers": peers}}},
		}))
	}
	// The anycast Service: Cilium's LB-IPAM gives it an address of the prefix's pool; with externalTrafficPolicy
	// Cluster, Cilium announces the aggregate.
	objs = append(objs, anycastService("dns", corev1.ServiceExternalTrafficPolicyCluster, s.prefix))
	if dual {
		objs = append(objs, anycastService("dns6", corev1.ServiceExternalTrafficPolicyCluster, s.prefix6))
	}
	create(t, k8s, objs...)

	secrets := func(name, key string) ([]byte, bool) {
		var sec corev1.Secret
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &sec); err != nil {
			return nil, false
		}
		v, ok := sec.Data[key]
		return v, ok
	}
	s.stopManager = startManagerWith(t, env, cilium.Translator{SecretsNamespace: "kube-system", Secrets: secrets})

	kubeconfig, err := env.Kubeconfig()
	if err != nil {
		t.Fatal(err)
	}
	startCiliumProcess(t, bin, kubeconfig, "operator")
	for _, name := range s.nodes {
		startCiliumProcess(t, bin, kubeconfig, "agent", "--node="+name)
	}
	if who == agentDecides {
		log := testr.NewWithInterface(t, testr.Options{Verbosity: 0})
		for _, name := range s.nodes {
			startAgentWith(t, env, name, s.addrs[name], speaker.Delegated{}, log)
		}
	}
	return s
}

func ciliumObject(kind, name string, content map[string]any) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: content}
	u.SetGroupVersionKind(ciliumv2.GroupVersion.WithKind(kind))
	u.SetName(name)
	return u
}

// anycastService is a LoadBalancer Service labelled for the prefix's pool, single-stack in its family.
func anycastService(name string, policy corev1.ServiceExternalTrafficPolicy, prefix netip.Prefix) *corev1.Service {
	family := corev1.IPv4Protocol
	if prefix.Addr().Is6() {
		family = corev1.IPv6Protocol
	}
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{cilium.PoolLabel: cilium.PoolName("dns", prefix)}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: policy,
			IPFamilies: []corev1.IPFamily{family}, IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicySingleStack),
			Ports: []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)}}}}
}

// startCiliumProcess runs the harness in one mode; the returned function stops it (it stops at the end of the test
// anyway) and its log is printed when the test fails (always with CILIUM_LOGS=1).
func startCiliumProcess(t testing.TB, bin, kubeconfig string, args ...string) (stop func()) {
	t.Helper()
	cmd := exec.Command(bin, append(args, "--k8s-kubeconfig-path="+kubeconfig)...)
	return startLogged(t, fmt.Sprintf("Cilium %v", args), cmd, 60, os.Getenv("CILIUM_LOGS") != "")
}

// serviceAddress waits for Cilium's LB-IPAM to give the Service an address and returns it.
func (s *ciliumSetup) serviceAddress(t testing.TB, name string) netip.Addr {
	t.Helper()
	var got netip.Addr
	poll(t, "Cilium's LB-IPAM gives "+name+" an address", func() (bool, string) {
		var svc corev1.Service
		if err := s.k8s.Get(context.Background(), client.ObjectKey{Namespace: "default", Name: name}, &svc); err != nil {
			return false, err.Error()
		}
		for _, in := range svc.Status.LoadBalancer.Ingress {
			if a, err := netip.ParseAddr(in.IP); err == nil {
				got = a
				return true, ""
			}
		}
		return false, fmt.Sprintf("status %+v, conditions %+v", svc.Status.LoadBalancer, svc.Status.Conditions)
	})
	return got
}

func describePaths(paths []bgptest.Path) string {
	var lines []string
	for _, p := range paths {
		lines = append(lines, "  "+p.String())
	}
	return strings.Join(lines, "\n")
}

// from returns the next hops (one per announcing node) of the router's paths.
func from(paths []bgptest.Path) []string {
	var hops []string
	for _, p := range paths {
		hops = append(hops, p.NextHop)
	}
	slices.Sort(hops)
	return hops
}

func (s *ciliumSetup) hops(names ...string) []string { return hopsOf(s.addrs, names...) }

// hopsOf is the next hops the named nodes announce with, sorted as from returns them.
func hopsOf(addrs map[string]netip.Addr, names ...string) []string {
	var hops []string
	for _, n := range names {
		hops = append(hops, addrs[n].String())
	}
	slices.Sort(hops)
	return hops
}

// waitAnnouncing waits until both routers hold the prefix from exactly the named nodes.
func (s *ciliumSetup) waitAnnouncing(t testing.TB, prefix netip.Prefix, what string, names ...string) (ebgp, ibgp []bgptest.Path) {
	t.Helper()
	want := s.hops(names...)
	ebgp = s.ebgp.WaitFor(t, prefix, what+" (eBGP router)", func(p []bgptest.Path) bool { return slices.Equal(from(p), want) })
	ibgp = s.ibgp.WaitFor(t, prefix, what+" (iBGP router)", func(p []bgptest.Path) bool { return slices.Equal(from(p), want) })
	return ebgp, ibgp
}

// readUpdates hands each update of a router's stream to see until done says enough has come and nothing more is
// queued, or until limit: the router's watch runs on its own goroutine, so its RIB can show a path before the
// update that brought it is in the stream.
func readUpdates(ch <-chan bgptest.Change, limit time.Duration, see func(bgptest.Change), done func() bool) {
	deadline := time.After(limit)
	for {
		select {
		case c := <-ch:
			see(c)
			continue
		default:
		}
		if done() {
			return
		}
		select {
		case c := <-ch:
			see(c)
		case <-deadline:
			return
		}
	}
}

// TestRealCiliumBGPControlPlane: the manager's Cilium objects, consumed by Cilium's own operator and agent BGP code,
// reach the routers as planned: the aggregate from exactly the announcing nodes with its attributes, a failing node's
// path withdrawn and returned, the withdrawal budget kept, sessions Established in the claim's status and never
// dropped, and everything withdrawn, the pool removed, when the AnycastPrefix goes.
func TestRealCiliumBGPControlPlane(t *testing.T) {
	s := startCiliumSetup(t, 3, agentDecides)
	ctx := context.Background()
	// LB-IPAM hands out the pool's first address first (Cilium allows a pool's first and last by default).
	if a := s.serviceAddress(t, "dns"); a != s.prefix.Addr() {
		t.Fatalf("LB-IPAM gave the Service %s, want %s, the first address of %s", a, s.prefix.Addr(), s.prefix)
	}
	ebgp, ibgp := s.waitAnnouncing(t, s.prefix, "every node announces", s.nodes...)
	t.Logf("the routers received:\n%s\n%s", describePaths(ebgp), describePaths(ibgp))
	for _, p := range ebgp {
		if !slices.Equal(p.ASPath, []uint32{64512}) || !slices.Contains(p.Communities, 64512<<16|100) || !slices.Equal(p.LargeCommunities, []string{"64512:1:2"}) {
			t.Errorf("eBGP router: %s; want AS path [64512], community 64512:100, large community 64512:1:2", p)
		}
	}
	for _, p := range ibgp {
		if len(p.ASPath) != 0 || p.LocalPref == nil || *p.LocalPref != ciliumLocalPref || !slices.Contains(p.Communities, 64512<<16|100) {
			t.Errorf("iBGP router: %s; want an empty AS path, local preference %d, community 64512:100", p, ciliumLocalPref)
		}
	}
	// Cilium's agents report their sessions in CiliumBGPNodeConfig status; the manager copies them into the claim's.
	poll2 := func(what string, cond func(*anycastv1.BGPSessionClaim) bool) {
		t.Helper()
		poll(t, what, func() (bool, string) {
			var c anycastv1.BGPSessionClaim
			if err := s.k8s.Get(ctx, client.ObjectKey{Name: "edge"}, &c); err != nil {
				return false, err.Error()
			}
			return cond(&c), fmt.Sprintf("%+v", c.Status)
		})
	}
	poll2("the claim's status shows every session Established", func(c *anycastv1.BGPSessionClaim) bool {
		return c.Status.TotalSessions == int32(2*len(s.nodes)) && c.Status.EstablishedSessions == c.Status.TotalSessions
	})

	// One node fails: only its path goes, at both routers; it comes back on recovery.
	s.services["edge-2"].healthy.Store(false)
	s.waitAnnouncing(t, s.prefix, "edge-2 failing withdraws its own path only", "edge-1", "edge-3")
	s.services["edge-2"].healthy.Store(true)
	s.waitAnnouncing(t, s.prefix, "edge-2 recovered", s.nodes...)

	// Two fail with maxWithdrawn 1: one is withdrawn, the other keeps announcing.
	s.services["edge-2"].healthy.Store(false)
	s.waitAnnouncing(t, s.prefix, "edge-2 failing", "edge-1", "edge-3")
	s.services["edge-3"].healthy.Store(false)
	// edge-3 wants out, but the budget is spent: the manager keeps its advertisement label, so Cilium keeps its path.
	poll(t, "the prefix reports edge-3 held back", func() (bool, string) {
		var got anycastv1.AnycastPrefix
		if err := s.k8s.Get(ctx, client.ObjectKey{Name: "dns"}, &got); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(got.Status.Conditions, anycastv1.ConditionDegraded)
		return c != nil && c.Reason == anycastv1.ReasonMaxWithdrawnReached && strings.Contains(c.Message, "maxWithdrawn allows 1 of 3"), fmt.Sprintf("%+v", got.Status.Conditions)
	})
	hold := time.Now().Add(time.Second)
	for time.Now().Before(hold) {
		if got := from(s.ebgp.Paths(s.prefix)); !slices.Equal(got, s.hops("edge-1", "edge-3")) {
			t.Fatalf("maxWithdrawn 1 with edge-2 withdrawn: the eBGP router holds %v, want %v", got, s.hops("edge-1", "edge-3"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.services["edge-2"].healthy.Store(true)
	s.services["edge-3"].healthy.Store(true)
	s.waitAnnouncing(t, s.prefix, "all recovered", s.nodes...)

	// Deprefer: a failing edge-1 keeps its path, with GRACEFUL_SHUTDOWN, at both routers, and is back to normal on
	// recovery; its path is replaced in place each time, never withdrawn on the way (the routers' update streams
	// would show even a withdrawal replaced a moment later).
	setOnUnhealthy(t, s.k8s, "web", anycastv1.UnhealthyDeprefer, s.nodes...)
	updates := map[*bgptest.Router]<-chan bgptest.Change{s.ebgp: s.ebgp.Updates(t), s.ibgp: s.ibgp.Updates(t)}
	gshut := func(paths []bgptest.Path, n string) bool {
		for _, p := range paths {
			if p.NextHop == s.addrs[n].String() {
				return slices.Contains(p.Communities, speaker.GracefulShutdown)
			}
		}
		return false
	}
	deprefered := func(names ...string) func([]bgptest.Path) bool {
		return func(paths []bgptest.Path) bool {
			if !slices.Equal(from(paths), s.hops(s.nodes...)) {
				return false
			}
			for _, n := range s.nodes {
				if gshut(paths, n) != slices.Contains(names, n) {
					return false
				}
			}
			return true
		}
	}
	s.services["edge-1"].healthy.Store(false)
	for _, r := range []*bgptest.Router{s.ebgp, s.ibgp} {
		t.Logf("edge-1 deprefered, at %s:\n%s", r.Address, describePaths(r.WaitFor(t, s.prefix, "edge-1 deprefers", deprefered("edge-1"))))
	}
	s.services["edge-1"].healthy.Store(true)
	for _, r := range []*bgptest.Router{s.ebgp, s.ibgp} {
		r.WaitFor(t, s.prefix, "edge-1 back to normal", deprefered())
	}
	for r, ch := range updates {
		replaced := 0
		readUpdates(ch, 10*time.Second, func(c bgptest.Change) {
			switch {
			case c.Prefix != s.prefix.String():
			case c.Withdrawn:
				t.Errorf("%s withdrew its path at %s while deprefering or coming back", c.Neighbor, r.Address)
			case c.Neighbor == s.addrs["edge-1"].String():
				replaced++
			}
		}, func() bool { return replaced >= 2 })
		if replaced < 2 {
			t.Errorf("%s: %d updates from edge-1 seen in the stream, want its deprefered path and its normal one", r.Address, replaced)
		}
		if r.UpdatesLost() > 0 {
			t.Errorf("%d updates at %s not seen", r.UpdatesLost(), r.Address)
		}
	}

	// No session dropped while paths came and went.
	for _, n := range s.nodes {
		for _, r := range []*bgptest.Router{s.ebgp, s.ibgp} {
			if e, d := r.Established(s.addrs[n]), r.Downs(s.addrs[n]); e != 1 || d != 0 {
				t.Errorf("%s's session with %s: established %d times, dropped %d times; want once, never", n, r.Address, e, d)
			}
		}
	}

	// Deleting the AnycastPrefix withdraws every path and removes the pool.
	if err := s.k8s.Delete(ctx, dnsPrefix("web")); err != nil {
		t.Fatal(err)
	}
	s.waitAnnouncing(t, s.prefix, "the AnycastPrefix is deleted: nothing announced")
	poll(t, "the pool is removed", func() (bool, string) {
		err := s.k8s.Get(ctx, client.ObjectKey{Name: cilium.PoolName("dns", s.prefix)}, &ciliumv2.CiliumLoadBalancerIPPool{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	// With its pool gone, Cilium's LB-IPAM takes the address back from the Service.
	poll(t, "the Service loses its address", func() (bool, string) {
		var svc corev1.Service
		if err := s.k8s.Get(ctx, client.ObjectKey{Namespace: "default", Name: "dns"}, &svc); err != nil {
			return false, err.Error()
		}
		return len(svc.Status.LoadBalancer.Ingress) == 0, fmt.Sprintf("%+v", svc.Status.LoadBalancer)
	})
}

// TestRealCiliumExternalTrafficPolicyLocal pins down what Cilium does with an anycast Service whose
// externalTrafficPolicy is Local: it ignores the aggregation and announces the Service's own address as a host route,
// only from the announcing nodes that have a ready endpoint of it.
func TestRealCiliumExternalTrafficPolicyLocal(t *testing.T) {
	s := startCiliumSetup(t, 2, agentDecides)
	s.waitAnnouncing(t, s.prefix, "every node announces the aggregate", s.nodes...)
	create(t, s.k8s, anycastService("dns-local", corev1.ServiceExternalTrafficPolicyLocal, s.prefix),
		&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "dns-local-1", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "dns-local"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				NodeName: ptr.To("edge-1")}},
			Ports: []discoveryv1.EndpointPort{{Name: ptr.To("dns"), Port: ptr.To[int32](53), Protocol: ptr.To(corev1.ProtocolUDP)}}})
	addr := s.serviceAddress(t, "dns-local")
	host := netip.PrefixFrom(addr, addr.BitLen())
	s.waitAnnouncing(t, host, "the Local Service's address, from the node with its endpoint only", "edge-1")
	// The node with the endpoint fails its health: the manager withdraws both routes of that node.
	s.services["edge-1"].healthy.Store(false)
	s.waitAnnouncing(t, s.prefix, "edge-1 failing: the aggregate from edge-2 only", "edge-2")
	s.waitAnnouncing(t, host, "edge-1 failing: the host route gone")
	s.services["edge-1"].healthy.Store(true)
	s.waitAnnouncing(t, host, "edge-1 recovered: the host route back", "edge-1")
}

// TestRealCiliumDualStack: an IPv4 and an IPv6 prefix, each node with a session of each family to the eBGP router.
// Each prefix arrives over the sessions of its own family only, with the node's address of that family as the next
// hop (Cilium would send the other family too, with an IPv4-mapped or cross-family next hop, if the peer config
// let it), and a failing node withdraws both.
func TestRealCiliumDualStack(t *testing.T) {
	s := startCiliumSetup(t, 2, agentDecides, ciliumOptions{dualStack: true})
	if a := s.serviceAddress(t, "dns6"); !s.prefix6.Contains(a) {
		t.Fatalf("LB-IPAM gave the IPv6 Service %s, outside %s", a, s.prefix6)
	}
	hops6 := func(names ...string) []string { return hopsOf(s.addrs6, names...) }
	// Neighbor and next hop are the same address, of the prefix's family, once per node.
	exact := func(want []string) func([]bgptest.Path) bool {
		return func(paths []bgptest.Path) bool {
			var neighbors []string
			for _, p := range paths {
				neighbors = append(neighbors, p.Neighbor)
			}
			slices.Sort(neighbors)
			return slices.Equal(from(paths), want) && slices.Equal(neighbors, want)
		}
	}
	wait := func(what string, names ...string) {
		t.Helper()
		got4 := s.ebgp.WaitFor(t, s.prefix, what+": IPv4", exact(s.hops(names...)))
		got6 := s.ebgp.WaitFor(t, s.prefix6, what+": IPv6", exact(hops6(names...)))
		t.Logf("%s:\n%s\n%s", what, describePaths(got4), describePaths(got6))
	}
	wait("both nodes announce", s.nodes...)
	s.services["edge-2"].healthy.Store(false)
	wait("edge-2 failing", "edge-1")
	s.services["edge-2"].healthy.Store(true)
	wait("edge-2 recovered", s.nodes...)
}

// BenchmarkCiliumDecisionToRouter measures the whole path with Cilium's own BGP code: a node's decision written to
// its NodeAnnouncement status (as its agent writes it) → the manager → the CiliumBGPAdvertisement's node label →
// Cilium's agent (its GoBGP reconcilers) → the router's RIB, for a withdrawal and an announcement each iteration.
func BenchmarkCiliumDecisionToRouter(b *testing.B) {
	s := startCiliumSetup(b, 1, benchmarkDecides)
	node := s.nodes[0]
	waitPlanned(b, s.k8s, node)
	set := func(announce bool) error { return decide(s.k8s, node, s.prefix, announce) }
	if err := set(true); err != nil {
		b.Fatal(err)
	}
	s.waitAnnouncing(b, s.prefix, "announced", node)
	withdraw, announce := s.ebgp.MeasureToggles(b, s.prefix.String(), set)
	withdraw.Report(b, "withdraw")
	announce.Report(b, "announce")
}

// BenchmarkCiliumAdvertisementToRouter measures Cilium's own step: a change of the node's label on the
// CiliumBGPAdvertisement (the write the manager makes) → Cilium's agent → the router's RIB. The manager is stopped
// once the advertisement exists, so only the benchmark writes it.
func BenchmarkCiliumAdvertisementToRouter(b *testing.B) {
	s := startCiliumSetup(b, 1, agentDecides)
	node := s.nodes[0]
	s.waitAnnouncing(b, s.prefix, "announced", node)
	s.stopManager()
	ctx := context.Background()
	var list ciliumv2.CiliumBGPAdvertisementList
	if err := s.k8s.List(ctx, &list); err != nil || len(list.Items) != 1 {
		b.Fatalf("want one CiliumBGPAdvertisement: %v %v", list.Items, err)
	}
	adv := &list.Items[0]
	key := "announce.anycast.dev/" + node
	if adv.Labels[key] != "true" {
		b.Fatalf("the advertisement has no label %s: %v", key, adv.Labels)
	}
	setLabel := func(announce bool) error {
		if announce {
			adv.Labels[key] = "true"
		} else {
			delete(adv.Labels, key)
		}
		return s.k8s.Update(ctx, adv)
	}
	withdraw, announce := s.ebgp.MeasureToggles(b, s.prefix.String(), setLabel)
	withdraw.Report(b, "withdraw")
	announce.Report(b, "announce")
}
