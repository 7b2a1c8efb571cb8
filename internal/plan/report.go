package plan

import (
	"net/netip"
	"slices"
	"strings"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// MaxSessionsInStatus bounds BGPSessionClaim.status.sessions (the CRD's maxItems).
const MaxSessionsInStatus = 512

// Conflict says which older AnycastPrefix a prefix overlaps.
type Conflict struct {
	With   string
	Detail string
}

// PrefixReport is what the plan found about one AnycastPrefix.
type PrefixReport struct {
	Generation      int64
	Paused          bool
	Conflict        *Conflict
	MissingClaims   []string
	MissingPolicy   string
	InvalidSelector string
	InvalidPrefixes []string
	// Frozen: the prefix kept its last planned entries instead of being planned anew (paused or stalled).
	Frozen bool

	// Eligible are the nodes the prefix is planned for (or, frozen, still carries it), sorted.
	Eligible []string
	// Announcing, Withdrawn and Awaiting partition the eligible nodes that have a planned entry by what their agent
	// reports: every entry announced (or deprefered); an entry withdrawn; an entry not reported yet (or pending).
	Announcing, Withdrawn, Awaiting []string
	// Unplanned counts the eligible nodes on which no entry could be planned (export policy, maxPrefixes).
	Unplanned int

	// Findings are what the admission rules found, in their rank order (rules.go); the first decides.
	Findings []Finding
	// Denials list, per placement rule and claim, the prefixes the claim does not carry somewhere.
	Denials []Denial

	// Leaving are the nodes that carried the prefix in the last plan and no longer qualify for it: they keep it,
	// marked leaving, until a permit lets them withdraw it; sorted.
	Leaving []string
	// LeavingHeld: more nodes are leaving than the budget allows at once, so none of them withdraws.
	LeavingHeld bool
	// Budget is how many of the nodes carrying the prefix (eligible and leaving) may withdraw or deprefer it at
	// once (maxWithdrawn × nodes).
	Budget int
	// HeldBack are the nodes that ask to withdraw but are kept announcing because the budget is used up, sorted.
	HeldBack []string

	cidrs  []netip.Prefix
	placed []string // nodes with at least one entry, in node order
}

// Denial lists prefixes a claim does not carry, and the placement rule's reason (a claim of "" stands for the
// node's own limit).
type Denial struct {
	Claim    string
	Prefixes []string
	Reason   string
	rule     *placementRule
}

// decision is the finding that decides the prefix's fate (nil: it is planned anew).
func (r *PrefixReport) decision() *Finding {
	if len(r.Findings) == 0 {
		return nil
	}
	return &r.Findings[0]
}

// provisioningOf is what a node's agent reports of a claim's provisioning; nil before it reports.
func provisioningOf(na *anycastv1.NodeAnnouncement, claim string) *anycastv1.ProvisioningStatus {
	if na == nil {
		return nil
	}
	for i := range na.Status.Provisioning {
		if string(na.Status.Provisioning[i].Claim) == claim {
			return &na.Status.Provisioning[i]
		}
	}
	return nil
}

func nodeProvisioning(node string, st *anycastv1.ProvisioningStatus) anycastv1.NodeProvisioningStatus {
	if st == nil {
		return anycastv1.NodeProvisioningStatus{Node: node, State: anycastv1.ProvisioningDiscovering, Reason: "AwaitingAgent",
			Message: "The node's agent has not reported yet"}
	}
	return anycastv1.NodeProvisioningStatus{Node: node, State: st.State, Reason: st.Reason, Message: st.Message, Sessions: int32(len(st.Sessions))}
}

// ClaimReport is what the plan found about one BGPSessionClaim.
type ClaimReport struct {
	// Provisioning is each selected node's provisioning, by node, for a claim with a session provider (at most
	// MaxSessionsInStatus entries are kept in status).
	Provisioning    []anycastv1.NodeProvisioningStatus
	InvalidSelector string
	BoundNodes      int32
	// MissingSecrets lists "name/key" references that do not resolve in the operator's namespace.
	MissingSecrets []string
	Established    int32
	Total          int32
	// Refused counts the sessions a node's speaker does not run as configured (they carry lastError).
	Refused int32
	// Sessions are the first MaxSessionsInStatus sessions, ordered by node and peer address.
	Sessions []anycastv1.SessionStatus
}

// PolicyReport is what the plan found about one HealthPolicy.
type PolicyReport struct {
	Prefixes  int32
	Nodes     int32
	Unhealthy int32
}

// reportClaims fills each claim's node count and checks its Secret references.
func (p *planner) reportClaims() {
	for name, info := range p.claims {
		r := p.out.Claims[name]
		r.BoundNodes = int32(len(info.selected))
		if p.in.SecretKeys == nil {
			continue
		}
		for _, ref := range secretRefsOf(&info.claim.Spec.BGPSessionSettings) {
			if !slices.Contains(p.in.SecretKeys[ref.Name], ref.Key) {
				r.MissingSecrets = append(r.MissingSecrets, ref.Name+"/"+ref.Key)
			}
		}
	}
}

func secretRefsOf(s *anycastv1.BGPSessionSettings) []anycastv1.SecretKeyRef {
	var refs []anycastv1.SecretKeyRef
	if s.Static != nil {
		for _, peer := range s.Static.Peers {
			if peer.PasswordSecretRef != nil {
				refs = append(refs, *peer.PasswordSecretRef)
			}
		}
	}
	if s.NetActuate != nil && s.NetActuate.APIKeySecretRef != nil {
		refs = append(refs, *s.NetActuate.APIKeySecretRef)
	}
	return refs
}

// reportNodes reads what the agents report into the prefix, claim and policy reports.
func (p *planner) reportNodes() {
	names := make([]string, 0, len(p.specs))
	for name := range p.specs {
		names = append(names, name)
	}
	slices.Sort(names)
	reported := map[anycastv1.PlannedCIDR]anycastv1.PrefixState{}
	perSource := map[string]anycastv1.PrefixState{}
	for _, node := range names {
		clear(reported)
		clear(perSource)
		if na := p.existing[node]; na != nil {
			for _, s := range na.Status.Prefixes {
				reported[s.Prefix] = s.State
			}
		}
		for _, g := range p.out.Announcements[node].Groups {
			for _, gp := range g.Prefixes {
				if gp.Leaving {
					continue // reported as leaving, not as eligible
				}
				state, ok := reported[gp.Prefix]
				if !ok {
					state = anycastv1.PrefixPending
				}
				perSource[gp.Source] = worse(perSource[gp.Source], state)
			}
		}
		for source, state := range perSource {
			r := p.out.Prefixes[source]
			switch state {
			case anycastv1.PrefixWithdrawn:
				r.Withdrawn = append(r.Withdrawn, node)
			case anycastv1.PrefixAnnounced, anycastv1.PrefixDeprefered:
				r.Announcing = append(r.Announcing, node)
			case anycastv1.PrefixPending:
				r.Awaiting = append(r.Awaiting, node)
			}
		}
	}
	for _, r := range p.out.Prefixes {
		slices.Sort(r.Eligible)
		r.Unplanned = len(r.Eligible) - len(r.placed)
	}
	for name, info := range p.claims {
		p.reportSessions(name, info)
	}
	for name, r := range p.out.Policies {
		for node, spec := range p.out.Announcements {
			if !slices.ContainsFunc(spec.HealthPolicies, func(hp anycastv1.NodeHealthPolicy) bool { return string(hp.Name) == name }) {
				continue
			}
			r.Nodes++
			if na := p.existing[node]; na != nil && slices.ContainsFunc(na.Status.Checks, func(c anycastv1.NodeCheckStatus) bool {
				return string(c.Policy) == name && c.State == anycastv1.CheckFailing
			}) {
				r.Unhealthy++
			}
		}
	}
}

// worse combines the reported states of one AnycastPrefix's entries on a node: Withdrawn if any is withdrawn,
// Pending if any is pending (or not reported), Announced otherwise (announced or deprefered: still attracting
// traffic). The empty state means nothing was combined yet.
func worse(acc, next anycastv1.PrefixState) anycastv1.PrefixState {
	if acc == "" || severity(next) > severity(acc) {
		return next
	}
	return acc
}

func severity(s anycastv1.PrefixState) int {
	switch s {
	case anycastv1.PrefixWithdrawn:
		return 3
	case anycastv1.PrefixPending:
		return 2
	default:
		return 1
	}
}

// reportSessions lists the sessions of a claim's nodes with the state their agents (or the cluster's BGP stack)
// report: for static peers every (node, peer) pair, Unknown until reported; for provisioned sessions what the agents
// found.
func (p *planner) reportSessions(name string, info *claimInfo) {
	r := p.out.Claims[name]
	nodes := make([]string, 0, len(info.selected))
	for n := range info.selected {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	for _, node := range nodes {
		var reported []anycastv1.NodeSessionStatus
		source, fromStack := p.in.BackendSessions[node]
		if !fromStack {
			if na := p.existing[node]; na != nil {
				source = na.Status.Sessions
			}
		}
		for _, s := range source {
			if string(s.Claim) == name || s.Claim == "" {
				reported = append(reported, s)
			}
		}
		var sessions []anycastv1.SessionStatus
		if st := info.claim.Spec.Static; st != nil {
			for _, peer := range st.Peers {
				s := anycastv1.SessionStatus{Node: node, PeerAddress: string(peer.Address), PeerASN: int64(peer.ASN), State: anycastv1.SessionUnknown}
				if i := slices.IndexFunc(reported, func(x anycastv1.NodeSessionStatus) bool { return samePeer(x.PeerAddress, s.PeerAddress) }); i >= 0 {
					s.LocalAddress, s.State, s.Since, s.LastError = reported[i].LocalAddress, reported[i].State, reported[i].Since, reported[i].LastError
				}
				sessions = append(sessions, s)
			}
		} else {
			// Provisioned sessions: those the node's agent reports its provider set up, in the state its speaker
			// (or the stack) reports.
			prov := provisioningOf(p.existing[node], name)
			r.Provisioning = append(r.Provisioning, nodeProvisioning(node, prov))
			if prov != nil {
				for _, ps := range prov.Sessions {
					s := anycastv1.SessionStatus{Node: node, PeerAddress: string(ps.PeerAddress), PeerASN: int64(ps.PeerASN), LocalAddress: string(ps.LocalAddress), State: anycastv1.SessionUnknown}
					if i := slices.IndexFunc(reported, func(x anycastv1.NodeSessionStatus) bool { return samePeer(x.PeerAddress, s.PeerAddress) }); i >= 0 {
						s.State, s.Since, s.LastError = reported[i].State, reported[i].Since, reported[i].LastError
					}
					sessions = append(sessions, s)
				}
			}
		}
		slices.SortFunc(sessions, func(a, b anycastv1.SessionStatus) int { return strings.Compare(a.PeerAddress, b.PeerAddress) })
		for _, s := range sessions {
			r.Total++
			if s.State == anycastv1.SessionEstablished {
				r.Established++
			}
			if s.LastError != "" {
				r.Refused++
			}
			if len(r.Sessions) < MaxSessionsInStatus {
				r.Sessions = append(r.Sessions, s)
			}
		}
	}
}

// samePeer compares two peer addresses as addresses (2001:DB8::1 is 2001:db8::1, ::ffff:192.0.2.1 is 192.0.2.1).
func samePeer(a, b string) bool {
	x, errX := netip.ParseAddr(a)
	y, errY := netip.ParseAddr(b)
	if errX != nil || errY != nil {
		return a == b
	}
	return x.Unmap() == y.Unmap()
}
