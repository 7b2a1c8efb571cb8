package plan

import (
	"slices"
	"strings"

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
		if r.Conflict != nil || len(r.placed)+len(r.Leaving) == 0 {
			continue
		}
		r.Budget = budget(ap.Spec.Safety, len(r.placed)+len(r.Leaving))
		if r.Frozen {
			// Frozen: the permits stay where they are, like everything else about the prefix.
			for _, node := range r.placed {
				if na := p.existing[node]; na != nil && slices.Contains(na.Spec.Permits, ap.Name) {
					p.specs[node].permits = append(p.specs[node].permits, ap.Name)
				}
			}
			continue
		}
		if unlimited(ap.Spec.Safety) || (r.Budget >= len(r.placed) && len(r.Leaving) == 0) {
			// Every node may fail over on its own (the default, 100%): no request, no delay.
			for _, node := range r.placed {
				p.specs[node].permits = append(p.specs[node].permits, ap.Name)
			}
			continue
		}
		p.ration(ap, r)
	}
}

// ration hands out a budget smaller than the number of nodes among the nodes that carry the prefix, leaving ones
// included unless more are leaving than the whole budget: keep the permits in use (but never more than the budget: a lowered budget takes the excess back), take
// back unused ones from agents that have caught up, and grant to requesting nodes while fewer than the budget are
// held. A permit taken back still counts until its agent reports it let it go.
func (p *planner) ration(ap *anycastv1.AnycastPrefix, r *PrefixReport) {
	held := 0
	var keep, requesting []string
	nodes := slices.Clone(r.placed)
	if len(r.Leaving) <= r.Budget {
		nodes = append(nodes, r.Leaving...)
	} else {
		// One configuration change would take the prefix off more nodes than the budget: a circuit breaker, as
		// for a mistaken selector that matches no node any more. They all keep announcing until the change is
		// undone, the budget raised, or the AnycastPrefix deleted.
		r.LeavingHeld = true
		r.HeldBack = append(r.HeldBack, r.Leaving...)
	}
	views := make(map[string]permitView, len(nodes))
	for _, node := range nodes {
		v := p.permitView(node, ap)
		views[node] = v
		switch {
		case v.granted && (v.using || v.requesting || !v.caughtUp):
			// In use, wanted, or the agent may not have seen the grant yet: keep it if the budget allows.
			keep = append(keep, node)
		case v.granted || v.reported:
			// Unused and seen: revoke. It still counts until the agent reports it let it go.
			held++
		case v.requesting:
			requesting = append(requesting, node)
		}
	}
	// Those in use first, then those wanted, then those not seen yet; by name within each.
	rank := func(v permitView) int {
		switch {
		case v.using:
			return 0
		case v.requesting:
			return 1
		}
		return 2
	}
	slices.SortStableFunc(keep, func(a, b string) int { return rank(views[a]) - rank(views[b]) })
	for i, node := range keep {
		held++ // kept or revoked, it counts until its agent lets it go
		if i < r.Budget {
			p.specs[node].permits = append(p.specs[node].permits, ap.Name)
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
		if (s.State == anycastv1.PrefixWithdrawn || s.State == anycastv1.PrefixDeprefered) && slices.Contains(ap.Spec.Prefixes, anycastv1.CIDR(s.Prefix)) {
			v.using = true
		}
	}
	return v
}

// unlimited: maxWithdrawn lets every node withdraw on its own (100%, the default).
// PermitsNeeded: the prefix's nodes withdraw only with a permit (maxWithdrawn below 100%).
func PermitsNeeded(ap *anycastv1.AnycastPrefix) bool { return !unlimited(ap.Spec.Safety) }

func unlimited(safety *anycastv1.PrefixSafety) bool {
	if safety == nil || safety.MaxWithdrawn == nil {
		return true
	}
	m := safety.MaxWithdrawn
	return m.Type == intstr.String && m.StrVal == "100%"
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

// Overlay returns the NodeAnnouncements the planner should read: those of its cache, with the specs the manager
// wrote itself that the cache does not show yet (a later generation of the same object), and those it created that
// the cache has not seen. A cache lags the manager's own writes; planning on it alone would count a permit just
// granted as free and grant it again. written holds the manager's successful writes by name; the second result names
// those the cache has caught up with, which the caller may forget.
func Overlay(cached []anycastv1.NodeAnnouncement, written map[string]*anycastv1.NodeAnnouncement) ([]anycastv1.NodeAnnouncement, []string) {
	if len(written) == 0 {
		return cached, nil
	}
	out := make([]anycastv1.NodeAnnouncement, 0, len(cached)+len(written))
	var caughtUp []string
	seen := make(map[string]bool, len(cached))
	for _, na := range cached {
		seen[na.Name] = true
		w := written[na.Name]
		switch {
		case w == nil:
		case w.UID != "" && w.UID != na.UID, na.Generation >= w.Generation:
			caughtUp = append(caughtUp, na.Name) // the cache has it (or the object was replaced)
		default:
			na.Spec, na.Generation, na.ResourceVersion = w.Spec, w.Generation, w.ResourceVersion
		}
		out = append(out, na)
	}
	for name, w := range written {
		if !seen[name] {
			na := *w
			na.Status = anycastv1.NodeAnnouncementStatus{}
			out = append(out, na)
		}
	}
	slices.SortFunc(out, func(a, b anycastv1.NodeAnnouncement) int { return strings.Compare(a.Name, b.Name) })
	return out, caughtUp
}
