package plan

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// leaveCluster is four nodes labelled site=a with a prefix over a claim selecting them, at the given maxWithdrawn,
// already planned and announced everywhere (agents caught up).
func leaveCluster(maxWithdrawn string) Input {
	in := Input{Claims: []anycastv1.BGPSessionClaim{claim("all", map[string]string{"site": "a"}, "192.0.2.1")}}
	for _, n := range []string{"n0", "n1", "n2", "n3"} {
		in.Nodes = append(in.Nodes, node(n, map[string]string{"site": "a"}))
	}
	ap := prefix("dns", 0, []string{"all"}, "198.51.100.0/24")
	if maxWithdrawn != "" {
		ap.Spec.Safety = &anycastv1.PrefixSafety{MaxWithdrawn: &intstr.IntOrString{Type: intstr.String, StrVal: maxWithdrawn}}
	}
	in.Prefixes = []anycastv1.AnycastPrefix{ap}
	settle(&in, anycastv1.PrefixAnnounced)
	return in
}

// settle writes the plan into the NodeAnnouncements and has every agent report it caught up, each prefix in state.
func settle(in *Input, state anycastv1.PrefixState) {
	out := Compute(*in)
	byName := map[string]*anycastv1.NodeAnnouncement{}
	for i := range in.Announcements {
		byName[in.Announcements[i].Name] = &in.Announcements[i]
	}
	for _, n := range nodesOf(out) {
		na := byName[n]
		if na == nil {
			in.Announcements = append(in.Announcements, anycastv1.NodeAnnouncement{ObjectMeta: metav1.ObjectMeta{Name: n}})
			na = &in.Announcements[len(in.Announcements)-1]
			for k := range in.Announcements {
				byName[in.Announcements[k].Name] = &in.Announcements[k]
			}
		}
		if !jsonEqualSpec(na.Spec, out.Announcements[n]) {
			na.Spec = out.Announcements[n]
			na.Generation++
		}
		na.Status = anycastv1.NodeAnnouncementStatus{ObservedGeneration: na.Generation, Permits: na.Spec.Permits}
		for _, g := range na.Spec.Groups {
			for _, gp := range g.Prefixes {
				na.Status.Prefixes = append(na.Status.Prefixes, anycastv1.NodePrefixStatus{Prefix: gp.Prefix, State: state})
			}
		}
	}
}

// leaving lists the nodes whose plan carries dns's CIDR marked leaving.
func leavingOn(out Output) []string {
	var got []string
	for _, n := range nodesOf(out) {
		for _, g := range out.Announcements[n].Groups {
			for _, gp := range g.Prefixes {
				if gp.Leaving {
					got = append(got, n)
				}
			}
		}
	}
	return got
}

func relabel(in *Input, site string, names ...string) {
	for i := range in.Nodes {
		if slices.Contains(names, in.Nodes[i].Name) {
			in.Nodes[i].Labels = map[string]string{"site": site}
		}
	}
}

func TestLeavingNodesWithdrawThroughThePermits(t *testing.T) {
	in := leaveCluster("50%")
	relabel(&in, "b", "n3")
	out := Compute(in)
	// n3 keeps the prefix, leaving, and its sessions; the other three are unchanged.
	if got := leavingOn(out); !slices.Equal(got, []string{"n3"}) {
		t.Fatalf("leaving on %v, want n3", got)
	}
	if s := out.Announcements["n3"].Sessions; len(s) != 1 || s[0].Claim != "all" {
		t.Errorf("n3 lost its sessions while leaving: %+v", s)
	}
	r := out.Prefixes["dns"]
	if !slices.Equal(r.Leaving, []string{"n3"}) || len(r.Eligible) != 3 || r.Budget != 2 {
		t.Errorf("report: leaving %v eligible %v budget %d", r.Leaving, r.Eligible, r.Budget)
	}
	st := PrefixStatus(&in.Prefixes[0], r, metav1.Now())
	if c := meta.FindStatusCondition(st.Conditions, anycastv1.ConditionDegraded); c == nil || c.Reason != anycastv1.ReasonNodesLeaving ||
		!strings.Contains(c.Message, "n3") {
		t.Errorf("Degraded = %+v", c)
	}
	// Its agent sees the entry leaving and asks for the permit: it gets it (budget 2 of the 4 that carry it).
	settle(&in, anycastv1.PrefixAnnounced)
	na := &in.Announcements[3]
	na.Status.PermitRequests = []string{"dns"}
	out = Compute(in)
	if !slices.Contains(out.Announcements["n3"].Permits, "dns") {
		t.Fatalf("the leaving node got no permit: %+v", out.Announcements["n3"])
	}
	// It withdraws: then, and only then, the entry goes.
	settle(&in, anycastv1.PrefixAnnounced)
	na.Status.Prefixes[0].State = anycastv1.PrefixWithdrawn
	out = Compute(in)
	if got := leavingOn(out); len(got) != 0 || len(out.Announcements["n3"].Groups) != 0 {
		t.Errorf("after the leaving node withdrew, it still carries %+v", out.Announcements["n3"].Groups)
	}
	if _, ok := out.Announcements["n3"]; !ok {
		t.Errorf("the NodeAnnouncement of a node with nothing planned is deleted instead of emptied")
	}
}

// TestEveryNodeLeavingAtOnceIsHeld: a change that takes the prefix off more nodes than the budget is held whole,
// as a mistaken selector matching no node would be.
func TestEveryNodeLeavingAtOnceIsHeld(t *testing.T) {
	in := leaveCluster("50%")
	relabel(&in, "b", "n0", "n1", "n2", "n3")
	settle(&in, anycastv1.PrefixAnnounced)
	for i := range in.Announcements {
		in.Announcements[i].Status.PermitRequests = []string{"dns"}
	}
	out := Compute(in)
	if got := leavingOn(out); len(got) != 4 {
		t.Fatalf("leaving on %v, want all four kept", got)
	}
	if got := holders(out); len(got) != 0 {
		t.Errorf("permits granted with no node left to carry the prefix: %v", got)
	}
	r := out.Prefixes["dns"]
	if len(r.HeldBack) != 4 || r.Budget != 2 || !r.LeavingHeld {
		t.Errorf("held back %v, budget %d, leaving held %v", r.HeldBack, r.Budget, r.LeavingHeld)
	}
	st := PrefixStatus(&in.Prefixes[0], r, metav1.Now())
	if c := meta.FindStatusCondition(st.Conditions, anycastv1.ConditionDegraded); c == nil || c.Reason != anycastv1.ReasonMaxWithdrawnReached ||
		!strings.Contains(c.Message, "takes the prefix off 4 of 4 nodes, and maxWithdrawn allows 2 at once") {
		t.Errorf("Degraded = %+v", c)
	}
	// Two of them come back: the two still leaving are within the budget and get their permits.
	for i := range in.Announcements {
		in.Announcements[i].Status.PermitRequests = nil
	}
	relabel(&in, "a", "n0", "n1")
	settle(&in, anycastv1.PrefixAnnounced)
	for i := 2; i < 4; i++ { // the leaving ones ask
		in.Announcements[i].Status.PermitRequests = []string{"dns"}
	}
	out = Compute(in)
	if got := holders(out); !slices.Equal(got, []string{"n2", "n3"}) {
		t.Errorf("holders = %v, want the two leaving nodes", got)
	}
}

func TestIntendedRemovalsGoAtOnce(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Input)
		gone   []string // nodes that lose the CIDR at once
	}{
		{"maxWithdrawn 100%: every node may withdraw on its own", func(in *Input) {
			in.Prefixes[0].Spec.Safety = nil
			relabel(in, "b", "n3")
		}, []string{"n3"}},
		{"the CIDR taken out of the AnycastPrefix", func(in *Input) {
			in.Prefixes[0].Spec.Prefixes = []anycastv1.CIDR{"203.0.113.0/24"}
		}, []string{"n0", "n1", "n2", "n3"}},
		{"the claim being deleted", func(in *Input) {
			in.Claims[0].DeletionTimestamp = &metav1.Time{Time: t0}
		}, []string{"n0", "n1", "n2", "n3"}},
		{"the AnycastPrefix deleted", func(in *Input) {
			in.Prefixes = nil
		}, []string{"n0", "n1", "n2", "n3"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := leaveCluster("25%")
			tc.change(&in)
			out := Compute(in)
			for _, n := range tc.gone {
				for _, g := range out.Announcements[n].Groups {
					for _, gp := range g.Prefixes {
						if gp.Prefix == "198.51.100.0/24" {
							t.Errorf("%s still carries 198.51.100.0/24 (leaving %v)", n, gp.Leaving)
						}
					}
				}
			}
			if tc.name == "the claim being deleted" {
				for _, n := range nodesOf(out) {
					if s := out.Announcements[n].Sessions; len(s) != 0 {
						t.Errorf("%s keeps the deleted claim's sessions: %+v", n, s)
					}
				}
			}
		})
	}
}

func TestLoweredBudgetRevokesTheExcess(t *testing.T) {
	in := leaveCluster("50%")
	for i := range in.Announcements {
		in.Announcements[i].Status.PermitRequests = []string{"dns"}
	}
	out := Compute(in)
	settle(&in, anycastv1.PrefixAnnounced)
	in.Announcements[0].Spec, in.Announcements[1].Spec = out.Announcements["n0"], out.Announcements["n1"]
	for _, i := range []int{0, 1} { // both holders withdraw
		na := &in.Announcements[i]
		na.Status = anycastv1.NodeAnnouncementStatus{ObservedGeneration: na.Generation, Permits: []string{"dns"},
			Prefixes: []anycastv1.NodePrefixStatus{{Prefix: "198.51.100.0/24", State: anycastv1.PrefixWithdrawn}}}
	}
	if got := holders(Compute(in)); !slices.Equal(got, []string{"n0", "n1"}) {
		t.Fatalf("holders at 50%% = %v", got)
	}
	in.Prefixes[0].Spec.Safety.MaxWithdrawn.StrVal = "25%"
	out = Compute(in)
	if got := holders(out); !slices.Equal(got, []string{"n0"}) {
		t.Errorf("holders after lowering to 25%% = %v, want n0 only (the excess revoked even in use)", got)
	}
}
