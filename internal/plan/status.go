package plan

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// The functions in this file derive an object's whole status from its report. They start from the current status so
// that a condition's lastTransitionTime changes only when its status flips, and they return a status equal to the
// current one when nothing changed, so the caller can skip the write.

// maxNamesInMessage bounds node and object lists quoted in condition messages.
const maxNamesInMessage = 10

// PrefixStatus is the status an AnycastPrefix should have.
func PrefixStatus(ap *anycastv1.AnycastPrefix, r *PrefixReport, now metav1.Time) anycastv1.AnycastPrefixStatus {
	st := *ap.Status.DeepCopy()
	gen := ap.Generation
	st.ObservedGeneration = gen
	st.EligibleNodes = int32(len(r.Eligible))
	st.AnnouncingNodes = int32(len(r.Announcing))
	st.Announcing = fmt.Sprintf("%d/%d", st.AnnouncingNodes, st.EligibleNodes)
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen, LastTransitionTime: now})
	}

	if r.Conflict != nil {
		set(anycastv1.ConditionConflict, metav1.ConditionTrue, anycastv1.ReasonOverlap,
			fmt.Sprintf("%s of the older AnycastPrefix %q; this prefix is not announced until the overlap is removed", r.Conflict.Detail, r.Conflict.With))
	} else {
		set(anycastv1.ConditionConflict, metav1.ConditionFalse, anycastv1.ReasonNoConflict, "No overlap with another AnycastPrefix")
	}

	stallReason, stallMsg := prefixStall(r)
	if stallReason != "" {
		set(anycastv1.ConditionStalled, metav1.ConditionTrue, stallReason, stallMsg)
	} else {
		set(anycastv1.ConditionStalled, metav1.ConditionFalse, anycastv1.ReasonAsExpected, "")
	}

	if stallReason == "" && len(r.Awaiting) > 0 {
		set(anycastv1.ConditionReconciling, metav1.ConditionTrue, anycastv1.ReasonAwaitingAgents,
			fmt.Sprintf("Waiting for the agents of %s to report", names(r.Awaiting, "node")))
	} else {
		set(anycastv1.ConditionReconciling, metav1.ConditionFalse, anycastv1.ReasonAsExpected, "")
	}

	if reason, msg := prefixDegradation(r); reason != "" {
		set(anycastv1.ConditionDegraded, metav1.ConditionTrue, reason, msg)
	} else {
		set(anycastv1.ConditionDegraded, metav1.ConditionFalse, anycastv1.ReasonAsExpected, "")
	}

	ready, reason, msg := prefixReadiness(r, stallReason, stallMsg)
	if r.Paused {
		msg = "Paused: announcements are frozen. " + msg
	}
	set(anycastv1.ConditionReady, ready, reason, msg)
	return st
}

// prefixStall is the first finding that stalls the prefix (rules.go ranks them).
func prefixStall(r *PrefixReport) (reason, msg string) {
	for _, f := range r.Findings {
		if f.Stalled {
			return f.Reason, f.Message
		}
	}
	return "", ""
}

func prefixDegradation(r *PrefixReport) (reason, msg string) {
	var parts []string
	// First the most urgent: unhealthy nodes that the budget keeps announcing still draw traffic.
	carrying := len(r.placed) + len(r.Leaving)
	switch {
	case r.LeavingHeld:
		reason = anycastv1.ReasonMaxWithdrawnReached
		parts = append(parts, fmt.Sprintf("a configuration change (a selector, an export policy, maxPrefixes) takes the prefix off %d of %d nodes, and maxWithdrawn allows %d at once: all of them keep announcing (%s); undo the change, raise maxWithdrawn, or delete the AnycastPrefix to withdraw it everywhere",
			len(r.Leaving), carrying, r.Budget, names(r.Leaving, "")))
		if held := len(r.HeldBack) - len(r.Leaving); held > 0 {
			parts = append(parts, fmt.Sprintf("%d more nodes want to withdraw and are kept announcing", held))
		}
	case len(r.HeldBack) > 0:
		reason = anycastv1.ReasonMaxWithdrawnReached
		parts = append(parts, fmt.Sprintf("%d nodes want to withdraw but are kept announcing: maxWithdrawn allows %d of %d at once (%s)",
			len(r.HeldBack), r.Budget, carrying, names(r.HeldBack, "")))
	}
	if len(r.Leaving) > 0 && !r.LeavingHeld {
		if reason == "" {
			reason = anycastv1.ReasonNodesLeaving
		}
		parts = append(parts, fmt.Sprintf("%d nodes no longer qualify (a selector, an export policy or maxPrefixes changed) and withdraw as maxWithdrawn lets them (%s)",
			len(r.Leaving), names(r.Leaving, "")))
	}
	if len(r.Withdrawn) > 0 {
		if reason == "" {
			reason = anycastv1.ReasonNodesWithdrawn
		}
		parts = append(parts, fmt.Sprintf("withdrawn on %d of %d eligible nodes (%s)", len(r.Withdrawn), len(r.Eligible), names(r.Withdrawn, "")))
	}
	for _, d := range r.Denials {
		if reason == "" {
			reason = d.Reason
		}
		parts = append(parts, d.rule.message(d))
	}
	if reason == "" {
		return "", ""
	}
	return reason, capitalize(strings.Join(parts, "; "))
}

func prefixReadiness(r *PrefixReport, stallReason, stallMsg string) (metav1.ConditionStatus, string, string) {
	eligible := len(r.Eligible)
	switch {
	case stallReason != "":
		// The current spec is not in effect, whatever the last plan still announces.
		if len(r.Announcing) > 0 {
			stallMsg += fmt.Sprintf(" Still announced from %d nodes by the last plan.", len(r.Announcing))
		}
		return metav1.ConditionFalse, stallReason, stallMsg
	case eligible == 0:
		return metav1.ConditionFalse, anycastv1.ReasonNoEligibleNodes, "No node is selected by the session claims and the nodeSelector"
	case len(r.Announcing) > 0:
		return metav1.ConditionTrue, anycastv1.ReasonAnnounced, fmt.Sprintf("Announced from %d of %d eligible nodes", len(r.Announcing), eligible)
	case len(r.Awaiting) > 0:
		return metav1.ConditionFalse, anycastv1.ReasonAwaitingAgents, fmt.Sprintf("Not announced yet: waiting for the agents of %s", names(r.Awaiting, "node"))
	case r.Unplanned == eligible:
		return metav1.ConditionFalse, anycastv1.ReasonExportDenied, "Not announced: no session of the claims may carry the prefixes (exportPolicy)"
	default:
		return metav1.ConditionFalse, anycastv1.ReasonNotAnnounced, fmt.Sprintf("Withdrawn on every eligible node (%s)", names(r.Withdrawn, ""))
	}
}

// ClaimStatus is the status a BGPSessionClaim should have.
func ClaimStatus(c *anycastv1.BGPSessionClaim, r *ClaimReport, now metav1.Time) anycastv1.BGPSessionClaimStatus {
	st := *c.Status.DeepCopy()
	gen := c.Generation
	st.ObservedGeneration = gen
	st.BoundNodes = r.BoundNodes
	st.EstablishedSessions = r.Established
	st.TotalSessions = r.Total
	st.Sessions = r.Sessions
	st.Provisioning = r.Provisioning
	if len(st.Provisioning) > MaxSessionsInStatus {
		st.Provisioning = st.Provisioning[:MaxSessionsInStatus]
	}
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen, LastTransitionTime: now})
	}
	failed, pending := provisioningSummary(r.Provisioning)

	if r.BoundNodes > 0 {
		set(anycastv1.ConditionBound, metav1.ConditionTrue, anycastv1.ReasonNodesSelected, fmt.Sprintf("Selects %d nodes", r.BoundNodes))
	} else {
		set(anycastv1.ConditionBound, metav1.ConditionFalse, anycastv1.ReasonNoNodesSelected, "spec.nodeSelector selects no node")
	}
	var stallReason, stallMsg string
	switch {
	case r.InvalidSelector != "":
		stallReason, stallMsg = "InvalidSelector", "spec.nodeSelector: "+r.InvalidSelector
	case len(r.MissingSecrets) > 0:
		stallReason, stallMsg = anycastv1.ReasonSecretNotFound,
			fmt.Sprintf("Secret key %s not found in the operator's namespace; create it", quoteAll(r.MissingSecrets))
	case failed != "":
		stallReason, stallMsg = anycastv1.ReasonProvisioningFailed, failed
	}
	if stallReason != "" {
		set(anycastv1.ConditionStalled, metav1.ConditionTrue, stallReason, stallMsg)
	} else {
		set(anycastv1.ConditionStalled, metav1.ConditionFalse, anycastv1.ReasonAsExpected, "")
	}
	if refused := refusedSessions(r); refused != "" {
		set(anycastv1.ConditionDegraded, metav1.ConditionTrue, anycastv1.ReasonSessionsRefused, refused)
	} else {
		set(anycastv1.ConditionDegraded, metav1.ConditionFalse, anycastv1.ReasonAsExpected, "")
	}
	if pending != "" && stallReason == "" {
		set(anycastv1.ConditionReconciling, metav1.ConditionTrue, anycastv1.ReasonProvisioning, pending)
	} else {
		set(anycastv1.ConditionReconciling, metav1.ConditionFalse, anycastv1.ReasonAsExpected, "")
	}
	switch {
	case stallReason != "":
		set(anycastv1.ConditionReady, metav1.ConditionFalse, stallReason, stallMsg)
	case r.BoundNodes == 0:
		set(anycastv1.ConditionReady, metav1.ConditionFalse, anycastv1.ReasonNoNodesSelected, "spec.nodeSelector selects no node")
	case pending != "":
		set(anycastv1.ConditionReady, metav1.ConditionFalse, anycastv1.ReasonProvisioning, pending)
	default:
		set(anycastv1.ConditionReady, metav1.ConditionTrue, anycastv1.ReasonNodesSelected,
			fmt.Sprintf("Sessions planned on %d nodes; %d of %d established", r.BoundNodes, r.Established, r.Total))
	}
	return st
}

// refusedSessions says which sessions the nodes' speakers do not run as configured, and why ("" when none).
func refusedSessions(r *ClaimReport) string {
	if r.Refused == 0 {
		return ""
	}
	var list []string
	for _, s := range r.Sessions {
		if s.LastError != "" {
			list = append(list, fmt.Sprintf("%s to %s: %s", s.Node, s.PeerAddress, s.LastError))
		}
	}
	msg := fmt.Sprintf("%d of %d sessions are not running as configured: %s", r.Refused, r.Total, strings.Join(firstN(list, 3), "; "))
	if len(list) > 3 {
		msg += fmt.Sprintf("; and %d more (see status.sessions)", len(list)-3)
	}
	return msg
}

// provisioningSummary says which nodes' provisioning failed (with their messages, which say what to do) and which
// are still under way.
func provisioningSummary(nodes []anycastv1.NodeProvisioningStatus) (failed, pending string) {
	var bad, waiting []string
	for _, n := range nodes {
		switch n.State {
		case anycastv1.ProvisioningError:
			bad = append(bad, fmt.Sprintf("%s: %s (%s)", n.Node, n.Message, n.Reason))
		case anycastv1.ProvisioningDiscovering, anycastv1.ProvisioningProvisioning:
			waiting = append(waiting, n.Node)
		}
	}
	if len(bad) > 0 {
		failed = fmt.Sprintf("Provisioning failed on %d of %d nodes: %s", len(bad), len(nodes), strings.Join(firstN(bad, 3), "; "))
		if len(bad) > 3 {
			failed += fmt.Sprintf("; and %d more (see status.provisioning)", len(bad)-3)
		}
	}
	if len(waiting) > 0 {
		pending = fmt.Sprintf("Sessions are being provisioned on %s", names(waiting, "node"))
	}
	return failed, pending
}

func firstN(list []string, n int) []string { return list[:min(n, len(list))] }

// PolicyStatus is the status a HealthPolicy should have.
func PolicyStatus(hp *anycastv1.HealthPolicy, r *PolicyReport, now metav1.Time) anycastv1.HealthPolicyStatus {
	st := *hp.Status.DeepCopy()
	gen := hp.Generation
	st.ObservedGeneration = gen
	st.Prefixes = r.Prefixes
	st.Nodes = r.Nodes
	st.UnhealthyNodes = r.Unhealthy
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen, LastTransitionTime: now})
	}
	set(anycastv1.ConditionStalled, metav1.ConditionFalse, anycastv1.ReasonAsExpected, "")
	set(anycastv1.ConditionReconciling, metav1.ConditionFalse, anycastv1.ReasonAsExpected, "")
	if r.Prefixes > 0 {
		set(anycastv1.ConditionReady, metav1.ConditionTrue, anycastv1.ReasonInUse,
			fmt.Sprintf("Used by %d AnycastPrefixes on %d nodes; %d unhealthy", r.Prefixes, r.Nodes, r.Unhealthy))
	} else {
		set(anycastv1.ConditionReady, metav1.ConditionTrue, anycastv1.ReasonUnused, "Valid; no AnycastPrefix uses this policy yet")
	}
	return st
}

// names quotes up to maxNamesInMessage names and says how many more there are.
func names(list []string, noun string) string {
	shown := list
	if len(shown) > maxNamesInMessage {
		shown = shown[:maxNamesInMessage]
	}
	s := strings.Join(shown, ", ")
	if more := len(list) - len(shown); more > 0 {
		s += fmt.Sprintf(" and %d more", more)
	}
	if noun != "" {
		if len(list) == 1 {
			return noun + " " + s
		}
		return noun + "s " + s
	}
	return s
}

func quoteAll(list []string) string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
