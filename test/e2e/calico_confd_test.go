package e2e

import (
	"cmp"
	"context"
	"fmt"
	"math"
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

	"github.com/go-logr/logr/testr"
	calicov3 "github.com/projectcalico/api/pkg/apis/projectcalico/v3"
	"github.com/projectcalico/api/pkg/lib/numorstring"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/backend/calico"
	"github.com/anycast-operator/anycast-operator/internal/netlab"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

// calicoParts are Calico's confd (release-v3.28, built by hack/build-calico-confd.sh with its templates beside it) and
// Debian's BIRD 1.6.8, which Calico's templates are written for (make calico-confd; make test builds both first).
type calicoParts struct{ confd, templates, confdir, bird, birdc string }

func calicoBinaries(t testing.TB) calicoParts {
	t.Helper()
	confd := builtBinary(t, "CALICO_CONFD", "make calico-confd", "bin", "calico", testenv.CalicoConfdCommit, "confd")
	bird := builtBinary(t, "BIRD1", "make calico-confd", "bin", "bird1", "1.6.8", "usr", "sbin", "bird")
	return calicoParts{confd: confd, templates: filepath.Join(filepath.Dir(confd), "templates"), confdir: filepath.Join(filepath.Dir(confd), "conf.d"),
		bird: bird, birdc: filepath.Join(filepath.Dir(bird), "birdc")}
}

// bridgeCalicoV1 stands in for Calico's API server: it copies the projectcalico.org/v3 objects of the kinds confd
// reads (the manager writes v3) to the crd.projectcalico.org/v1 objects confd 3.28 reads, name and spec unchanged
// (what Calico's API server stores for these kinds), and deletes the v1 objects whose v3 object is gone. Changes are
// copied in the order they were written (by resourceVersion, deletions last), as confd would see them through the
// API server. The API server prunes what the v1 CRDs of 3.28 do not know, as a 3.28 cluster would.
func bridgeCalicoV1(t testing.TB, k8s client.Client) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	written := map[string]string{} // kind/name → the v3 spec last copied
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if err := bridgePass(ctx, k8s, written); err != nil && ctx.Err() == nil {
				t.Logf("bridging Calico's v3 objects to v1: %v", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
}

func bridgePass(ctx context.Context, k8s client.Client, written map[string]string) error {
	type change struct {
		order int64
		apply func() error
	}
	var changes []change
	for _, kind := range []string{"BGPPeer", "BGPFilter", "BGPConfiguration"} {
		v3 := &unstructured.UnstructuredList{}
		v3.SetGroupVersionKind(calicov3.SchemeGroupVersion.WithKind(kind + "List"))
		if err := k8s.List(ctx, v3); err != nil {
			return err
		}
		v1gvk := schema.GroupVersionKind{Group: "crd.projectcalico.org", Version: "v1", Kind: kind}
		v1 := &unstructured.UnstructuredList{}
		v1.SetGroupVersionKind(v1gvk.GroupVersion().WithKind(kind + "List"))
		if err := k8s.List(ctx, v1); err != nil {
			return err
		}
		have := map[string]unstructured.Unstructured{}
		for _, o := range v1.Items {
			have[o.GetName()] = o
		}
		for _, o := range v3.Items {
			key, spec := kind+"/"+o.GetName(), fmt.Sprint(o.Object["spec"])
			old, exists := have[o.GetName()]
			delete(have, o.GetName())
			if exists && written[key] == spec {
				continue // the v1 object differs only by what the API server pruned or defaulted
			}
			want := &unstructured.Unstructured{Object: map[string]any{"spec": o.Object["spec"]}}
			want.SetGroupVersionKind(v1gvk)
			want.SetName(o.GetName())
			rv, _ := strconv.ParseInt(o.GetResourceVersion(), 10, 64)
			changes = append(changes, change{rv, func() error {
				var err error
				if exists {
					want.SetResourceVersion(old.GetResourceVersion())
					err = k8s.Update(ctx, want)
				} else if err = k8s.Create(ctx, want); apierrors.IsAlreadyExists(err) {
					err = nil
				}
				if err == nil {
					written[key] = spec
				}
				return err
			}})
		}
		for _, o := range have {
			changes = append(changes, change{math.MaxInt64, func() error {
				delete(written, kind+"/"+o.GetName())
				return client.IgnoreNotFound(k8s.Delete(ctx, &o))
			}})
		}
	}
	slices.SortStableFunc(changes, func(a, b change) int { return cmp.Compare(a.order, b.order) })
	for _, c := range changes {
		if err := c.apply(); err != nil {
			return err
		}
	}
	return nil
}

// calicoNode runs one node's confd and BIRD 1.6.8: confd renders Calico's templates into the node's directory and
// reloads BIRD through its control socket, as calico-node does.
func startCalicoNode(t testing.TB, parts calicoParts, kubeconfig, node string) {
	t.Helper()
	dir := t.TempDir()
	confdir := filepath.Join(dir, "confd")
	if err := os.MkdirAll(filepath.Join(confdir, "conf.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(parts.templates, filepath.Join(confdir, "templates")); err != nil {
		t.Fatal(err)
	}
	// Calico's own confd resources (conf.d), pointed at this node's directory and BIRDs instead of calico-node's.
	socks := map[string]string{"4": filepath.Join(dir, "bird.ctl"), "6": filepath.Join(dir, "bird6.ctl")}
	cfgs := map[string]string{"4": filepath.Join(dir, "bird.cfg"), "6": filepath.Join(dir, "bird6.cfg")}
	bins := map[string][2]string{"4": {parts.bird, parts.birdc}, "6": {parts.bird + "6", parts.birdc + "6"}}
	for _, name := range []string{"bird", "bird_aggr", "bird_ipam", "bird6", "bird6_aggr", "bird6_ipam"} {
		family := "4"
		if strings.HasPrefix(name, "bird6") {
			family = "6"
		}
		b, err := os.ReadFile(filepath.Join(parts.confdir, name+".toml"))
		if err != nil {
			t.Fatal(err)
		}
		toml := string(b)
		for key, value := range map[string]string{
			"dest":       filepath.Join(dir, name+".cfg"),
			"check_cmd":  bins[family][0] + " -p -c {{.src}}", // the staged file; its includes resolve in confd's directory
			"reload_cmd": bins[family][1] + " -s " + socks[family] + " configure",
		} {
			toml = regexp.MustCompile(`(?m)^`+key+` = .*$`).ReplaceAllLiteralString(toml, key+" = "+strconv.Quote(value))
		}
		if err := os.WriteFile(filepath.Join(confdir, "conf.d", name+".toml"), []byte(toml), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	confd := exec.Command(parts.confd, "-confdir="+confdir)
	confd.Dir = dir // where the check of a staged bird.cfg finds the files it includes (relative paths)
	confd.Env = append(os.Environ(), "DATASTORE_TYPE=kubernetes", "KUBECONFIG="+kubeconfig, "NODENAME="+node, "NAMESPACE=kube-system",
		"CALICO_NETWORKING_BACKEND=bird", "BGP_LOGSEVERITYSCREEN="+cmp.Or(os.Getenv("CALICO_LOG_LEVEL"), "info"))
	startLogged(t, "confd "+node, confd, 40, os.Getenv("CALICO_LOGS") != "")
	// The BIRDs start once confd has rendered their configuration; later changes reach them through birdc configure.
	poll(t, "confd renders "+node+"'s BIRD configuration", func() (bool, string) {
		for _, f := range []string{"bird.cfg", "bird_aggr.cfg", "bird_ipam.cfg", "bird6.cfg", "bird6_aggr.cfg", "bird6_ipam.cfg"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				return false, err.Error()
			}
		}
		return true, ""
	})
	for _, family := range []string{"4", "6"} {
		bird := exec.Command(bins[family][0], "-f", "-c", cfgs[family], "-s", socks[family])
		bird.Dir = dir
		startLogged(t, "BIRD (IPv"+family+") "+node, bird, 40, os.Getenv("CALICO_LOGS") != "")
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, family := range []string{"4", "6"} {
				b, _ := os.ReadFile(cfgs[family])
				t.Logf("%s's %s:\n%s", node, filepath.Base(cfgs[family]), b)
			}
		}
	})
}

// TestRealCalicoConfd: the manager's Calico objects, rendered by Calico's own confd into BIRD 1.6.8's configuration
// on each node, reach the router: the prefix from exactly the announcing nodes, with its communities; a failing node
// withdraws only its own path and returns; deleting the AnycastPrefix removes its serviceLoadBalancerIPs entry and
// every path.
func TestRealCalicoConfd(t *testing.T) {
	parts := calicoBinaries(t)
	v3, err := testenv.CalicoCRDs()
	if err != nil {
		t.Fatal(err)
	}
	v1, err := testenv.CalicoV1CRDs()
	if err != nil {
		t.Fatal(err)
	}
	lab := netlab.New(t, 2)
	env, _ := startCluster(t, testenv.WithCRDs(v3, v1))
	if err := calico.AddToScheme(env.Scheme); err != nil {
		t.Fatal(err)
	}
	k8s, err := client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	nodes := []string{"edge-1", "edge-2"}
	addrs := map[string]netip.Addr{"edge-1": lab.Nodes4[0], "edge-2": lab.Nodes4[1]}
	addrs6 := map[string]netip.Addr{"edge-1": lab.Nodes6[0], "edge-2": lab.Nodes6[1]}
	neighbors := map[netip.Addr]uint32{}
	for _, n := range nodes {
		neighbors[addrs[n]], neighbors[addrs6[n]] = 64512, 64512
	}
	// One router with an IPv4 and an IPv6 session from each node (BIRD and BIRD 6).
	router := bgptest.StartWith(t, bgptest.Options{Addresses: []netip.Addr{lab.Router4, lab.Router6}, ASN: 65001, Netns: lab.NetnsPath, Neighbors: neighbors})
	prefix, prefix6 := netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8:100::/48")

	// The agents probe services on loopback addresses of their own; BGP runs on the lab's addresses.
	probeAddrs := []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.4")}
	port, services := startNodeServices(t, probeAddrs...)
	claim := &anycastv1.BGPSessionClaim{ObjectMeta: metav1.ObjectMeta{Name: "edge"}}
	claim.Spec.LocalASN = 64512
	claim.Spec.Static = &anycastv1.StaticSessions{Peers: []anycastv1.BGPPeer{
		{Address: anycastv1.IPAddress(router.Address.String()), ASN: 65001, Port: ptr.To(int32(router.Port))},
		{Address: anycastv1.IPAddress(lab.Router6.String()), ASN: 65001, Port: ptr.To(int32(router.Port))}}}
	ap := dnsPrefix("web")
	ap.Spec.Prefixes = append(ap.Spec.Prefixes, anycastv1.CIDR(prefix6.String()))
	ap.Spec.Attributes = &anycastv1.BGPAttributes{Communities: []anycastv1.Community{"64512:100"}, LargeCommunities: []anycastv1.LargeCommunity{"64512:1:2"}}
	// What the cluster's administrator sets: the AS (Calico 3.28 has no per-peer local AS), no mesh, and BIRD bound
	// to the node's address (several BIRDs share this host).
	objs := []client.Object{claim, ap, fastPolicy("web", fmt.Sprintf("http://$(NODE_IP):%d/healthz", port), 2),
		&calicov3.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: calico.GlobalConfig}, Spec: calicov3.BGPConfigurationSpec{
			ASNumber: ptr.To(numorstring.ASNumber(64512)), NodeToNodeMeshEnabled: ptr.To(false), BindMode: ptr.To(calicov3.BindModeNodeIP),
			LogSeverityScreen: "Info"}}}
	for _, n := range nodes {
		objs = append(objs, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{corev1.LabelHostname: n},
			Annotations: map[string]string{"projectcalico.org/IPv4Address": addrs[n].String() + "/24", "projectcalico.org/IPv6Address": addrs6[n].String() + "/64"}}})
	}
	create(t, k8s, objs...)
	bridgeCalicoV1(t, k8s)
	startManagerWith(t, env, calico.Translator{Namespace: "kube-system", Secrets: func(string, string) ([]byte, bool) { return nil, false }})
	log := testr.NewWithInterface(t, testr.Options{Verbosity: 0})
	for i, n := range nodes {
		startAgentWith(t, env, n, probeAddrs[i], speaker.Delegated{}, log)
	}
	kubeconfig, err := env.Kubeconfig()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		startCalicoNode(t, parts, kubeconfig, n)
	}

	hops := func(names ...string) []string { return hopsOf(addrs, names...) }
	hops6 := func(names ...string) []string { return hopsOf(addrs6, names...) }
	// waitFrom waits for both prefixes from exactly the named nodes, each over its own family's sessions.
	waitFrom := func(what string, names ...string) []bgptest.Path {
		t.Helper()
		v6 := router.WaitFor(t, prefix6, what+" (IPv6)", func(p []bgptest.Path) bool { return slices.Equal(from(p), hops6(names...)) })
		return append(router.WaitFor(t, prefix, what, func(p []bgptest.Path) bool { return slices.Equal(from(p), hops(names...)) }), v6...)
	}
	got := waitFrom("both nodes announce", nodes...)
	t.Logf("the router received:\n%s", describePaths(got))
	for _, p := range got {
		if !slices.Equal(p.ASPath, []uint32{64512}) || !slices.Contains(p.Communities, 64512<<16|100) || !slices.Equal(p.LargeCommunities, []string{"64512:1:2"}) {
			t.Errorf("%s; want AS path [64512], community 64512:100, large community 64512:1:2", p)
		}
		if p.Neighbor != p.NextHop {
			t.Errorf("%s: want the next hop of the session's own family, the node's address", p)
		}
	}
	services[1].healthy.Store(false)
	waitFrom("edge-2 failing withdraws its own path only", "edge-1")
	services[1].healthy.Store(true)
	got = waitFrom("edge-2 recovered", nodes...)
	for _, p := range got {
		if !slices.Contains(p.Communities, 64512<<16|100) {
			t.Errorf("after recovery: %s; want community 64512:100", p)
		}
	}
	for a := range neighbors {
		if e, d := router.Established(a), router.Downs(a); e != 1 || d != 0 {
			t.Errorf("session of %s: established %d times, dropped %d times; want once, never", a, e, d)
		}
	}

	// Deprefer: the node's own prefixAdvertisements (BGPConfiguration node.<name>) replace the cluster-wide entry on
	// that node, so edge-1's path carries GRACEFUL_SHUTDOWN (and the prefix's communities), edge-2's does not.
	setOnUnhealthy(t, k8s, "web", anycastv1.UnhealthyDeprefer, nodes...)
	gshut := func(want ...string) func([]bgptest.Path) bool {
		return func(paths []bgptest.Path) bool {
			if !slices.Equal(from(paths), hops(nodes...)) {
				return false
			}
			for _, p := range paths {
				if !slices.Contains(p.Communities, 64512<<16|100) {
					return false
				}
				if slices.Contains(p.Communities, speaker.GracefulShutdown) != slices.Contains(hops(want...), p.NextHop) {
					return false
				}
			}
			return true
		}
	}
	services[0].healthy.Store(false)
	t.Logf("edge-1 deprefered:\n%s", describePaths(router.WaitFor(t, prefix, "edge-1 deprefers", gshut("edge-1"))))
	services[0].healthy.Store(true)
	router.WaitFor(t, prefix, "edge-1 back to normal", gshut())
	setOnUnhealthy(t, k8s, "web", anycastv1.UnhealthyWithdraw, nodes...)

	// A single address: Calico announces a /32 of serviceLoadBalancerIPs only for a Service that holds it
	// (spec.loadBalancerIP and the address in its status, externalTrafficPolicy Cluster: from every node). The nodes' filters now let two prefixes
	// through, so their rules are the multi-prefix walk, run here by BIRD itself.
	host := netip.MustParsePrefix("203.0.113.53/32")
	one := dnsPrefix("web")
	one.Name = "one"
	one.Spec.Prefixes = []anycastv1.CIDR{anycastv1.CIDR(host.String())}
	one.Spec.Attributes = &anycastv1.BGPAttributes{Communities: []anycastv1.Community{"64512:53"}}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "dns-one", Namespace: "default"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeLoadBalancer, LoadBalancerIP: host.Addr().String(), ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyCluster,
		Ports: []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}}}}
	// confd 3.28 looks a Service up with its core/v1 Endpoints (kube-controller-manager's endpoints controller writes
	// them; the test API server has none); unstructured, since the Go type is deprecated.
	endpoints := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Endpoints",
		"metadata": map[string]any{"name": "dns-one", "namespace": "default"}}}
	create(t, k8s, one, svc, endpoints)
	// Calico announces the addresses in the Service's status, which an LB IPAM (Calico's kube-controllers, MetalLB's
	// controller) writes; the test plays it.
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: host.Addr().String()}}
	if err := k8s.Status().Update(ctx, svc); err != nil {
		t.Fatal(err)
	}
	// From its first announcement on, never without its community: a new prefix is listed (with its communities)
	// before any node's filter lets it through, since confd renders and loads its files one by one.
	updates := router.Updates(t)
	got = router.WaitFor(t, host, "the /32 from both nodes", func(p []bgptest.Path) bool { return slices.Equal(from(p), hops(nodes...)) })
	for _, p := range got {
		if !slices.Contains(p.Communities, 64512<<16|53) {
			t.Errorf("%s; want community 64512:53", p)
		}
	}
	// Each BIRD reconfiguration that changes an export filter feeds the peer again: announcements of what the filter
	// lets through, withdrawals of everything else, announced before or not. So the /32 may come more than once per
	// node, and withdrawn before it was ever announced; once announced, never withdrawn, never without its community.
	announced := map[string]bool{}
	readUpdates(updates, 10*time.Second, func(c bgptest.Change) {
		switch {
		case c.Prefix != host.String():
		case c.Withdrawn && announced[c.Neighbor]:
			t.Errorf("the router got the /32 from %s withdrawn after it was announced", c.Neighbor)
		case !c.Withdrawn && !slices.Contains(c.Communities, 64512<<16|53):
			t.Errorf("the router got the /32 from %s without its community: %v", c.Neighbor, c.Communities)
		case !c.Withdrawn:
			announced[c.Neighbor] = true
		}
	}, func() bool { return len(announced) == len(nodes) })
	if len(announced) != len(nodes) || router.UpdatesLost() > 0 {
		t.Errorf("the update stream shows the /32 announced by %v, want both nodes (%d updates lost)", announced, router.UpdatesLost())
	}
	services[0].healthy.Store(false)
	router.WaitFor(t, host, "edge-1 failing: the /32 from edge-2 only", func(p []bgptest.Path) bool { return slices.Equal(from(p), hops("edge-2")) })
	waitFrom("edge-1 failing: the /24 from edge-2 only", "edge-2")
	services[0].healthy.Store(true)
	router.WaitFor(t, host, "edge-1 recovered: the /32", func(p []bgptest.Path) bool { return slices.Equal(from(p), hops(nodes...)) })
	waitFrom("edge-1 recovered: the /24", nodes...)
	if err := k8s.Delete(ctx, one); err != nil {
		t.Fatal(err)
	}
	router.WaitFor(t, host, "the /32's AnycastPrefix deleted", func(p []bgptest.Path) bool { return len(p) == 0 })
	for a := range neighbors {
		if e, d := router.Established(a), router.Downs(a); e != 1 || d != 0 {
			t.Errorf("session of %s: established %d times, dropped %d times; want once, never", a, e, d)
		}
	}

	if err := k8s.Delete(ctx, dnsPrefix("web")); err != nil {
		t.Fatal(err)
	}
	waitFrom("the AnycastPrefix is deleted: nothing announced")
	poll(t, "the serviceLoadBalancerIPs entry is removed", func() (bool, string) {
		var cfg calicov3.BGPConfiguration
		if err := k8s.Get(ctx, client.ObjectKey{Name: calico.GlobalConfig}, &cfg); err != nil {
			return false, err.Error()
		}
		return !strings.Contains(fmt.Sprint(cfg.Spec.ServiceLoadBalancerIPs), "198.51.100.0/24") && !strings.Contains(fmt.Sprint(cfg.Spec.ServiceLoadBalancerIPs), "2001:db8:100::/48"),
			fmt.Sprint(cfg.Spec.ServiceLoadBalancerIPs)
	})
}
