package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// Each test works in its own label space ("suite": test name) and address range, because the planner plans the
// whole cluster and the tests share one API server.

func metaName(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name} }

// mustCreate creates obj and deletes it when the test ends.
func mustCreate(t *testing.T, obj client.Object) {
	t.Helper()
	if err := k8s.Create(context.Background(), obj); err != nil {
		t.Fatalf("creating %s: %v", obj.GetName(), err)
	}
	t.Cleanup(func() {
		if err := k8s.Delete(context.Background(), obj); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting %s: %v", obj.GetName(), err)
		}
	})
}

// mutate reads obj fresh, applies change and writes it back, retrying when the manager wrote in between.
func mutate(t *testing.T, obj client.Object, change func()) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		change()
		return k8s.Update(context.Background(), obj)
	})
	if err != nil {
		t.Fatalf("updating %s: %v", obj.GetName(), err)
	}
}

func newNode(name, suite string, labels ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"suite": suite}}}
	for i := 0; i+1 < len(labels); i += 2 {
		n.Labels[labels[i]] = labels[i+1]
	}
	return n
}

func newClaim(name string, selector map[string]string) *anycastv1.BGPSessionClaim {
	c := &anycastv1.BGPSessionClaim{ObjectMeta: metaName(name)}
	c.Spec.LocalASN = 64512
	c.Spec.NodeSelector = metav1.LabelSelector{MatchLabels: selector}
	c.Spec.Static = &anycastv1.StaticSessions{Peers: []anycastv1.BGPPeer{{Address: "192.0.2.1", ASN: 65001}}}
	return c
}

func newPrefix(name string, claims []string, cidrs ...string) *anycastv1.AnycastPrefix {
	ap := &anycastv1.AnycastPrefix{ObjectMeta: metaName(name)}
	for _, c := range claims {
		ap.Spec.SessionClaims = append(ap.Spec.SessionClaims, anycastv1.LocalObjectName(c))
	}
	for _, c := range cidrs {
		ap.Spec.Prefixes = append(ap.Spec.Prefixes, anycastv1.CIDR(c))
	}
	return ap
}

// announcementsOf returns node → planned prefixes for the given nodes (nodes without a NodeAnnouncement are absent).
func announcementsOf(t *testing.T, nodes ...string) map[string][]string {
	t.Helper()
	got := map[string][]string{}
	for _, n := range nodes {
		var na anycastv1.NodeAnnouncement
		err := k8s.Get(context.Background(), client.ObjectKey{Name: n}, &na)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		got[n] = []string{}
		for _, g := range na.Spec.Groups {
			for _, p := range g.Prefixes {
				got[n] = append(got[n], string(p.Prefix))
			}
		}
	}
	return got
}

func waitForAnnouncements(t *testing.T, what string, want map[string][]string, nodes ...string) {
	t.Helper()
	eventually(t, what, func() (bool, string) {
		got := announcementsOf(t, nodes...)
		return fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprintf("got %v, want %v", got, want)
	})
}

func prefixCondition(t *testing.T, name, condType string) (*metav1.Condition, *anycastv1.AnycastPrefix) {
	t.Helper()
	var ap anycastv1.AnycastPrefix
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, &ap); err != nil {
		t.Fatal(err)
	}
	return meta.FindStatusCondition(ap.Status.Conditions, condType), &ap
}

func waitForCondition(t *testing.T, name, condType string, status metav1.ConditionStatus, reason string) *metav1.Condition {
	t.Helper()
	var found *metav1.Condition
	eventually(t, fmt.Sprintf("%s %s=%s (%s)", name, condType, status, reason), func() (bool, string) {
		c, ap := prefixCondition(t, name, condType)
		found = c
		if c == nil {
			return false, "no condition"
		}
		return c.Status == status && c.Reason == reason && c.ObservedGeneration == ap.Generation && ap.Status.ObservedGeneration == ap.Generation,
			fmt.Sprintf("%+v (generation %d)", *c, ap.Generation)
	})
	return found
}

func TestNodeAnnouncementsFollowNodes(t *testing.T) {
	ctx := context.Background()
	suite := "follow"
	mustCreate(t, newClaim("follow-lax", map[string]string{"suite": suite, "region": "lax"}))
	mustCreate(t, newPrefix("follow-dns", []string{"follow-lax"}, "198.18.1.0/24", "2001:db8:1::/48"))
	for _, n := range []*corev1.Node{newNode("follow-1", suite, "region", "lax"), newNode("follow-2", suite, "region", "lax"), newNode("follow-3", suite, "region", "fra")} {
		mustCreate(t, n)
	}
	both := []string{"198.18.1.0/24", "2001:db8:1::/48"}
	waitForAnnouncements(t, "nodes of the claim get the prefix", map[string][]string{"follow-1": both, "follow-2": both}, "follow-1", "follow-2", "follow-3")

	// Owned by the Node, so the garbage collector deletes it with the Node in a real cluster.
	var na anycastv1.NodeAnnouncement
	if err := k8s.Get(ctx, client.ObjectKey{Name: "follow-1"}, &na); err != nil {
		t.Fatal(err)
	}
	var node corev1.Node
	if err := k8s.Get(ctx, client.ObjectKey{Name: "follow-1"}, &node); err != nil {
		t.Fatal(err)
	}
	if len(na.OwnerReferences) != 1 || na.OwnerReferences[0].UID != node.UID || na.OwnerReferences[0].Kind != "Node" {
		t.Errorf("owner references = %+v", na.OwnerReferences)
	}

	relabel := func(name, region string) {
		n := &corev1.Node{ObjectMeta: metaName(name)}
		mutate(t, n, func() { n.Labels["region"] = region })
	}
	relabel("follow-3", "lax")
	relabel("follow-2", "fra")
	// follow-2 leaves the claim: its NodeAnnouncement stays, emptied (its agent rides out a deleted one); the prefix
	// goes at once, since maxWithdrawn is 100%.
	waitForAnnouncements(t, "relabelled nodes follow", map[string][]string{"follow-1": both, "follow-2": {}, "follow-3": both}, "follow-1", "follow-2", "follow-3")

	mustCreate(t, newNode("follow-4", suite, "region", "lax"))
	if err := k8s.Delete(ctx, &corev1.Node{ObjectMeta: metaName("follow-1")}); err != nil {
		t.Fatal(err)
	}
	waitForAnnouncements(t, "added and deleted nodes follow", map[string][]string{"follow-2": {}, "follow-3": both, "follow-4": both}, "follow-1", "follow-2", "follow-3", "follow-4")

	eventually(t, "eligibleNodes", func() (bool, string) {
		_, ap := prefixCondition(t, "follow-dns", anycastv1.ConditionReady)
		return ap.Status.EligibleNodes == 2 && ap.Status.Announcing == "0/2", fmt.Sprintf("%+v", ap.Status)
	})
	waitForCondition(t, "follow-dns", anycastv1.ConditionReady, metav1.ConditionFalse, anycastv1.ReasonAwaitingAgents)
	waitForCondition(t, "follow-dns", anycastv1.ConditionReconciling, metav1.ConditionTrue, anycastv1.ReasonAwaitingAgents)
}

func TestPrefixEditsAndDrainFollow(t *testing.T) {
	ctx := context.Background()
	suite := "edit"
	mustCreate(t, newClaim("edit-all", map[string]string{"suite": suite}))
	ap := newPrefix("edit-web", []string{"edit-all"}, "198.18.2.0/24")
	mustCreate(t, ap)
	mustCreate(t, newNode("edit-1", suite))
	mustCreate(t, newNode("edit-2", suite, "site", "backup"))
	waitForAnnouncements(t, "planned", map[string][]string{"edit-1": {"198.18.2.0/24"}, "edit-2": {"198.18.2.0/24"}}, "edit-1", "edit-2")

	prepend := int32(3)
	mutate(t, ap, func() {
		ap.Spec.Prefixes = append(ap.Spec.Prefixes, "2001:db8:2::/48")
		ap.Spec.Attributes = &anycastv1.BGPAttributes{Communities: []anycastv1.Community{"64512:100"}}
		ap.Spec.AttributeOverrides = []anycastv1.AttributeOverride{{
			NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"site": "backup"}},
			Attributes:   anycastv1.BGPAttributes{ASPathPrepend: &prepend},
		}}
	})
	eventually(t, "attributes follow the edit", func() (bool, string) {
		var n1, n2 anycastv1.NodeAnnouncement
		if err := k8s.Get(ctx, client.ObjectKey{Name: "edit-1"}, &n1); err != nil {
			return false, err.Error()
		}
		if err := k8s.Get(ctx, client.ObjectKey{Name: "edit-2"}, &n2); err != nil {
			return false, err.Error()
		}
		if n1.Spec.PrefixCount() != 2 || n2.Spec.PrefixCount() != 2 || len(n1.Spec.Groups) != 1 || len(n2.Spec.Groups) != 1 {
			return false, fmt.Sprintf("groups %+v / %+v", n1.Spec.Groups, n2.Spec.Groups)
		}
		a1, a2 := n1.Spec.Groups[0].Attributes, n2.Spec.Groups[0].Attributes
		ok := a1 != nil && a2 != nil && slices.Equal(a1.Communities, []anycastv1.Community{"64512:100"}) && a1.ASPathPrepend == nil &&
			slices.Equal(a2.Communities, []anycastv1.Community{"64512:100"}) && a2.ASPathPrepend != nil && *a2.ASPathPrepend == 3
		return ok, fmt.Sprintf("edit-1 %+v, edit-2 %+v", a1, a2)
	})

	node := &corev1.Node{ObjectMeta: metaName("edit-1")}
	mutate(t, node, func() { node.Annotations = map[string]string{anycastv1.DrainAnnotation: "true"} })
	eventually(t, "drain reaches the NodeAnnouncement", func() (bool, string) {
		var na anycastv1.NodeAnnouncement
		if err := k8s.Get(ctx, client.ObjectKey{Name: "edit-1"}, &na); err != nil {
			return false, err.Error()
		}
		return na.Spec.Drain, "not drained"
	})
}

func TestOverlapIsAConflict(t *testing.T) {
	suite := "overlap"
	mustCreate(t, newClaim("overlap-all", map[string]string{"suite": suite}))
	mustCreate(t, newNode("overlap-1", suite))
	mustCreate(t, newPrefix("overlap-old", []string{"overlap-all"}, "198.18.3.0/24"))
	waitForAnnouncements(t, "older planned", map[string][]string{"overlap-1": {"198.18.3.0/24"}}, "overlap-1")
	// Creation timestamps have a resolution of one second: make sure the newer one is newer.
	time.Sleep(1100 * time.Millisecond)
	mustCreate(t, newPrefix("overlap-new", []string{"overlap-all"}, "198.18.3.128/25", "198.18.4.0/24"))

	c := waitForCondition(t, "overlap-new", anycastv1.ConditionConflict, metav1.ConditionTrue, anycastv1.ReasonOverlap)
	if !strings.Contains(c.Message, `"overlap-old"`) || !strings.Contains(c.Message, "198.18.3.128/25 overlaps 198.18.3.0/24") {
		t.Errorf("conflict message = %q", c.Message)
	}
	waitForCondition(t, "overlap-new", anycastv1.ConditionStalled, metav1.ConditionTrue, anycastv1.ReasonOverlap)
	waitForCondition(t, "overlap-new", anycastv1.ConditionReady, metav1.ConditionFalse, anycastv1.ReasonOverlap)
	waitForCondition(t, "overlap-old", anycastv1.ConditionConflict, metav1.ConditionFalse, anycastv1.ReasonNoConflict)
	waitForAnnouncements(t, "the newer prefix is not planned", map[string][]string{"overlap-1": {"198.18.3.0/24"}}, "overlap-1")

	eventually(t, "a Warning event for the conflict", func() (bool, string) {
		var list eventsv1.EventList
		if err := k8s.List(context.Background(), &list); err != nil {
			return false, err.Error()
		}
		for _, e := range list.Items {
			if e.Regarding.Name == "overlap-new" && e.Reason == anycastv1.ReasonOverlap && e.Type == corev1.EventTypeWarning {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events, none for overlap-new", len(list.Items))
	})

	// Removing the overlap lets the newer prefix in.
	ap := &anycastv1.AnycastPrefix{ObjectMeta: metaName("overlap-new")}
	mutate(t, ap, func() { ap.Spec.Prefixes = []anycastv1.CIDR{"198.18.4.0/24"} })
	waitForCondition(t, "overlap-new", anycastv1.ConditionConflict, metav1.ConditionFalse, anycastv1.ReasonNoConflict)
	waitForAnnouncements(t, "both planned", map[string][]string{"overlap-1": {"198.18.3.0/24", "198.18.4.0/24"}}, "overlap-1")

	// Deleting a prefix removes it from every node; the node keeps its sessions.
	if err := k8s.Delete(context.Background(), &anycastv1.AnycastPrefix{ObjectMeta: metaName("overlap-old")}); err != nil {
		t.Fatal(err)
	}
	waitForAnnouncements(t, "a deleted prefix is withdrawn", map[string][]string{"overlap-1": {"198.18.4.0/24"}}, "overlap-1")
}

func TestMissingReferenceStallsWithoutLosingAnnouncements(t *testing.T) {
	ctx := context.Background()
	suite := "stall"
	mustCreate(t, newClaim("stall-all", map[string]string{"suite": suite}))
	mustCreate(t, newNode("stall-1", suite))
	mustCreate(t, newPrefix("stall-dns", []string{"stall-all"}, "198.18.5.0/24"))
	waitForAnnouncements(t, "planned", map[string][]string{"stall-1": {"198.18.5.0/24"}}, "stall-1")

	// An edit that names a HealthPolicy that does not exist: Stalled, and the last plan stays.
	ap := &anycastv1.AnycastPrefix{ObjectMeta: metaName("stall-dns")}
	mutate(t, ap, func() {
		ap.Spec.HealthPolicyRef = &anycastv1.ObjectReference{Name: "stall-missing"}
		ap.Spec.Prefixes = append(ap.Spec.Prefixes, "198.18.6.0/24")
	})
	c := waitForCondition(t, "stall-dns", anycastv1.ConditionStalled, metav1.ConditionTrue, anycastv1.ReasonHealthPolicyMissing)
	if !strings.Contains(c.Message, `HealthPolicy "stall-missing" not found`) {
		t.Errorf("stalled message = %q", c.Message)
	}
	waitForCondition(t, "stall-dns", anycastv1.ConditionReady, metav1.ConditionFalse, anycastv1.ReasonHealthPolicyMissing)
	waitForAnnouncements(t, "the last plan is kept", map[string][]string{"stall-1": {"198.18.5.0/24"}}, "stall-1")

	// A new prefix naming a claim that does not exist is not announced.
	mustCreate(t, newPrefix("stall-new", []string{"stall-typo"}, "198.18.7.0/24"))
	c = waitForCondition(t, "stall-new", anycastv1.ConditionStalled, metav1.ConditionTrue, anycastv1.ReasonClaimNotFound)
	if !strings.Contains(c.Message, `BGPSessionClaim "stall-typo" not found`) {
		t.Errorf("stalled message = %q", c.Message)
	}
	waitForAnnouncements(t, "not announced", map[string][]string{"stall-1": {"198.18.5.0/24"}}, "stall-1")

	// Creating the policy unstalls the prefix and plans the edit.
	hp := &anycastv1.HealthPolicy{ObjectMeta: metaName("stall-missing")}
	hp.Spec.Checks = []anycastv1.HealthCheck{{Name: "port", TCP: &anycastv1.TCPCheck{Address: "127.0.0.1:53"}}}
	mustCreate(t, hp)
	waitForCondition(t, "stall-dns", anycastv1.ConditionStalled, metav1.ConditionFalse, anycastv1.ReasonAsExpected)
	waitForAnnouncements(t, "the edit is planned", map[string][]string{"stall-1": {"198.18.5.0/24", "198.18.6.0/24"}}, "stall-1")
	eventually(t, "policy status", func() (bool, string) {
		var got anycastv1.HealthPolicy
		if err := k8s.Get(ctx, client.ObjectKey{Name: "stall-missing"}, &got); err != nil {
			return false, err.Error()
		}
		ready := meta.FindStatusCondition(got.Status.Conditions, anycastv1.ConditionReady)
		return got.Status.Prefixes == 1 && got.Status.Nodes == 1 && ready != nil && ready.Reason == anycastv1.ReasonInUse, fmt.Sprintf("%+v", got.Status)
	})
}

func TestStatusFollowsAgentsAndClaims(t *testing.T) {
	ctx := context.Background()
	suite := "agents"
	claim := newClaim("agents-all", map[string]string{"suite": suite})
	claim.Spec.Static.Peers[0].PasswordSecretRef = &anycastv1.SecretKeyRef{Name: "agents-md5", Key: "password"}
	mustCreate(t, claim)
	for _, n := range []string{"agents-1", "agents-2", "agents-3"} {
		mustCreate(t, newNode(n, suite))
	}
	mustCreate(t, newPrefix("agents-dns", []string{"agents-all"}, "198.18.8.0/24"))
	waitForAnnouncements(t, "planned", map[string][]string{"agents-1": {"198.18.8.0/24"}, "agents-2": {"198.18.8.0/24"}, "agents-3": {"198.18.8.0/24"}}, "agents-1", "agents-2", "agents-3")

	eventually(t, "claim stalled on the missing Secret", func() (bool, string) {
		var c anycastv1.BGPSessionClaim
		if err := k8s.Get(ctx, client.ObjectKey{Name: "agents-all"}, &c); err != nil {
			return false, err.Error()
		}
		s := meta.FindStatusCondition(c.Status.Conditions, anycastv1.ConditionStalled)
		return s != nil && s.Reason == anycastv1.ReasonSecretNotFound && c.Status.BoundNodes == 3 && c.Status.TotalSessions == 3, fmt.Sprintf("%+v", c.Status)
	})
	mustCreate(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "agents-md5", Namespace: operatorNamespace}, StringData: map[string]string{"password": "s3cret-never-logged"}})

	// Agents report: two announce, one withdrew; sessions established on two.
	report := func(node string, state anycastv1.PrefixState, session anycastv1.SessionState) {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var na anycastv1.NodeAnnouncement
			if err := k8s.Get(ctx, client.ObjectKey{Name: node}, &na); err != nil {
				return err
			}
			na.Status.ObservedGeneration = na.Generation
			na.Status.Prefixes = []anycastv1.NodePrefixStatus{{Prefix: "198.18.8.0/24", State: state, Reason: "Test"}}
			na.Status.Sessions = []anycastv1.NodeSessionStatus{{Claim: "agents-all", PeerAddress: "192.0.2.1", PeerASN: 65001, State: session}}
			return k8s.Status().Update(ctx, &na)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	report("agents-1", anycastv1.PrefixAnnounced, anycastv1.SessionEstablished)
	report("agents-2", anycastv1.PrefixAnnounced, anycastv1.SessionEstablished)
	report("agents-3", anycastv1.PrefixWithdrawn, anycastv1.SessionActive)

	ready := waitForCondition(t, "agents-dns", anycastv1.ConditionReady, metav1.ConditionTrue, anycastv1.ReasonAnnounced)
	degraded := waitForCondition(t, "agents-dns", anycastv1.ConditionDegraded, metav1.ConditionTrue, anycastv1.ReasonNodesWithdrawn)
	if !strings.Contains(degraded.Message, "agents-3") {
		t.Errorf("degraded message = %q", degraded.Message)
	}
	_, ap := prefixCondition(t, "agents-dns", anycastv1.ConditionReady)
	if ap.Status.AnnouncingNodes != 2 || ap.Status.EligibleNodes != 3 || ap.Status.Announcing != "2/3" {
		t.Errorf("status = %+v", ap.Status)
	}
	eventually(t, "claim ready with session states", func() (bool, string) {
		var c anycastv1.BGPSessionClaim
		if err := k8s.Get(ctx, client.ObjectKey{Name: "agents-all"}, &c); err != nil {
			return false, err.Error()
		}
		r := meta.FindStatusCondition(c.Status.Conditions, anycastv1.ConditionReady)
		return r != nil && r.Status == metav1.ConditionTrue && c.Status.EstablishedSessions == 2 && c.Status.TotalSessions == 3 &&
			c.Status.Sessions[2].Node == "agents-3" && c.Status.Sessions[2].State == anycastv1.SessionActive, fmt.Sprintf("%+v", c.Status)
	})

	// A flip back moves Ready's lastTransitionTime; Degraded clearing does not touch Ready's.
	report("agents-3", anycastv1.PrefixAnnounced, anycastv1.SessionEstablished)
	waitForCondition(t, "agents-dns", anycastv1.ConditionDegraded, metav1.ConditionFalse, anycastv1.ReasonAsExpected)
	after, _ := prefixCondition(t, "agents-dns", anycastv1.ConditionReady)
	if !after.LastTransitionTime.Equal(&ready.LastTransitionTime) {
		t.Errorf("Ready's lastTransitionTime moved without a flip: %v → %v", ready.LastTransitionTime, after.LastTransitionTime)
	}

	// The Secret's value never appears in any status or event.
	var events eventsv1.EventList
	if err := k8s.List(ctx, &events); err != nil {
		t.Fatal(err)
	}
	var c anycastv1.BGPSessionClaim
	if err := k8s.Get(ctx, client.ObjectKey{Name: "agents-all"}, &c); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(fmt.Sprintf("%+v %+v", events.Items, c), "s3cret-never-logged") {
		t.Errorf("the Secret's value leaked into an event or status")
	}
}

func TestSteadyStateWritesNothing(t *testing.T) {
	suite := "steady"
	mustCreate(t, newClaim("steady-all", map[string]string{"suite": suite}))
	hp := &anycastv1.HealthPolicy{ObjectMeta: metaName("steady-web")}
	hp.Spec.Checks = []anycastv1.HealthCheck{{Name: "web", HTTP: &anycastv1.HTTPCheck{URL: "http://127.0.0.1:8080/healthz"}}}
	hp.Spec.Dampening = &anycastv1.Dampening{WithdrawDelay: &metav1.Duration{Duration: 30 * time.Second}}
	mustCreate(t, hp)
	ap := newPrefix("steady-dns", []string{"steady-all"}, "198.18.9.0/24", "2001:db8:9::/48")
	ap.Spec.HealthPolicyRef = &anycastv1.ObjectReference{Name: "steady-web"}
	ap.Spec.Attributes = &anycastv1.BGPAttributes{Communities: []anycastv1.Community{}, LargeCommunities: []anycastv1.LargeCommunity{"64512:1:2"}}
	mustCreate(t, ap)
	for i := range 5 {
		mustCreate(t, newNode(fmt.Sprintf("steady-%d", i), suite))
	}
	waitForCondition(t, "steady-dns", anycastv1.ConditionReconciling, metav1.ConditionTrue, anycastv1.ReasonAwaitingAgents)

	// A reconciler of the test's own, reading the manager's cache, whose writes alone are counted: the running
	// manager may still be cleaning up after earlier tests.
	var writes writeCounter
	cfg := rest.CopyConfig(env.Config)
	cfg.Wrap(writes.wrap)
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme, Cache: &client.CacheOptions{Reader: mgrCache}})
	if err != nil {
		t.Fatal(err)
	}
	r := &PlannerReconciler{Client: c, Clock: clock.RealClock{}, Namespace: operatorNamespace, Workers: 4}
	resync := func() int64 {
		before := writes.n.Load()
		if _, err := r.Reconcile(context.Background(), plannerKey); err != nil {
			t.Fatal(err)
		}
		return writes.n.Load() - before
	}
	// Converged once three reconciles in a row write nothing; then further resyncs must write nothing either.
	eventually(t, "convergence", func() (bool, string) {
		n := resync() + resync() + resync()
		return n == 0, fmt.Sprintf("%d writes", n)
	})
	for i := range 20 {
		if n := resync(); n != 0 {
			t.Errorf("resync %d at steady state wrote %d times, want 0", i, n)
		}
	}
}
