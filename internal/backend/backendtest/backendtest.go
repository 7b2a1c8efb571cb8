// Package backendtest drives the planner with a backend against a real API server that has the upstream CRDs of a
// BGP stack installed, for the backends' integration tests: every object a backend writes must pass the stack's
// own schemas and CEL rules.
package backendtest

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/yaml"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/controllers"
	"github.com/anycast-operator/anycast-operator/internal/backend"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

// OperatorNamespace is where the claims' Secrets live.
const OperatorNamespace = "anycast-system"

// Cluster is a test API server with the operator's CRDs and a stack's, and a planner to drive by hand.
type Cluster struct {
	t       testing.TB
	Env     *testenv.Env
	Client  client.Client
	Planner *controllers.PlannerReconciler
}

// Start starts the API server with the CRDs of dirs installed and the kinds of addToScheme known, and creates the
// operator's namespace and namespaces.
func Start(t testing.TB, addToScheme func(*runtime.Scheme) error, dirs []string, namespaces ...string) *Cluster {
	t.Helper()
	env, err := testenv.Start(testenv.WithCRDs(dirs...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	if err := addToScheme(env.Scheme); err != nil {
		t.Fatal(err)
	}
	k8s, err := client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	c := &Cluster{t: t, Env: env, Client: k8s}
	for _, ns := range append([]string{OperatorNamespace}, namespaces...) {
		c.Create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	c.Planner = &controllers.PlannerReconciler{Client: k8s, Clock: clock.RealClock{}, Namespace: OperatorNamespace, Workers: 4}
	return c
}

// Secrets reads the claims' Secrets, as the manager does.
func (c *Cluster) Secrets() backend.Secrets {
	return func(name, key string) ([]byte, bool) {
		var s corev1.Secret
		if err := c.Client.Get(context.Background(), client.ObjectKey{Namespace: OperatorNamespace, Name: name}, &s); err != nil {
			return nil, false
		}
		v, ok := s.Data[key]
		return v, ok
	}
}

// Create creates objs, failing the test on any error.
func (c *Cluster) Create(objs ...client.Object) {
	c.t.Helper()
	for _, o := range objs {
		if err := c.Client.Create(context.Background(), o); err != nil {
			c.t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
	}
}

// Delete deletes obj.
func (c *Cluster) Delete(obj client.Object) {
	c.t.Helper()
	if err := c.Client.Delete(context.Background(), obj); err != nil {
		c.t.Fatal(err)
	}
}

// Reconcile runs the planner once.
func (c *Cluster) Reconcile() {
	c.t.Helper()
	if _, err := c.Planner.Reconcile(context.Background(), reconcile.Request{}); err != nil {
		c.t.Fatal(err)
	}
}

// Report writes what node's agent says it does with every prefix of its NodeAnnouncement.
func (c *Cluster) Report(node string, state anycastv1.PrefixState) {
	c.t.Helper()
	var na anycastv1.NodeAnnouncement
	if err := c.Client.Get(context.Background(), client.ObjectKey{Name: node}, &na); err != nil {
		c.t.Fatal(err)
	}
	na.Status.Prefixes = nil
	for _, g := range na.Spec.Groups {
		for _, p := range g.Prefixes {
			na.Status.Prefixes = append(na.Status.Prefixes, anycastv1.NodePrefixStatus{Prefix: p.Prefix, State: state, Since: ptr.To(metav1.Now())})
		}
	}
	if err := c.Client.Status().Update(context.Background(), &na); err != nil {
		c.t.Fatal(err)
	}
}

// List lists every object of a kind (in namespace, or all).
func (c *Cluster) List(gvk schema.GroupVersionKind, opts ...client.ListOption) []unstructured.Unstructured {
	c.t.Helper()
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	if err := c.Client.List(context.Background(), list, opts...); err != nil {
		c.t.Fatal(err)
	}
	return list.Items
}

// Owned lists the objects of a kind that the operator owns.
func (c *Cluster) Owned(gvk schema.GroupVersionKind) []unstructured.Unstructured {
	return c.List(gvk, client.MatchingLabels{backend.ManagedByLabel: backend.ManagedBy})
}

// anycastKinds are the operator's own kinds, whose writes count too.
var anycastKinds = []schema.GroupVersionKind{
	anycastv1.GroupVersion.WithKind("AnycastPrefix"), anycastv1.GroupVersion.WithKind("BGPSessionClaim"),
	anycastv1.GroupVersion.WithKind("HealthPolicy"), anycastv1.GroupVersion.WithKind("NodeAnnouncement"),
}

// ResourceVersions of every object of the kinds and of the operator's kinds: equal maps mean nothing was written.
func (c *Cluster) ResourceVersions(kinds ...schema.GroupVersionKind) map[string]string {
	c.t.Helper()
	out := map[string]string{}
	for _, gvk := range append(kinds, anycastKinds...) {
		for _, o := range c.List(gvk) {
			out[gvk.Kind+"/"+o.GetNamespace()+"/"+o.GetName()] = o.GetResourceVersion()
		}
	}
	return out
}

// Nodes creates Nodes with kubernetes.io/hostname host-<name> and an anycast.dev/site label each.
func (c *Cluster) Nodes(names ...string) {
	c.t.Helper()
	for _, n := range names {
		c.Create(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{
			corev1.LabelHostname: "host-" + n, "anycast.dev/site": "site-" + n}}})
	}
}

// Scenario is a claim "edge" with an MD5-protected IPv4 peer and an IPv6 peer, a health policy "web" and an
// AnycastPrefix "web" with an IPv4 and an IPv6 prefix and communities, on every node; the Secret holds password.
type Scenario struct {
	Claim  *anycastv1.BGPSessionClaim
	Policy *anycastv1.HealthPolicy
	Prefix *anycastv1.AnycastPrefix
	Secret *corev1.Secret
}

// Password is the MD5 password of the scenario's first peer.
const Password = "s3cret-md5"

// NewScenario builds the scenario's objects; the test may change them before CreateScenario.
func NewScenario() Scenario {
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
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bgp-md5", Namespace: OperatorNamespace}, Data: map[string][]byte{"password": []byte(Password)}}
	return Scenario{Claim: claim, Policy: policy, Prefix: prefix, Secret: secret}
}

// CreateScenario creates the scenario's objects and plans twice (the first pass writes the NodeAnnouncements, the
// second sees them).
func (c *Cluster) CreateScenario(s Scenario) {
	c.t.Helper()
	c.Create(s.Secret, s.Claim, s.Policy, s.Prefix)
	c.Reconcile()
	c.Reconcile()
}

// Unchanged fails the test unless reconciling twice more writes nothing to the kinds or the operator's kinds.
func (c *Cluster) Unchanged(kinds ...schema.GroupVersionKind) {
	c.t.Helper()
	before := c.ResourceVersions(kinds...)
	c.Reconcile()
	c.Reconcile()
	after := c.ResourceVersions(kinds...)
	for k, v := range after {
		if before[k] != v {
			c.t.Errorf("a reconcile with nothing to change wrote %s", k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			c.t.Errorf("a reconcile with nothing to change deleted %s", k)
		}
	}
}

// Gone fails the test if obj still exists.
func (c *Cluster) Gone(obj client.Object) {
	c.t.Helper()
	cur := obj.DeepCopyObject().(client.Object)
	if err := c.Client.Get(context.Background(), client.ObjectKeyFromObject(obj), cur); err == nil {
		c.t.Errorf("%T %s still exists (finalizers %v)", obj, obj.GetName(), cur.GetFinalizers())
	}
}

// Untouched fails the test if any of objs was modified since it was created.
func (c *Cluster) Untouched(objs ...client.Object) {
	c.t.Helper()
	for _, o := range objs {
		cur := o.DeepCopyObject().(client.Object)
		if err := c.Client.Get(context.Background(), client.ObjectKeyFromObject(o), cur); err != nil {
			c.t.Errorf("the user's %T %s: %v", o, o.GetName(), err)
			continue
		}
		if cur.GetResourceVersion() != o.GetResourceVersion() {
			c.t.Errorf("the user's %T %s was modified", o, o.GetName())
		}
	}
}

// GoldenDesired is the state the golden translations show: two claims (one IPv4 peer with MD5, timers, multihop,
// BFD and graceful restart; one IPv6 peer), an IPv4 and an IPv6 prefix with a community and a MED, announced by n1,
// withdrawn by n2 and deprefered by n3.
func GoldenDesired() backend.Desired {
	med := int64(10)
	planned := map[string]anycastv1.NodeAnnouncementSpec{}
	var reported []anycastv1.NodeAnnouncement
	sessions := []anycastv1.NodeSessions{
		{Claim: "edge", BGPSessionSettings: anycastv1.BGPSessionSettings{LocalASN: 64512, Static: &anycastv1.StaticSessions{Peers: []anycastv1.BGPPeer{
			{Address: "192.0.2.1", ASN: 65001, PasswordSecretRef: &anycastv1.SecretKeyRef{Name: "bgp-md5", Key: "password"}}}},
			Timers:          &anycastv1.BGPTimers{HoldTime: &metav1.Duration{Duration: 90 * time.Second}, KeepaliveTime: &metav1.Duration{Duration: 30 * time.Second}},
			EBGPMultihop:    ptr.To[int32](2),
			BFD:             &anycastv1.BFD{MinRx: &metav1.Duration{Duration: 300 * time.Millisecond}, MinTx: &metav1.Duration{Duration: 300 * time.Millisecond}, Multiplier: ptr.To[int32](3)},
			GracefulRestart: &anycastv1.GracefulRestart{RestartTime: metav1.Duration{Duration: 2 * time.Minute}}}},
		{Claim: "transit", BGPSessionSettings: anycastv1.BGPSessionSettings{LocalASN: 64512, Static: &anycastv1.StaticSessions{Peers: []anycastv1.BGPPeer{
			{Address: "2001:db8::1", ASN: 65002}}}}},
	}
	states := map[string]anycastv1.PrefixState{"n1": anycastv1.PrefixAnnounced, "n2": anycastv1.PrefixWithdrawn, "n3": anycastv1.PrefixDeprefered}
	var nodes []corev1.Node
	for _, n := range []string{"n1", "n2", "n3"} {
		planned[n] = anycastv1.NodeAnnouncementSpec{Sessions: sessions, Groups: []anycastv1.PrefixGroup{{
			Sessions:   []anycastv1.LocalObjectName{"edge", "transit"},
			Attributes: &anycastv1.BGPAttributes{Communities: []anycastv1.Community{"64512:100"}, MED: &med},
			Prefixes:   []anycastv1.GroupPrefix{{Prefix: "198.51.100.0/24", Source: "dns"}, {Prefix: "2001:db8:100::/48", Source: "dns"}},
		}}}
		na := anycastv1.NodeAnnouncement{ObjectMeta: metav1.ObjectMeta{Name: n}}
		for _, p := range []anycastv1.CIDR{"198.51.100.0/24", "2001:db8:100::/48"} {
			na.Status.Prefixes = append(na.Status.Prefixes, anycastv1.NodePrefixStatus{Prefix: anycastv1.PlannedCIDR(p), State: states[n]})
		}
		reported = append(reported, na)
		nodes = append(nodes, corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{corev1.LabelHostname: n + ".example"}}})
	}
	return backend.Compute(planned, reported, nodes)
}

// GoldenSecrets returns a placeholder for every Secret key, which Golden replaces again.
func GoldenSecrets(string, string) ([]byte, bool) { return []byte("not-in-golden"), true }

// Golden compares a translation, as YAML, with the file (rewritten with update): what is ignored, each object with
// its kind, and the entries of shared lists. Secret values are replaced by a placeholder.
func Golden(t testing.TB, file string, header string, scheme *runtime.Scheme, tr backend.Translation, update bool) {
	t.Helper()
	var b strings.Builder
	b.WriteString("# " + header + "\n")
	for _, claim := range slices.Sorted(maps.Keys(tr.IgnoredClaims)) {
		b.WriteString("# BGPSessionClaim " + claim + " ignored: " + strings.Join(tr.IgnoredClaims[claim], "; ") + "\n")
	}
	for _, source := range slices.Sorted(maps.Keys(tr.IgnoredPrefixes)) {
		b.WriteString("# AnycastPrefix " + source + " ignored: " + strings.Join(tr.IgnoredPrefixes[source], "; ") + "\n")
	}
	for _, o := range tr.Objects {
		if s, ok := o.(*corev1.Secret); ok {
			s = s.DeepCopy()
			for k := range s.Data {
				s.Data[k] = []byte("<copied from the claim's Secret>")
			}
			o = s
		}
		gvks, _, err := scheme.ObjectKinds(o)
		if err != nil {
			t.Fatal(err)
		}
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			t.Fatal(err)
		}
		delete(u, "status") // never written by a backend
		y, err := yaml.Marshal(u)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "---\n# %s (%s)\n%s", gvks[0].Kind, gvks[0].GroupVersion(), y)
	}
	for _, l := range tr.Shared {
		y, err := yaml.Marshal(l.Entries)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "---\n# entries merged into %s %s %s (keyed by %s; others' entries are kept)\n%s", l.GVK.Kind, l.Name, strings.Join(l.Path, "."), l.Key, y)
	}
	if update {
		if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run the test with -update to write it)", err)
	}
	if string(want) != b.String() {
		t.Errorf("the translation differs from %s (run with -update and review the diff):\n%s", file, b.String())
	}
}

// Scheme is a scheme with the built-in kinds and those of addToScheme.
func Scheme(t testing.TB, addToScheme func(*runtime.Scheme) error) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := addToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

// Written fails the test unless every object of tr exists with every field the translation set: a field the
// stack's CRD schema does not know would have been pruned (or the object refused).
func (c *Cluster) Written(tr backend.Translation) {
	c.t.Helper()
	for _, o := range tr.Objects {
		want, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			c.t.Fatal(err)
		}
		delete(want, "status")
		delete(want["metadata"].(map[string]any), "creationTimestamp")
		gvks, _, err := c.Client.Scheme().ObjectKinds(o)
		if err != nil {
			c.t.Fatal(err)
		}
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(gvks[0])
		if err := c.Client.Get(context.Background(), client.ObjectKeyFromObject(o), live); err != nil {
			c.t.Errorf("%s %s: %v", gvks[0].Kind, o.GetName(), err)
			continue
		}
		if !backend.Contains(live.Object, want) {
			c.t.Errorf("%s %s lost fields on the way through the API server:\nwrote %v\nread  %v", gvks[0].Kind, o.GetName(), want, live.Object)
		}
	}
}

// Translate is the planner's backend's translation of the cluster as it is now (what the last reconcile applied).
func (c *Cluster) Translate() backend.Translation {
	c.t.Helper()
	ctx := context.Background()
	in, err := c.Planner.ReadInput(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	return c.Planner.Backend.Translate(controllers.Desired(in))
}

// ManagerServiceAccount is the manager's ServiceAccount in config/rbac.
const ManagerServiceAccount = "system:serviceaccount:" + OperatorNamespace + ":anycast-manager"

// AsManager makes the planner act as the manager's ServiceAccount, bound only by config/rbac and the stack's
// config/backends/<stack>: the scenario then proves that RBAC is enough (and the test's own client stays admin).
func (c *Cluster) AsManager(stack string) {
	c.t.Helper()
	for _, dir := range []string{filepath.Join(c.Env.Root, "config", "rbac"), filepath.Join(c.Env.Root, "config", "backends", stack)} {
		if out, err := c.Env.Kubectl("apply", "-k", dir); err != nil {
			c.t.Fatalf("%v\n%s", err, out)
		}
	}
	cfg := rest.CopyConfig(c.Env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: ManagerServiceAccount}
	k8s, err := client.New(cfg, client.Options{Scheme: c.Env.Scheme})
	if err != nil {
		c.t.Fatal(err)
	}
	c.Planner.Client = k8s
}

// Get reads the cluster-scoped object name into obj, failing the test on any error.
func Get[T client.Object](t testing.TB, c *Cluster, name string, obj T) T {
	t.Helper()
	if err := c.Client.Get(context.Background(), client.ObjectKey{Name: name}, obj); err != nil {
		t.Fatal(err)
	}
	return obj
}

// Accepts applies a translation as the manager does (Sync, then the shared lists) and fails the test unless the API
// server accepts every object and keeps every field: how the golden translations (several claims, both families, a
// withdrawn and a deprefered node) are checked against the stack's own CRDs.
func (c *Cluster) Accepts(tr backend.Translation, kinds []backend.Kind, shared []schema.GroupVersionKind) {
	c.t.Helper()
	if _, err := backend.Sync(context.Background(), c.Client, controllers.FieldOwner, tr.Objects, kinds); err != nil {
		c.t.Fatalf("the API server refused the translation: %v", err)
	}
	if _, _, err := backend.MergeShared(context.Background(), c.Client, tr.Shared, shared); err != nil {
		c.t.Fatalf("the API server refused the shared entries: %v", err)
	}
	c.Written(tr)
}
