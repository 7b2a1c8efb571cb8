package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/plan"
)

// cluster is three nodes in site a, one in b, a claim for all of them and a prefix "web" (maxWithdrawn 1), planned
// and announced everywhere.
func cluster() plan.Input {
	in := plan.Input{}
	for _, n := range []struct{ name, site string }{{"a1", "a"}, {"a2", "a"}, {"a3", "a"}, {"b1", "b"}} {
		in.Nodes = append(in.Nodes, corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name, Labels: map[string]string{"site": n.site}}})
	}
	c := anycastv1.BGPSessionClaim{ObjectMeta: metav1.ObjectMeta{Name: "edge"}}
	c.Spec.LocalASN = 64512
	c.Spec.Static = &anycastv1.StaticSessions{Peers: []anycastv1.BGPPeer{{Address: "192.0.2.1", ASN: 64500}}}
	in.Claims = []anycastv1.BGPSessionClaim{c}
	ap := anycastv1.AnycastPrefix{ObjectMeta: metav1.ObjectMeta{Name: "web"}}
	ap.Spec.Prefixes = []anycastv1.CIDR{"198.51.100.0/24", "203.0.113.0/24"}
	ap.Spec.SessionClaims = []anycastv1.LocalObjectName{"edge"}
	ap.Spec.Safety = &anycastv1.PrefixSafety{MaxWithdrawn: ptrIntOrString(intstr.FromInt32(1))}
	in.Prefixes = []anycastv1.AnycastPrefix{ap}
	for node, spec := range plan.Compute(in).Announcements {
		na := anycastv1.NodeAnnouncement{ObjectMeta: metav1.ObjectMeta{Name: node, Generation: 1}, Spec: spec}
		na.Status.ObservedGeneration = 1
		for _, g := range spec.Groups {
			for _, gp := range g.Prefixes {
				na.Status.Prefixes = append(na.Status.Prefixes, anycastv1.NodePrefixStatus{Prefix: gp.Prefix, State: anycastv1.PrefixAnnounced})
			}
		}
		in.Announcements = append(in.Announcements, na)
	}
	return in
}

func ptrIntOrString(v intstr.IntOrString) *intstr.IntOrString { return &v }

func yamlChange(t *testing.T, in plan.Input, doc string, deletes ...Ref) plan.Input {
	t.Helper()
	objs, err := Load([]string{"-"}, strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	after, err := Change(context.Background(), nil, in, objs, deletes)
	if err != nil {
		t.Fatal(err)
	}
	return after
}

const narrowWeb = `
apiVersion: anycast.dev/v1alpha1
kind: AnycastPrefix
metadata: {name: web}
spec:
  prefixes: [198.51.100.0/24]
  sessionClaims: [edge]
  nodeSelector: {matchLabels: {site: a}}
  safety: {maxWithdrawn: 1}
`

func TestDiff(t *testing.T) {
	for _, tc := range []struct {
		name string
		// change returns the cluster before and after
		change  func(t *testing.T) (plan.Input, plan.Input)
		want    []string
		mostOff int
	}{
		{name: "narrowed: a CIDR removed goes at once, a node deselected leaves through the budget",
			change: func(t *testing.T) (plan.Input, plan.Input) { in := cluster(); return in, yamlChange(t, in, narrowWeb) },
			want: []string{"198.51.100.0/24 (AnycastPrefix web): announced from 4 node(s), 3 after the change", "- leave     b1: leaving: withdrawn as maxWithdrawn permits, at most 1 node(s) at a time",
				"203.0.113.0/24 (AnycastPrefix web): announced from 4 node(s), 0 after the change", "- withdraw  a1: at once"},
			mostOff: 4},
		{name: "a node relabelled into the selection announces",
			change: func(t *testing.T) (plan.Input, plan.Input) {
				after := yamlChange(t, cluster(), narrowWeb)
				settled := after
				settled.Announcements = nil
				for node, spec := range plan.Compute(after).Announcements {
					settled.Announcements = append(settled.Announcements, anycastv1.NodeAnnouncement{ObjectMeta: metav1.ObjectMeta{Name: node}, Spec: spec})
				}
				return settled, yamlChange(t, settled, "apiVersion: v1\nkind: Node\nmetadata: {name: b1, labels: {site: a}}\n")
			},
			want: []string{"+ announce  b1: over edge"}},
		{name: "deleted",
			change: func(t *testing.T) (plan.Input, plan.Input) {
				in := cluster()
				return in, yamlChange(t, in, "", Ref{Kind: "AnycastPrefix", Name: "web"})
			},
			want: []string{"- withdraw  a1: at once", "- withdraw  b1: at once"}, mostOff: 4},
		{name: "attributes and health policy change in place",
			change: func(t *testing.T) (plan.Input, plan.Input) {
				in := cluster()
				return in, yamlChange(t, in, `
apiVersion: anycast.dev/v1alpha1
kind: HealthPolicy
metadata: {name: hp}
spec: {checks: [{name: web, tcp: {address: "127.0.0.1:80"}}]}
---
apiVersion: anycast.dev/v1alpha1
kind: AnycastPrefix
metadata: {name: web}
spec:
  prefixes: [198.51.100.0/24, 203.0.113.0/24]
  sessionClaims: [edge]
  healthPolicyRef: {name: hp}
  attributes: {communities: ["64512:100"]}
  safety: {maxWithdrawn: 1}
`)
			},
			want: []string{`~ update    a1: health policy "" -> "hp", attributes {} -> {"communities":["64512:100"]}`}},
		{name: "a new prefix is newer than the live ones: it loses the overlap",
			change: func(t *testing.T) (plan.Input, plan.Input) {
				in := cluster()
				return in, yamlChange(t, in, `
apiVersion: anycast.dev/v1alpha1
kind: AnycastPrefix
metadata: {name: wide}
spec: {prefixes: [198.51.100.0/23], sessionClaims: [edge]}
`)
			},
			want: []string{`! AnycastPrefix wide: Overlap: Overlaps AnycastPrefix "web"`, "No prefix is announced or withdrawn anywhere"}},
		{name: "nothing changes", change: func(t *testing.T) (plan.Input, plan.Input) { in := cluster(); return in, yamlChange(t, in, "") },
			want: []string{"No prefix is announced or withdrawn anywhere by this change."}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pv := Diff(tc.change(t))
			var b bytes.Buffer
			pv.Print(&b)
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("missing %q in:\n%s", w, b.String())
				}
			}
			if _, n := pv.MostTakenOff(); n != tc.mostOff {
				t.Errorf("MostTakenOff = %d, want %d:\n%s", n, tc.mostOff, b.String())
			}
		})
	}
}

func TestChangeRefuses(t *testing.T) {
	in := cluster()
	for _, tc := range []struct {
		doc     string
		deletes []Ref
		want    string
	}{
		{doc: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", want: "plans AnycastPrefixes, BGPSessionClaims, HealthPolicies and Node labels only"},
		{doc: "apiVersion: v1\nkind: Node\nmetadata: {name: new}\n", want: `node "new" not found`},
		{deletes: []Ref{{Kind: "AnycastPrefix", Name: "nope"}}, want: `AnycastPrefix "nope" not found`},
	} {
		objs, err := Load([]string{"-"}, strings.NewReader(tc.doc))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Change(context.Background(), nil, in, objs, tc.deletes); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want %q", tc.doc, err, tc.want)
		}
	}
	if _, err := Load([]string{"-"}, strings.NewReader("kind: AnycastPrefix\nmetadata: {}\n")); err == nil {
		t.Error("an object without a name loaded")
	}
	for _, s := range []string{"web", "configmap/x", "anycastprefix/"} {
		if _, err := ParseRef(s); err == nil {
			t.Errorf("ParseRef(%q) succeeded", s)
		}
	}
}
