// Package plan turns the cluster's anycast intent into the desired NodeAnnouncement specs and into reports from
// which the status of every AnycastPrefix, HealthPolicy and BGPSessionClaim is derived. Everything here is pure:
// cluster state in, desired state out, no client and no clock, so table tests drive it directly.
package plan

import (
	"encoding/json"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// Input is the cluster state the plan reads.
type Input struct {
	Nodes    []corev1.Node
	Claims   []anycastv1.BGPSessionClaim
	Prefixes []anycastv1.AnycastPrefix
	Policies []anycastv1.HealthPolicy
	// Announcements are the NodeAnnouncements as they are now: their specs are the last plan (kept for prefixes
	// that cannot be planned anew, fail-static), their statuses what the agents report.
	Announcements []anycastv1.NodeAnnouncement
	// SecretKeys lists, per Secret name in the operator's namespace, the keys it holds. nil: not checked.
	SecretKeys map[string][]string
	// BackendSessions are, per node, the sessions a Kubernetes BGP stack (Calico, Cilium, MetalLB) reports; for a
	// node listed here they replace what its agent reports. An entry without a claim matches any claim's session to
	// the same peer address.
	BackendSessions map[string][]anycastv1.NodeSessionStatus
}

// Output is the plan.
type Output struct {
	// Announcements holds the desired spec of every NodeAnnouncement, by node name: every node with something
	// planned, and every node that has a NodeAnnouncement (an empty spec when nothing is planned there). A node that
	// is not here (a Node deleted or being deleted) gets no NodeAnnouncement.
	Announcements map[string]anycastv1.NodeAnnouncementSpec
	Prefixes      map[string]*PrefixReport
	Claims        map[string]*ClaimReport
	Policies      map[string]*PolicyReport
}

// Compute plans the whole cluster.
func Compute(in Input) Output {
	p := newPlanner(in)
	p.reportClaims()
	p.admitPrefixes()
	for _, ap := range p.prefixes {
		p.placePrefix(ap)
	}
	p.grantPermits()
	p.addSessions()
	return p.finish()
}

// planner holds the indexes and the work in progress of one Compute call.
type planner struct {
	in       Input
	claims   map[string]*claimInfo
	policies map[string]*anycastv1.HealthPolicy
	existing map[string]*anycastv1.NodeAnnouncement
	nodes    []*corev1.Node
	prefixes []*anycastv1.AnycastPrefix // by age, oldest first

	specs map[string]*nodeBuild
	out   Output
}

type claimInfo struct {
	claim    *anycastv1.BGPSessionClaim
	selected map[string]bool
	allowed  []netip.Prefix // nil: no allowlist
	max      int            // 0: unlimited
}

// nodeBuild is a NodeAnnouncement spec under construction.
type nodeBuild struct {
	node     *corev1.Node
	sessions map[string]anycastv1.NodeSessions
	policies map[string]anycastv1.NodeHealthPolicy
	// groups in the order they were first used, their prefixes in the order they were planned: AnycastPrefixes
	// oldest first, each in its spec's order. Every CIDR appears once, because overlapping AnycastPrefixes are never
	// both planned.
	groups   []anycastv1.PrefixGroup
	groupOf  map[string]int // groupKey → index in groups
	count    int            // prefixes in all groups
	perClaim map[string]int // prefixes planned on each claim, for maxPrefixes
	permits  []string       // AnycastPrefixes this node may withdraw or deprefer
	// lastSource and lastCIDRs are the AnycastPrefix planned last on the node and its CIDRs planned there (at most
	// 16): prefixes are planned one AnycastPrefix at a time, and has asks right after.
	lastSource string
	lastCIDRs  []anycastv1.PlannedCIDR
	// lastSizes is the number of entries of each group (by key) in the node's last plan, to size the new ones.
	lastSizes map[string]int
}

// has reports whether the AnycastPrefix planned last on the node has the CIDR there.
func (b *nodeBuild) has(source string, c anycastv1.PlannedCIDR) bool {
	return b.lastSource == source && slices.Contains(b.lastCIDRs, c)
}

// add plans one prefix in the group that announces it like g (g's own prefixes are ignored); key is g's groupKey.
func (b *nodeBuild) add(g *anycastv1.PrefixGroup, key string, gp anycastv1.GroupPrefix) {
	i, ok := b.groupOf[key]
	if !ok {
		i = len(b.groups)
		b.groupOf[key] = i
		// As many entries as the group had in the last plan: at thousands of nodes, growing the lists one append at
		// a time is most of what planning allocates.
		b.groups = append(b.groups, anycastv1.PrefixGroup{Sessions: g.Sessions, Attributes: g.Attributes, HealthPolicy: g.HealthPolicy, Paused: g.Paused,
			Prefixes: make([]anycastv1.GroupPrefix, 0, max(1, b.lastSizes[key]))})
	}
	b.groups[i].Prefixes = append(b.groups[i].Prefixes, gp)
	if gp.Source != b.lastSource {
		b.lastSource, b.lastCIDRs = gp.Source, b.lastCIDRs[:0]
	}
	b.lastCIDRs = append(b.lastCIDRs, gp.Prefix)
	b.count++
	for _, c := range g.Sessions {
		b.perClaim[string(c)]++
	}
}

// groupKey identifies how a group announces: its sessions, attributes (as attrKey), health policy and pause.
func groupKey(g *anycastv1.PrefixGroup, attrKey string) string {
	var sb strings.Builder
	for _, c := range g.Sessions {
		sb.WriteString(string(c))
		sb.WriteByte(',')
	}
	sb.WriteByte('|')
	sb.WriteString(attrKey)
	sb.WriteByte('|')
	sb.WriteString(string(g.HealthPolicy))
	if g.Paused {
		sb.WriteString("|paused")
	}
	return sb.String()
}

// attributesKey is a canonical text of attributes, for grouping.
func attributesKey(a *anycastv1.BGPAttributes) string {
	if a == nil {
		return ""
	}
	b, _ := json.Marshal(a) // plain data: cannot fail
	return string(b)
}

func newPlanner(in Input) *planner {
	p := &planner{
		in:       in,
		claims:   make(map[string]*claimInfo, len(in.Claims)),
		policies: make(map[string]*anycastv1.HealthPolicy, len(in.Policies)),
		existing: make(map[string]*anycastv1.NodeAnnouncement, len(in.Announcements)),
		specs:    make(map[string]*nodeBuild),
		out: Output{
			Announcements: make(map[string]anycastv1.NodeAnnouncementSpec),
			Prefixes:      make(map[string]*PrefixReport, len(in.Prefixes)),
			Claims:        make(map[string]*ClaimReport, len(in.Claims)),
			Policies:      make(map[string]*PolicyReport, len(in.Policies)),
		},
	}
	for i := range in.Nodes {
		if in.Nodes[i].DeletionTimestamp == nil {
			p.nodes = append(p.nodes, &in.Nodes[i])
		}
	}
	for i := range in.Policies {
		hp := &in.Policies[i]
		p.policies[hp.Name] = hp
		p.out.Policies[hp.Name] = &PolicyReport{}
	}
	for i := range in.Announcements {
		p.existing[in.Announcements[i].Name] = &in.Announcements[i]
	}
	for i := range in.Prefixes {
		if in.Prefixes[i].DeletionTimestamp == nil {
			p.prefixes = append(p.prefixes, &in.Prefixes[i])
		}
	}
	slices.SortFunc(p.prefixes, olderFirst)
	for i := range in.Claims {
		p.indexClaim(&in.Claims[i])
	}
	return p
}

// olderFirst orders objects by creation time, then by name, so that "the older one wins" is total and stable.
func olderFirst(a, b *anycastv1.AnycastPrefix) int {
	if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

func (p *planner) indexClaim(c *anycastv1.BGPSessionClaim) {
	info := &claimInfo{claim: c, selected: map[string]bool{}}
	report := &ClaimReport{}
	p.claims[c.Name] = info
	p.out.Claims[c.Name] = report
	if c.DeletionTimestamp != nil {
		return
	}
	sel, err := selectorOf(&c.Spec.NodeSelector)
	if err != nil {
		report.InvalidSelector = err.Error()
		return
	}
	for _, n := range p.nodes {
		if sel.Matches(labelsOf(n)) {
			info.selected[n.Name] = true
		}
	}
	if ep := c.Spec.ExportPolicy; ep != nil {
		if ep.AllowedPrefixes != nil {
			info.allowed = make([]netip.Prefix, 0, len(ep.AllowedPrefixes))
			for _, s := range ep.AllowedPrefixes {
				if pfx, ok := parsePrefix(s); ok {
					info.allowed = append(info.allowed, pfx)
				}
			}
		}
		if ep.MaxPrefixes != nil {
			info.max = int(*ep.MaxPrefixes)
		}
	}
}

// build returns the spec under construction for a node, creating it.
func (p *planner) build(n *corev1.Node) *nodeBuild {
	b := p.specs[n.Name]
	if b == nil {
		b = &nodeBuild{
			node:     n,
			sessions: map[string]anycastv1.NodeSessions{},
			policies: map[string]anycastv1.NodeHealthPolicy{},
			groupOf:  map[string]int{},
			perClaim: map[string]int{},
		}
		if na := p.existing[n.Name]; na != nil {
			b.lastSizes = make(map[string]int, len(na.Spec.Groups))
			for i := range na.Spec.Groups {
				g := &na.Spec.Groups[i]
				b.lastSizes[groupKey(g, attributesKey(g.Attributes))] = len(g.Prefixes)
			}
			b.permits = make([]string, 0, len(na.Spec.Permits))
		}
		p.specs[n.Name] = b
	}
	return b
}

// addSessions gives every node the sessions of every claim that selects it, whether or not a prefix uses them yet,
// so that sessions come up before the first prefix is announced over them. A node that has a NodeAnnouncement keeps
// one, empty if nothing is planned there: its agent rides out a deleted one on its last spec, so deleting is never
// how the manager takes prefixes off a node.
func (p *planner) addSessions() {
	for _, n := range p.nodes {
		if p.existing[n.Name] != nil {
			p.build(n)
		}
		for name, info := range p.claims {
			if info.selected[n.Name] {
				p.build(n).sessions[name] = nodeSessionsOf(info.claim)
			}
		}
	}
}

func nodeSessionsOf(c *anycastv1.BGPSessionClaim) anycastv1.NodeSessions {
	return anycastv1.NodeSessions{
		Claim:              anycastv1.LocalObjectName(c.Name),
		BGPSessionSettings: *c.Spec.BGPSessionSettings.DeepCopy(),
	}
}

// finish turns the specs under construction into sorted, comparable specs and completes the reports.
func (p *planner) finish() Output {
	for name, b := range p.specs {
		spec := anycastv1.NodeAnnouncementSpec{Drain: isDrained(b.node)}
		for _, s := range b.sessions {
			spec.Sessions = append(spec.Sessions, s)
		}
		slices.SortFunc(spec.Sessions, func(a, b anycastv1.NodeSessions) int { return strings.Compare(string(a.Claim), string(b.Claim)) })
		for _, hp := range b.policies {
			spec.HealthPolicies = append(spec.HealthPolicies, hp)
		}
		slices.SortFunc(spec.HealthPolicies, func(a, b anycastv1.NodeHealthPolicy) int { return strings.Compare(string(a.Name), string(b.Name)) })
		spec.Groups = b.groups
		spec.Permits = b.permits
		slices.Sort(spec.Permits)
		p.out.Announcements[name] = spec
	}
	p.reportNodes()
	return p.out
}

// isDrained reports whether the Node carries anycast.dev/drain=true.
func isDrained(n *corev1.Node) bool {
	return n.Annotations[anycastv1.DrainAnnotation] == "true"
}

// parsePrefix parses a CIDR and refuses what must never be announced (a /0, host bits set), even if it got past the
// API server's validation.
func parsePrefix(s anycastv1.CIDR) (netip.Prefix, bool) {
	pfx, err := netip.ParsePrefix(string(s))
	if err != nil || pfx.Bits() == 0 || pfx.Masked() != pfx {
		return netip.Prefix{}, false
	}
	return pfx, true
}
