package plan

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// Explanation says why one node does or does not announce one AnycastPrefix: a verdict, then one sentence per
// thing that decides it, in the order the planner and the agent apply them.
type Explanation struct {
	Verdict string
	Reasons []string
}

// explainer adds the sentences of one step of the decision; it returns false when the steps after it do not apply
// (the prefix is planned nowhere, the node is not eligible).
type explainer func(x *explaining) bool

// explainers are the steps, in order: what the planner decided for the prefix as a whole, whether the node is
// selected, what each claim carries, then what the node's agent does with it.
var explainers = []explainer{explainAdmission, explainSelector, explainClaims, explainLeaving, explainDrain, explainChecks, explainAgent, explainPermit}

// explaining is what the steps share.
type explaining struct {
	p       *planner
	out     Output
	ap      *anycastv1.AnycastPrefix
	r       *PrefixReport
	node    string
	na      *anycastv1.NodeAnnouncement
	entries []GroupEntry
	now     time.Time
	reasons []string
}

func (x *explaining) say(format string, args ...any) {
	x.reasons = append(x.reasons, fmt.Sprintf(format, args...))
}

// GroupEntry is one planned prefix of an AnycastPrefix on a node, with how its group announces it.
type GroupEntry struct {
	anycastv1.GroupPrefix
	Sessions     []anycastv1.LocalObjectName
	Attributes   *anycastv1.BGPAttributes
	HealthPolicy anycastv1.LocalObjectName
	Paused       bool
}

// EntriesOf returns the prefixes of one AnycastPrefix in a node's spec.
func EntriesOf(spec anycastv1.NodeAnnouncementSpec, source string) []GroupEntry {
	var out []GroupEntry
	for _, g := range spec.Groups {
		for _, gp := range g.Prefixes {
			if gp.Source == source {
				out = append(out, GroupEntry{GroupPrefix: gp, Sessions: g.Sessions, Attributes: g.Attributes, HealthPolicy: g.HealthPolicy, Paused: g.Paused})
			}
		}
	}
	return out
}

// Explain explains, from the plan out computed on in, why node does or does not announce the AnycastPrefix named
// prefix; now is only used to say how long ago things happened.
func Explain(in Input, out Output, prefix, node string, now time.Time) (Explanation, error) {
	p := newPlanner(in)
	var ap *anycastv1.AnycastPrefix
	for i := range in.Prefixes {
		if in.Prefixes[i].Name == prefix {
			ap = &in.Prefixes[i]
		}
	}
	if ap == nil {
		return Explanation{}, fmt.Errorf("AnycastPrefix %q not found", prefix)
	}
	if !slices.ContainsFunc(in.Nodes, func(n corev1.Node) bool { return n.Name == node }) {
		return Explanation{}, fmt.Errorf("node %q not found", node)
	}
	x := &explaining{p: p, out: out, ap: ap, r: out.Prefixes[prefix], node: node, na: p.existing[node], now: now,
		entries: EntriesOf(out.Announcements[node], prefix)}
	if ap.DeletionTimestamp != nil {
		x.say("AnycastPrefix %q is being deleted: its prefixes are withdrawn everywhere.", prefix)
	} else if !slices.ContainsFunc(p.nodes, func(n *corev1.Node) bool { return n.Name == node }) {
		x.say("Node %q is being deleted: it gets no NodeAnnouncement.", node)
	} else {
		for _, step := range explainers {
			if !step(x) {
				break
			}
		}
	}
	return Explanation{Verdict: x.verdict(), Reasons: x.reasons}, nil
}

// verdict is the first sentence: what the router hears from the node, as its agent reports it.
func (x *explaining) verdict() string {
	if len(x.entries) == 0 {
		return fmt.Sprintf("%s does not announce AnycastPrefix %q (%s).", x.node, x.ap.Name, cidrList(x.ap.Spec.Prefixes))
	}
	var parts []string
	for _, e := range x.entries {
		st := ReportedState(x.na, e.Prefix)
		switch {
		case st == nil:
			parts = append(parts, fmt.Sprintf("%s is planned, not reported by the agent yet", e.Prefix))
		case st.State == anycastv1.PrefixAnnounced:
			parts = append(parts, fmt.Sprintf("announces %s", e.Prefix))
		case st.State == anycastv1.PrefixDeprefered:
			parts = append(parts, fmt.Sprintf("announces %s deprefered", e.Prefix))
		case st.State == anycastv1.PrefixWithdrawn:
			parts = append(parts, fmt.Sprintf("has withdrawn %s", e.Prefix))
		default:
			parts = append(parts, fmt.Sprintf("does not announce %s yet", e.Prefix))
		}
	}
	return fmt.Sprintf("%s %s (AnycastPrefix %q).", x.node, strings.Join(parts, "; "), x.ap.Name)
}

func explainAdmission(x *explaining) bool {
	for _, f := range x.r.Findings {
		x.say("%s", f.Message)
	}
	d := x.r.decision()
	switch {
	case d != nil && d.Outcome == NotPlanned:
		x.say("So the prefix is planned on no node.")
		return false
	case d != nil && d.Outcome == Frozen:
		if len(x.entries) > 0 {
			x.say("So the node keeps what it was last planned to announce.")
		} else {
			x.say("So the node keeps what it was last planned to announce: nothing of this prefix.")
		}
		return len(x.entries) > 0
	}
	return true
}

func explainSelector(x *explaining) bool {
	if x.r.Frozen {
		return true
	}
	sel, _ := selectorOf(x.ap.Spec.NodeSelector) // admitted: the error was checked
	n := x.nodeObject()
	if !sel.Matches(labelsOf(n)) {
		x.say("The node does not match spec.nodeSelector (%s).", metav1.FormatLabelSelector(x.ap.Spec.NodeSelector))
		return x.leaving()
	}
	if x.ap.Spec.NodeSelector == nil {
		x.say("spec.nodeSelector is unset: every node qualifies.")
	} else {
		x.say("The node matches spec.nodeSelector (%s).", metav1.FormatLabelSelector(x.ap.Spec.NodeSelector))
	}
	return true
}

// leaving: the node is not eligible, and the steps after the selector and claims apply only if it still carries the
// prefix on its way out.
func (x *explaining) leaving() bool {
	return slices.Contains(x.r.Leaving, x.node)
}

func (x *explaining) nodeObject() *corev1.Node {
	for _, n := range x.p.nodes {
		if n.Name == x.node {
			return n
		}
	}
	return nil // Explain checked that the node exists and is not being deleted
}

func explainClaims(x *explaining) bool {
	if x.r.Frozen {
		return true
	}
	n := x.nodeObject()
	if !x.selectedByPrefix(n) {
		return true // explainSelector said why; the node is leaving
	}
	selected := false
	for _, c := range x.ap.Spec.SessionClaims {
		info := x.p.claims[string(c)]
		claim := info.claim
		switch {
		case claim.DeletionTimestamp != nil:
			x.say("BGPSessionClaim %q is being deleted: its sessions close and nothing goes out over them.", c)
			continue
		case x.p.out.Claims[string(c)].InvalidSelector != "":
			x.say("BGPSessionClaim %q has an invalid spec.nodeSelector (%s): it selects no node.", c, x.p.out.Claims[string(c)].InvalidSelector)
			continue
		case !info.selected[x.node]:
			x.say("BGPSessionClaim %q does not select the node (spec.nodeSelector %s).", c, metav1.FormatLabelSelector(&claim.Spec.NodeSelector))
			continue
		}
		selected = true
		for _, pfx := range x.r.cidrs {
			cidr := anycastv1.PlannedCIDR(pfx.String())
			switch {
			case !info.exportAllows(pfx):
				x.say("BGPSessionClaim %q selects the node, but its exportPolicy.allowedPrefixes (%s) do not cover %s: not sent over it.",
					c, cidrList(claim.Spec.ExportPolicy.AllowedPrefixes), pfx)
			case x.carriedOver(cidr, c):
				x.say("BGPSessionClaim %q selects the node: %s goes out over its %s.", c, pfx, x.peersOf(c))
			case info.max > 0 && x.plannedCount() < anycastv1.MaxPrefixesPerNode:
				x.say("BGPSessionClaim %q selects the node, but its exportPolicy.maxPrefixes (%d) is reached there by older AnycastPrefixes: %s not sent over it.",
					c, info.max, pfx)
			default:
				x.say("%s is not planned on the node: it already announces %d prefixes, the most one node may.", pfx, anycastv1.MaxPrefixesPerNode)
			}
		}
	}
	if !selected {
		x.say("No claim of spec.sessionClaims (%s) selects the node, so it is not eligible.", nameList(x.ap.Spec.SessionClaims))
		return x.leaving()
	}
	return true
}

// plannedCount is how many prefixes the plan gives the node.
func (x *explaining) plannedCount() int {
	n := 0
	for _, g := range x.out.Announcements[x.node].Groups {
		n += len(g.Prefixes)
	}
	return n
}

func (x *explaining) selectedByPrefix(n *corev1.Node) bool {
	sel, _ := selectorOf(x.ap.Spec.NodeSelector)
	return sel.Matches(labelsOf(n))
}

// carriedOver reports whether the plan sends the CIDR over the claim on the node (and not as leaving).
func (x *explaining) carriedOver(cidr anycastv1.PlannedCIDR, claim anycastv1.LocalObjectName) bool {
	for _, e := range x.entries {
		if e.Prefix == cidr && !e.Leaving && slices.Contains(e.Sessions, claim) {
			return true
		}
	}
	return false
}

// peersOf names the sessions a claim gives the node, with what its agent reports of each.
func (x *explaining) peersOf(claim anycastv1.LocalObjectName) string {
	var peers []string
	if s, ok := sessionsOf(x.out.Announcements[x.node].Sessions, claim); ok && s.Static != nil {
		for _, peer := range s.Static.Peers {
			peers = append(peers, x.sessionState(claim, string(peer.Address)))
		}
	} else if x.na != nil {
		for _, st := range x.na.Status.Sessions {
			if st.Claim == claim {
				peers = append(peers, x.sessionState(claim, st.PeerAddress))
			}
		}
	}
	if len(peers) == 0 {
		return "sessions (none provisioned yet)"
	}
	word := "session"
	if len(peers) > 1 {
		word = "sessions"
	}
	return word + " to " + strings.Join(peers, ", ")
}

func (x *explaining) sessionState(claim anycastv1.LocalObjectName, peer string) string {
	if x.na != nil {
		for _, st := range x.na.Status.Sessions {
			if st.Claim == claim && samePeer(st.PeerAddress, peer) {
				s := fmt.Sprintf("%s (%s", peer, st.State)
				if st.Since != nil {
					s += " for " + since(st.Since, x.now)
				}
				if st.LastError != "" {
					s += ", last error: " + st.LastError
				}
				return s + ")"
			}
		}
	}
	return peer + " (not reported)"
}

func explainLeaving(x *explaining) bool {
	if !slices.Contains(x.r.Leaving, x.node) {
		return true
	}
	if x.r.LeavingHeld {
		x.say("It carried the prefix and keeps it, marked leaving: %d nodes are leaving (%s), more than the budget of %d lets withdraw at once, so none of them withdraws until the change is narrowed or maxWithdrawn raised.",
			len(x.r.Leaving), strings.Join(firstN(x.r.Leaving, 5), ", "), x.r.Budget)
	} else {
		x.say("It carried the prefix and keeps it, marked leaving, until a permit (maxWithdrawn) lets its agent withdraw it.")
	}
	return true
}

func explainDrain(x *explaining) bool {
	if isDrained(x.nodeObject()) {
		x.say("The node is drained (%s=true): its agent deprefers every prefix at once, then withdraws after withdrawDelay, whatever the health of its service.", anycastv1.DrainAnnotation)
	}
	return true
}

// explainChecks gives each check's last result as the node's agent reports it.
func explainChecks(x *explaining) bool {
	policy := anycastv1.LocalObjectName("")
	for _, e := range x.entries {
		policy = e.HealthPolicy
	}
	if len(x.entries) == 0 || x.r.Frozen && policy == "" && x.ap.Spec.HealthPolicyRef != nil {
		return true
	}
	if policy == "" {
		x.say("The prefix has no HealthPolicy: it is announced while its sessions are up, whatever the service does.")
		return true
	}
	hp, ok := policyOf(x.out.Announcements[x.node].HealthPolicies, policy)
	if !ok {
		return true
	}
	for _, check := range hp.Spec.Checks {
		st := x.checkStatus(policy, check.Name)
		switch {
		case st == nil:
			x.say("Check %q of HealthPolicy %q: no result reported yet.", check.Name, policy)
		case st.State == anycastv1.CheckFailing:
			x.say("Check %q of HealthPolicy %q is Failing: %d consecutive failures%s%s.", check.Name, policy, st.ConsecutiveFailures, lastError(st), x.probed(st))
		default:
			x.say("Check %q of HealthPolicy %q is %s%s.", check.Name, policy, st.State, x.probed(st))
		}
	}
	return true
}

func (x *explaining) checkStatus(policy anycastv1.LocalObjectName, name string) *anycastv1.NodeCheckStatus {
	if x.na == nil {
		return nil
	}
	for i := range x.na.Status.Checks {
		if c := &x.na.Status.Checks[i]; c.Policy == policy && c.Name == name {
			return c
		}
	}
	return nil
}

func lastError(st *anycastv1.NodeCheckStatus) string {
	if st.LastError == "" {
		return ""
	}
	return ", last: " + st.LastError
}

func (x *explaining) probed(st *anycastv1.NodeCheckStatus) string {
	if st.LastProbeTime == nil {
		return ""
	}
	s := " (last probe " + since(st.LastProbeTime, x.now) + " ago"
	if st.Latency != nil {
		s += ", took " + st.Latency.Duration.String()
	}
	return s + ")"
}

// explainAgent says what the node's agent reports it does with each planned prefix, and whether it is behind.
func explainAgent(x *explaining) bool {
	if len(x.entries) == 0 {
		return true
	}
	switch {
	case x.na == nil:
		x.say("The node has no NodeAnnouncement yet: the manager has not written its plan.")
		return true
	case x.na.Status.AgentVersion == "" && x.na.Status.ObservedGeneration == 0:
		x.say("No agent has reported on the node: is the agent's DaemonSet running there?")
		return true
	case x.na.Status.ObservedGeneration < x.na.Generation:
		x.say("Its agent acts on an older plan (observedGeneration %d, the plan is at %d): the latest change has not reached it yet.",
			x.na.Status.ObservedGeneration, x.na.Generation)
	}
	for _, e := range x.entries {
		st := ReportedState(x.na, e.Prefix)
		if st == nil {
			x.say("Its agent does not report %s yet.", e.Prefix)
			continue
		}
		s := fmt.Sprintf("Its agent reports %s %s", e.Prefix, st.State)
		if st.Since != nil {
			s += " for " + since(st.Since, x.now)
		}
		if st.Reason != "" {
			s += ": " + st.Reason
		}
		if st.Message != "" {
			s += "; the speaker: " + st.Message
		}
		x.say("%s.", s)
	}
	return true
}

// explainPermit: whether the node may withdraw or deprefer the prefix now (maxWithdrawn).
func explainPermit(x *explaining) bool {
	if len(x.entries) == 0 {
		return true
	}
	planned := slices.Contains(x.out.Announcements[x.node].Permits, x.ap.Name)
	held := x.na != nil && slices.Contains(x.na.Status.Permits, x.ap.Name)
	budget := fmt.Sprintf("maxWithdrawn %s: %d of the %d nodes carrying it may be out at once", MaxWithdrawnOf(x.ap), x.r.Budget, len(x.r.Eligible)+len(x.r.Leaving))
	switch {
	case unlimited(x.ap.Spec.Safety):
		x.say("maxWithdrawn is 100%%: its agent withdraws or deprefers it on its own whenever its checks say so, without a permit.")
	case slices.Contains(x.r.HeldBack, x.node):
		x.say("Its agent asks to withdraw or deprefer it, but the budget is used up (%s), so it keeps announcing.", budget)
	case planned && held:
		x.say("It holds a permit to withdraw or deprefer it (%s).", budget)
	case planned:
		x.say("It is granted a permit to withdraw or deprefer it; its agent has not taken it up yet (%s).", budget)
	case held:
		x.say("Its permit is being taken back: the agent keeps it until it announces again (%s).", budget)
	default:
		x.say("It holds no permit: should its checks fail, it asks for one first (%s).", budget)
	}
	return true
}

// MaxWithdrawnOf is the prefix's maxWithdrawn as written, 100% when unset.
func MaxWithdrawnOf(ap *anycastv1.AnycastPrefix) string {
	if ap.Spec.Safety == nil || ap.Spec.Safety.MaxWithdrawn == nil {
		return "100%"
	}
	return ap.Spec.Safety.MaxWithdrawn.String()
}

// ReportedState is what a node's agent reports of one of its prefixes; nil if nothing.
func ReportedState(na *anycastv1.NodeAnnouncement, p anycastv1.PlannedCIDR) *anycastv1.NodePrefixStatus {
	if na == nil {
		return nil
	}
	for i := range na.Status.Prefixes {
		if na.Status.Prefixes[i].Prefix == p {
			return &na.Status.Prefixes[i]
		}
	}
	return nil
}

// since says how long ago t was, to the second.
func since(t *metav1.Time, now time.Time) string {
	return now.Sub(t.Time).Round(time.Second).String()
}

func cidrList(list []anycastv1.CIDR) string {
	s := make([]string, len(list))
	for i, c := range list {
		s[i] = string(c)
	}
	return strings.Join(s, ", ")
}

func nameList(list []anycastv1.LocalObjectName) string {
	s := make([]string, len(list))
	for i, c := range list {
		s[i] = string(c)
	}
	return strings.Join(s, ", ")
}
