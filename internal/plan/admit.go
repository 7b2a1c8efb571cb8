package plan

import (
	"net/netip"
	"slices"
	"strings"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// placePrefix writes one admitted AnycastPrefix into the node specs.
func (p *planner) placePrefix(ap *anycastv1.AnycastPrefix) {
	r := p.out.Prefixes[ap.Name]
	d := r.decision()
	switch {
	case d != nil && d.Outcome == NotPlanned:
	case d != nil && d.Outcome == Frozen:
		r.Frozen = true
		p.carryOver(ap, r)
	default:
		p.place(ap, r)
		p.leave(ap, r)
	}
}

// liveClaims are the claims of a list that are not being deleted. A claim that does not exist at all stays: it may
// never have existed (a typo) or have gone without the operator's finalizer, and the last plan is kept for it
// (fail-static); a claim being deleted (its finalizer holds it) is the user's intent to close its sessions.
func (p *planner) liveClaims(claims []anycastv1.LocalObjectName) []anycastv1.LocalObjectName {
	var out []anycastv1.LocalObjectName
	for _, c := range claims {
		if info, ok := p.claims[string(c)]; !ok || info.claim.DeletionTimestamp == nil {
			out = append(out, c)
		}
	}
	return out
}

// leave keeps, on each node that carried one of the prefix's CIDRs in its last plan but no longer qualifies for it
// (a selector, an export policy or maxPrefixes changed), the entry as leaving until its agent has seen that and
// reports it withdrawn: a configuration change takes a prefix off nodes through the permits, like a failure, and so
// no more of them at once than maxWithdrawn allows. What the user explicitly removed goes at once: a CIDR taken out
// of the AnycastPrefix, the sessions of a claim being deleted; and so does everything when maxWithdrawn is 100%,
// where every node may withdraw on its own anyway.
func (p *planner) leave(ap *anycastv1.AnycastPrefix, r *PrefixReport) {
	if unlimited(ap.Spec.Safety) {
		return
	}
	for _, n := range p.nodes {
		na := p.existing[n.Name]
		if na == nil {
			continue
		}
		b := p.specs[n.Name]
		leaving := false
		for gi := range na.Spec.Groups {
			for _, gp := range na.Spec.Groups[gi].Prefixes {
				if gp.Source != ap.Name {
					continue
				}
				if pfx, ok := parsePrefix(anycastv1.CIDR(gp.Prefix)); !ok || !slices.Contains(r.cidrs, pfx) || (b != nil && b.has(ap.Name, gp.Prefix)) {
					continue // taken out of the AnycastPrefix (intended), or still planned here
				}
				g := na.Spec.Groups[gi].DeepCopy()
				if g.Sessions = p.liveClaims(g.Sessions); len(g.Sessions) == 0 || withdrawnAfterSeeing(na, gp) {
					continue
				}
				sessions := map[string]anycastv1.NodeSessions{}
				for _, c := range g.Sessions {
					if info, ok := p.claims[string(c)]; ok {
						sessions[string(c)] = nodeSessionsOf(info.claim)
					} else if s, ok := sessionsOf(na.Spec.Sessions, c); ok {
						sessions[string(c)] = s // the claim is gone (without a finalizer): its last sessions
					}
				}
				g.Sessions = slices.DeleteFunc(g.Sessions, func(c anycastv1.LocalObjectName) bool { _, ok := sessions[string(c)]; return !ok })
				if len(g.Sessions) == 0 {
					continue
				}
				g.Paused = false
				gp.Leaving = true
				b = p.build(n)
				b.add(g, groupKey(g, attributesKey(g.Attributes)), gp)
				for c, s := range sessions {
					if _, ok := b.sessions[c]; !ok {
						b.sessions[c] = s
					}
				}
				if g.HealthPolicy != "" {
					if old, ok := policyOf(na.Spec.HealthPolicies, g.HealthPolicy); ok {
						if _, have := b.policies[string(old.Name)]; !have {
							b.policies[string(old.Name)] = old
						}
					}
				}
				leaving = true
			}
		}
		if leaving {
			r.Leaving = append(r.Leaving, n.Name)
		}
	}
}

// withdrawnAfterSeeing: the node's agent has seen the entry leaving and reports it out (withdrawn, or never
// announced), so the entry can go without withdrawing anything.
func withdrawnAfterSeeing(na *anycastv1.NodeAnnouncement, gp anycastv1.GroupPrefix) bool {
	if !gp.Leaving || na.Status.ObservedGeneration < na.Generation {
		return false
	}
	for _, s := range na.Status.Prefixes {
		if s.Prefix == gp.Prefix {
			return s.State == anycastv1.PrefixWithdrawn || s.State == anycastv1.PrefixPending
		}
	}
	return true // not reported at all: the agent does not announce it
}

// carryOver keeps a prefix exactly where and how it was last planned (fail-static): on each node that still exists,
// its entries, the sessions they use and their health policy, taking the current claim and policy where they exist.
func (p *planner) carryOver(ap *anycastv1.AnycastPrefix, r *PrefixReport) {
	for _, n := range p.nodes {
		na := p.existing[n.Name]
		if na == nil {
			continue
		}
		carried := false
		for gi := range na.Spec.Groups {
			g := na.Spec.Groups[gi].DeepCopy()
			g.Paused = r.Paused
			// A claim being deleted takes its sessions away: the user's intent, even for a frozen prefix.
			if g.Sessions = p.liveClaims(g.Sessions); len(g.Sessions) == 0 {
				continue
			}
			key := groupKey(g, attributesKey(g.Attributes))
			for _, gp := range g.Prefixes {
				if gp.Source != ap.Name {
					continue
				}
				b := p.build(n)
				b.add(g, key, gp)
				carried = true
				for _, claim := range g.Sessions {
					if _, ok := b.sessions[string(claim)]; ok {
						continue
					}
					if s, ok := sessionsOf(na.Spec.Sessions, claim); ok {
						b.sessions[string(claim)] = s
					}
				}
				if g.HealthPolicy == "" {
					continue
				}
				if hp, ok := p.policies[string(g.HealthPolicy)]; ok {
					b.policies[hp.Name] = anycastv1.NodeHealthPolicy{Name: g.HealthPolicy, Spec: hp.Spec}
				} else if old, ok := policyOf(na.Spec.HealthPolicies, g.HealthPolicy); ok {
					b.policies[string(old.Name)] = old
				}
			}
		}
		if carried {
			r.Eligible = append(r.Eligible, n.Name)
			r.placed = append(r.placed, n.Name)
		}
	}
}

func sessionsOf(list []anycastv1.NodeSessions, claim anycastv1.LocalObjectName) (anycastv1.NodeSessions, bool) {
	for _, s := range list {
		if s.Claim == claim {
			return *s.DeepCopy(), true
		}
	}
	return anycastv1.NodeSessions{}, false
}

func policyOf(list []anycastv1.NodeHealthPolicy, name anycastv1.LocalObjectName) (anycastv1.NodeHealthPolicy, bool) {
	for _, hp := range list {
		if hp.Name == name {
			return *hp.DeepCopy(), true
		}
	}
	return anycastv1.NodeHealthPolicy{}, false
}

// place plans a prefix on every node selected by one of its claims and by its nodeSelector, over the claims whose
// export policy allows it and whose maxPrefixes is not reached yet on that node.
func (p *planner) place(ap *anycastv1.AnycastPrefix, r *PrefixReport) {
	sel, _ := selectorOf(ap.Spec.NodeSelector) // admitted: the error was checked
	attrs := newAttributeResolver(ap)
	var policy *anycastv1.HealthPolicy
	if ref := ap.Spec.HealthPolicyRef; ref != nil {
		policy = p.policies[string(ref.Name)]
	}

	// Export policies do not depend on the node: decide them once per claim and CIDR.
	allowed := make(map[string][]netip.Prefix, len(ap.Spec.SessionClaims))
	for _, c := range ap.Spec.SessionClaims {
		info := p.claims[string(c)]
		for _, pfx := range r.cidrs {
			if info.exportAllows(pfx) {
				allowed[string(c)] = append(allowed[string(c)], pfx)
			} else {
				r.deny(&exportPolicyRule, string(c), pfx.String())
			}
		}
	}

	cidrs := make([]anycastv1.CIDR, len(r.cidrs))
	for i, pfx := range r.cidrs {
		cidrs[i] = anycastv1.CIDR(pfx.String())
	}
	var policyName anycastv1.LocalObjectName
	if policy != nil {
		policyName = anycastv1.LocalObjectName(policy.Name)
	}
	// Nodes with the same claims share one sessions list and one group key; callers treat planned specs as read-only.
	shared := map[string][]anycastv1.LocalObjectName{}
	type variant struct {
		sessions string
		attrs    int
	}
	keys := map[variant]string{}
	var claims []anycastv1.LocalObjectName
	for _, n := range p.nodes {
		if !sel.Matches(labelsOf(n)) {
			continue
		}
		claims = claims[:0]
		for _, c := range ap.Spec.SessionClaims {
			if p.claims[string(c)].selected[n.Name] {
				claims = append(claims, c)
			}
		}
		if len(claims) == 0 {
			continue
		}
		r.Eligible = append(r.Eligible, n.Name)
		b := p.build(n)
		before := b.count
		attributes, attrKey, attrVariant := attrs.forNode(n)
		for i, pfx := range r.cidrs {
			key := ""
			for _, c := range claims {
				info := p.claims[string(c)]
				if !containsPrefix(allowed[string(c)], pfx) {
					continue
				}
				if info.max > 0 && b.perClaim[string(c)] >= info.max {
					r.deny(&maxPrefixesRule, string(c), string(cidrs[i]))
					continue
				}
				key += string(c) + " "
			}
			if key == "" {
				continue
			}
			if b.count >= anycastv1.MaxPrefixesPerNode {
				r.deny(&nodeLimitRule, "", string(cidrs[i]))
				continue
			}
			sessions, ok := shared[key]
			if !ok {
				for _, c := range strings.Fields(key) {
					sessions = append(sessions, anycastv1.LocalObjectName(c))
				}
				shared[key] = sessions
			}
			g := anycastv1.PrefixGroup{Sessions: sessions, Attributes: attributes, HealthPolicy: policyName}
			v := variant{sessions: key, attrs: attrVariant}
			gk, ok := keys[v]
			if !ok {
				gk = groupKey(&g, attrKey)
				keys[v] = gk
			}
			b.add(&g, gk, anycastv1.GroupPrefix{Prefix: anycastv1.PlannedCIDR(cidrs[i]), Source: ap.Name})
			if policy != nil {
				if _, ok := b.policies[policy.Name]; !ok {
					b.policies[policy.Name] = anycastv1.NodeHealthPolicy{Name: policyName, Spec: policy.Spec}
				}
			}
		}
		if b.count > before {
			r.placed = append(r.placed, n.Name)
		}
	}
}

// exportAllows reports whether the claim's allowlist (if any) covers the prefix: equal to or inside an entry.
func (c *claimInfo) exportAllows(pfx netip.Prefix) bool {
	if c.allowed == nil {
		return true
	}
	for _, a := range c.allowed {
		if a.Bits() <= pfx.Bits() && a.Contains(pfx.Addr()) {
			return true
		}
	}
	return false
}

func containsPrefix(list []netip.Prefix, pfx netip.Prefix) bool {
	for _, x := range list {
		if x == pfx {
			return true
		}
	}
	return false
}
