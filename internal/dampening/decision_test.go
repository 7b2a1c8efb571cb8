package dampening

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

// defaults: withdrawDelay 30s, reannounceDelay 60s, minAnnounceDuration 5m.
var defaults = SettingsFor(nil)

func TestSettingsFor(t *testing.T) {
	spec := &anycastv1.HealthPolicySpec{
		Mode:          anycastv1.HealthModeAll,
		Interval:      &metav1.Duration{Duration: time.Second},
		FallThreshold: ptr.To[int32](5),
		Dampening:     &anycastv1.Dampening{WithdrawDelay: &metav1.Duration{}},
		OnUnhealthy:   anycastv1.UnhealthyDeprefer,
	}
	s := SettingsFor(spec)
	want := Settings{Mode: anycastv1.HealthModeAll, Interval: time.Second, Timeout: 2 * time.Second, Rise: 2, Fall: 5,
		WithdrawDelay: 0, ReannounceDelay: time.Minute, MinAnnounceDuration: 5 * time.Minute, OnUnhealthy: anycastv1.UnhealthyDeprefer}
	if s != want {
		t.Errorf("SettingsFor = %+v, want %+v", s, want)
	}
	if d := SettingsFor(nil); d.WithdrawDelay != 30*time.Second || d.ReannounceDelay != time.Minute || d.MinAnnounceDuration != 5*time.Minute {
		t.Errorf("defaults = %+v", d)
	}
}

func TestCheckRiseFall(t *testing.T) {
	c := NewCheck(2, 3)
	steps := []struct {
		pass bool
		want anycastv1.CheckState
	}{
		{true, anycastv1.CheckUnknown}, {true, anycastv1.CheckPassing}, // rise 2
		{false, anycastv1.CheckPassing}, {false, anycastv1.CheckPassing}, {true, anycastv1.CheckPassing}, // blip reset
		{false, anycastv1.CheckPassing}, {false, anycastv1.CheckPassing}, {false, anycastv1.CheckFailing}, // fall 3
		{true, anycastv1.CheckFailing}, {false, anycastv1.CheckFailing}, {true, anycastv1.CheckFailing}, {true, anycastv1.CheckPassing},
	}
	for i, s := range steps {
		if got := c.Observe(s.pass); got != s.want {
			t.Fatalf("step %d (pass=%v): %s, want %s", i, s.pass, got, s.want)
		}
	}
}

func TestCombine(t *testing.T) {
	P, F, U := anycastv1.CheckPassing, anycastv1.CheckFailing, anycastv1.CheckUnknown
	tests := []struct {
		mode   anycastv1.HealthMode
		states []anycastv1.CheckState
		want   Health
	}{
		{anycastv1.HealthModeAny, []anycastv1.CheckState{P, F}, Healthy},
		{anycastv1.HealthModeAny, []anycastv1.CheckState{F, F}, Unhealthy},
		{anycastv1.HealthModeAny, []anycastv1.CheckState{F, U}, HealthUnknown},
		{anycastv1.HealthModeAll, []anycastv1.CheckState{P, F}, Unhealthy},
		{anycastv1.HealthModeAll, []anycastv1.CheckState{P, P}, Healthy},
		{anycastv1.HealthModeAll, []anycastv1.CheckState{P, U}, HealthUnknown},
		{anycastv1.HealthModeAll, []anycastv1.CheckState{F, U}, Unhealthy},
		{anycastv1.HealthModeAny, nil, HealthUnknown},
	}
	for _, tc := range tests {
		if got := Combine(tc.mode, tc.states); got != tc.want {
			t.Errorf("Combine(%s, %v) = %s, want %s", tc.mode, tc.states, got, tc.want)
		}
	}
}

// step is one observation and the state expected after it.
type step struct {
	at     int // seconds after t0
	health Health
	drain  bool
	permit bool
	paused bool
	want   anycastv1.PrefixState
	reason string
}

func TestPrefixDecision(t *testing.T) {
	A, W, D, P := anycastv1.PrefixAnnounced, anycastv1.PrefixWithdrawn, anycastv1.PrefixDeprefered, anycastv1.PrefixPending
	deprefer := defaults
	deprefer.OnUnhealthy = anycastv1.UnhealthyDeprefer
	noMin := defaults
	noMin.MinAnnounceDuration = 0
	tests := []struct {
		name     string
		settings Settings
		steps    []step
	}{{
		name:     "waits for a verdict, announces at once when healthy",
		settings: defaults,
		steps: []step{
			{0, HealthUnknown, false, true, false, P, ReasonInitial},
			{5, Unhealthy, false, true, false, P, ReasonUnhealthy},
			{10, Healthy, false, true, false, A, ReasonHealthy},
		},
	}, {
		name:     "a blip shorter than withdrawDelay is absorbed",
		settings: noMin,
		steps: []step{
			{0, Healthy, false, true, false, A, ReasonHealthy},
			{400, Unhealthy, false, true, false, A, ReasonUnhealthyDelay},
			{429, Unhealthy, false, true, false, A, ReasonUnhealthyDelay},
			{429, Healthy, false, true, false, A, ReasonHealthy},
		},
	}, {
		name:     "withdraws after withdrawDelay, announces again after reannounceDelay",
		settings: defaults,
		steps: []step{
			{0, Healthy, false, true, false, A, ReasonHealthy},
			{400, Unhealthy, false, true, false, A, ReasonUnhealthyDelay},
			{430, Unhealthy, false, true, false, W, ReasonUnhealthy},
			{500, Healthy, false, true, false, W, ReasonRecovering},
			{559, Healthy, false, true, false, W, ReasonRecovering},
			{560, Healthy, false, true, false, A, ReasonHealthy},
		},
	}, {
		name:     "inside minAnnounceDuration an unhealthy node deprefers, then withdraws when it ends",
		settings: defaults,
		steps: []step{
			{0, Healthy, false, true, false, A, ReasonHealthy},
			{10, Unhealthy, false, true, false, A, ReasonUnhealthyDelay},
			{40, Unhealthy, false, true, false, D, ReasonMinAnnounce},
			{299, Unhealthy, false, true, false, D, ReasonMinAnnounce},
			{300, Unhealthy, false, true, false, W, ReasonUnhealthy},
		},
	}, {
		name:     "onUnhealthy Deprefer never withdraws; recovery waits reannounceDelay",
		settings: deprefer,
		steps: []step{
			{0, Healthy, false, true, false, A, ReasonHealthy},
			{400, Unhealthy, false, true, false, A, ReasonUnhealthyDelay},
			{430, Unhealthy, false, true, false, D, ReasonUnhealthy},
			{5000, Unhealthy, false, true, false, D, ReasonUnhealthy},
			{5001, Healthy, false, true, false, D, ReasonRecovering},
			{5061, Healthy, false, true, false, A, ReasonHealthy},
		},
	}, {
		name:     "drain deprefers at once and withdraws after withdrawDelay, even inside minAnnounceDuration",
		settings: defaults,
		steps: []step{
			{0, Healthy, false, true, false, A, ReasonHealthy},
			{10, Healthy, true, true, false, D, ReasonDraining},
			{39, Healthy, true, true, false, D, ReasonDraining},
			{40, Healthy, true, true, false, W, ReasonDrained},
			{100, Healthy, false, true, false, W, ReasonRecovering},
			{160, Healthy, false, true, false, A, ReasonHealthy},
		},
	}, {
		name:     "without a permit the node keeps announcing and asks for one",
		settings: noMin,
		steps: []step{
			{0, Healthy, false, false, false, A, ReasonHealthy},
			{10, Unhealthy, false, false, false, A, ReasonUnhealthyDelay},
			{40, Unhealthy, false, false, false, A, ReasonAwaitingPermit},
			{50, Unhealthy, false, true, false, W, ReasonUnhealthy},
		},
	}, {
		name:     "paused freezes the state",
		settings: noMin,
		steps: []step{
			{0, Healthy, false, true, false, A, ReasonHealthy},
			{10, Unhealthy, false, true, true, A, ReasonPaused},
			{100, Unhealthy, false, true, true, A, ReasonPaused},
			{101, Unhealthy, false, true, false, W, ReasonUnhealthy},
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPrefix(tc.settings, at(0))
			for i, s := range tc.steps {
				d := p.Step(Observation{Now: at(s.at), Health: s.health, Drain: s.drain, Permit: s.permit, Paused: s.paused})
				if d.State != s.want || d.Reason != s.reason {
					t.Fatalf("step %d at %ds: %s (%s), want %s (%s)", i, s.at, d.State, d.Reason, s.want, s.reason)
				}
			}
		})
	}
}

func TestWakeIsTheNextTimer(t *testing.T) {
	p := NewPrefix(defaults, at(0))
	p.Step(Observation{Now: at(0), Health: Healthy, Permit: true})
	d := p.Step(Observation{Now: at(400), Health: Unhealthy, Permit: true})
	if !d.Wake.Equal(at(430)) {
		t.Errorf("wake = %v, want withdrawDelay after the failure (%v)", d.Wake, at(430))
	}
	d = p.Step(Observation{Now: d.Wake, Health: Unhealthy, Permit: true})
	if d.State != anycastv1.PrefixWithdrawn {
		t.Errorf("at the wake time: %s", d.State)
	}
}

// leaveStep is one observation of a leaving prefix and the decision expected after it.
type leaveStep struct {
	at              int
	health          Health
	leaving, permit bool
	want            anycastv1.PrefixState
	reason          string
	wantPermit      bool
}

func TestLeaving(t *testing.T) {
	A, W, P := anycastv1.PrefixAnnounced, anycastv1.PrefixWithdrawn, anycastv1.PrefixPending
	tests := []struct {
		name  string
		steps []leaveStep
	}{
		{"a healthy node leaving withdraws at once with a permit", []leaveStep{
			{0, Healthy, false, true, A, ReasonHealthy, false},
			{10, Healthy, true, true, W, ReasonLeaving, false},
			{20, Healthy, true, true, W, ReasonLeaving, false}, // and stays out, healthy or not
		}},
		{"without a permit it keeps announcing and asks for one", []leaveStep{
			{0, Healthy, false, false, A, ReasonHealthy, false},
			{10, Healthy, true, false, A, ReasonAwaitingPermit, true},
			{20, Healthy, true, true, W, ReasonLeaving, false},
		}},
		{"a prefix never announced stays pending", []leaveStep{
			{0, HealthUnknown, true, false, P, ReasonLeaving, false},
			{10, Healthy, true, false, P, ReasonLeaving, false},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPrefix(defaults, at(0))
			for i, s := range tc.steps {
				d := p.Step(Observation{Now: at(s.at), Health: s.health, Leaving: s.leaving, Permit: s.permit})
				if d.State != s.want || d.Reason != s.reason || d.WantPermit != s.wantPermit {
					t.Fatalf("step %d: %s %s permit %v, want %s %s permit %v", i, d.State, d.Reason, d.WantPermit, s.want, s.reason, s.wantPermit)
				}
			}
		})
	}
}
