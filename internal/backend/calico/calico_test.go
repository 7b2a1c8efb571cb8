package calico_test

import (
	"context"
	"flag"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"

	calicov3 "github.com/projectcalico/api/pkg/apis/projectcalico/v3"
	"github.com/projectcalico/api/pkg/lib/numorstring"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/backend"
	"github.com/anycast-operator/anycast-operator/internal/backend/backendtest"
	"github.com/anycast-operator/anycast-operator/internal/backend/calico"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files")

const calicoNS = "calico-system"

var (
	peerKind   = calicov3.SchemeGroupVersion.WithKind("BGPPeer")
	filterKind = calicov3.SchemeGroupVersion.WithKind("BGPFilter")
	configKind = calicov3.SchemeGroupVersion.WithKind("BGPConfiguration")
	statusKind = calicov3.SchemeGroupVersion.WithKind("CalicoNodeStatus")
	secretKind = corev1.SchemeGroupVersion.WithKind("Secret")
)

func startCluster(t *testing.T) *backendtest.Cluster {
	dir, err := testenv.CalicoCRDs()
	if err != nil {
		t.Fatal(err)
	}
	c := backendtest.Start(t, calico.AddToScheme, []string{dir}, calicoNS)
	c.Planner.Backend = calico.Translator{Namespace: calicoNS, Secrets: c.Secrets()}
	c.AsManager("calico") // everything below runs with the manager's RBAC only
	return c
}

// accepted lists, per node, which of the test's prefixes its filter for claim edge lets through to Calico's export,
// evaluating its rules as the BIRD function confd renders from them does (the first matching rule decides). It fails
// the test if the filter lets through any other route (the route-leak guard) or has an Accept rule (an Accept ends
// BIRD's export filter before Calico applies the prefix's communities).
func accepted(t *testing.T, c *backendtest.Cluster, nodes ...string) map[string][]string {
	t.Helper()
	ours := []string{"198.51.100.0/24", "2001:db8:100::/48"}
	others := []string{"203.0.113.0/24", "10.0.0.0/8", "0.0.0.0/0", "198.51.0.0/16", "::/0", "2001:db8::/32", "2001:db8:200::/48"}
	out := map[string][]string{}
	for _, n := range nodes {
		f := backendtest.Get(t, c, "anycast-edge-"+n, &calicov3.BGPFilter{})
		rules := calico.ExportRules(f)
		for _, r := range rules {
			if r.Action == calicov3.Accept {
				t.Errorf("filter of %s has an Accept rule (%+v): the prefix would reach the router without its communities", n, r)
			}
		}
		// Through to Calico's export: no rule matches, or an Accept does.
		passes := func(route string) bool {
			action, matched := calico.FirstMatch(rules, netip.MustParsePrefix(route))
			return !matched || action == calicov3.Accept
		}
		for _, o := range others {
			if passes(o) {
				t.Errorf("filter of %s lets %s through: the route-leak guard", n, o)
			}
		}
		got := []string{}
		for _, p := range ours {
			if passes(p) {
				got = append(got, p)
			}
		}
		out[n] = got
	}
	return out
}

// TestCalicoBackend drives the planner with the Calico backend against Calico's v3 CRDs generated from its Go API.
func TestCalicoBackend(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()

	// The user's own Calico objects: a global peer, a filter, and the cluster-wide BGPConfiguration with entries of
	// its own, one of them for a CIDR the operator will announce too.
	foreignPeer := &calicov3.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "tor"}, Spec: calicov3.BGPPeerSpec{PeerIP: "192.0.2.254", ASNumber: 65000}}
	foreignFilter := &calicov3.BGPFilter{ObjectMeta: metav1.ObjectMeta{Name: "pods-only"}, Spec: calicov3.BGPFilterSpec{
		ExportV4: []calicov3.BGPFilterRuleV4{{CIDR: "10.0.0.0/8", MatchOperator: calicov3.In, Action: calicov3.Accept}}}}
	userConfig := calicov3.BGPConfigurationSpec{
		ASNumber:               ptr.To(numorstring.ASNumber(64600)),
		NodeToNodeMeshEnabled:  ptr.To(false),
		ServiceLoadBalancerIPs: []calicov3.ServiceLoadBalancerIPBlock{{CIDR: "203.0.113.0/24"}, {CIDR: "2001:db8:100::/48"}},
		PrefixAdvertisements:   []calicov3.PrefixAdvertisement{{CIDR: "203.0.113.0/24", Communities: []string{"65000:1"}}},
	}
	global := &calicov3.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: calico.GlobalConfig}, Spec: userConfig}
	c.Create(foreignPeer, foreignFilter, global)
	c.Nodes("n1", "n2", "n3")
	s := backendtest.NewScenario()
	c.CreateScenario(s)

	// Before any agent reports: a BGPPeer per node and peer, a reject-everything filter per node, a CalicoNodeStatus
	// per node, the password Secret in calico-node's namespace; the global configuration is not touched.
	peers := c.Owned(peerKind)
	if len(peers) != 6 {
		t.Fatalf("want a BGPPeer per node and peer (6), got %d", len(peers))
	}
	p := backendtest.Get(t, c, "anycast-edge-192-0-2-1-n2", &calicov3.BGPPeer{})
	if p.Spec.Node != "n2" || p.Spec.PeerIP != "192.0.2.1" || p.Spec.ASNumber != 65001 || p.Spec.LocalASNumber == nil || *p.Spec.LocalASNumber != 64512 ||
		!slices.Equal(p.Spec.Filters, []string{"anycast-edge-n2"}) || p.Spec.MaxRestartTime == nil || p.Spec.MaxRestartTime.Duration.Minutes() != 2 {
		t.Errorf("BGPPeer of n2: %+v", p.Spec)
	}
	if p.Spec.Password == nil || p.Spec.Password.SecretKeyRef == nil {
		t.Fatalf("BGPPeer of n2 has no password reference: %+v", p.Spec)
	}
	sec := &corev1.Secret{}
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: calicoNS, Name: p.Spec.Password.SecretKeyRef.Name}, sec); err != nil {
		t.Fatal(err)
	}
	if string(sec.Data[p.Spec.Password.SecretKeyRef.Key]) != backendtest.Password {
		t.Errorf("the password Secret in calico-node's namespace does not hold the claim's password")
	}
	if got := backendtest.Get(t, c, "anycast-edge-2001-db8--1-n1", &calicov3.BGPPeer{}).Spec.PeerIP; got != "[2001:db8::1]:1179" {
		t.Errorf("IPv6 peer with a port: peerIP %q", got)
	}
	for n, got := range accepted(t, c, "n1", "n2", "n3") {
		if len(got) != 0 {
			t.Errorf("%s accepts %v before its agent reported", n, got)
		}
	}
	if len(c.Owned(statusKind)) != 3 {
		t.Errorf("want a CalicoNodeStatus per node")
	}
	// The planned prefixes are listed before any node announces (the filters keep them from every peer), so that
	// their static routes and communities are in BIRD's configuration before a filter lets them through.
	if got := cidrs(backendtest.Get(t, c, calico.GlobalConfig, &calicov3.BGPConfiguration{}).Spec.ServiceLoadBalancerIPs); !slices.Equal(got, []string{"203.0.113.0/24", "2001:db8:100::/48", "198.51.100.0/24"}) {
		t.Errorf("serviceLoadBalancerIPs before anything was announced: %v", got)
	}

	// Every agent announces: the prefixes are in serviceLoadBalancerIPs (next to the user's entries; the IPv6 prefix
	// the user listed already stays the user's), with their communities, and every filter accepts them.
	for _, n := range []string{"n1", "n2", "n3"} {
		c.Report(n, anycastv1.PrefixAnnounced)
	}
	c.Reconcile()
	g := backendtest.Get(t, c, calico.GlobalConfig, &calicov3.BGPConfiguration{})
	if got := cidrs(g.Spec.ServiceLoadBalancerIPs); !slices.Equal(got, []string{"203.0.113.0/24", "2001:db8:100::/48", "198.51.100.0/24"}) {
		t.Errorf("serviceLoadBalancerIPs: %v", got)
	}
	wantAdv := []calicov3.PrefixAdvertisement{
		{CIDR: "203.0.113.0/24", Communities: []string{"65000:1"}},
		{CIDR: "198.51.100.0/24", Communities: []string{"64512:100", "65535:65281", "64512:1:2"}},
		{CIDR: "2001:db8:100::/48", Communities: []string{"64512:100", "65535:65281", "64512:1:2"}},
	}
	if !equality.Semantic.DeepEqual(g.Spec.PrefixAdvertisements, wantAdv) {
		t.Errorf("prefixAdvertisements: %+v", g.Spec.PrefixAdvertisements)
	}
	if *g.Spec.ASNumber != 64600 || *g.Spec.NodeToNodeMeshEnabled {
		t.Errorf("the user's settings in the global BGPConfiguration changed: %+v", g.Spec)
	}
	for n, got := range accepted(t, c, "n1", "n2", "n3") {
		if !slices.Equal(got, []string{"198.51.100.0/24", "2001:db8:100::/48"}) {
			t.Errorf("%s accepts %v", n, got)
		}
	}

	// calico-node reports n1's sessions: the claim's status shows them.
	st := backendtest.Get(t, c, "anycast-n1", &calicov3.CalicoNodeStatus{})
	st.Status.LastUpdated = metav1.Now()
	st.Status.BGP.PeersV4 = []calicov3.CalicoNodePeer{{PeerIP: "192.0.2.1", Type: calicov3.BGPPeerTypeNodePeer, State: calicov3.BGPSessionStateEstablished}}
	st.Status.BGP.PeersV6 = []calicov3.CalicoNodePeer{{PeerIP: "2001:db8::1", Type: calicov3.BGPPeerTypeNodePeer, State: calicov3.BGPSessionStateActive}}
	if err := c.Client.Update(ctx, st); err != nil {
		t.Fatal(err)
	}
	c.Reconcile()
	claim := backendtest.Get(t, c, "edge", &anycastv1.BGPSessionClaim{})
	states := map[string]anycastv1.SessionState{}
	for _, x := range claim.Status.Sessions {
		states[x.Node+"/"+x.PeerAddress] = x.State
	}
	if states["n1/192.0.2.1"] != anycastv1.SessionEstablished || states["n1/2001:db8::1"] != anycastv1.SessionActive || states["n2/192.0.2.1"] != anycastv1.SessionUnknown {
		t.Errorf("claim sessions from CalicoNodeStatus: %v", states)
	}
	if claim.Status.EstablishedSessions != 1 {
		t.Errorf("established sessions: %d", claim.Status.EstablishedSessions)
	}

	// Steady state: nothing is written.
	c.Unchanged(peerKind, filterKind, configKind, statusKind, secretKind)

	// n2 withdraws: its filter stops accepting the prefixes; the others still do.
	c.Report("n2", anycastv1.PrefixWithdrawn)
	c.Reconcile()
	got := accepted(t, c, "n1", "n2", "n3")
	if len(got["n2"]) != 0 || len(got["n1"]) != 2 || len(got["n3"]) != 2 {
		t.Errorf("after n2 withdrew the filters accept %v", got)
	}

	// n3 deprefers: its own prefixAdvertisements, with GRACEFUL_SHUTDOWN, in BGPConfiguration node.n3.
	c.Report("n3", anycastv1.PrefixDeprefered)
	c.Reconcile()
	n3 := backendtest.Get(t, c, "node.n3", &calicov3.BGPConfiguration{})
	if len(n3.Spec.PrefixAdvertisements) != 2 || !slices.Contains(n3.Spec.PrefixAdvertisements[0].Communities, "65535:0") {
		t.Errorf("node.n3 prefixAdvertisements: %+v", n3.Spec.PrefixAdvertisements)
	}

	// Nobody announces: every filter rejects the prefixes, which stay listed while planned; node.n3 (which the
	// operator created) goes.
	for _, n := range []string{"n1", "n3"} {
		c.Report(n, anycastv1.PrefixWithdrawn)
	}
	c.Reconcile()
	for n, got := range accepted(t, c, "n1", "n2", "n3") {
		if len(got) != 0 {
			t.Errorf("%s accepts %v with every node withdrawn", n, got)
		}
	}
	g = backendtest.Get(t, c, calico.GlobalConfig, &calicov3.BGPConfiguration{})
	if got := cidrs(g.Spec.ServiceLoadBalancerIPs); !slices.Equal(got, []string{"203.0.113.0/24", "2001:db8:100::/48", "198.51.100.0/24"}) {
		t.Errorf("serviceLoadBalancerIPs with nothing announced: %v", got)
	}
	c.Gone(&calicov3.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "node.n3"}})

	// Deleting the prefix and the claim removes everything the operator made; the global configuration is the
	// user's again, exactly.
	c.Report("n1", anycastv1.PrefixAnnounced)
	c.Reconcile()
	c.Delete(s.Prefix)
	c.Reconcile()
	c.Gone(s.Prefix)
	c.Delete(s.Claim)
	c.Reconcile()
	c.Gone(s.Claim)
	for _, k := range []backend.Kind{{GroupVersionKind: peerKind}, {GroupVersionKind: filterKind}, {GroupVersionKind: statusKind}, {GroupVersionKind: secretKind}} {
		if left := c.Owned(k.GroupVersionKind); len(left) != 0 {
			t.Errorf("%d %s left after the prefix and claim were deleted", len(left), k.Kind)
		}
	}
	g = backendtest.Get(t, c, calico.GlobalConfig, &calicov3.BGPConfiguration{})
	if !equality.Semantic.DeepEqual(g.Spec, global.Spec) || len(g.Labels) != 0 || len(g.Annotations) != 0 {
		t.Errorf("the global BGPConfiguration is not the user's again: labels %v annotations %v spec %+v", g.Labels, g.Annotations, g.Spec)
	}
	c.Untouched(foreignPeer, foreignFilter)
}

func cidrs(blocks []calicov3.ServiceLoadBalancerIPBlock) []string {
	var out []string
	for _, b := range blocks {
		out = append(out, b.CIDR)
	}
	return out
}

// TestTranslationGolden shows, for review, what the backend writes for two claims, IPv4 and IPv6, a withdrawn node
// and a deprefered one.
func TestTranslationGolden(t *testing.T) {
	scheme := backendtest.Scheme(t, calico.AddToScheme)
	tr := calico.Translator{Namespace: calicoNS, Secrets: backendtest.GoldenSecrets}.Translate(backendtest.GoldenDesired())
	backendtest.Golden(t, filepath.Join("testdata", "calico.golden.yaml"),
		"Generated by TestTranslationGolden (go test ./internal/backend/calico -update).", scheme, tr, *update)
}

// TestGoldenAccepted: the golden translation (two claims, IPv4 and IPv6, a withdrawn and a deprefered node) is
// accepted whole by the stack's CRDs.
func TestGoldenAccepted(t *testing.T) {
	c := startCluster(t)
	b := calico.Translator{Namespace: calicoNS, Secrets: backendtest.GoldenSecrets}
	c.Accepts(b.Translate(backendtest.GoldenDesired()), b.Kinds(), b.SharedKinds())
}
