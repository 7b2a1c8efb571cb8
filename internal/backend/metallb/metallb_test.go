package metallb_test

import (
	"context"
	"flag"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/yaml"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/controllers"
	"github.com/anycast-operator/anycast-operator/internal/backend"
	"github.com/anycast-operator/anycast-operator/internal/backend/metallb"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files")

const (
	operatorNS = "anycast-system"
	metallbNS  = "metallb-system"
)

// cluster is a test API server with the operator's CRDs and MetalLB's, from the Go module cache.
type cluster struct {
	t       *testing.T
	k8s     client.Client
	planner *controllers.PlannerReconciler
}

func startCluster(t *testing.T, mode metallb.Mode) *cluster {
	dir, err := testenv.ModuleDir("go.universe.tf/metallb")
	if err != nil {
		t.Fatal(err)
	}
	env, err := testenv.Start(testenv.WithCRDs(filepath.Join(dir, "config", "crd", "bases")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	if err := metallb.AddToScheme(env.Scheme); err != nil {
		t.Fatal(err)
	}
	k8s, err := client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, k8s: k8s}
	for _, ns := range []string{operatorNS, metallbNS} {
		c.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	c.planner = &controllers.PlannerReconciler{Client: k8s, Clock: clock.RealClock{}, Namespace: operatorNS, Workers: 4,
		Backend: metallb.Translator{Namespace: metallbNS, Mode: mode, Secrets: func(name, key string) ([]byte, bool) {
			var s corev1.Secret
			if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: operatorNS, Name: name}, &s); err != nil {
				return nil, false
			}
			v, ok := s.Data[key]
			return v, ok
		}}}
	return c
}

func (c *cluster) create(objs ...client.Object) {
	c.t.Helper()
	for _, o := range objs {
		if err := c.k8s.Create(context.Background(), o); err != nil {
			c.t.Fatal(err)
		}
	}
}

func (c *cluster) reconcile() {
	c.t.Helper()
	if _, err := c.planner.Reconcile(context.Background(), reconcile.Request{NamespacedName: types.NamespacedName{Name: "cluster"}}); err != nil {
		c.t.Fatal(err)
	}
}

// report writes what node's agent says it does with every prefix it has.
func (c *cluster) report(node string, state anycastv1.PrefixState) {
	c.t.Helper()
	var na anycastv1.NodeAnnouncement
	if err := c.k8s.Get(context.Background(), client.ObjectKey{Name: node}, &na); err != nil {
		c.t.Fatal(err)
	}
	na.Status.Prefixes = nil
	for _, g := range na.Spec.Groups {
		for _, p := range g.Prefixes {
			na.Status.Prefixes = append(na.Status.Prefixes, anycastv1.NodePrefixStatus{Prefix: p.Prefix, State: state, Since: ptr.To(metav1.Now())})
		}
	}
	if err := c.k8s.Status().Update(context.Background(), &na); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) advertisements() map[string]metallbv1beta1.BGPAdvertisementSpec {
	c.t.Helper()
	var list metallbv1beta1.BGPAdvertisementList
	if err := c.k8s.List(context.Background(), &list, client.InNamespace(metallbNS)); err != nil {
		c.t.Fatal(err)
	}
	out := map[string]metallbv1beta1.BGPAdvertisementSpec{}
	for _, a := range list.Items {
		out[a.Name] = a.Spec
	}
	return out
}

// resourceVersions of everything in MetalLB's namespace and of the operator's kinds: unchanged means unwritten.
func (c *cluster) resourceVersions() map[string]string {
	c.t.Helper()
	out := map[string]string{}
	lists := []client.ObjectList{&metallbv1beta2.BGPPeerList{}, &metallbv1beta1.IPAddressPoolList{}, &metallbv1beta1.BGPAdvertisementList{},
		&corev1.SecretList{}, &anycastv1.AnycastPrefixList{}, &anycastv1.BGPSessionClaimList{}, &anycastv1.NodeAnnouncementList{}}
	for _, l := range lists {
		if err := c.k8s.List(context.Background(), l); err != nil {
			c.t.Fatal(err)
		}
		items, _ := metaItems(l)
		for _, o := range items {
			out[o.GetNamespace()+"/"+o.GetName()+"/"+l.GetObjectKind().GroupVersionKind().Kind] = o.GetResourceVersion()
		}
	}
	return out
}

func metaItems(l client.ObjectList) ([]metav1.Object, error) {
	var out []metav1.Object
	switch l := l.(type) {
	case *metallbv1beta2.BGPPeerList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *metallbv1beta1.IPAddressPoolList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *metallbv1beta1.BGPAdvertisementList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *corev1.SecretList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *anycastv1.AnycastPrefixList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *anycastv1.BGPSessionClaimList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	case *anycastv1.NodeAnnouncementList:
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	}
	return out, nil
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
	c.create(foreignPeer, foreignPool)

	for i, n := range []string{"n1", "n2", "n3"} {
		c.create(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{
			corev1.LabelHostname: "host-" + n, "anycast.dev/site": []string{"ams", "fra", "nyc"}[i]}}})
	}
	c.create(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bgp-md5", Namespace: operatorNS}, Data: map[string][]byte{"password": []byte("s3cret")}})
	claim := &anycastv1.BGPSessionClaim{ObjectMeta: metav1.ObjectMeta{Name: "edge"}}
	claim.Spec.LocalASN = 64512
	claim.Spec.Static = &anycastv1.StaticSessions{Peers: []anycastv1.BGPPeer{
		{Address: "192.0.2.1", ASN: 65001, PasswordSecretRef: &anycastv1.SecretKeyRef{Name: "bgp-md5", Key: "password"}},
		{Address: "2001:db8::1", ASN: 65001, Port: ptr.To[int32](1179)},
	}}
	claim.Spec.Timers = &anycastv1.BGPTimers{HoldTime: &metav1.Duration{Duration: 9 * time.Second}, KeepaliveTime: &metav1.Duration{Duration: 3 * time.Second}}
	claim.Spec.GracefulRestart = &anycastv1.GracefulRestart{RestartTime: metav1.Duration{Duration: 2 * time.Minute}}
	policy := &anycastv1.HealthPolicy{ObjectMeta: metav1.ObjectMeta{Name: "web"}}
	policy.Spec.Checks = []anycastv1.HealthCheck{{Name: "http", HTTP: &anycastv1.HTTPCheck{URL: "http://127.0.0.1:8080/healthz"}}}
	prefix := &anycastv1.AnycastPrefix{ObjectMeta: metav1.ObjectMeta{Name: "web"}}
	prefix.Spec.Prefixes = []anycastv1.CIDR{"198.51.100.0/24", "2001:db8:100::/48"}
	prefix.Spec.SessionClaims = []anycastv1.LocalObjectName{"edge"}
	prefix.Spec.HealthPolicyRef = &anycastv1.ObjectReference{Name: "web"}
	prefix.Spec.Attributes = &anycastv1.BGPAttributes{Communities: []anycastv1.Community{"64512:100", "no-export"},
		LargeCommunities: []anycastv1.LargeCommunity{"64512:1:2"}, LocalPreference: ptr.To[int64](200)}
	c.create(claim, policy, prefix)

	// No agent has reported yet: sessions and pools exist, nothing is advertised.
	c.reconcile()
	c.reconcile() // the first pass planned the NodeAnnouncements; the second sees them
	var peers metallbv1beta2.BGPPeerList
	if err := c.k8s.List(ctx, &peers, client.InNamespace(metallbNS), client.MatchingLabels{backend.ManagedByLabel: backend.ManagedBy}); err != nil {
		t.Fatal(err)
	}
	if len(peers.Items) != 2 {
		t.Fatalf("want 2 BGPPeers, got %d", len(peers.Items))
	}
	for _, p := range peers.Items {
		if got := p.Spec.NodeSelectors[0].MatchExpressions[0].Values; !slices.Equal(got, []string{"host-n1", "host-n2", "host-n3"}) {
			t.Errorf("BGPPeer %s selects %v", p.Name, got)
		}
		if p.Spec.Address == "192.0.2.1" {
			if p.Spec.PasswordSecret.Name == "" || p.Spec.Password != "" {
				t.Errorf("BGPPeer %s: the password must come by Secret reference only: %+v", p.Name, p.Spec)
			}
			var s corev1.Secret
			if err := c.k8s.Get(ctx, client.ObjectKey{Namespace: metallbNS, Name: p.Spec.PasswordSecret.Name}, &s); err != nil {
				t.Fatal(err)
			}
			if s.Type != corev1.SecretTypeBasicAuth || string(s.Data["password"]) != "s3cret" {
				t.Errorf("MD5 Secret in MetalLB's namespace: type %s, data keys %v", s.Type, slices.Collect(maps.Keys(s.Data)))
			}
		}
	}
	if adv := c.advertisements(); len(adv) != 0 {
		t.Fatalf("advertisements before any agent reported: %v", adv)
	}

	// Every agent announces.
	for _, n := range []string{"n1", "n2", "n3"} {
		c.report(n, anycastv1.PrefixAnnounced)
	}
	c.reconcile()
	adv := c.advertisements()
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

	// Steady state: reconciling again writes nothing.
	before := c.resourceVersions()
	c.reconcile()
	c.reconcile()
	if after := c.resourceVersions(); !maps.Equal(before, after) {
		t.Errorf("a reconcile with nothing to change wrote objects:\nbefore %v\nafter  %v", before, after)
	}

	// n2 withdraws: it leaves the node selectors.
	c.report("n2", anycastv1.PrefixWithdrawn)
	c.reconcile()
	for name, spec := range c.advertisements() {
		if !slices.Equal(hostsOf(spec), []string{"host-n1", "host-n3"}) {
			t.Errorf("after n2 withdrew, %s announces from %v", name, hostsOf(spec))
		}
	}

	// n3 deprefers: its own advertisement, with GRACEFUL_SHUTDOWN and the AS-path prepend (frr-k8s mode).
	c.report("n3", anycastv1.PrefixDeprefered)
	c.reconcile()
	adv = c.advertisements()
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
		c.report(n, anycastv1.PrefixWithdrawn)
	}
	c.reconcile()
	if adv := c.advertisements(); len(adv) != 0 {
		t.Fatalf("advertisements left with every node withdrawn: %v", adv)
	}

	// Deleting the prefix removes its pools; the finalizer lets it go once they are gone.
	if err := c.k8s.Delete(ctx, prefix); err != nil {
		t.Fatal(err)
	}
	c.reconcile()
	var pools metallbv1beta1.IPAddressPoolList
	if err := c.k8s.List(ctx, &pools, client.InNamespace(metallbNS)); err != nil {
		t.Fatal(err)
	}
	if len(pools.Items) != 1 || pools.Items[0].Name != "services" {
		t.Errorf("pools after the prefix was deleted: %v", pools.Items)
	}
	if err := c.k8s.Get(ctx, client.ObjectKeyFromObject(prefix), &anycastv1.AnycastPrefix{}); err == nil {
		t.Error("the AnycastPrefix is still there after its backend objects were removed")
	}

	// Deleting the claim removes its peers and the password Secret.
	if err := c.k8s.Delete(ctx, claim); err != nil {
		t.Fatal(err)
	}
	c.reconcile()
	if err := c.k8s.List(ctx, &peers, client.InNamespace(metallbNS)); err != nil {
		t.Fatal(err)
	}
	if len(peers.Items) != 1 || peers.Items[0].Name != "tor" {
		t.Errorf("peers after the claim was deleted: %v", peers.Items)
	}
	var secrets corev1.SecretList
	if err := c.k8s.List(ctx, &secrets, client.InNamespace(metallbNS)); err != nil {
		t.Fatal(err)
	}
	if len(secrets.Items) != 0 {
		t.Errorf("Secrets left in MetalLB's namespace: %d", len(secrets.Items))
	}

	// The user's objects were never written.
	for _, o := range []client.Object{foreignPeer, foreignPool} {
		cur := o.DeepCopyObject().(client.Object)
		if err := c.k8s.Get(ctx, client.ObjectKeyFromObject(o), cur); err != nil {
			t.Fatal(err)
		}
		if cur.GetResourceVersion() != o.GetResourceVersion() {
			t.Errorf("%s was modified", o.GetName())
		}
	}
}

// TestTranslationGolden shows, for review, what the backend writes for two claims, IPv4 and IPv6, a withdrawn node
// and a deprefered one, in native mode (what it cannot carry out is listed too).
func TestTranslationGolden(t *testing.T) {
	med := int64(10)
	planned := map[string]anycastv1.NodeAnnouncementSpec{}
	reported := []anycastv1.NodeAnnouncement{}
	sessions := []anycastv1.NodeSessions{
		{Claim: "edge", BGPSessionSettings: anycastv1.BGPSessionSettings{LocalASN: 64512, Static: &anycastv1.StaticSessions{Peers: []anycastv1.BGPPeer{
			{Address: "192.0.2.1", ASN: 65001, PasswordSecretRef: &anycastv1.SecretKeyRef{Name: "bgp-md5", Key: "password"}}}},
			Timers:          &anycastv1.BGPTimers{HoldTime: &metav1.Duration{Duration: 90 * time.Second}, KeepaliveTime: &metav1.Duration{Duration: 30 * time.Second}},
			EBGPMultihop:    ptr.To[int32](2),
			GracefulRestart: &anycastv1.GracefulRestart{RestartTime: metav1.Duration{Duration: 2 * time.Minute}}}},
		{Claim: "transit", BGPSessionSettings: anycastv1.BGPSessionSettings{LocalASN: 64512, Static: &anycastv1.StaticSessions{Peers: []anycastv1.BGPPeer{
			{Address: "2001:db8::1", ASN: 65002}}}}},
	}
	states := map[string]anycastv1.PrefixState{"n1": anycastv1.PrefixAnnounced, "n2": anycastv1.PrefixWithdrawn, "n3": anycastv1.PrefixDeprefered}
	for _, n := range []string{"n1", "n2", "n3"} {
		planned[n] = anycastv1.NodeAnnouncementSpec{Sessions: sessions, Groups: []anycastv1.PrefixGroup{{
			Sessions:   []anycastv1.LocalObjectName{"edge", "transit"},
			Attributes: &anycastv1.BGPAttributes{Communities: []anycastv1.Community{"64512:100"}, MED: &med},
			Prefixes:   []anycastv1.GroupPrefix{{Prefix: "198.51.100.0/24", Source: "dns"}, {Prefix: "2001:db8:100::/48", Source: "dns"}},
		}}}
		na := anycastv1.NodeAnnouncement{ObjectMeta: metav1.ObjectMeta{Name: n}}
		for _, p := range []anycastv1.CIDR{"198.51.100.0/24", "2001:db8:100::/48"} {
			na.Status.Prefixes = append(na.Status.Prefixes, anycastv1.NodePrefixStatus{Prefix: p, State: states[n]})
		}
		reported = append(reported, na)
	}
	var nodes []corev1.Node
	for _, n := range []string{"n1", "n2", "n3"} {
		nodes = append(nodes, corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{corev1.LabelHostname: n + ".example"}}})
	}
	tr := metallb.Translator{Namespace: metallbNS, Mode: metallb.Native, Secrets: func(string, string) ([]byte, bool) { return []byte("not-in-golden"), true }}.
		Translate(backend.Compute(planned, reported, nodes))
	var b strings.Builder
	b.WriteString("# Generated by TestTranslationGolden (go test ./internal/backend/metallb -update). Native mode.\n")
	for _, source := range slices.Sorted(maps.Keys(tr.Ignored)) {
		b.WriteString("# " + source + " ignored: " + strings.Join(tr.Ignored[source], "; ") + "\n")
	}
	for _, o := range tr.Objects {
		if s, ok := o.(*corev1.Secret); ok {
			s = s.DeepCopy()
			s.Data = map[string][]byte{"password": []byte("<copied from the claim's Secret>")}
			o = s
		}
		y, err := yaml.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString("---\n# " + kindOf(o) + "\n" + string(y))
	}
	golden := filepath.Join("testdata", "native.golden.yaml")
	if *update {
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to write it)", err)
	}
	if string(want) != b.String() {
		t.Errorf("the translation differs from %s (run with -update and review the diff):\n%s", golden, b.String())
	}
}

func kindOf(o client.Object) string {
	switch o.(type) {
	case *metallbv1beta2.BGPPeer:
		return "BGPPeer (metallb.io/v1beta2)"
	case *metallbv1beta1.IPAddressPool:
		return "IPAddressPool (metallb.io/v1beta1)"
	case *metallbv1beta1.BGPAdvertisement:
		return "BGPAdvertisement (metallb.io/v1beta1)"
	case *corev1.Secret:
		return "Secret (v1)"
	}
	return "?"
}
