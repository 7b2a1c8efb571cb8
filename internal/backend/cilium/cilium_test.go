package cilium_test

import (
	"context"
	"flag"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/backend/backendtest"
	"github.com/anycast-operator/anycast-operator/internal/backend/cilium"
	"github.com/anycast-operator/anycast-operator/internal/backend/cilium/ciliumv2"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files")

const secretsNS = "kube-system"

var (
	clusterKind = ciliumv2.GroupVersion.WithKind("CiliumBGPClusterConfig")
	peerKind    = ciliumv2.GroupVersion.WithKind("CiliumBGPPeerConfig")
	advKind     = ciliumv2.GroupVersion.WithKind("CiliumBGPAdvertisement")
	poolKind    = ciliumv2.GroupVersion.WithKind("CiliumLoadBalancerIPPool")
	secretKind  = corev1.SchemeGroupVersion.WithKind("Secret")
)

func startCluster(t *testing.T) *backendtest.Cluster {
	dir, err := testenv.CiliumCRDs()
	if err != nil {
		t.Fatal(err)
	}
	c := backendtest.Start(t, cilium.AddToScheme, []string{dir}) // kube-system exists already
	c.Planner.Backend = cilium.Translator{SecretsNamespace: secretsNS, Secrets: c.Secrets()}
	c.AsManager("cilium") // everything below runs with the manager's RBAC only
	return c
}

// sent evaluates Cilium's selection as its agent does: for node n, the advertisements that the peer configs of its
// cluster config select, per peer, as "pool/family/last standard community".
func sent(t *testing.T, c *backendtest.Cluster, node string) map[string][]string {
	t.Helper()
	var advs ciliumv2.CiliumBGPAdvertisementList
	if err := c.Client.List(context.Background(), &advs); err != nil {
		t.Fatal(err)
	}
	cc := backendtest.Get(t, c, "anycast-"+node, &ciliumv2.CiliumBGPClusterConfig{})
	if got := cc.Spec.NodeSelector.MatchLabels[corev1.LabelHostname]; got != "host-"+node {
		t.Errorf("cluster config of %s selects hostname %q", node, got)
	}
	out := map[string][]string{}
	for _, in := range cc.Spec.BGPInstances {
		for _, p := range in.Peers {
			pc := backendtest.Get(t, c, p.PeerConfigRef.Name, &ciliumv2.CiliumBGPPeerConfig{})
			got := []string{}
			for _, f := range pc.Spec.Families {
				sel, err := metav1.LabelSelectorAsSelector(f.Advertisements)
				if err != nil {
					t.Fatal(err)
				}
				for _, a := range advs.Items {
					if !sel.Matches(labels.Set(a.Labels)) {
						continue
					}
					for _, ad := range a.Spec.Advertisements {
						length := ad.Service.AggregationLengthIPv4
						if f.Afi == "ipv6" {
							length = ad.Service.AggregationLengthIPv6
						}
						if length == nil {
							continue // this advertisement aggregates the other family
						}
						last := "-" // the last standard community tells a deprefered variant (65535:0) from the normal one
						if ad.Attributes != nil && ad.Attributes.Communities != nil && len(ad.Attributes.Communities.Standard) > 0 {
							last = ad.Attributes.Communities.Standard[len(ad.Attributes.Communities.Standard)-1]
						}
						got = append(got, ad.Selector.MatchLabels[cilium.PoolLabel]+"/"+f.Afi+"/"+last)
					}
				}
			}
			slices.Sort(got)
			out[in.Name+"/"+*p.PeerAddress] = got
		}
	}
	return out
}

const (
	pool4 = "anycast-web-198-51-100-0-24"
	pool6 = "anycast-web-2001-db8-100---48"
)

// TestCiliumBackend drives the planner with the Cilium backend against Cilium's own CRDs (cilium.io/v2, from the
// module cache).
func TestCiliumBackend(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()

	// The user's own Cilium objects.
	foreignAdv := &ciliumv2.CiliumBGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "pods", Labels: map[string]string{"advertise": "pods"}},
		Spec: ciliumv2.CiliumBGPAdvertisementSpec{Advertisements: []ciliumv2.BGPAdvertisement{{AdvertisementType: "PodCIDR"}}}}
	foreignPool := &ciliumv2.CiliumLoadBalancerIPPool{ObjectMeta: metav1.ObjectMeta{Name: "services"},
		Spec: ciliumv2.CiliumLoadBalancerIPPoolSpec{Blocks: []ciliumv2.CiliumLoadBalancerIPPoolIPBlock{{Cidr: "203.0.113.0/24"}}}}
	c.Create(foreignAdv, foreignPool)
	c.Nodes("n1", "n2", "n3")
	s := backendtest.NewScenario()
	s.Claim.Spec.BFD = &anycastv1.BFD{Multiplier: ptr.To[int32](3)}
	s.Prefix.Spec.Attributes.MED = ptr.To[int64](10)
	c.CreateScenario(s)

	// What Cilium cannot do is named in the objects' status.
	for _, tc := range []struct {
		obj interface {
			client.Object
			GetConditions() []metav1.Condition
		}
		names string
	}{
		{backendtest.Get(t, c, "edge", &anycastv1.BGPSessionClaim{}), "bfd (Cilium's BGP control plane has no BFD)"},
		{backendtest.Get(t, c, "web", &anycastv1.AnycastPrefix{}), "attributes.med (Cilium's advertisements have no MED)"},
	} {
		cond := meta.FindStatusCondition(tc.obj.GetConditions(), anycastv1.ConditionSettingsIgnored)
		if cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != anycastv1.ReasonUnsupported || !strings.Contains(cond.Message, tc.names) {
			t.Errorf("%T %s: SettingsIgnored %+v, want it to name %q", tc.obj, tc.obj.GetName(), cond, tc.names)
		}
	}

	// Before any agent reports: a pool per prefix, a cluster config per node with an instance for the claim, a peer
	// config per node and peer; nothing is advertised.
	if n := len(c.Owned(poolKind)); n != 2 {
		t.Errorf("want a pool per prefix, got %d", n)
	}
	pool := backendtest.Get(t, c, pool4, &ciliumv2.CiliumLoadBalancerIPPool{})
	if pool.Spec.Blocks[0].Cidr != "198.51.100.0/24" || pool.Spec.ServiceSelector.MatchLabels[cilium.PoolLabel] != pool4 {
		t.Errorf("pool: %+v", pool.Spec)
	}
	if n := len(c.Owned(clusterKind)); n != 3 {
		t.Errorf("want a cluster config per node, got %d", n)
	}
	if n := len(c.Owned(peerKind)); n != 6 {
		t.Errorf("want a peer config per node and peer, got %d", n)
	}
	pc := backendtest.Get(t, c, "anycast-edge-192-0-2-1-n1", &ciliumv2.CiliumBGPPeerConfig{})
	if pc.Spec.Timers == nil || *pc.Spec.Timers.HoldTimeSeconds != 9 || *pc.Spec.Timers.KeepAliveTimeSeconds != 3 ||
		pc.Spec.GracefulRestart == nil || *pc.Spec.GracefulRestart.RestartTimeSeconds != 120 || pc.Spec.AuthSecretRef == nil {
		t.Errorf("peer config: %+v", pc.Spec)
	}
	sec := &corev1.Secret{}
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: secretsNS, Name: *pc.Spec.AuthSecretRef}, sec); err != nil || string(sec.Data["password"]) != backendtest.Password {
		t.Errorf("the password Secret in Cilium's secrets namespace: %v", err)
	}
	if pc6 := backendtest.Get(t, c, "anycast-edge-2001-db8--1-n1", &ciliumv2.CiliumBGPPeerConfig{}); pc6.Spec.Transport == nil || *pc6.Spec.Transport.PeerPort != 1179 {
		t.Errorf("IPv6 peer's port: %+v", pc6.Spec.Transport)
	}
	if n := len(c.Owned(advKind)); n != 0 {
		t.Errorf("%d advertisements before any agent reported", n)
	}

	// Every agent announces: each node's peers get the prefix of their own family (the other family's would carry a
	// next hop no router can use), with the communities.
	for _, n := range []string{"n1", "n2", "n3"} {
		c.Report(n, anycastv1.PrefixAnnounced)
	}
	c.Reconcile()
	c.Written(c.Translate())
	want := func(node string, prefixes ...string) {
		t.Helper()
		for peer, got := range sent(t, c, node) {
			fam := "/ipv4/"
			if strings.Contains(peer, ":") {
				fam = "/ipv6/"
			}
			var ofFamily []string
			for _, p := range prefixes {
				if strings.Contains(p, fam) {
					ofFamily = append(ofFamily, p)
				}
			}
			if !slices.Equal(got, ofFamily) {
				t.Errorf("%s sends %v to %s, want %v", node, got, peer, ofFamily)
			}
		}
	}
	announced := []string{pool4 + "/ipv4/65535:65281", pool6 + "/ipv6/65535:65281"}
	for _, n := range []string{"n1", "n2", "n3"} {
		want(n, announced...)
	}
	adv := backendtest.Get(t, c, c.Owned(advKind)[0].GetName(), &ciliumv2.CiliumBGPAdvertisement{})
	if a := adv.Spec.Advertisements[0]; a.Attributes == nil || *a.Attributes.LocalPreference != 200 ||
		!slices.Equal(a.Attributes.Communities.Standard, []string{"64512:100", "65535:65281"}) || !slices.Equal(a.Attributes.Communities.Large, []string{"64512:1:2"}) {
		t.Errorf("advertisement attributes: %+v", a.Attributes)
	}

	// Cilium reports n1's sessions in its CiliumBGPNodeConfig: the claim's status shows them.
	// (The local type has no spec: the backend never writes node configs; Cilium's operator does.)
	c.Create(&unstructured.Unstructured{Object: map[string]any{"apiVersion": "cilium.io/v2", "kind": "CiliumBGPNodeConfig",
		"metadata": map[string]any{"name": "n1"}, "spec": map[string]any{"bgpInstances": []any{map[string]any{"name": "edge"}}}}})
	nc := backendtest.Get(t, c, "n1", &ciliumv2.CiliumBGPNodeConfig{})
	nc.Status.BGPInstances = []ciliumv2.CiliumBGPNodeInstanceStatus{{Name: "edge", PeerStatuses: []ciliumv2.CiliumBGPNodePeerStatus{
		{Name: "192-0-2-1", PeerAddress: "192.0.2.1", PeerASN: ptr.To[int64](65001), PeeringState: ptr.To("established")},
		{Name: "2001-db8--1", PeerAddress: "2001:db8::1", PeerASN: ptr.To[int64](65001), PeeringState: ptr.To("active")},
	}}}
	if err := c.Client.Status().Update(ctx, nc); err != nil {
		t.Fatal(err)
	}
	c.Reconcile()
	claim := backendtest.Get(t, c, "edge", &anycastv1.BGPSessionClaim{})
	states := map[string]anycastv1.SessionState{}
	for _, x := range claim.Status.Sessions {
		states[x.Node+"/"+x.PeerAddress] = x.State
	}
	if states["n1/192.0.2.1"] != anycastv1.SessionEstablished || states["n1/2001:db8::1"] != anycastv1.SessionActive || states["n2/192.0.2.1"] != anycastv1.SessionUnknown {
		t.Errorf("claim sessions from CiliumBGPNodeConfig: %v", states)
	}

	// Steady state: nothing is written.
	c.Unchanged(clusterKind, peerKind, advKind, poolKind, secretKind)

	// n2 withdraws: its peers get nothing; the others' still get both prefixes.
	c.Report("n2", anycastv1.PrefixWithdrawn)
	c.Reconcile()
	want("n2")
	want("n1", announced...)
	want("n3", announced...)

	// n3 deprefers: its peers get the prefixes with GRACEFUL_SHUTDOWN.
	c.Report("n3", anycastv1.PrefixDeprefered)
	c.Reconcile()
	c.Written(c.Translate())
	want("n3", pool4+"/ipv4/65535:0", pool6+"/ipv6/65535:0")
	want("n1", announced...)

	// Nobody announces: no advertisement is left; the pools stay (Services keep their addresses).
	for _, n := range []string{"n1", "n3"} {
		c.Report(n, anycastv1.PrefixWithdrawn)
	}
	c.Reconcile()
	if n := len(c.Owned(advKind)); n != 0 {
		t.Errorf("%d advertisements left with every node withdrawn", n)
	}
	if n := len(c.Owned(poolKind)); n != 2 {
		t.Errorf("pools with every node withdrawn: %d", n)
	}

	// Deleting the prefix and the claim removes everything the operator made.
	c.Report("n1", anycastv1.PrefixAnnounced)
	c.Reconcile()
	c.Delete(s.Prefix)
	c.Reconcile()
	c.Gone(s.Prefix)
	if n := len(c.Owned(poolKind)) + len(c.Owned(advKind)); n != 0 {
		t.Errorf("%d pools and advertisements left after the prefix was deleted", n)
	}
	c.Delete(s.Claim)
	c.Reconcile()
	c.Gone(s.Claim)
	if n := len(c.Owned(clusterKind)) + len(c.Owned(peerKind)) + len(c.Owned(secretKind)); n != 0 {
		t.Errorf("%d cluster configs, peer configs and Secrets left after the claim was deleted", n)
	}
	c.Untouched(foreignAdv, foreignPool)
}

// TestTranslationGolden shows, for review, what the backend writes for two claims, IPv4 and IPv6, a withdrawn node
// and a deprefered one.
func TestTranslationGolden(t *testing.T) {
	scheme := backendtest.Scheme(t, cilium.AddToScheme)
	tr := cilium.Translator{SecretsNamespace: secretsNS, Secrets: backendtest.GoldenSecrets}.Translate(backendtest.GoldenDesired())
	backendtest.Golden(t, filepath.Join("testdata", "cilium.golden.yaml"),
		"Generated by TestTranslationGolden (go test ./internal/backend/cilium -update).", scheme, tr, *update)
}

// TestGoldenAccepted: the golden translation (two claims, IPv4 and IPv6, a withdrawn and a deprefered node) is
// accepted whole by the stack's CRDs.
func TestGoldenAccepted(t *testing.T) {
	c := startCluster(t)
	b := cilium.Translator{SecretsNamespace: secretsNS, Secrets: backendtest.GoldenSecrets}
	c.Accepts(b.Translate(backendtest.GoldenDesired()), b.Kinds(), nil)
}
