package plan

import (
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/test/fixtures"
)

// scaleInput is fixtures.Scale as plan input. With steady set it also holds the NodeAnnouncements of the previous
// plan, with every agent reporting every prefix announced: a replan at steady state, the planner's common case.
func scaleInput(nodes, prefixes int, steady bool) Input {
	c := fixtures.Scale(nodes, prefixes)
	in := Input{Nodes: c.Nodes, Claims: c.Claims, Policies: c.Policies, Prefixes: c.Prefixes}
	if steady {
		out := Compute(in)
		for _, name := range nodesOf(out) {
			na := anycastv1.NodeAnnouncement{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: out.Announcements[name]}
			for _, g := range na.Spec.Groups {
				for _, p := range g.Prefixes {
					na.Status.Prefixes = append(na.Status.Prefixes, anycastv1.NodePrefixStatus{Prefix: p.Prefix, State: anycastv1.PrefixAnnounced})
				}
			}
			in.Announcements = append(in.Announcements, na)
		}
	}
	return in
}

func BenchmarkCompute(b *testing.B) {
	for _, size := range []struct{ nodes, prefixes int }{{1000, 100}, {5000, 100}} {
		b.Run(fmt.Sprintf("nodes=%d/prefixes=%d", size.nodes, size.prefixes), func(b *testing.B) {
			in := scaleInput(size.nodes, size.prefixes, true)
			b.ReportAllocs()
			for b.Loop() {
				out := Compute(in)
				if len(out.Announcements) != size.nodes {
					b.Fatalf("%d announcements", len(out.Announcements))
				}
			}
		})
	}
}

func TestScaleInputPlansEverywhere(t *testing.T) {
	out := Compute(scaleInput(30, 100, true))
	for _, name := range nodesOf(out) {
		if n := out.Announcements[name].PrefixCount(); n != 100 {
			t.Fatalf("%s has %d prefixes, want 100", name, n)
		}
	}
	for name, r := range out.Prefixes {
		if len(r.Announcing) != 30 || len(r.Denials) != 0 {
			t.Fatalf("%s: %+v", name, r)
		}
	}
}
