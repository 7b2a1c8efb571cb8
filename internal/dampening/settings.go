// Package dampening decides, on one node, what to do with each prefix: from probe results through rise/fall
// thresholds and the Any/All mode to a health verdict, then through the dampening delays, onUnhealthy, drain and
// the withdrawal permit to a prefix state. Everything is pure: time comes in as an argument.
package dampening

import (
	"time"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// Settings are a HealthPolicy's decision parameters with the defaults applied.
type Settings struct {
	Mode                anycastv1.HealthMode
	Interval            time.Duration
	Timeout             time.Duration
	Rise, Fall          int
	WithdrawDelay       time.Duration
	ReannounceDelay     time.Duration
	MinAnnounceDuration time.Duration
	OnUnhealthy         anycastv1.UnhealthyAction
}

// SettingsFor applies the defaults of DESIGN.md §1 (those of NetActuate's controller) to a policy. A nil policy
// (a prefix without healthPolicyRef) gets the defaults, whose delays still apply to drains.
func SettingsFor(spec *anycastv1.HealthPolicySpec) Settings {
	s := Settings{
		Mode:                anycastv1.HealthModeAny,
		Interval:            mustDuration(anycastv1.DefaultInterval),
		Timeout:             mustDuration(anycastv1.DefaultTimeout),
		Rise:                anycastv1.DefaultRiseThreshold,
		Fall:                anycastv1.DefaultFallThreshold,
		WithdrawDelay:       mustDuration(anycastv1.DefaultWithdrawDelay),
		ReannounceDelay:     mustDuration(anycastv1.DefaultReannounceDelay),
		MinAnnounceDuration: mustDuration(anycastv1.DefaultMinAnnounceDuration),
		OnUnhealthy:         anycastv1.UnhealthyWithdraw,
	}
	if spec == nil {
		return s
	}
	if spec.Mode != "" {
		s.Mode = spec.Mode
	}
	if spec.Interval != nil {
		s.Interval = spec.Interval.Duration
	}
	if spec.Timeout != nil {
		s.Timeout = spec.Timeout.Duration
	}
	if spec.RiseThreshold != nil {
		s.Rise = int(*spec.RiseThreshold)
	}
	if spec.FallThreshold != nil {
		s.Fall = int(*spec.FallThreshold)
	}
	if d := spec.Dampening; d != nil {
		if d.WithdrawDelay != nil {
			s.WithdrawDelay = d.WithdrawDelay.Duration
		}
		if d.ReannounceDelay != nil {
			s.ReannounceDelay = d.ReannounceDelay.Duration
		}
		if d.MinAnnounceDuration != nil {
			s.MinAnnounceDuration = d.MinAnnounceDuration.Duration
		}
	}
	if spec.OnUnhealthy != "" {
		s.OnUnhealthy = spec.OnUnhealthy
	}
	return s
}

func mustDuration(s string) time.Duration {
	d, err := time.ParseDuration(s)
	if err != nil {
		panic("dampening: bad default duration " + s) // constants of the API package: a programming error
	}
	return d
}
