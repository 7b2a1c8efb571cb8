package install

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/backend/backendtest"
)

// TestKstatus reads objects the planner wrote on a real API server with kstatus (what helm --wait, Flux and kpt
// use): Current when ready, InProgress while reconciling or with a stale generation, Failed when stalled.
func TestKstatus(t *testing.T) {
	c := backendtest.Start(t, func(*runtime.Scheme) error { return nil }, nil)
	ctx := context.Background()
	c.Nodes("n1", "n2")
	s := backendtest.NewScenario()
	c.CreateScenario(s)
	kstatus := func(obj client.Object) status.Status {
		t.Helper()
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(anycastv1.GroupVersion.WithKind(kindOf(obj)))
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(obj), u); err != nil {
			t.Fatal(err)
		}
		res, err := status.Compute(u)
		if err != nil {
			t.Fatal(err)
		}
		return res.Status
	}

	// Planned, no agent has reported: the prefix is reconciling.
	if got := kstatus(s.Prefix); got != status.InProgressStatus {
		t.Errorf("prefix awaiting its agents: %s, want InProgress", got)
	}
	// The agents announce: Current, as are the claim and the policy.
	c.Report("n1", anycastv1.PrefixAnnounced)
	c.Report("n2", anycastv1.PrefixAnnounced)
	c.Reconcile()
	for _, o := range []client.Object{s.Prefix, s.Claim, s.Policy} {
		if got := kstatus(o); got != status.CurrentStatus {
			t.Errorf("%s %s when ready: %s, want Current", kindOf(o), o.GetName(), got)
		}
	}
	// A spec change the manager has not seen yet: InProgress.
	var ap anycastv1.AnycastPrefix
	if err := c.Client.Get(ctx, client.ObjectKeyFromObject(s.Prefix), &ap); err != nil {
		t.Fatal(err)
	}
	ap.Spec.Attributes.MED = new(int64)
	if err := c.Client.Update(ctx, &ap); err != nil {
		t.Fatal(err)
	}
	if got := kstatus(s.Prefix); got != status.InProgressStatus {
		t.Errorf("prefix with a stale generation: %s, want InProgress", got)
	}
	c.Reconcile()
	if got := kstatus(s.Prefix); got != status.CurrentStatus {
		t.Errorf("prefix once observed: %s, want Current", got)
	}
	// A claim whose Secret is gone, and a prefix naming a claim that does not exist: Failed.
	c.Delete(s.Secret)
	broken := &anycastv1.AnycastPrefix{ObjectMeta: metav1.ObjectMeta{Name: "broken"}}
	broken.Spec.Prefixes = []anycastv1.CIDR{"203.0.113.0/24"}
	broken.Spec.SessionClaims = []anycastv1.LocalObjectName{"nope"}
	c.Create(broken)
	c.Reconcile()
	for _, o := range []client.Object{s.Claim, broken} {
		if got := kstatus(o); got != status.FailedStatus {
			t.Errorf("stalled %s %s: %s, want Failed", kindOf(o), o.GetName(), got)
		}
	}
}

func kindOf(o client.Object) string {
	switch o.(type) {
	case *anycastv1.AnycastPrefix:
		return "AnycastPrefix"
	case *anycastv1.BGPSessionClaim:
		return "BGPSessionClaim"
	case *anycastv1.HealthPolicy:
		return "HealthPolicy"
	}
	return "NodeAnnouncement"
}
