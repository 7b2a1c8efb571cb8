package agent

import (
	"context"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/dampening"
	"github.com/anycast-operator/anycast-operator/internal/health"
)

// policyRun probes one HealthPolicy's checks every interval and keeps their rise/fall state.
type policyRun struct {
	name     string
	spec     anycastv1.HealthPolicySpec
	settings dampening.Settings
	checks   []*dampening.Check
	health   dampening.Health
	last     []health.Result
	stop     context.CancelFunc
}

// policyResult is one probe round of a policy.
type policyResult struct {
	run     *policyRun
	results []health.Result
}

// startPolicy starts probing: a first round at once, then one every interval.
func (a *Agent) startPolicy(ctx context.Context, name string, spec anycastv1.HealthPolicySpec) *policyRun {
	s := dampening.SettingsFor(&spec)
	probes := make([]health.Named, 0, len(spec.Checks))
	run := &policyRun{name: name, spec: *spec.DeepCopy(), settings: s}
	for _, c := range spec.Checks {
		p, err := health.New(c, health.Node{Address: a.cfg.LocalAddress, Endpoints: a.cfg.Endpoints})
		if err != nil {
			p = broken{err} // the check fails with its reason in status rather than silencing the whole policy
		}
		probes = append(probes, health.Named{Name: c.Name, Probe: p, Timeout: s.Timeout})
		run.checks = append(run.checks, dampening.NewCheck(s.Rise, s.Fall))
	}
	ctx, run.stop = context.WithCancel(ctx)
	go func() {
		ticker := a.clock.NewTicker(s.Interval)
		defer ticker.Stop()
		for {
			results := a.runner.RunAll(ctx, probes)
			select {
			case a.results <- policyResult{run: run, results: results}:
			case <-ctx.Done():
				return
			}
			select {
			case <-ticker.C():
			case <-ctx.Done():
				return
			}
		}
	}()
	a.log.Info("Probing", "policy", name, "checks", len(probes), "interval", s.Interval.String())
	return run
}

// broken is a check that cannot run; every probe fails with the reason.
type broken struct{ err error }

func (b broken) Probe(context.Context) error { return b.err }

// observe records a probe round and updates the policy's verdict.
func (a *Agent) observe(r policyResult) {
	if a.policies[r.run.name] != r.run {
		return // the policy changed while the round ran
	}
	states := make([]anycastv1.CheckState, len(r.results))
	for i, res := range r.results {
		a.metrics.probe(r.run.name, r.run.spec.Checks[i].Name, res.Passed, res.Latency.Seconds())
		before := r.run.checks[i].State()
		states[i] = r.run.checks[i].Observe(res.Passed)
		if states[i] != before {
			a.dirty = true // a check's state is in status
		}
	}
	before := r.run.health
	r.run.health = dampening.Combine(r.run.settings.Mode, states)
	r.run.last = r.results
	if r.run.health != before {
		a.log.Info("Health changed", "policy", r.run.name, "from", before.String(), "to", r.run.health.String())
	}
}
