package agent

import (
	"fmt"
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/dampening"
)

// recordTransition records an event, on the node's NodeAnnouncement, for a prefix's change at the router, with the
// cause in words. Notes repeat word for word when the cause does (the same check failing the same way), so that a
// flapping check aggregates into a series instead of flooding the API server (events.go).
func (a *Agent) recordTransition(pfx netip.Prefix, run *prefixRun, from, to reportedPrefix) {
	node := a.cfg.NodeName
	eventType, reason, note := corev1.EventTypeNormal, "", ""
	switch to.state {
	case anycastv1.PrefixWithdrawn:
		eventType, reason = corev1.EventTypeWarning, "Withdrawn"
		note = fmt.Sprintf("Withdrew %s from %s: %s", pfx, node, a.cause(run, to.reason))
	case anycastv1.PrefixDeprefered:
		eventType, reason = corev1.EventTypeWarning, "Deprefered"
		note = fmt.Sprintf("Deprefered %s on %s: %s", pfx, node, a.cause(run, to.reason))
	case anycastv1.PrefixAnnounced:
		reason = "Announced"
		switch from.state {
		case anycastv1.PrefixWithdrawn:
			note = fmt.Sprintf("Announced %s again from %s after %s healthy", pfx, node, run.decision.Settings().ReannounceDelay)
		case anycastv1.PrefixDeprefered:
			note = fmt.Sprintf("Announced %s from %s at full preference again: %s", pfx, node, a.cause(run, to.reason))
		default:
			note = fmt.Sprintf("Announced %s from %s: %s", pfx, node, a.cause(run, to.reason))
		}
	case anycastv1.PrefixPending:
		reason = "Pending"
		note = fmt.Sprintf("%s is not announced from %s: %s", pfx, node, a.cause(run, to.reason))
	}
	if to.message != "" {
		note += " (the speaker: " + to.message + ")"
	}
	a.events.record(eventType, reason, "Announce", note)
}

// cause says in words why a prefix is where it is.
func (a *Agent) cause(run *prefixRun, reason string) string {
	switch reason {
	case dampening.ReasonUnhealthy, dampening.ReasonMinAnnounce, dampening.ReasonUnhealthyDelay:
		what := a.failingChecks(run.policy)
		if reason == dampening.ReasonMinAnnounce {
			return what + "; deprefered until minAnnounceDuration has passed"
		}
		return what
	case dampening.ReasonHealthy:
		return "healthy"
	case dampening.ReasonDraining:
		return "node draining"
	case dampening.ReasonDrained:
		return "node drained"
	case dampening.ReasonLeaving:
		return "the node no longer qualifies for AnycastPrefix " + run.source
	case dampening.ReasonPermitRevoked:
		return "its withdrawal permit (maxWithdrawn) was taken back"
	case dampening.ReasonAwaitingPermit:
		return "it would withdraw, but maxWithdrawn has no permit for it now"
	case dampening.ReasonPaused:
		return "paused"
	case ReasonAnnounceFailed, ReasonWithdrawFailed, ReasonUpdateFailed:
		return "the speaker did not carry out the decision"
	}
	return strings.ToLower(reason)
}

// failingChecks names the failing checks of a policy, with how often they failed and their last error.
func (a *Agent) failingChecks(policy string) string {
	p := a.policies[policy]
	if p == nil {
		return "unhealthy"
	}
	var parts []string
	for i, c := range p.spec.Checks {
		if p.checks[i].State() != anycastv1.CheckFailing {
			continue
		}
		s := fmt.Sprintf("check %s failed %d times", c.Name, p.settings.Fall)
		if i < len(p.last) && p.last[i].Err != "" {
			s += " (" + p.last[i].Err + ")"
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return "unhealthy"
	}
	return strings.Join(parts, ", ")
}
