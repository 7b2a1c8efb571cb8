package dampening

import (
	"time"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// Check turns one check's probe results into a state with rise/fall hysteresis: Unknown until rise consecutive
// passes (Passing) or fall consecutive failures (Failing); then it flips only after as many consecutive results
// the other way.
type Check struct {
	rise, fall       int
	passes, failures int
	state            anycastv1.CheckState
}

// NewCheck returns a check in state Unknown.
func NewCheck(rise, fall int) *Check {
	return &Check{rise: max(rise, 1), fall: max(fall, 1), state: anycastv1.CheckUnknown}
}

// Observe records one probe result and returns the check's state.
func (c *Check) Observe(passed bool) anycastv1.CheckState {
	if passed {
		c.passes++
		c.failures = 0
		if c.passes >= c.rise {
			c.state = anycastv1.CheckPassing
		}
	} else {
		c.failures++
		c.passes = 0
		if c.failures >= c.fall {
			c.state = anycastv1.CheckFailing
		}
	}
	return c.state
}

// State is the check's state.
func (c *Check) State() anycastv1.CheckState { return c.state }

// ConsecutiveFailures counts the failed probes since the last pass.
func (c *Check) ConsecutiveFailures() int { return c.failures }

// Health is a node's verdict for one policy.
type Health int

// Health verdicts.
const (
	HealthUnknown Health = iota
	Healthy
	Unhealthy
)

func (h Health) String() string {
	return [...]string{"Unknown", "Healthy", "Unhealthy"}[h]
}

// Combine reduces check states to a verdict. Any: healthy while any check passes, unhealthy when every check fails.
// All: unhealthy when any check fails, healthy when every check passes. Otherwise (checks still Unknown) Unknown.
func Combine(mode anycastv1.HealthMode, states []anycastv1.CheckState) Health {
	var passing, failing int
	for _, s := range states {
		switch s {
		case anycastv1.CheckPassing:
			passing++
		case anycastv1.CheckFailing:
			failing++
		}
	}
	switch {
	case len(states) == 0:
		return HealthUnknown
	case mode == anycastv1.HealthModeAll && failing > 0:
		return Unhealthy
	case mode == anycastv1.HealthModeAll && passing == len(states):
		return Healthy
	case mode != anycastv1.HealthModeAll && passing > 0:
		return Healthy
	case mode != anycastv1.HealthModeAll && failing == len(states):
		return Unhealthy
	}
	return HealthUnknown
}

// Observation is what the decision sees at one moment.
type Observation struct {
	Now    time.Time
	Health Health
	// Drain: the node is being drained (anycast.dev/drain).
	Drain bool
	// Permit: the node holds a withdrawal permit for the prefix (maxWithdrawn).
	Permit bool
	// Paused: the prefix is paused; its state is frozen.
	Paused bool
	// Leaving: the node no longer qualifies for the prefix; it withdraws it (with a permit) and keeps it withdrawn.
	Leaving bool
}
