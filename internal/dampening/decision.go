package dampening

import (
	"time"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// Reasons a prefix is in its state, as reported in NodeAnnouncement status.
const (
	ReasonInitial         = "WaitingForHealth" // Pending: no verdict yet
	ReasonHealthy         = "Healthy"
	ReasonUnhealthyDelay  = "UnhealthyWithinWithdrawDelay" // unhealthy, absorbed as a blip so far
	ReasonUnhealthy       = "Unhealthy"
	ReasonMinAnnounce     = "MinAnnounceDuration" // unhealthy, deprefered until minAnnounceDuration has passed
	ReasonRecovering      = "RecoveringWithinReannounceDelay"
	ReasonDraining        = "Draining"
	ReasonDrained         = "Drained"
	ReasonAwaitingPermit  = "AwaitingPermit" // wants to withdraw or deprefer; maxWithdrawn holds it back
	ReasonPermitRevoked   = "PermitRevoked"
	ReasonPaused          = "Paused"
	ReasonDrainedNotReady = "DrainedBeforeAnnounce"
	// ReasonLeaving: the node no longer qualifies for the prefix (a selector, an export policy or maxPrefixes
	// changed); it withdraws as soon as a permit allows, then the manager removes the prefix from its plan.
	ReasonLeaving = "Leaving"
)

// Prefix is the decision state of one prefix on one node. The zero value is not usable: use NewPrefix.
type Prefix struct {
	settings Settings

	state  anycastv1.PrefixState
	since  time.Time // when state was entered
	reason string

	health      Health
	healthSince time.Time
	draining    bool
	drainSince  time.Time // drain start, or drain end once it is lifted
	routeSince  time.Time // when the route last appeared (Announced or Deprefered from Pending or Withdrawn)
}

// NewPrefix returns a prefix in state Pending at now.
func NewPrefix(s Settings, now time.Time) *Prefix {
	return &Prefix{settings: s, state: anycastv1.PrefixPending, since: now, reason: ReasonInitial, healthSince: now}
}

// SetSettings changes the policy parameters (the HealthPolicy was edited); the state and its timers stay.
func (p *Prefix) SetSettings(s Settings) { p.settings = s }

// Decision is the outcome of one step.
type Decision struct {
	State  anycastv1.PrefixState
	Since  time.Time
	Reason string
	// WantPermit: the prefix would be withdrawn or deprefered but holds no permit.
	WantPermit bool
	// Wake is the earliest time the decision may change without a new observation (zero: none pending).
	Wake time.Time
}

// Step takes one observation (a probe round, a spec change or a timer) and returns the decision.
func (p *Prefix) Step(o Observation) Decision {
	if o.Health != p.health {
		p.health, p.healthSince = o.Health, o.Now
	}
	if o.Drain != p.draining {
		p.draining, p.drainSince = o.Drain, o.Now
	}
	if o.Paused {
		return p.decision(ReasonPaused, false, o.Now)
	}
	want, reason := p.want(o.Now)
	if o.Leaving {
		want, reason = p.leave()
	}
	wantPermit := false
	if needsPermit(p.state, want) && !o.Permit {
		// Held back by maxWithdrawn: keep attracting traffic and ask for a permit.
		want, reason, wantPermit = anycastv1.PrefixAnnounced, ReasonAwaitingPermit, true
		if p.state == anycastv1.PrefixPending {
			want = anycastv1.PrefixPending
		}
	} else if !o.Permit && (p.state == anycastv1.PrefixWithdrawn || p.state == anycastv1.PrefixDeprefered) && want != anycastv1.PrefixAnnounced {
		// Only a permit holder may stay out; the manager revokes only unused permits, so this is a safety net.
		want, reason, wantPermit = anycastv1.PrefixAnnounced, ReasonPermitRevoked, true
	}
	if want != p.state {
		if (want == anycastv1.PrefixAnnounced || want == anycastv1.PrefixDeprefered) &&
			(p.state == anycastv1.PrefixPending || p.state == anycastv1.PrefixWithdrawn) {
			p.routeSince = o.Now
		}
		p.state, p.since = want, o.Now
	}
	p.reason = reason
	return p.decision(reason, wantPermit, o.Now)
}

// needsPermit: leaving Announced for Withdrawn or Deprefered takes a permit.
func needsPermit(from, to anycastv1.PrefixState) bool {
	return from == anycastv1.PrefixAnnounced && (to == anycastv1.PrefixWithdrawn || to == anycastv1.PrefixDeprefered)
}

// leave is where a leaving prefix should be: withdrawn at once (with a permit), whatever the health; one never
// announced stays so.
func (p *Prefix) leave() (anycastv1.PrefixState, string) {
	if p.state == anycastv1.PrefixPending {
		return p.state, ReasonLeaving
	}
	return anycastv1.PrefixWithdrawn, ReasonLeaving
}

// want is where the prefix should be now, ignoring permits.
func (p *Prefix) want(now time.Time) (anycastv1.PrefixState, string) {
	s := p.settings
	cur := p.state
	routed := cur == anycastv1.PrefixAnnounced || cur == anycastv1.PrefixDeprefered
	switch {
	case p.draining:
		// Planned maintenance: deprefer at once (GRACEFUL_SHUTDOWN), withdraw after withdrawDelay, whatever the
		// health and minAnnounceDuration.
		switch {
		case !routed:
			return cur, ReasonDrainedNotReady
		case !now.Before(p.drainSince.Add(s.WithdrawDelay)):
			return anycastv1.PrefixWithdrawn, ReasonDrained
		default:
			return anycastv1.PrefixDeprefered, ReasonDraining
		}
	case p.health == Unhealthy:
		switch {
		case !routed:
			return cur, ReasonUnhealthy
		case now.Before(p.healthSince.Add(s.WithdrawDelay)):
			return cur, ReasonUnhealthyDelay
		case s.OnUnhealthy == anycastv1.UnhealthyDeprefer:
			return anycastv1.PrefixDeprefered, ReasonUnhealthy
		case now.Before(p.routeSince.Add(s.MinAnnounceDuration)):
			return anycastv1.PrefixDeprefered, ReasonMinAnnounce
		default:
			return anycastv1.PrefixWithdrawn, ReasonUnhealthy
		}
	case p.health == Healthy:
		stable := p.healthSince
		if p.drainSince.After(stable) {
			stable = p.drainSince // the drain was lifted after the node became healthy
		}
		switch {
		case cur == anycastv1.PrefixPending || cur == anycastv1.PrefixAnnounced:
			return anycastv1.PrefixAnnounced, ReasonHealthy
		case now.Before(stable.Add(s.ReannounceDelay)):
			return cur, ReasonRecovering
		default:
			return anycastv1.PrefixAnnounced, ReasonHealthy
		}
	default:
		if cur == anycastv1.PrefixPending {
			return cur, ReasonInitial
		}
		return cur, p.reason
	}
}

// decision reports the current state and when it may change on its own.
func (p *Prefix) decision(reason string, wantPermit bool, now time.Time) Decision {
	d := Decision{State: p.state, Since: p.since, Reason: reason, WantPermit: wantPermit}
	s := p.settings
	for _, t := range []time.Time{
		p.healthSince.Add(s.WithdrawDelay),
		p.routeSince.Add(s.MinAnnounceDuration),
		p.healthSince.Add(s.ReannounceDelay),
		p.drainSince.Add(s.WithdrawDelay),
		p.drainSince.Add(s.ReannounceDelay),
	} {
		if t.After(now) && (d.Wake.IsZero() || t.Before(d.Wake)) {
			d.Wake = t
		}
	}
	return d
}

// Settings returns the policy parameters the prefix decides with.
func (p *Prefix) Settings() Settings { return p.settings }
