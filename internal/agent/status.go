package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
)

// Reasons and condition types of the agent's status.
const (
	// ReasonAgentRunning: the speaker holds everything the decisions ask for.
	ReasonAgentRunning = "AgentRunning"
	// ReasonSpeakerError: the speaker refused part of what was asked (a session, a route, a configuration).
	ReasonSpeakerError     = "SpeakerError"
	ReasonSpeakerRecovered = "SpeakerRecovered"
	// ReasonApplying: the speaker has not answered yet.
	ReasonApplying = "Applying"
	// Prefix reasons when the router was not told what was decided.
	ReasonAnnounceFailed = "AnnounceFailed"
	ReasonWithdrawFailed = "WithdrawFailed"
	ReasonUpdateFailed   = "UpdateFailed"
	// Degraded reasons.
	ReasonNoNextHop  = "NoNextHop"
	ReasonAsExpected = "AsExpected"
)

// reportedPrefix is what the status says of a prefix: what the router was told, which lags the decision while the
// speaker applies it and differs from it when the speaker failed.
type reportedPrefix struct {
	state   anycastv1.PrefixState
	reason  string
	since   time.Time
	message string
}

// report decides what the status says of one prefix, from its decision and the speaker's last report. Only the
// speaker's report moves a prefix between routed (Announced, Deprefered) and not (Withdrawn, Pending): a permit is
// not reported released while the route is still out, and a route is not reported back before the router has it.
func (a *Agent) report(pfx netip.Prefix, run *prefixRun, now time.Time) reportedPrefix {
	d := run.last
	prev := run.reported
	if a.held == nil && a.delegated {
		return reportedPrefix{state: d.State, reason: d.Reason, since: d.Since}
	}
	var held *speaker.Route
	applied := false // the report answers the latest request
	var failure string
	if a.held != nil {
		if i := slices.IndexFunc(a.held.Held.Routes, func(r speaker.Route) bool { return r.Prefix == pfx }); i >= 0 {
			held = &a.held.Held.Routes[i]
		}
		applied = a.held.seq == a.requested.seq
		failure = a.held.RouteErrors[pfx]
		if failure == "" && a.held.Err != nil {
			failure = a.held.Err.Error()
		}
	}
	hold := func(state anycastv1.PrefixState, failedReason string) reportedPrefix {
		r := reportedPrefix{state: state, reason: prev.reason, since: prev.since}
		if prev.state != state || r.since.IsZero() {
			r.since = now
		}
		if applied { // the speaker answered the latest request and still holds otherwise: it failed
			r.reason, r.message = failedReason, failure
		}
		if r.reason == "" {
			r.reason = ReasonApplying
		}
		return r
	}
	routed := d.State == anycastv1.PrefixAnnounced || d.State == anycastv1.PrefixDeprefered
	switch {
	case held != nil:
		state := anycastv1.PrefixAnnounced
		if held.Deprefered {
			state = anycastv1.PrefixDeprefered
		}
		if state == d.State {
			return reportedPrefix{state: d.State, reason: d.Reason, since: d.Since}
		}
		if routed {
			return hold(state, ReasonUpdateFailed)
		}
		return hold(state, ReasonWithdrawFailed)
	case !routed:
		return reportedPrefix{state: d.State, reason: d.Reason, since: d.Since}
	default:
		// Asked to be announced, not held: still Pending, or Withdrawn (also when the route was held and is gone).
		state := prev.state
		if state != anycastv1.PrefixPending {
			state = anycastv1.PrefixWithdrawn
		}
		if prev.state == "" {
			state = anycastv1.PrefixPending
		}
		return hold(state, ReasonAnnounceFailed)
	}
}

// buildStatus builds the status from what the speaker holds, the decisions, the checks and the sessions.
func (a *Agent) buildStatus() anycastv1.NodeAnnouncementStatus {
	now := a.clock.Now()
	st := anycastv1.NodeAnnouncementStatus{ObservedGeneration: a.spec.Generation, AgentVersion: a.cfg.Version}
	requests := map[string]bool{}
	out := map[string]bool{} // sources with a prefix withdrawn or deprefered at the router: their permits are held
	announced, failed := 0, 0
	for pfx, run := range a.prefixes {
		r := a.report(pfx, run, now)
		if r.state != run.reported.state && run.reported.state != "" {
			a.metrics.transition(pfx.String(), run.source, r.state, r.reason)
			a.recordTransition(pfx, run, run.reported, r)
		}
		run.reported = r
		st.Prefixes = append(st.Prefixes, anycastv1.NodePrefixStatus{Prefix: anycastv1.PlannedCIDR(pfx.String()), State: r.state, Since: ptrTime(r.since),
			Reason: r.reason, Message: truncate(r.message, 1024)})
		if run.last.WantPermit {
			requests[run.source] = true
		}
		switch r.state {
		case anycastv1.PrefixAnnounced:
			announced++
		case anycastv1.PrefixDeprefered:
			announced++
			out[run.source] = true
		case anycastv1.PrefixWithdrawn:
			out[run.source] = true
		}
		if r.message != "" {
			failed++
		}
	}
	slices.SortFunc(st.Prefixes, func(x, y anycastv1.NodePrefixStatus) int { return strings.Compare(string(x.Prefix), string(y.Prefix)) })
	for name, run := range a.policies {
		for i, c := range run.spec.Checks {
			cs := anycastv1.NodeCheckStatus{Policy: anycastv1.LocalObjectName(name), Name: c.Name, State: run.checks[i].State(),
				ConsecutiveFailures: int32(run.checks[i].ConsecutiveFailures())}
			if i < len(run.last) {
				r := run.last[i]
				cs.LastProbeTime = ptrTime(r.At)
				cs.Latency = &metav1.Duration{Duration: r.Latency}
				cs.LastError = r.Err
			}
			st.Checks = append(st.Checks, cs)
		}
	}
	slices.SortFunc(st.Checks, func(x, y anycastv1.NodeCheckStatus) int {
		return strings.Compare(string(x.Policy)+"/"+x.Name, string(y.Policy)+"/"+y.Name)
	})
	st.Sessions = a.sessionStatus(now)
	established := 0
	for _, s := range st.Sessions {
		if s.State == anycastv1.SessionEstablished {
			established++
		}
	}
	st.Provisioning = a.provisioningStatus()
	// A permit is held while the spec grants it, and while a prefix of its AnycastPrefix is still out at the router
	// (the manager counts it against maxWithdrawn until the agent reports it let it go).
	held := map[string]bool{}
	for _, p := range a.spec.Spec.Permits {
		held[p] = true
	}
	for source := range out {
		held[source] = true
	}
	for source := range held {
		st.Permits = append(st.Permits, source)
	}
	slices.Sort(st.Permits)
	for source := range requests {
		st.PermitRequests = append(st.PermitRequests, source)
	}
	slices.Sort(st.PermitRequests)
	st.Conditions = slices.Clone(a.lastStatus.Conditions)
	set := func(t string, s metav1.ConditionStatus, reason, msg string) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: truncate(msg, 32768),
			ObservedGeneration: a.spec.Generation, LastTransitionTime: metav1.NewTime(now)})
	}
	summary := fmt.Sprintf("%d of %d prefixes announced; %d of %d sessions established", announced, len(a.prefixes), established, len(st.Sessions))
	switch {
	case a.held != nil && a.held.seq == a.requested.seq && !a.held.OK():
		set(anycastv1.ConditionReady, metav1.ConditionFalse, ReasonSpeakerError, "The speaker did not apply everything: "+a.held.Error().Error()+"; "+summary)
	case len(a.agentErrors) > 0:
		set(anycastv1.ConditionReady, metav1.ConditionFalse, ReasonSpeakerError, sessionErrorSummary(a.agentErrors)+"; "+summary)
	case a.held == nil && !a.delegated:
		set(anycastv1.ConditionReady, metav1.ConditionFalse, ReasonApplying, "The speaker has not applied the announcements yet; "+summary)
	default:
		set(anycastv1.ConditionReady, metav1.ConditionTrue, ReasonAgentRunning, summary)
	}
	if msg := a.nextHopGaps(); msg != "" {
		set(anycastv1.ConditionDegraded, metav1.ConditionTrue, ReasonNoNextHop, msg)
	} else {
		set(anycastv1.ConditionDegraded, metav1.ConditionFalse, ReasonAsExpected, "")
	}
	return st
}

func sessionErrorSummary(errs map[string]string) string {
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range errs {
			if !yield(k) {
				return
			}
		}
	})
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, "session "+k+": "+errs[k])
	}
	return strings.Join(parts, "; ")
}

// nextHopGaps says which prefixes some sessions do not carry because the node has no address of the prefix's
// family to give as next hop ("" when none).
func (a *Agent) nextHopGaps() string {
	if a.delegated {
		return ""
	}
	st := a.requested.state
	var gaps []string
	for _, s := range st.Sessions {
		var missing []string
		for _, p := range st.Exports[s.Claim] {
			if !st.Carries(s, p) {
				missing = append(missing, p.String())
			}
		}
		if len(missing) > 0 {
			family, flag := "IPv6", "an IPv6 address (--node-addresses, or the Node's IPv6 InternalIP in status.hostIPs)"
			if s.PeerAddress.Is6() {
				family, flag = "IPv4", "an IPv4 address (--node-addresses)"
			}
			gaps = append(gaps, fmt.Sprintf("%s not sent to %s (claim %s): the node has no %s address to give as next hop; give the agent %s",
				strings.Join(missing, ", "), s.PeerAddress, s.Claim, family, flag))
		}
	}
	return strings.Join(gaps, "; ")
}

// fingerprint is the status without the values that change with every probe: those ride along with other writes
// but never cause one, so that a steady node, healthy or not, writes nothing.
func fingerprint(st anycastv1.NodeAnnouncementStatus) string {
	c := st.DeepCopy()
	for i := range c.Checks {
		c.Checks[i].LastProbeTime, c.Checks[i].Latency, c.Checks[i].LastError, c.Checks[i].ConsecutiveFailures = nil, nil, "", 0
	}
	return mustJSON(c)
}

// statusUpdate is a status for the writer.
type statusUpdate struct {
	name   string
	status anycastv1.NodeAnnouncementStatus
}

// writeStatus is the status writer's call, on its own goroutine.
func (a *Agent) writeStatus(ctx context.Context, u statusUpdate) error {
	if err := a.kube.applyStatus(ctx, u.name, &u.status); err != nil {
		a.metrics.statusWrites.Inc("error")
		a.log.V(1).Info("Status not written; retrying", "error", err.Error())
		return err
	}
	a.metrics.statusWrites.Inc("ok")
	return nil
}

// statusApplyBody is the server-side apply configuration of a NodeAnnouncement's status.
func statusApplyBody(name string, st *anycastv1.NodeAnnouncementStatus) ([]byte, error) {
	return json.Marshal(map[string]any{
		"apiVersion": anycastv1.GroupVersion.String(), "kind": "NodeAnnouncement",
		"metadata": map[string]any{"name": name}, "status": st,
	})
}

func ptrTime(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	m := metav1.NewTime(t)
	return &m
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

func jsonEqual(a, b any) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && string(ja) == string(jb)
}
