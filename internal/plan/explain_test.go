package plan

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// TestExplain checks that each thing that decides whether a node announces a prefix is named, in its own words.
func TestExplain(t *testing.T) {
	for _, tc := range []struct {
		name         string
		change       func(in *Input)
		prefix, node string
		want         []string
	}{
		{name: "announced and healthy", prefix: "dns", node: "n0",
			want: []string{"n0 announces 198.51.100.0/24", "every node qualifies", `BGPSessionClaim "all" selects the node: 198.51.100.0/24 goes out over its session to 192.0.2.1 (not reported)`,
				"Its agent reports 198.51.100.0/24 Announced", "It holds no permit"}},
		{name: "withdrawn by its agent", prefix: "dns", node: "n1",
			change: func(in *Input) {
				in.Announcements[1].Status.Prefixes[0].State, in.Announcements[1].Status.Prefixes[0].Reason = anycastv1.PrefixWithdrawn, "Unhealthy"
			},
			want: []string{"n1 has withdrawn 198.51.100.0/24", "Withdrawn: Unhealthy"}},
		{name: "overlaps an older prefix", prefix: "newer", node: "n0",
			change: func(in *Input) {
				in.Prefixes = append(in.Prefixes, prefix("newer", 5, []string{"all"}, "198.51.100.128/25"))
			},
			want: []string{"n0 does not announce", `Overlaps AnycastPrefix "dns"`, "planned on no node"}},
		{name: "claim not found", prefix: "dns", node: "n0",
			change: func(in *Input) { in.Prefixes[0].Spec.SessionClaims = append(in.Prefixes[0].Spec.SessionClaims, "gone") },
			want:   []string{`BGPSessionClaim "gone" not found`, "keeps what it was last planned to announce", "Its agent reports"}},
		{name: "paused", prefix: "dns", node: "n0",
			change: func(in *Input) { in.Prefixes[0].Spec.Paused = true },
			want:   []string{"Paused: announcements are frozen", "keeps what it was last planned"}},
		{name: "not selected by the prefix", prefix: "dns", node: "n0",
			change: func(in *Input) {
				in.Prefixes[0].Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "edge"}}
			},
			want: []string{"does not match spec.nodeSelector (tier=edge)", "marked leaving"}},
		{name: "leaving, the claim no longer selects it", prefix: "dns", node: "n3",
			change: func(in *Input) { relabel(in, "b", "n3") },
			want: []string{`BGPSessionClaim "all" does not select the node (spec.nodeSelector site=a)`, "so it is not eligible",
				"keeps it, marked leaving, until a permit"}},
		{name: "every node leaving at once is held", prefix: "dns", node: "n3",
			change: func(in *Input) { relabel(in, "b", "n0", "n1", "n2", "n3") },
			want:   []string{"4 nodes are leaving (n0, n1, n2, n3), more than the budget of 2"}},
		{name: "export policy", prefix: "dns", node: "n0",
			change: func(in *Input) {
				in.Claims[0].Spec.ExportPolicy = &anycastv1.ExportPolicy{AllowedPrefixes: []anycastv1.CIDR{"203.0.113.0/24"}}
			},
			want: []string{"exportPolicy.allowedPrefixes (203.0.113.0/24) do not cover 198.51.100.0/24"}},
		{name: "maxPrefixes", prefix: "web", node: "n0",
			change: func(in *Input) {
				in.Claims[0].Spec.ExportPolicy = &anycastv1.ExportPolicy{MaxPrefixes: ptr.To[int32](1)}
				in.Prefixes = append(in.Prefixes, prefix("web", 5, []string{"all"}, "203.0.113.0/24"))
			},
			want: []string{`does not announce AnycastPrefix "web"`, "exportPolicy.maxPrefixes (1) is reached there by older AnycastPrefixes: 203.0.113.0/24 not sent"}},
		{name: "claim being deleted", prefix: "dns", node: "n0",
			change: func(in *Input) { in.Claims[0].DeletionTimestamp = &metav1.Time{Time: t0} },
			want:   []string{`BGPSessionClaim "all" is being deleted`}},
		{name: "node being deleted", prefix: "dns", node: "n0",
			change: func(in *Input) { in.Nodes[0].DeletionTimestamp = &metav1.Time{Time: t0} },
			want:   []string{`Node "n0" is being deleted`}},
		{name: "drained", prefix: "dns", node: "n0",
			change: func(in *Input) { in.Nodes[0].Annotations = map[string]string{anycastv1.DrainAnnotation: "true"} },
			want:   []string{"The node is drained (anycast.dev/drain=true)"}},
		{name: "no agent", prefix: "dns", node: "n0",
			change: func(in *Input) { in.Announcements[0].Status = anycastv1.NodeAnnouncementStatus{} },
			want:   []string{"is planned, not reported by the agent yet", "No agent has reported on the node"}},
		{name: "agent behind", prefix: "dns", node: "n0",
			change: func(in *Input) { in.Announcements[0].Generation++ },
			want:   []string{"Its agent acts on an older plan"}},
		{name: "checks", prefix: "dns", node: "n0",
			change: func(in *Input) {
				in.Policies = []anycastv1.HealthPolicy{policy("hp")}
				in.Prefixes[0].Spec.HealthPolicyRef = &anycastv1.ObjectReference{Name: "hp"}
				settle(in, anycastv1.PrefixAnnounced)
				in.Announcements[0].Status.Checks = []anycastv1.NodeCheckStatus{{Policy: "hp", Name: "web", State: anycastv1.CheckFailing,
					ConsecutiveFailures: 2, LastError: "connection refused"}}
			},
			want: []string{`Check "web" of HealthPolicy "hp" is Failing: 2 consecutive failures, last: connection refused`}},
		{name: "held back by the budget", prefix: "dns", node: "n2",
			change: func(in *Input) {
				for i := range in.Announcements {
					in.Announcements[i].Status.PermitRequests = []string{"dns"}
				}
			},
			want: []string{"the budget is used up (maxWithdrawn 50%: 2 of the 4 nodes carrying it may be out at once)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := leaveCluster("50%")
			if tc.change != nil {
				tc.change(&in)
			}
			e, err := Explain(in, Compute(in), tc.prefix, tc.node, t0)
			if err != nil {
				t.Fatal(err)
			}
			text := e.Verdict + "\n" + strings.Join(e.Reasons, "\n")
			for _, w := range tc.want {
				if !strings.Contains(text, w) {
					t.Errorf("missing %q in:\n%s", w, text)
				}
			}
		})
	}
}

func TestExplainUnknownObjects(t *testing.T) {
	in := leaveCluster("")
	if _, err := Explain(in, Compute(in), "nope", "n0", t0); err == nil || !strings.Contains(err.Error(), `AnycastPrefix "nope" not found`) {
		t.Errorf("unknown prefix: %v", err)
	}
	if _, err := Explain(in, Compute(in), "dns", "nope", t0); err == nil || !strings.Contains(err.Error(), `node "nope" not found`) {
		t.Errorf("unknown node: %v", err)
	}
}
