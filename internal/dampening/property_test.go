package dampening

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// transition is one state change in a simulated trace.
type transition struct {
	at       time.Time
	from, to anycastv1.PrefixState
	drain    bool
	reason   string
}

// trace is a simulated run of one prefix on one node; stateAt answers what the state was at a given time.
type trace struct {
	s           Settings
	transitions []transition
	// failingFrom: from this time every probe of every check fails until the end, with no drain.
	failingFrom time.Time
	end         time.Time
	// healths are the verdicts observed, in order.
	healths []healthAt
	log     string
}

type healthAt struct {
	at time.Time
	h  Health
}

// unhealthySince is when the verdict last turned Unhealthy at or before t (zero if it was not Unhealthy at t).
func (tr *trace) unhealthySince(t time.Time) time.Time {
	var since time.Time
	for _, x := range tr.healths {
		if x.at.After(t) {
			break
		}
		switch {
		case x.h != Unhealthy:
			since = time.Time{}
		case since.IsZero():
			since = x.at
		}
	}
	return since
}

func (tr *trace) stateAt(t time.Time) anycastv1.PrefixState {
	state := anycastv1.PrefixPending
	for _, x := range tr.transitions {
		if x.at.After(t) {
			break
		}
		state = x.to
	}
	return state
}

// simulate runs random probe results through Check, Combine and Prefix the way the agent does: a probe round every
// interval, each result arriving within the timeout, and a step at every wake time the decision asks for. It ends
// with a stretch in which every check fails, long enough to test the detection bound.
func simulate(seed uint64) *trace {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	ms := func(lo, hi int) time.Duration { return time.Duration(lo+r.IntN(hi-lo+1)) * time.Millisecond }
	s := Settings{
		Mode:                []anycastv1.HealthMode{anycastv1.HealthModeAny, anycastv1.HealthModeAll}[r.IntN(2)],
		Interval:            ms(100, 5000),
		Rise:                1 + r.IntN(5),
		Fall:                1 + r.IntN(5),
		WithdrawDelay:       ms(0, 60000),
		ReannounceDelay:     ms(0, 120000),
		MinAnnounceDuration: ms(0, 300000),
		OnUnhealthy:         []anycastv1.UnhealthyAction{anycastv1.UnhealthyWithdraw, anycastv1.UnhealthyDeprefer}[r.IntN(2)],
	}
	s.Timeout = time.Duration(1 + r.Int64N(int64(s.Interval)-1))
	checks := make([]*Check, 1+r.IntN(3))
	for i := range checks {
		checks[i] = NewCheck(s.Rise, s.Fall)
	}

	tr := &trace{s: s}
	p := NewPrefix(s, t0)
	prev := anycastv1.PrefixPending
	health, drain := HealthUnknown, false
	observe := func(now time.Time) Decision {
		d := p.Step(Observation{Now: now, Health: health, Drain: drain, Permit: true})
		tr.healths = append(tr.healths, healthAt{now, health})
		if d.State != prev {
			tr.transitions = append(tr.transitions, transition{at: now, from: prev, to: d.State, drain: drain, reason: d.Reason})
			tr.log += fmt.Sprintf("%8.1fs %s → %s (%s) health=%s drain=%v\n", now.Sub(t0).Seconds(), prev, d.State, d.Reason, health, drain)
			prev = d.State
		}
		return d
	}

	rounds := 200 + r.IntN(400)
	failRounds := s.Fall + 2 + int((s.WithdrawDelay+s.MinAnnounceDuration)/s.Interval) + 2
	failing := make([]bool, len(checks)) // each check alternates runs of passes and failures
	wake := time.Time{}
	for k := range rounds + failRounds {
		start := t0.Add(time.Duration(k) * s.Interval)
		finalStretch := k >= rounds
		if finalStretch && tr.failingFrom.IsZero() {
			tr.failingFrom = start
			if drain {
				drain = false
				wake = time.Time{}
				observe(start)
			}
		}
		// Timers due before this round's results.
		for !wake.IsZero() && wake.Before(start) {
			wake = observe(wake).Wake
		}
		if !finalStretch && r.IntN(60) == 0 {
			drain = !drain
			wake = observe(start).Wake
		}
		states := make([]anycastv1.CheckState, len(checks))
		for i, c := range checks {
			if r.IntN(8) == 0 {
				failing[i] = !failing[i]
			}
			passed := !failing[i] && r.IntN(20) != 0 // occasional single failures: blips
			if finalStretch {
				passed = false
			}
			states[i] = c.Observe(passed)
		}
		// Results arrive within the timeout; a timer due before they arrive fires first.
		arrival := start.Add(time.Duration(r.Int64N(int64(s.Timeout))))
		for !wake.IsZero() && wake.Before(arrival) {
			wake = observe(wake).Wake
		}
		health = Combine(s.Mode, states)
		wake = observe(arrival).Wake
	}
	tr.end = t0.Add(time.Duration(rounds+failRounds) * s.Interval)
	for !wake.IsZero() && !wake.After(tr.end) {
		wake = observe(wake).Wake
	}
	return tr
}

// checkTrace verifies the dampening guarantees on one trace.
func checkTrace(t *testing.T, seed uint64) {
	tr := simulate(seed)
	s := tr.s
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d, settings %+v: "+format+"\n%s", append([]any{seed, s}, append(args, tr.log)...)...)
	}
	var routeSince, withdrawnAt time.Time
	for _, x := range tr.transitions {
		routed := func(st anycastv1.PrefixState) bool {
			return st == anycastv1.PrefixAnnounced || st == anycastv1.PrefixDeprefered
		}
		switch {
		case !routed(x.from) && routed(x.to):
			// A re-announcement comes at least reannounceDelay after the withdrawal.
			if !withdrawnAt.IsZero() && x.at.Sub(withdrawnAt) < s.ReannounceDelay {
				fail("re-announced %v after the withdrawal at %v, reannounceDelay is %v", x.at.Sub(withdrawnAt), withdrawnAt.Sub(t0), s.ReannounceDelay)
			}
			routeSince = x.at
		case routed(x.from) && x.to == anycastv1.PrefixWithdrawn:
			withdrawnAt = x.at
			// A withdrawal for health waits minAnnounceDuration after the route appeared (drains may not).
			if x.reason != ReasonDrained && x.at.Sub(routeSince) < s.MinAnnounceDuration {
				fail("withdrawn %v after the route appeared, minAnnounceDuration is %v", x.at.Sub(routeSince), s.MinAnnounceDuration)
			}
		}
	}
	// A health action (withdraw or deprefer) comes at least withdrawDelay after the verdict turned unhealthy.
	for _, x := range tr.transitions {
		if x.from != anycastv1.PrefixAnnounced || x.drain || (x.to != anycastv1.PrefixWithdrawn && x.to != anycastv1.PrefixDeprefered) {
			continue
		}
		since := tr.unhealthySince(x.at)
		if since.IsZero() {
			fail("left Announced at %v for %s while the verdict was not Unhealthy", x.at.Sub(t0), x.reason)
		}
		if x.at.Sub(since) < s.WithdrawDelay {
			fail("left Announced %v after the verdict turned unhealthy, withdrawDelay is %v", x.at.Sub(since), s.WithdrawDelay)
		}
	}
	// A node failing continuously stops attracting traffic within interval × fall + timeout + withdrawDelay.
	bound := tr.failingFrom.Add(time.Duration(s.Fall)*s.Interval + s.Timeout + s.WithdrawDelay)
	if bound.After(tr.end) {
		fail("trace too short for the bound")
	}
	if st := tr.stateAt(bound); st == anycastv1.PrefixAnnounced {
		fail("still Announced at %v, %v after continuous failure began at %v", bound.Sub(t0), bound.Sub(tr.failingFrom), tr.failingFrom.Sub(t0))
	}
}

func TestDampeningProperties(t *testing.T) {
	for seed := range uint64(2000) {
		checkTrace(t, seed)
	}
}

func FuzzDampening(f *testing.F) {
	for _, seed := range []uint64{1, 42, 1 << 40, 0xdeadbeef} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, seed uint64) { checkTrace(t, seed) })
}
