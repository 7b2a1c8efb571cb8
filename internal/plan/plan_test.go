package plan

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func node(name string, labels map[string]string, annotations ...string) corev1.Node {
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: map[string]string{}}}
	for i := 0; i+1 < len(annotations); i += 2 {
		n.Annotations[annotations[i]] = annotations[i+1]
	}
	return n
}

func claim(name string, sel map[string]string, peers ...string) anycastv1.BGPSessionClaim {
	c := anycastv1.BGPSessionClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1}}
	c.Spec.NodeSelector = metav1.LabelSelector{MatchLabels: sel}
	c.Spec.LocalASN = 64512
	c.Spec.Static = &anycastv1.StaticSessions{}
	for _, p := range peers {
		c.Spec.Static.Peers = append(c.Spec.Static.Peers, anycastv1.BGPPeer{Address: anycastv1.IPAddress(p), ASN: 65001})
	}
	return c
}

func prefix(name string, age int, claims []string, cidrs ...string) anycastv1.AnycastPrefix {
	ap := anycastv1.AnycastPrefix{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1, CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Minute))}}
	for _, c := range claims {
		ap.Spec.SessionClaims = append(ap.Spec.SessionClaims, anycastv1.LocalObjectName(c))
	}
	for _, c := range cidrs {
		ap.Spec.Prefixes = append(ap.Spec.Prefixes, anycastv1.CIDR(c))
	}
	return ap
}

func policy(name string) anycastv1.HealthPolicy {
	return anycastv1.HealthPolicy{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 1}, Spec: anycastv1.HealthPolicySpec{
		Checks: []anycastv1.HealthCheck{{Name: "web", HTTP: &anycastv1.HTTPCheck{URL: "http://127.0.0.1:8080/healthz"}}},
	}}
}

// plannedPrefixes lists "node prefix[claims]" for every planned entry, sorted, for compact assertions.
func plannedPrefixes(out Output) []string {
	var got []string
	for n, spec := range out.Announcements {
		for _, g := range spec.Groups {
			for _, p := range g.Prefixes {
				s := n + " " + string(p.Prefix) + " ["
				for i, c := range g.Sessions {
					if i > 0 {
						s += ","
					}
					s += string(c)
				}
				got = append(got, s+"]")
			}
		}
	}
	slices.Sort(got)
	return got
}

func nodesOf(out Output) []string {
	var got []string
	for n := range out.Announcements {
		got = append(got, n)
	}
	slices.Sort(got)
	return got
}

func TestComputeSelection(t *testing.T) {
	lax := map[string]string{"region": "lax"}
	fra := map[string]string{"region": "fra"}
	tests := []struct {
		name      string
		in        Input
		nodes     []string // nodes with a NodeAnnouncement
		planned   []string
		eligible  map[string]int
		denied    map[string][]Denial
		exceeded  map[string][]Denial
		conflicts map[string]string
	}{{
		name: "a claim selects nodes by label; nodes outside it get nothing",
		in: Input{
			Nodes:    []corev1.Node{node("lax-1", lax), node("lax-2", lax), node("fra-1", fra)},
			Claims:   []anycastv1.BGPSessionClaim{claim("lax", lax, "192.0.2.1")},
			Prefixes: []anycastv1.AnycastPrefix{prefix("dns", 0, []string{"lax"}, "198.51.100.0/24")},
		},
		nodes:    []string{"lax-1", "lax-2"},
		planned:  []string{"lax-1 198.51.100.0/24 [lax]", "lax-2 198.51.100.0/24 [lax]"},
		eligible: map[string]int{"dns": 2},
	}, {
		name: "nodeSelector narrows the nodes of the claims; the other nodes keep their sessions",
		in: Input{
			Nodes:  []corev1.Node{node("lax-1", map[string]string{"region": "lax", "dns": "yes"}), node("lax-2", lax)},
			Claims: []anycastv1.BGPSessionClaim{claim("lax", lax, "192.0.2.1")},
			Prefixes: []anycastv1.AnycastPrefix{func() anycastv1.AnycastPrefix {
				ap := prefix("dns", 0, []string{"lax"}, "198.51.100.0/24")
				ap.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"dns": "yes"}}
				return ap
			}()},
		},
		nodes:    []string{"lax-1", "lax-2"},
		planned:  []string{"lax-1 198.51.100.0/24 [lax]"},
		eligible: map[string]int{"dns": 1},
	}, {
		name: "several claims: a node carries the prefix over every claim that selects it",
		in: Input{
			Nodes:    []corev1.Node{node("lax-1", map[string]string{"region": "lax", "transit": "b"}), node("fra-1", fra)},
			Claims:   []anycastv1.BGPSessionClaim{claim("lax", lax, "192.0.2.1"), claim("fra", fra, "192.0.2.2"), claim("transit-b", map[string]string{"transit": "b"}, "192.0.2.3")},
			Prefixes: []anycastv1.AnycastPrefix{prefix("dns", 0, []string{"lax", "fra", "transit-b"}, "198.51.100.0/24")},
		},
		nodes:    []string{"fra-1", "lax-1"},
		planned:  []string{"fra-1 198.51.100.0/24 [fra]", "lax-1 198.51.100.0/24 [lax,transit-b]"},
		eligible: map[string]int{"dns": 2},
	}, {
		name: "IPv4 and IPv6 in one prefix; the export allowlist keeps IPv6 off a v4-only claim",
		in: Input{
			Nodes: []corev1.Node{node("lax-1", lax)},
			Claims: []anycastv1.BGPSessionClaim{
				func() anycastv1.BGPSessionClaim {
					c := claim("v4", lax, "192.0.2.1")
					c.Spec.ExportPolicy = &anycastv1.ExportPolicy{AllowedPrefixes: []anycastv1.CIDR{"198.51.100.0/22"}}
					return c
				}(),
				claim("v6", lax, "2001:db8::1"),
			},
			Prefixes: []anycastv1.AnycastPrefix{prefix("dns", 0, []string{"v4", "v6"}, "198.51.100.0/24", "2001:db8:100::/48")},
		},
		nodes:    []string{"lax-1"},
		planned:  []string{"lax-1 198.51.100.0/24 [v4,v6]", "lax-1 2001:db8:100::/48 [v6]"},
		eligible: map[string]int{"dns": 1},
		denied:   map[string][]Denial{"dns": {{Claim: "v4", Prefixes: []string{"2001:db8:100::/48"}}}},
	}, {
		name: "a prefix outside the only claim's allowlist is planned nowhere",
		in: Input{
			Nodes: []corev1.Node{node("lax-1", lax)},
			Claims: []anycastv1.BGPSessionClaim{func() anycastv1.BGPSessionClaim {
				c := claim("lax", lax, "192.0.2.1")
				c.Spec.ExportPolicy = &anycastv1.ExportPolicy{AllowedPrefixes: []anycastv1.CIDR{"203.0.113.0/24"}}
				return c
			}()},
			Prefixes: []anycastv1.AnycastPrefix{prefix("dns", 0, []string{"lax"}, "198.51.100.0/24")},
		},
		nodes:    []string{"lax-1"},
		eligible: map[string]int{"dns": 1},
		denied:   map[string][]Denial{"dns": {{Claim: "lax", Prefixes: []string{"198.51.100.0/24"}}}},
	}, {
		name: "maxPrefixes: the oldest prefixes fill the claim, the newest is not planned",
		in: Input{
			Nodes: []corev1.Node{node("lax-1", lax)},
			Claims: []anycastv1.BGPSessionClaim{func() anycastv1.BGPSessionClaim {
				c := claim("lax", lax, "192.0.2.1")
				c.Spec.ExportPolicy = &anycastv1.ExportPolicy{MaxPrefixes: ptr.To[int32](2)}
				return c
			}()},
			Prefixes: []anycastv1.AnycastPrefix{
				prefix("c-newest", 3, []string{"lax"}, "203.0.113.0/24"),
				prefix("a-oldest", 1, []string{"lax"}, "198.51.100.0/24"),
				prefix("b", 2, []string{"lax"}, "192.0.2.0/24"),
			},
		},
		nodes:    []string{"lax-1"},
		planned:  []string{"lax-1 192.0.2.0/24 [lax]", "lax-1 198.51.100.0/24 [lax]"},
		eligible: map[string]int{"a-oldest": 1, "b": 1, "c-newest": 1},
		exceeded: map[string][]Denial{"c-newest": {{Claim: "lax", Prefixes: []string{"203.0.113.0/24"}}}},
	}, {
		name: "overlapping prefixes: the newer object gets Conflict and is not planned",
		in: Input{
			Nodes:  []corev1.Node{node("lax-1", lax)},
			Claims: []anycastv1.BGPSessionClaim{claim("lax", lax, "192.0.2.1")},
			Prefixes: []anycastv1.AnycastPrefix{
				prefix("newer", 2, []string{"lax"}, "198.51.100.128/25", "2001:db8:200::/48"),
				prefix("older", 1, []string{"lax"}, "198.51.100.0/24"),
			},
		},
		nodes:     []string{"lax-1"},
		planned:   []string{"lax-1 198.51.100.0/24 [lax]"},
		eligible:  map[string]int{"older": 1, "newer": 0},
		conflicts: map[string]string{"newer": "older"},
	}, {
		name: "a new prefix naming an unknown claim is not planned",
		in: Input{
			Nodes:    []corev1.Node{node("lax-1", lax)},
			Claims:   []anycastv1.BGPSessionClaim{claim("lax", lax, "192.0.2.1")},
			Prefixes: []anycastv1.AnycastPrefix{prefix("dns", 0, []string{"lax", "typo"}, "198.51.100.0/24")},
		},
		nodes:    []string{"lax-1"},
		eligible: map[string]int{"dns": 0},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := Compute(tc.in)
			if got := nodesOf(out); !slices.Equal(got, tc.nodes) {
				t.Errorf("nodes = %v, want %v", got, tc.nodes)
			}
			if got := plannedPrefixes(out); !slices.Equal(got, tc.planned) {
				t.Errorf("planned = %q, want %q", got, tc.planned)
			}
			for name, want := range tc.eligible {
				if got := len(out.Prefixes[name].Eligible); got != want {
					t.Errorf("%s eligible = %d, want %d", name, got, want)
				}
			}
			for name, r := range out.Prefixes {
				if got := denials(r, anycastv1.ReasonExportDenied); !equality.Semantic.DeepEqual(got, tc.denied[name]) {
					t.Errorf("%s ExportDenied = %+v, want %+v", name, got, tc.denied[name])
				}
				if got := denials(r, anycastv1.ReasonMaxPrefixesExceeded); !equality.Semantic.DeepEqual(got, tc.exceeded[name]) {
					t.Errorf("%s MaxPrefixesExceeded = %+v, want %+v", name, got, tc.exceeded[name])
				}
				with := ""
				if r.Conflict != nil {
					with = r.Conflict.With
				}
				if with != tc.conflicts[name] {
					t.Errorf("%s conflict with %q, want %q", name, with, tc.conflicts[name])
				}
			}
		})
	}
}

func TestComputeAttributesAndOverrides(t *testing.T) {
	ap := prefix("dns", 0, []string{"all"}, "198.51.100.0/24")
	ap.Spec.Attributes = &anycastv1.BGPAttributes{Communities: []anycastv1.Community{"64512:100", "no-export"}, MED: ptr.To[int64](10), ASPathPrepend: ptr.To[int32](1)}
	ap.Spec.AttributeOverrides = []anycastv1.AttributeOverride{
		{NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"site": "backup"}}, Attributes: anycastv1.BGPAttributes{ASPathPrepend: ptr.To[int32](3), Communities: []anycastv1.Community{"64512:300"}}},
		{NodeSelector: metav1.LabelSelector{MatchLabels: map[string]string{"role": "edge"}}, Attributes: anycastv1.BGPAttributes{MED: ptr.To[int64](50)}},
	}
	out := Compute(Input{
		Nodes: []corev1.Node{
			node("primary", map[string]string{"site": "primary"}),
			node("backup", map[string]string{"site": "backup", "role": "edge"}), // first match wins
			node("edge", map[string]string{"role": "edge"}),
		},
		Claims:   []anycastv1.BGPSessionClaim{claim("all", nil, "192.0.2.1")},
		Prefixes: []anycastv1.AnycastPrefix{ap},
	})
	want := map[string]anycastv1.BGPAttributes{
		"primary": {Communities: []anycastv1.Community{"64512:100", "no-export"}, MED: ptr.To[int64](10), ASPathPrepend: ptr.To[int32](1)},
		"backup":  {Communities: []anycastv1.Community{"64512:300"}, MED: ptr.To[int64](10), ASPathPrepend: ptr.To[int32](3)},
		"edge":    {Communities: []anycastv1.Community{"64512:100", "no-export"}, MED: ptr.To[int64](50), ASPathPrepend: ptr.To[int32](1)},
	}
	for n, w := range want {
		got := out.Announcements[n].Groups[0].Attributes
		if !equality.Semantic.DeepEqual(*got, w) {
			t.Errorf("%s attributes = %+v, want %+v", n, *got, w)
		}
	}
	// The override must not leak into the user's object.
	if *ap.Spec.Attributes.ASPathPrepend != 1 || len(ap.Spec.Attributes.Communities) != 2 {
		t.Errorf("Compute modified the AnycastPrefix's attributes: %+v", ap.Spec.Attributes)
	}
}

func TestComputeDrainSessionsAndHealth(t *testing.T) {
	ap := prefix("dns", 0, []string{"all"}, "198.51.100.0/24")
	ap.Spec.HealthPolicyRef = &anycastv1.ObjectReference{Name: "web"}
	c := claim("all", nil, "192.0.2.1", "192.0.2.2")
	c.Spec.Timers = &anycastv1.BGPTimers{HoldTime: &metav1.Duration{Duration: 9 * time.Second}}
	out := Compute(Input{
		Nodes:    []corev1.Node{node("n1", nil, anycastv1.DrainAnnotation, "true"), node("n2", nil, anycastv1.DrainAnnotation, "false")},
		Claims:   []anycastv1.BGPSessionClaim{c},
		Prefixes: []anycastv1.AnycastPrefix{ap},
		Policies: []anycastv1.HealthPolicy{policy("web"), policy("unused")},
	})
	if !out.Announcements["n1"].Drain || out.Announcements["n2"].Drain {
		t.Errorf("drain = %v/%v, want true/false", out.Announcements["n1"].Drain, out.Announcements["n2"].Drain)
	}
	spec := out.Announcements["n2"]
	if len(spec.Sessions) != 1 || spec.Sessions[0].Claim != "all" || len(spec.Sessions[0].Static.Peers) != 2 || spec.Sessions[0].Timers.HoldTime.Duration != 9*time.Second {
		t.Errorf("sessions = %+v", spec.Sessions)
	}
	if len(spec.HealthPolicies) != 1 || spec.HealthPolicies[0].Name != "web" || spec.Groups[0].HealthPolicy != "web" {
		t.Errorf("health policies = %+v, group policy %q", spec.HealthPolicies, spec.Groups[0].HealthPolicy)
	}
	if r := out.Policies["web"]; r.Prefixes != 1 || r.Nodes != 2 {
		t.Errorf("web report = %+v", r)
	}
	if r := out.Policies["unused"]; r.Prefixes != 0 || r.Nodes != 0 {
		t.Errorf("unused report = %+v", r)
	}
}

// announced returns NodeAnnouncements holding the given plan as their last spec.
func announced(out Output) []anycastv1.NodeAnnouncement {
	var list []anycastv1.NodeAnnouncement
	for _, n := range nodesOf(out) {
		list = append(list, anycastv1.NodeAnnouncement{ObjectMeta: metav1.ObjectMeta{Name: n}, Spec: out.Announcements[n]})
	}
	return list
}

func TestComputeFailStatic(t *testing.T) {
	lax := map[string]string{"region": "lax"}
	ap := prefix("dns", 0, []string{"lax"}, "198.51.100.0/24")
	ap.Spec.HealthPolicyRef = &anycastv1.ObjectReference{Name: "web"}
	base := Input{
		Nodes:    []corev1.Node{node("lax-1", lax), node("lax-2", lax)},
		Claims:   []anycastv1.BGPSessionClaim{claim("lax", lax, "192.0.2.1")},
		Prefixes: []anycastv1.AnycastPrefix{ap},
		Policies: []anycastv1.HealthPolicy{policy("web")},
	}
	first := Compute(base)
	want := []string{"lax-1 198.51.100.0/24 [lax]", "lax-2 198.51.100.0/24 [lax]"}
	if got := plannedPrefixes(first); !slices.Equal(got, want) {
		t.Fatalf("first plan = %v", got)
	}

	t.Run("the claim is deleted: the last plan is kept, with its sessions", func(t *testing.T) {
		in := base
		in.Claims = nil
		in.Announcements = announced(first)
		out := Compute(in)
		if got := plannedPrefixes(out); !slices.Equal(got, want) {
			t.Errorf("planned = %v, want %v", got, want)
		}
		if s := out.Announcements["lax-1"].Sessions; len(s) != 1 || s[0].Claim != "lax" {
			t.Errorf("sessions = %+v, want the last planned claim", s)
		}
		if r := out.Prefixes["dns"]; !r.Frozen || !slices.Equal(r.MissingClaims, []string{"lax"}) {
			t.Errorf("report = %+v", r)
		}
	})
	t.Run("the health policy is deleted: the last plan is kept, with the last policy", func(t *testing.T) {
		in := base
		in.Policies = nil
		in.Announcements = announced(first)
		out := Compute(in)
		if got := plannedPrefixes(out); !slices.Equal(got, want) {
			t.Errorf("planned = %v, want %v", got, want)
		}
		if hp := out.Announcements["lax-2"].HealthPolicies; len(hp) != 1 || hp[0].Name != "web" {
			t.Errorf("policies = %+v", hp)
		}
		if r := out.Prefixes["dns"]; r.MissingPolicy != "web" {
			t.Errorf("report = %+v", r)
		}
	})
	t.Run("paused: spec edits and new nodes are not acted on", func(t *testing.T) {
		in := base
		paused := ap.DeepCopy()
		paused.Spec.Paused = true
		paused.Spec.Prefixes = append(paused.Spec.Prefixes, "203.0.113.0/24")
		in.Prefixes = []anycastv1.AnycastPrefix{*paused}
		in.Nodes = append(slices.Clone(in.Nodes), node("lax-3", lax))
		in.Announcements = announced(first)
		out := Compute(in)
		if got := plannedPrefixes(out); !slices.Equal(got, want) {
			t.Errorf("planned = %v, want %v", got, want)
		}
		if !out.Announcements["lax-1"].Groups[0].Paused {
			t.Errorf("entry not marked paused")
		}
		if _, ok := out.Announcements["lax-3"]; !ok {
			t.Errorf("lax-3 should still get its sessions")
		}
	})
	t.Run("a deleted node's entries go with it", func(t *testing.T) {
		in := base
		in.Claims = nil
		in.Nodes = []corev1.Node{node("lax-1", lax)}
		in.Announcements = announced(first)
		out := Compute(in)
		if got := nodesOf(out); !slices.Equal(got, []string{"lax-1"}) {
			t.Errorf("nodes = %v", got)
		}
	})
}

func TestComputeNeverPlansDefaultRoute(t *testing.T) {
	// The API server refuses these; the plan refuses them again in case a CRD was installed without its rules.
	out := Compute(Input{
		Nodes:    []corev1.Node{node("n1", nil)},
		Claims:   []anycastv1.BGPSessionClaim{claim("all", nil, "192.0.2.1")},
		Prefixes: []anycastv1.AnycastPrefix{prefix("bad", 0, []string{"all"}, "0.0.0.0/0", "::/0", "198.51.100.1/24")},
	})
	if got := plannedPrefixes(out); len(got) != 0 {
		t.Errorf("planned %v", got)
	}
	if r := out.Prefixes["bad"]; len(r.InvalidPrefixes) != 3 {
		t.Errorf("invalid = %v", r.InvalidPrefixes)
	}
}

func TestComputeReportsAgentState(t *testing.T) {
	in := Input{
		Nodes:    []corev1.Node{node("a", nil), node("b", nil), node("c", nil), node("d", nil)},
		Claims:   []anycastv1.BGPSessionClaim{claim("all", nil, "192.0.2.1")},
		Prefixes: []anycastv1.AnycastPrefix{prefix("dns", 0, []string{"all"}, "198.51.100.0/24", "2001:db8::/48")},
	}
	first := Compute(in)
	in.Announcements = announced(first)
	report := func(node string, states ...anycastv1.PrefixState) {
		for i := range in.Announcements {
			if in.Announcements[i].Name == node {
				st := &in.Announcements[i].Status
				for j, s := range states {
					st.Prefixes = append(st.Prefixes, anycastv1.NodePrefixStatus{Prefix: in.Announcements[i].Spec.Groups[0].Prefixes[j].Prefix, State: s})
				}
				st.Sessions = []anycastv1.NodeSessionStatus{{Claim: "all", PeerAddress: "192.0.2.1", State: anycastv1.SessionEstablished}}
			}
		}
	}
	report("a", anycastv1.PrefixAnnounced, anycastv1.PrefixAnnounced)
	report("b", anycastv1.PrefixAnnounced, anycastv1.PrefixDeprefered)
	report("c", anycastv1.PrefixAnnounced, anycastv1.PrefixWithdrawn)
	report("d", anycastv1.PrefixAnnounced) // the IPv6 entry is not reported yet
	out := Compute(in)
	r := out.Prefixes["dns"]
	if !slices.Equal(r.Announcing, []string{"a", "b"}) || !slices.Equal(r.Withdrawn, []string{"c"}) || !slices.Equal(r.Awaiting, []string{"d"}) {
		t.Errorf("announcing %v withdrawn %v awaiting %v", r.Announcing, r.Withdrawn, r.Awaiting)
	}
	c := out.Claims["all"]
	if c.BoundNodes != 4 || c.Total != 4 || c.Established != 4 || c.Sessions[0].Node != "a" {
		t.Errorf("claim report = %+v", c)
	}
}

func TestComputeSecretReferences(t *testing.T) {
	c := claim("all", nil, "192.0.2.1", "192.0.2.2")
	c.Spec.Static.Peers[0].PasswordSecretRef = &anycastv1.SecretKeyRef{Name: "bgp", Key: "password"}
	c.Spec.Static.Peers[1].PasswordSecretRef = &anycastv1.SecretKeyRef{Name: "bgp", Key: "other"}
	out := Compute(Input{Claims: []anycastv1.BGPSessionClaim{c}, SecretKeys: map[string][]string{"bgp": {"password"}}})
	if got := out.Claims["all"].MissingSecrets; !slices.Equal(got, []string{"bgp/other"}) {
		t.Errorf("missing = %v", got)
	}
}

func TestComputeGroupsPrefixesAnnouncedAlike(t *testing.T) {
	base := &anycastv1.BGPAttributes{MED: ptr.To[int64](10)}
	a := prefix("a", 1, []string{"all"}, "198.51.100.0/24", "2001:db8:1::/48")
	a.Spec.Attributes = base
	b := prefix("b", 2, []string{"all"}, "203.0.113.0/24")
	b.Spec.Attributes = base.DeepCopy() // equal content, another object: same group
	c := prefix("c", 3, []string{"all"}, "192.0.2.0/24")
	c.Spec.Attributes = &anycastv1.BGPAttributes{MED: ptr.To[int64](20)}
	out := Compute(Input{
		Nodes:    []corev1.Node{node("n1", nil)},
		Claims:   []anycastv1.BGPSessionClaim{claim("all", nil, "192.0.2.1")},
		Prefixes: []anycastv1.AnycastPrefix{c, b, a},
	})
	spec := out.Announcements["n1"]
	if len(spec.Groups) != 2 || spec.PrefixCount() != 4 {
		t.Fatalf("groups = %+v", spec.Groups)
	}
	var first []string
	for _, gp := range spec.Groups[0].Prefixes {
		first = append(first, string(gp.Source)+" "+string(gp.Prefix))
	}
	want := []string{"a 198.51.100.0/24", "a 2001:db8:1::/48", "b 203.0.113.0/24"}
	if !slices.Equal(first, want) || *spec.Groups[0].Attributes.MED != 10 || *spec.Groups[1].Attributes.MED != 20 {
		t.Errorf("first group = %v (want %v), groups %+v", first, want, spec.Groups)
	}
}

func TestClaimShowsRefusedSessions(t *testing.T) {
	in := Input{
		Nodes:    []corev1.Node{node("a", nil), node("b", nil)},
		Claims:   []anycastv1.BGPSessionClaim{claim("all", nil, "2001:db8::1")},
		Prefixes: []anycastv1.AnycastPrefix{prefix("dns", 0, []string{"all"}, "198.51.100.0/24")},
	}
	in.Announcements = announced(Compute(in))
	for i := range in.Announcements {
		// The agents report the peer in another spelling of the same address; one node's speaker refused it.
		s := anycastv1.NodeSessionStatus{Claim: "all", PeerAddress: "2001:DB8:0::1", State: anycastv1.SessionEstablished}
		if in.Announcements[i].Name == "b" {
			s.State, s.LastError = anycastv1.SessionIdle, `the MD5 password holds a double quote ("), which BIRD cannot read inside a string; change the Secret`
		}
		in.Announcements[i].Status.Sessions = []anycastv1.NodeSessionStatus{s}
	}
	out := Compute(in)
	r := out.Claims["all"]
	if r.Established != 1 || r.Refused != 1 || r.Sessions[1].LastError == "" {
		t.Fatalf("claim report = %+v", r)
	}
	c := in.Claims[0]
	st := ClaimStatus(&c, r, metav1.Now())
	d := meta.FindStatusCondition(st.Conditions, anycastv1.ConditionDegraded)
	if d == nil || d.Status != metav1.ConditionTrue || d.Reason != anycastv1.ReasonSessionsRefused ||
		!strings.Contains(d.Message, "b to 2001:db8::1: the MD5 password holds a double quote") {
		t.Errorf("Degraded = %+v", d)
	}
	r.Refused, r.Sessions[1].LastError = 0, ""
	st = ClaimStatus(&c, r, metav1.Now())
	if d := meta.FindStatusCondition(st.Conditions, anycastv1.ConditionDegraded); d == nil || d.Status != metav1.ConditionFalse {
		t.Errorf("Degraded without refused sessions = %+v", d)
	}
}

// denials are a report's denials of one reason, claims and prefixes only.
func denials(r *PrefixReport, reason string) []Denial {
	var out []Denial
	for _, d := range r.Denied(reason) {
		out = append(out, Denial{Claim: d.Claim, Prefixes: d.Prefixes})
	}
	return out
}
