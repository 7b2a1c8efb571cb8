package plan

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// ScaleInput builds a cluster of the given size: nodes spread over three regions, one claim per region, a health
// policy, and prefixes (one IPv4 prefix each) announced from every node, as anycast is, every other one with an
// attribute override for the backup site (a tenth of the nodes). Every node carries every prefix. With steady set, the input also
// holds the NodeAnnouncements of the previous plan with every agent reporting every prefix announced: a replan at
// steady state, the planner's common case.
func ScaleInput(nodes, prefixes int, steady bool) Input {
	regions := []string{"lax", "fra", "sin"}
	var in Input
	for i := range nodes {
		labels := map[string]string{"region": regions[i%3], "anycast.dev/site": "primary"}
		if i%10 == 0 {
			labels["anycast.dev/site"] = "backup"
		}
		in.Nodes = append(in.Nodes, corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%05d", i), Labels: labels}})
	}
	for _, r := range regions {
		c := claim(r, map[string]string{"region": r}, "192.0.2.1", "2001:db8::1")
		c.Spec.ExportPolicy = &anycastv1.ExportPolicy{AllowedPrefixes: []anycastv1.CIDR{"10.0.0.0/8"}, MaxPrefixes: ptr.To[int32](512)}
		in.Claims = append(in.Claims, c)
	}
	in.Policies = []anycastv1.HealthPolicy{policy("web")}
	for i := range prefixes {
		ap := prefix(fmt.Sprintf("svc-%03d", i), i, regions, fmt.Sprintf("10.%d.%d.0/24", i/256, i%256))
		ap.Spec.HealthPolicyRef = &anycastv1.ObjectReference{Name: "web"}
		ap.Spec.Attributes = &anycastv1.BGPAttributes{Communities: []anycastv1.Community{"64512:100"}, MED: ptr.To[int64](10)}
		if i%2 == 0 {
			ap.Spec.AttributeOverrides = []anycastv1.AttributeOverride{{
				NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"anycast.dev/site": "backup"}},
				Attributes:   anycastv1.BGPAttributes{ASPathPrepend: ptr.To[int32](3)},
			}}
		}
		in.Prefixes = append(in.Prefixes, ap)
	}
	if steady {
		out := Compute(in)
		for _, name := range nodesOf(out) {
			na := anycastv1.NodeAnnouncement{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: out.Announcements[name]}
			for _, p := range na.Spec.Prefixes {
				na.Status.Prefixes = append(na.Status.Prefixes, anycastv1.NodePrefixStatus{Prefix: p.Prefix, State: anycastv1.PrefixAnnounced})
			}
			in.Announcements = append(in.Announcements, na)
		}
	}
	return in
}

func BenchmarkCompute(b *testing.B) {
	for _, size := range []struct{ nodes, prefixes int }{{1000, 100}, {5000, 100}} {
		b.Run(fmt.Sprintf("nodes=%d/prefixes=%d", size.nodes, size.prefixes), func(b *testing.B) {
			in := ScaleInput(size.nodes, size.prefixes, true)
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
	in := ScaleInput(30, 100, true)
	out := Compute(in)
	for _, name := range nodesOf(out) {
		if n := len(out.Announcements[name].Prefixes); n != 100 {
			t.Fatalf("%s has %d prefixes, want 100", name, n)
		}
	}
	for name, r := range out.Prefixes {
		if len(r.Announcing) != 30 || len(r.ExportDenied) != 0 || len(r.MaxPrefixesExceeded) != 0 {
			t.Fatalf("%s: %+v", name, r)
		}
	}
}
