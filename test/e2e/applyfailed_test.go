package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/go-logr/logr/testr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/backend/metallb"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
)

// denyPolicy makes the API server refuse, with message, writes of resources (group, resource) that match expr.
func denyPolicy(t *testing.T, k8s client.Client, name, group, resource, expr, message string) {
	t.Helper()
	p := &admissionregistrationv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}}
	p.Spec.FailurePolicy = ptr.To(admissionregistrationv1.Fail)
	p.Spec.MatchConstraints = &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
		RuleWithOperations: admissionregistrationv1.RuleWithOperations{
			Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
			Rule:       admissionregistrationv1.Rule{APIGroups: []string{group}, APIVersions: []string{"*"}, Resources: []string{resource}},
		}}}}
	p.Spec.Validations = []admissionregistrationv1.Validation{{Expression: "!(" + expr + ")", Message: message}}
	b := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: name}}
	b.Spec.PolicyName = name
	b.Spec.ValidationActions = []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}
	create(t, k8s, p, b)
}

// TestFailuresStayWhereTheyHappen: the API server refuses one AnycastPrefix's BGPAdvertisement and one node's
// NodeAnnouncement. Everything else is planned and written; the statuses of the affected objects, and only those,
// say ApplyFailed with the API server's message; an event says so too.
func TestFailuresStayWhereTheyHappen(t *testing.T) {
	env, k8s := startMetalLBAPIServer(t)
	const refusedAdv = "advertisements of bad are refused by policy"
	const refusedNA = "edge-2's plan is refused by policy"
	create(t, k8s, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "metallb-system"}})
	denyPolicy(t, k8s, "refuse-bad", "metallb.io", "bgpadvertisements", `object.metadata.labels["anycast.dev/source"] == "bad"`, refusedAdv)
	// A policy takes a moment to be in force: until a dry run of what it refuses is refused.
	probe := &metallbv1beta1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: "metallb-system", Labels: map[string]string{"anycast.dev/source": "bad"}}}
	poll(t, "the policy refusing bad's advertisements in force", func() (bool, string) {
		err := k8s.Create(context.Background(), probe.DeepCopy(), client.DryRunAll)
		return err != nil && strings.Contains(err.Error(), refusedAdv), fmt.Sprint(err)
	})
	claim := &anycastv1.BGPSessionClaim{ObjectMeta: metav1.ObjectMeta{Name: "edge"}}
	claim.Spec.LocalASN = 64512
	claim.Spec.NodeSelector = metav1.LabelSelector{MatchLabels: map[string]string{"site": "a"}}
	claim.Spec.Static = &anycastv1.StaticSessions{Peers: []anycastv1.BGPPeer{{Address: "192.0.2.1", ASN: 65001}}}
	prefix := func(name, cidr string) *anycastv1.AnycastPrefix {
		ap := &anycastv1.AnycastPrefix{ObjectMeta: metav1.ObjectMeta{Name: name}}
		ap.Spec.Prefixes = []anycastv1.CIDR{anycastv1.CIDR(cidr)}
		ap.Spec.SessionClaims = []anycastv1.LocalObjectName{"edge"}
		return ap
	}
	objs := []client.Object{claim, prefix("good", "198.51.100.0/24"), prefix("bad", "203.0.113.0/24")}
	for _, n := range []string{"edge-1", "edge-2"} {
		objs = append(objs, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{corev1.LabelHostname: n, "site": "a"}}})
	}
	create(t, k8s, objs...)
	startManagerWith(t, env, metallb.Translator{Namespace: "metallb-system", Mode: metallb.FRRK8s,
		Secrets: func(string, string) ([]byte, bool) { return nil, false }})
	log := testr.NewWithOptions(t, testr.Options{Verbosity: -1})
	for _, n := range []string{"edge-1", "edge-2"} {
		startAgentWith(t, env, n, netip.MustParseAddr("127.0.0.2"), speaker.Delegated{}, log)
	}

	// good's advertisement is written; bad's is refused, and bad says so.
	poll(t, "good's BGPAdvertisement written", func() (bool, string) {
		var list metallbv1beta1.BGPAdvertisementList
		if err := k8s.List(context.Background(), &list, client.InNamespace("metallb-system")); err != nil {
			return false, err.Error()
		}
		for _, a := range list.Items {
			if a.Labels["anycast.dev/source"] == "bad" {
				return false, "bad's advertisement was written"
			}
		}
		return len(list.Items) >= 1, fmt.Sprintf("%d advertisements", len(list.Items))
	})
	waitReady(t, k8s, "bad", metav1.ConditionFalse, anycastv1.ReasonApplyFailed, refusedAdv)
	// good is planned and its status written although bad's write fails in every reconcile.
	poll(t, "good's status written", func() (bool, string) {
		ap := getPrefix(t, k8s, "good")
		c := meta.FindStatusCondition(ap.Status.Conditions, anycastv1.ConditionReady)
		return ap.Status.EligibleNodes == 2 && c != nil && c.Reason != anycastv1.ReasonApplyFailed, fmt.Sprintf("%+v", ap.Status)
	})

	// Now edge-2's NodeAnnouncement is refused too: a new prefix reaches edge-1's plan, and shows the refusal.
	denyPolicy(t, k8s, "refuse-edge-2", "anycast.dev", "nodeannouncements", `object.metadata.name == "edge-2"`, refusedNA)
	poll(t, "the policy refusing edge-2's plan in force", func() (bool, string) {
		err := k8s.Update(context.Background(), getNA(t, k8s, "edge-2"), client.DryRunAll)
		return err != nil && strings.Contains(err.Error(), refusedNA), fmt.Sprint(err)
	})
	create(t, k8s, prefix("new", "192.0.2.0/24"))
	poll(t, "new planned on edge-1", func() (bool, string) {
		return hasPrefix(getNA(t, k8s, "edge-1"), "192.0.2.0/24"), "not yet"
	})
	waitReady(t, k8s, "new", metav1.ConditionFalse, anycastv1.ReasonApplyFailed, refusedNA)
	if hasPrefix(getNA(t, k8s, "edge-2"), "192.0.2.0/24") {
		t.Errorf("edge-2's refused plan was written")
	}
	poll(t, "an ApplyFailed event", func() (bool, string) {
		var list corev1.EventList
		if err := k8s.List(context.Background(), &list); err != nil {
			return false, err.Error()
		}
		for _, e := range list.Items {
			if e.Reason == anycastv1.ReasonApplyFailed && e.InvolvedObject.Name == "new" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events", len(list.Items))
	})
}

func waitReady(t *testing.T, k8s client.Client, name string, status metav1.ConditionStatus, reason, message string) {
	t.Helper()
	poll(t, fmt.Sprintf("%s Ready=%s %s", name, status, reason), func() (bool, string) {
		ap := getPrefix(t, k8s, name)
		c := meta.FindStatusCondition(ap.Status.Conditions, anycastv1.ConditionReady)
		return c != nil && c.Status == status && c.Reason == reason && strings.Contains(c.Message, message), fmt.Sprintf("%+v", c)
	})
}

func getPrefix(t *testing.T, k8s client.Client, name string) *anycastv1.AnycastPrefix {
	t.Helper()
	var ap anycastv1.AnycastPrefix
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, &ap); err != nil {
		t.Fatal(err)
	}
	return &ap
}

func hasPrefix(na *anycastv1.NodeAnnouncement, cidr string) bool {
	for _, g := range na.Spec.Groups {
		for _, gp := range g.Prefixes {
			if string(gp.Prefix) == cidr {
				return true
			}
		}
	}
	return false
}
