package metallb_test

import (
	"context"
	"flag"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/backend"
	"github.com/anycast-operator/anycast-operator/internal/backend/backendtest"
	"github.com/anycast-operator/anycast-operator/internal/backend/metallb"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files")

const metallbNS = "metallb-system"

func startCluster(t *testing.T, mode metallb.Mode) *backendtest.Cluster {
	dir, err := testenv.MetalLBCRDs()
	if err != nil {
		t.Fatal(err)
	}
	frr, err := testenv.FRRK8sCRDs()
	if err != nil {
		t.Fatal(err)
	}
	c := backendtest.Start(t, metallb.AddToScheme, []string{dir, frr}, metallbNS)
	c.Planner.Backend = metallb.Translator{Namespace: metallbNS, Mode: mode, Secrets: c.Secrets(), FRRK8sNamespace: metallbNS}
	c.AsManager("metallb") // everything below runs with the manager's RBAC only
	return c
}

func advertisements(t *testing.T, c *backendtest.Cluster) map[string]metallbv1beta1.BGPAdvertisementSpec {
	t.Helper()
	var list metallbv1beta1.BGPAdvertisementList
	if err := c.Client.List(context.Background(), &list, client.InNamespace(metallbNS)); err != nil {
		t.Fatal(err)
	}
	out := map[string]metallbv1beta1.BGPAdvertisementSpec{}
	for _, a := range list.Items {
		out[a.Name] = a.Spec
	}
	return out
}

func hostsOf(spec metallbv1beta1.BGPAdvertisementSpec) []string {
	if len(spec.NodeSelectors) != 1 || len(spec.NodeSelectors[0].MatchExpressions) != 1 {
		return nil
	}
	return spec.NodeSelectors[0].MatchExpressions[0].Values
}

// TestMetalLBBackend drives the planner with the MetalLB backend against MetalLB's own CRDs: every object it writes
// must be accepted by their schemas and CEL rules.
func TestMetalLBBackend(t *testing.T) {
	c := startCluster(t, metallb.FRRK8s)
	ctx := context.Background()

	// The user's own MetalLB objects, which the operator must never touch.
	foreignPeer := &metallbv1beta2.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "tor", Namespace: metallbNS},
		Spec: metallbv1beta2.BGPPeerSpec{MyASN: 64512, ASN: 65000, Address: "192.0.2.254"}}
	foreignPool := &metallbv1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "services", Namespace: metallbNS},
		Spec: metallbv1beta1.IPAddressPoolSpec{Addresses: []string{"203.0.113.0/24"}}}
	c.Create(foreignPeer, foreignPool)
	c.Nodes("n1", "n2", "n3")
	s := backendtest.NewScenario()
	s.Claim.Spec.BFD = &anycastv1.BFD{MinRx: &metav1.Duration{Duration: 300 * time.Millisecond}, Multiplier: ptr.To[int32](3)}
	c.CreateScenario(s)

	// frr-k8s mode: the claim's BFD settings become a BFDProfile that its peers use.
	var profile metallbv1beta1.BFDProfile
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: metallbNS, Name: "anycast-edge-bfd"}, &profile); err != nil {
		t.Fatal(err)
	}
	if profile.Spec.ReceiveInterval == nil || *profile.Spec.ReceiveInterval != 300 || *profile.Spec.DetectMultiplier != 3 || profile.Spec.TransmitInterval != nil {
		t.Errorf("BFDProfile %+v", profile.Spec)
	}

	// No agent has reported yet: sessions and pools exist, nothing is advertised.
	var peers metallbv1beta2.BGPPeerList
	if err := c.Client.List(ctx, &peers, client.InNamespace(metallbNS), client.MatchingLabels{backend.ManagedByLabel: backend.ManagedBy}); err != nil {
		t.Fatal(err)
	}
	if len(peers.Items) != 2 {
		t.Fatalf("want 2 BGPPeers, got %d", len(peers.Items))
	}
	for _, p := range peers.Items {
		if p.Spec.BFDProfile != "anycast-edge-bfd" {
			t.Errorf("BGPPeer %s uses BFD profile %q", p.Name, p.Spec.BFDProfile)
		}
		if got := p.Spec.NodeSelectors[0].MatchExpressions[0].Values; !slices.Equal(got, []string{"host-n1", "host-n2", "host-n3"}) {
			t.Errorf("BGPPeer %s selects %v", p.Name, got)
		}
		if p.Spec.Address == "192.0.2.1" {
			if p.Spec.PasswordSecret.Name == "" || p.Spec.Password != "" {
				t.Errorf("BGPPeer %s: the password must come by Secret reference only: %+v", p.Name, p.Spec)
			}
			var sec corev1.Secret
			if err := c.Client.Get(ctx, client.ObjectKey{Namespace: metallbNS, Name: p.Spec.PasswordSecret.Name}, &sec); err != nil {
				t.Fatal(err)
			}
			if sec.Type != corev1.SecretTypeBasicAuth || string(sec.Data["password"]) != backendtest.Password {
				t.Errorf("MD5 Secret in MetalLB's namespace: type %s, data keys %v", sec.Type, slices.Collect(maps.Keys(sec.Data)))
			}
		}
	}
	if adv := advertisements(t, c); len(adv) != 0 {
		t.Fatalf("advertisements before any agent reported: %v", adv)
	}

	// Every agent announces.
	for _, n := range []string{"n1", "n2", "n3"} {
		c.Report(n, anycastv1.PrefixAnnounced)
	}
	c.Reconcile()
	adv := advertisements(t, c)
	if len(adv) != 2 {
		t.Fatalf("want one BGPAdvertisement per prefix, got %v", adv)
	}
	for name, spec := range adv {
		if !slices.Equal(hostsOf(spec), []string{"host-n1", "host-n2", "host-n3"}) {
			t.Errorf("%s announces from %v", name, hostsOf(spec))
		}
		if !slices.Equal(spec.Communities, []string{"64512:100", "65535:65281", "large:64512:1:2"}) || spec.LocalPref != 200 {
			t.Errorf("%s attributes: communities %v localPref %d", name, spec.Communities, spec.LocalPref)
		}
		if len(spec.Peers) != 2 {
			t.Errorf("%s goes to peers %v, want the claim's two", name, spec.Peers)
		}
		if strings.Contains(name, "198-51-100-0-24") && (spec.AggregationLength == nil || *spec.AggregationLength != 24) {
			t.Errorf("%s: aggregationLength %v, want 24", name, spec.AggregationLength)
		}
		if strings.Contains(name, "2001-db8-100---48") && (spec.AggregationLengthV6 == nil || *spec.AggregationLengthV6 != 48) {
			t.Errorf("%s: aggregationLengthV6 %v, want 48", name, spec.AggregationLengthV6)
		}
	}

	// frr-k8s reports n1's sessions (as it does, in MetalLB's namespace, IPv6 peers in label form): the claim's
	// status shows them.
	for peer, state := range map[string]string{"192.0.2.1": "Established", "2001-0db8-0000-0000-0000-0000-0000-0001": "Active"} {
		st := &metallb.BGPSessionState{ObjectMeta: metav1.ObjectMeta{GenerateName: "n1-", Namespace: metallbNS,
			Labels: map[string]string{"frrk8s.metallb.io/node": "n1", "frrk8s.metallb.io/peer": peer, "frrk8s.metallb.io/vrf": ""}}}
		c.Create(st)
		st.Status = metallb.BGPSessionStateStatus{Node: "n1", Peer: peer, BGPStatus: state, BFDStatus: "N/A"}
		if err := c.Client.Status().Update(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	c.Reconcile()
	var claim anycastv1.BGPSessionClaim
	if err := c.Client.Get(ctx, client.ObjectKey{Name: "edge"}, &claim); err != nil {
		t.Fatal(err)
	}
	states := map[string]anycastv1.SessionState{}
	for _, x := range claim.Status.Sessions {
		states[x.Node+"/"+x.PeerAddress] = x.State
	}
	if states["n1/192.0.2.1"] != anycastv1.SessionEstablished || states["n1/2001:db8::1"] != anycastv1.SessionActive || states["n2/192.0.2.1"] != anycastv1.SessionUnknown {
		t.Errorf("claim sessions from frr-k8s BGPSessionStates: %v", states)
	}

	// Graceful restart is immutable on a MetalLB BGPPeer once set, but the field may go and come back: turning it
	// off and on in the claim is accepted by MetalLB's CRD.
	for _, gr := range []*anycastv1.GracefulRestart{nil, s.Claim.Spec.GracefulRestart} {
		var claim anycastv1.BGPSessionClaim
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(s.Claim), &claim); err != nil {
			t.Fatal(err)
		}
		claim.Spec.GracefulRestart = gr
		if err := c.Client.Update(ctx, &claim); err != nil {
			t.Fatal(err)
		}
		c.Reconcile()
		var p metallbv1beta2.BGPPeer
		if err := c.Client.Get(ctx, client.ObjectKey{Namespace: metallbNS, Name: "anycast-edge-192-0-2-1"}, &p); err != nil {
			t.Fatal(err)
		}
		if p.Spec.EnableGracefulRestart != (gr != nil) {
			t.Errorf("graceful restart %v in the claim, %v on the BGPPeer", gr != nil, p.Spec.EnableGracefulRestart)
		}
	}

	// Steady state: reconciling again writes nothing.
	c.Unchanged(metallbv1beta2.GroupVersion.WithKind("BGPPeer"), metallbv1beta1.GroupVersion.WithKind("IPAddressPool"),
		metallbv1beta1.GroupVersion.WithKind("BGPAdvertisement"), metallbv1beta1.GroupVersion.WithKind("BFDProfile"), corev1.SchemeGroupVersion.WithKind("Secret"))

	// n2 withdraws: it leaves the node selectors.
	c.Report("n2", anycastv1.PrefixWithdrawn)
	c.Reconcile()
	for name, spec := range advertisements(t, c) {
		if !slices.Equal(hostsOf(spec), []string{"host-n1", "host-n3"}) {
			t.Errorf("after n2 withdrew, %s announces from %v", name, hostsOf(spec))
		}
	}

	// n3 deprefers: its own advertisement, with GRACEFUL_SHUTDOWN and the AS-path prepend (frr-k8s mode).
	c.Report("n3", anycastv1.PrefixDeprefered)
	c.Reconcile()
	adv = advertisements(t, c)
	if len(adv) != 4 {
		t.Fatalf("want a normal and a deprefered advertisement per prefix, got %d", len(adv))
	}
	for name, spec := range adv {
		hosts := hostsOf(spec)
		switch {
		case slices.Equal(hosts, []string{"host-n3"}):
			if !slices.Contains(spec.Communities, "65535:0") || spec.AsPathPrepend != 3 {
				t.Errorf("deprefered %s: communities %v prepend %d", name, spec.Communities, spec.AsPathPrepend)
			}
		case slices.Equal(hosts, []string{"host-n1"}):
			if slices.Contains(spec.Communities, "65535:0") || spec.AsPathPrepend != 0 {
				t.Errorf("normal %s carries deprefer attributes", name)
			}
		default:
			t.Errorf("%s announces from %v", name, hosts)
		}
	}

	// Nobody announces: no advertisement is left (an empty node selector would mean every node).
	for _, n := range []string{"n1", "n3"} {
		c.Report(n, anycastv1.PrefixWithdrawn)
	}
	c.Reconcile()
	if adv := advertisements(t, c); len(adv) != 0 {
		t.Fatalf("advertisements left with every node withdrawn: %v", adv)
	}

	// Deleting the prefix removes its pools; the finalizer lets it go once they are gone.
	c.Delete(s.Prefix)
	c.Reconcile()
	var pools metallbv1beta1.IPAddressPoolList
	if err := c.Client.List(ctx, &pools, client.InNamespace(metallbNS)); err != nil {
		t.Fatal(err)
	}
	if len(pools.Items) != 1 || pools.Items[0].Name != "services" {
		t.Errorf("pools after the prefix was deleted: %v", pools.Items)
	}
	c.Gone(s.Prefix)

	// Deleting the claim removes its peers and the password Secret.
	c.Delete(s.Claim)
	c.Reconcile()
	if err := c.Client.List(ctx, &peers, client.InNamespace(metallbNS)); err != nil {
		t.Fatal(err)
	}
	if len(peers.Items) != 1 || peers.Items[0].Name != "tor" {
		t.Errorf("peers after the claim was deleted: %v", peers.Items)
	}
	var secrets corev1.SecretList
	if err := c.Client.List(ctx, &secrets, client.InNamespace(metallbNS)); err != nil {
		t.Fatal(err)
	}
	if len(secrets.Items) != 0 {
		t.Errorf("Secrets left in MetalLB's namespace: %d", len(secrets.Items))
	}
	var profiles metallbv1beta1.BFDProfileList
	if err := c.Client.List(ctx, &profiles, client.InNamespace(metallbNS)); err != nil || len(profiles.Items) != 0 {
		t.Errorf("BFD profiles left after the claim was deleted: %d %v", len(profiles.Items), err)
	}
	c.Gone(s.Claim)
	c.Untouched(foreignPeer, foreignPool)
}

// TestTranslationGolden shows, for review, what the backend writes for two claims, IPv4 and IPv6, a withdrawn node
// and a deprefered one, in native mode (what it cannot carry out is listed too).
func TestTranslationGolden(t *testing.T) {
	scheme := backendtest.Scheme(t, metallb.AddToScheme)
	tr := metallb.Translator{Namespace: metallbNS, Mode: metallb.Native, Secrets: backendtest.GoldenSecrets}.Translate(backendtest.GoldenDesired())
	backendtest.Golden(t, filepath.Join("testdata", "native.golden.yaml"),
		"Generated by TestTranslationGolden (go test ./internal/backend/metallb -update). Native mode.", scheme, tr, *update)
}

// TestGoldenAccepted: the golden translation (two claims, IPv4 and IPv6, a withdrawn and a deprefered node) is
// accepted whole by the stack's CRDs.
func TestGoldenAccepted(t *testing.T) {
	for _, mode := range []metallb.Mode{metallb.Native, metallb.FRRK8s} {
		c := startCluster(t, mode)
		b := metallb.Translator{Namespace: metallbNS, Mode: mode, Secrets: backendtest.GoldenSecrets}
		c.Accepts(b.Translate(backendtest.GoldenDesired()), b.Kinds(), nil)
	}
}
