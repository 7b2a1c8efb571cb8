package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/agent"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
	"github.com/anycast-operator/anycast-operator/internal/speaker/embedded"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

// agentOnNode is a client with the service-account token of an agent Pod bound to a node, as the kubelet would give
// it: the API server puts the node's name in the token's identity.
func agentOnNode(t *testing.T, env *testenv.Env, node string) (*rest.Config, client.Client) {
	t.Helper()
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(env.Config)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "agent-" + node, Namespace: namespace}, Spec: corev1.PodSpec{
		NodeName: node, ServiceAccountName: "anycast-agent", Containers: []corev1.Container{{Name: "agent", Image: "agent"}}}}
	pod, err := cs.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, "anycast-agent", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}, ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.AnonymousClientConfig(env.Config)
	cfg.BearerToken = tr.Status.Token
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return cfg, c
}

// TestAgentTouchesOnlyItsOwnNode: with config/agent/rbac.yaml and config/admission applied, an agent whose token is
// bound to a Pod on node A writes A's NodeAnnouncement status, A's Lease and events about A, and is refused B's, the
// manager's leader-election Lease, and every Secret the claims do not reference (the manager keeps the Role that
// grants the others); it runs end to end under that token. The manager's service account is refused writes to
// Secrets it does not label.
func TestAgentTouchesOnlyItsOwnNode(t *testing.T) {
	env, k8s := startCluster(t)
	for _, f := range []string{"config/agent/rbac.yaml", "config/admission/agents.yaml", "config/admission/manager.yaml",
		"config/rbac/role.yaml", "config/rbac/role_binding.yaml", "config/rbac/service_account.yaml", "config/backends/cilium/rbac.yaml"} {
		if out, err := env.Kubectl("apply", "-f", filepath.Join(env.Root, f)); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	const password = "own-node-md5"
	node := netip.MustParseAddr("127.0.0.2")
	router := bgptest.StartWithPassword(t, routerAddr, 65001, map[netip.Addr]uint32{node: 64512}, password)
	claim := edgeClaim(router)
	claim.Spec.Static.Peers[0].PasswordSecretRef = &anycastv1.SecretKeyRef{Name: "bgp-md5", Key: "password"}
	ap := dnsPrefix("web")
	ap.Spec.HealthPolicyRef = nil
	create(t, k8s, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-a"}}, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-b"}}, claim, ap,
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bgp-md5", Namespace: namespace}, StringData: map[string]string{"password": password}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "not-referenced", Namespace: namespace}, StringData: map[string]string{"k": "v"}},
		&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "anycast-manager.anycast.dev", Namespace: namespace}})
	startManager(t, env)
	for _, n := range []string{"edge-a", "edge-b"} {
		poll(t, n+" planned", func() (bool, string) {
			var na anycastv1.NodeAnnouncement
			err := k8s.Get(context.Background(), client.ObjectKey{Name: n}, &na)
			return err == nil && len(na.Spec.Groups) == 1, fmt.Sprint(err)
		})
	}
	cfgA, asA := agentOnNode(t, env, "edge-a")
	ctx := context.Background()

	refused := func(what string, err error, want string) {
		t.Helper()
		if err == nil || (!apierrors.IsForbidden(err) && !apierrors.IsInvalid(err)) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: want refused (%q), got %v", what, want, err)
		}
	}
	allowed := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: refused: %v", what, err)
		}
	}
	status := func(name string) error {
		u := &anycastv1.NodeAnnouncement{ObjectMeta: metav1.ObjectMeta{Name: name}}
		return asA.Status().Patch(ctx, u, client.RawPatch(types.MergePatchType, []byte(`{"status":{"agentVersion":"x"}}`)))
	}
	allowed("its own NodeAnnouncement's status", status("edge-a"))
	refused("another node's NodeAnnouncement status", status("edge-b"), "its own NodeAnnouncement only (edge-a), not edge-b")
	lease := func(name string) error {
		return asA.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}})
	}
	allowed("its own Lease", lease("anycast-agent-edge-a"))
	refused("another node's Lease", lease("anycast-agent-edge-b"), "its own Lease only (anycast-agent-edge-a)")
	var le coordinationv1.Lease
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "anycast-manager.anycast.dev"}, &le); err != nil {
		t.Fatal(err)
	}
	le.Spec.HolderIdentity = ptr.To("an-agent")
	refused("the manager's leader-election Lease", asA.Update(ctx, &le), "its own Lease only")
	event := func(about string) error {
		return asA.Create(ctx, &eventsv1.Event{ObjectMeta: metav1.ObjectMeta{GenerateName: "x-", Namespace: metav1.NamespaceDefault},
			EventTime: metav1.NewMicroTime(time.Now()), Type: corev1.EventTypeNormal, Reason: "Test", Action: "Test", ReportingController: "anycast.dev/agent",
			ReportingInstance: "anycast-agent-edge-a", Regarding: corev1.ObjectReference{APIVersion: anycastv1.GroupVersion.String(), Kind: "NodeAnnouncement", Name: about}})
	}
	allowed("an event about its own NodeAnnouncement", event("edge-a"))
	refused("an event about another node's", event("edge-b"), "events about its own node's NodeAnnouncement only")
	poll(t, "the referenced Secret readable, through the Role the manager keeps", func() (bool, string) {
		err := asA.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "bgp-md5"}, &corev1.Secret{})
		return err == nil, fmt.Sprint(err)
	})
	if err := asA.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "not-referenced"}, &corev1.Secret{}); !apierrors.IsForbidden(err) {
		t.Errorf("a Secret no claim references is readable: %v", err)
	}
	if err := asA.List(ctx, &corev1.SecretList{}, client.InNamespace(namespace)); !apierrors.IsForbidden(err) {
		t.Errorf("the agent may list every Secret: %v", err)
	}

	// The agent, under that token, runs end to end: announces, writes its status, renews its Lease.
	log := testr.NewWithOptions(t, testr.Options{Verbosity: -1})
	cfg := agent.Config{NodeName: "edge-a", Namespace: namespace, LocalAddress: node, Version: "e2e", SessionPoll: 100 * time.Millisecond}
	_, stop, err := agent.Start(ctx, cfgA, cfg, embedded.New(node, log), clock.RealClock{}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	router.WaitFor(t, netip.MustParsePrefix("198.51.100.0/24"), "announced by the agent under its bound token, with the MD5 password", func(p []bgptest.Path) bool {
		return announcedBy(p, node.String())
	})
	waitNodeState(t, k8s, "edge-a", "198.51.100.0/24", anycastv1.PrefixAnnounced)
	poll(t, "its Lease renewed", func() (bool, string) {
		var l coordinationv1.Lease
		err := k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "anycast-agent-edge-a"}, &l)
		return err == nil && l.Spec.RenewTime != nil, fmt.Sprint(err)
	})

	// The manager's service account writes only Secrets it labels.
	asManager := rest.CopyConfig(env.Config)
	asManager.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + namespace + ":anycast-manager"}
	m, err := client.New(asManager, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	secret := func(name string, labels map[string]string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kube-system", Labels: labels}, StringData: map[string]string{"password": "p"}}
	}
	allowed("the manager writes a Secret it labels", m.Create(ctx, secret("anycast-md5", map[string]string{"app.kubernetes.io/managed-by": "anycast-operator"})))
	refused("the manager writes a Secret it does not label", m.Create(ctx, secret("users-own", nil)), "only the Secrets it labels")
	create(t, k8s, secret("cilium-secret", nil))
	var users corev1.Secret
	if err := k8s.Get(ctx, client.ObjectKey{Namespace: "kube-system", Name: "cilium-secret"}, &users); err != nil {
		t.Fatal(err)
	}
	refused("the manager deletes someone else's Secret", m.Delete(ctx, &users), "only the Secrets it labels")
}
