package plan

import (
	"slices"

	"k8s.io/apimachinery/pkg/util/intstr"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// Withdrawal permits enforce maxWithdrawn. A node's agent withdraws or deprefers a prefix only while its
// NodeAnnouncement spec grants it the prefix's permit. A permit counts against the budget while the spec grants it
// or the agent still reports holding it (status.permits, as of the generation it observed). So a revoked permit is
// free again only once the agent has seen the revocation and said so. Whatever the API server's or the agents'
// delays, no more than the budget of agents can act on a permit at the same time.

// grantPermits decides the permits of every planned prefix.
func (p *planner) grantPermits() {
	for _, ap := range p.prefixes {
		r := p.out.Prefixes[ap.Name]
		if r.Conflict != nil || len(r.placed) == 0 {
			continue
		}
		r.Budget = budget(ap.Spec.Safety, len(r.placed))
		if r.Frozen {
			// Frozen: the permits stay where they are, like everything else about the prefix.
			for _, node := range r.placed {
				if na := p.existing[node]; na != nil && slices.Contains(na.Spec.Permits, ap.Name) {
					p.specs[node].permits = append(p.specs[node].permits, ap.Name)
				}
			}
			continue
		}
		if r.Budget >= len(r.placed) {
			// Every node may fail over on its own (the default, 100%): no request, no delay.
			for _, node := range r.placed {
				p.specs[node].permits = append(p.specs[node].permits, ap.Name)
			}
			continue
		}
		p.ration(ap, r)
	}
}

// ration hands out a budget smaller than the number of nodes: keep permits that are in use, take back unused ones
// from agents that have caught up, and grant to requesting nodes while fewer than the budget are held.
func (p *planner) ration(ap *anycastv1.AnycastPrefix, r *PrefixReport) {
	held := 0
	var requesting []string
	for _, node := range r.placed {
		v := p.permitView(node, ap)
		switch {
		case v.granted && (v.using || v.requesting || !v.caughtUp):
			// In use, wanted, or the agent may not have seen the grant yet: keep it.
			p.specs[node].permits = append(p.specs[node].permits, ap.Name)
			held++
		case v.granted || v.reported:
			// Unused and seen: revoke. It still counts until the agent reports it let it go.
			held++
		case v.requesting:
			requesting = append(requesting, node)
		}
	}
	slices.Sort(requesting)
	for _, node := range requesting {
		if held >= r.Budget {
			r.HeldBack = append(r.HeldBack, node)
			continue
		}
		p.specs[node].permits = append(p.specs[node].permits, ap.Name)
		held++
	}
}

// permitView is what a node's NodeAnnouncement says about one prefix's permit.
type permitView struct {
	granted    bool // the current spec grants it
	reported   bool // the agent reports holding it
	requesting bool // the agent asks for it
	using      bool // the agent reports the prefix withdrawn or deprefered on this node
	caughtUp   bool // the agent has observed the current spec
}

func (p *planner) permitView(node string, ap *anycastv1.AnycastPrefix) permitView {
	na := p.existing[node]
	if na == nil {
		return permitView{}
	}
	v := permitView{
		granted:    slices.Contains(na.Spec.Permits, ap.Name),
		reported:   slices.Contains(na.Status.Permits, ap.Name),
		requesting: slices.Contains(na.Status.PermitRequests, ap.Name),
		caughtUp:   na.Status.ObservedGeneration >= na.Generation,
	}
	for _, s := range na.Status.Prefixes {
		if (s.State == anycastv1.PrefixWithdrawn || s.State == anycastv1.PrefixDeprefered) && slices.Contains(ap.Spec.Prefixes, s.Prefix) {
			v.using = true
		}
	}
	return v
}

// budget is floor(maxWithdrawn × nodes); maxWithdrawn defaults to 100%.
func budget(safety *anycastv1.PrefixSafety, nodes int) int {
	if safety == nil || safety.MaxWithdrawn == nil {
		return nodes
	}
	n, err := intstr.GetScaledValueFromIntOrPercent(safety.MaxWithdrawn, nodes, false)
	if err != nil || n < 0 {
		return 0 // unreadable (the API server refuses it): the safe side is to withdraw nothing
	}
	return min(n, nodes)
}
