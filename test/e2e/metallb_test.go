package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/backend/metallb"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

// nodeService is one node's HTTP service on the node's own address, at a port every node shares, so that one
// HealthPolicy probes each node's own service through $(NODE_IP).
type nodeService struct{ healthy atomic.Bool }

func startNodeServices(t testing.TB, addrs ...netip.Addr) (int, []*nodeService) {
	t.Helper()
	first, err := net.Listen("tcp", netip.AddrPortFrom(addrs[0], 0).String())
	if err != nil {
		t.Fatal(err)
	}
	port := first.Addr().(*net.TCPAddr).Port
	listeners := []net.Listener{first}
	for _, a := range addrs[1:] {
		l, err := net.Listen("tcp", netip.AddrPortFrom(a, uint16(port)).String())
		if err != nil {
			t.Fatal(err)
		}
		listeners = append(listeners, l)
	}
	var out []*nodeService
	for _, l := range listeners {
		s := &nodeService{}
		s.healthy.Store(true)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if !s.healthy.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		}), ReadHeaderTimeout: time.Second}
		go func() { _ = srv.Serve(l) }()
		t.Cleanup(func() { _ = srv.Close() })
		out = append(out, s)
	}
	return port, out
}

// startMetalLBAPIServer is a test API server with MetalLB's CRDs and frr-k8s's (frr-k8s mode reads its session
// states), and a client that knows their kinds.
func startMetalLBAPIServer(t *testing.T) (*testenv.Env, client.Client) {
	t.Helper()
	dir, err := testenv.MetalLBCRDs()
	if err != nil {
		t.Fatal(err)
	}
	frr, err := testenv.FRRK8sCRDs()
	if err != nil {
		t.Fatal(err)
	}
	env, _ := startCluster(t, testenv.WithCRDs(dir, frr))
	if err := metallb.AddToScheme(env.Scheme); err != nil {
		t.Fatal(err)
	}
	k8s, err := client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return env, k8s
}

// metallbCluster runs the manager with the MetalLB backend and agents that only decide and report (speaker.Delegated),
// against an API server with MetalLB's CRDs. It returns a client and the nodes' services.
func metallbCluster(t *testing.T, nodes map[string]netip.Addr, names []string) (client.Client, []*nodeService) {
	t.Helper()
	env, k8s := startMetalLBAPIServer(t)
	var addrs []netip.Addr
	for _, n := range names {
		addrs = append(addrs, nodes[n])
	}
	port, services := startNodeServices(t, addrs...)
	claim := &anycastv1.BGPSessionClaim{ObjectMeta: metav1.ObjectMeta{Name: "edge"}}
	claim.Spec.LocalASN = 64512
	claim.Spec.Static = &anycastv1.StaticSessions{Peers: []anycastv1.BGPPeer{{Address: "192.0.2.1", ASN: 65001}}}
	ap := &anycastv1.AnycastPrefix{ObjectMeta: metav1.ObjectMeta{Name: "dns"}}
	ap.Spec.Prefixes = []anycastv1.CIDR{"198.51.100.0/24"}
	ap.Spec.SessionClaims = []anycastv1.LocalObjectName{"edge"}
	ap.Spec.HealthPolicyRef = &anycastv1.ObjectReference{Name: "web"}
	objs := []client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "metallb-system"}}, claim, ap,
		fastPolicy("web", fmt.Sprintf("http://$(NODE_IP):%d/healthz", port), 2)}
	for _, n := range names {
		objs = append(objs, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{corev1.LabelHostname: n}}})
	}
	create(t, k8s, objs...)
	startManagerWith(t, env, metallb.Translator{Namespace: "metallb-system", Mode: metallb.FRRK8s,
		Secrets: func(string, string) ([]byte, bool) { return nil, false }})
	log := testr.NewWithOptions(t, testr.Options{Verbosity: 0})
	for _, n := range names {
		startAgentWith(t, env, n, nodes[n], speaker.Delegated{}, log)
	}
	return k8s, services
}

// announcingHosts returns the hosts the prefix's BGPAdvertisement selects (nil when there is none).
func announcingHosts(ctx context.Context, k8s client.Client) ([]string, error) {
	var list metallbv1beta1.BGPAdvertisementList
	if err := k8s.List(ctx, &list, client.InNamespace("metallb-system")); err != nil {
		return nil, err
	}
	var hosts []string
	for _, a := range list.Items {
		for _, sel := range a.Spec.NodeSelectors {
			for _, e := range sel.MatchExpressions {
				hosts = append(hosts, e.Values...)
			}
		}
	}
	slices.Sort(hosts)
	return hosts, nil
}

// TestMetalLBBackendWithAgents: real agents probe their services and report; the manager turns the reports into
// MetalLB objects. A failing node leaves the BGPAdvertisement's node selectors and comes back when it recovers.
func TestMetalLBBackendWithAgents(t *testing.T) {
	nodes := map[string]netip.Addr{"edge-1": netip.MustParseAddr("127.0.0.2"), "edge-2": netip.MustParseAddr("127.0.0.4")}
	names := []string{"edge-1", "edge-2"}
	k8s, services := metallbCluster(t, nodes, names)
	waitHosts := func(what string, want ...string) {
		t.Helper()
		var got []string
		err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			var err error
			got, err = announcingHosts(ctx, k8s)
			return err == nil && slices.Equal(got, want), nil
		})
		if err != nil {
			t.Fatalf("%s: the BGPAdvertisement selects %v, want %v", what, got, want)
		}
	}
	waitHosts("both healthy", "edge-1", "edge-2")
	services[1].healthy.Store(false)
	waitHosts("edge-2 failing", "edge-1")
	services[1].healthy.Store(true)
	waitHosts("edge-2 recovered", "edge-1", "edge-2")

	// Someone deletes the advertisement, or edits its node selectors: the manager puts it back as it was.
	var list metallbv1beta1.BGPAdvertisementList
	if err := k8s.List(context.Background(), &list, client.InNamespace("metallb-system")); err != nil || len(list.Items) != 1 {
		t.Fatalf("want one advertisement: %v %v", list.Items, err)
	}
	adv := list.Items[0]
	if err := k8s.Delete(context.Background(), &adv); err != nil {
		t.Fatal(err)
	}
	waitHosts("the deleted advertisement is back", "edge-1", "edge-2")
	if err := k8s.List(context.Background(), &list, client.InNamespace("metallb-system")); err != nil || len(list.Items) != 1 {
		t.Fatalf("want one advertisement: %v %v", list.Items, err)
	}
	adv = list.Items[0]
	adv.Spec.NodeSelectors[0].MatchExpressions[0].Values = []string{"edge-9"}
	if err := k8s.Update(context.Background(), &adv); err != nil {
		t.Fatal(err)
	}
	waitHosts("the edited advertisement is put back", "edge-1", "edge-2")

	services[0].healthy.Store(false)
	services[1].healthy.Store(false)
	waitHosts("both failing: no advertisement at all")
	if err := k8s.List(context.Background(), &list, client.InNamespace("metallb-system")); err != nil || len(list.Items) != 0 {
		t.Errorf("advertisements left with every node failing: %d (%v)", len(list.Items), err)
	}
}
