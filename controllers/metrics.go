package controllers

import (
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/anycast-operator/anycast-operator/internal/backend"
	"github.com/anycast-operator/anycast-operator/internal/plan"
)

// The manager's metrics, on controller-runtime's registry (its /metrics): per AnycastPrefix, where it stands across
// the cluster and how much of its budget is used; how long planning takes; what it writes and what fails. Labels
// are object names and enums, never an error text or a time.
type managerMetrics struct {
	prefixNodes  *prometheus.GaugeVec
	budget       *prometheus.GaugeVec
	budgetUsed   *prometheus.GaugeVec
	claimSession *prometheus.GaugeVec
	planDuration prometheus.Histogram
	writes       *prometheus.CounterVec
	applyErrors  *prometheus.CounterVec
}

var (
	registerOnce sync.Once
	shared       *managerMetrics
)

// managerMetricsOf returns the manager's metrics, registered once with controller-runtime's registry (a process
// runs one manager; tests that start several share them).
func managerMetricsOf() *managerMetrics {
	registerOnce.Do(func() {
		m := &managerMetrics{
			prefixNodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "anycast_prefix_nodes",
				Help: "Nodes of an AnycastPrefix by state: eligible, announcing, withdrawn, awaiting (agent not reported), held_back (want to withdraw, no budget), leaving."},
				[]string{"anycastprefix", "state"}),
			budget: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "anycast_prefix_budget",
				Help: "How many nodes may withdraw the AnycastPrefix at once (maxWithdrawn × nodes)."}, []string{"anycastprefix"}),
			budgetUsed: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "anycast_prefix_budget_used",
				Help: "Nodes that have withdrawn the AnycastPrefix (using its budget)."}, []string{"anycastprefix"}),
			claimSession: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "anycast_claim_sessions",
				Help: "BGP sessions of a claim across its nodes: total, established."}, []string{"claim", "state"}),
			planDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "anycast_plan_duration_seconds",
				Help: "How long one plan of the whole cluster takes.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
			writes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "anycast_api_writes_total",
				Help: "Writes the manager made, by kind and verb (create, update, delete)."}, []string{"kind", "verb"}),
			applyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "anycast_apply_errors_total",
				Help: "Writes the API server refused, by kind (see the objects' ApplyFailed condition)."}, []string{"kind"}),
		}
		metrics.Registry.MustRegister(m.prefixNodes, m.budget, m.budgetUsed, m.claimSession, m.planDuration, m.writes, m.applyErrors)
		// Series that exist before the first occurrence, so that rate() and alerts see them go from 0.
		m.applyErrors.WithLabelValues("NodeAnnouncement")
		m.writes.WithLabelValues("NodeAnnouncement", "create")
		shared = m
	})
	return shared
}

// countWrites records a Sync's writes by kind and verb.
func (m *managerMetrics) countWrites(w backend.Writes) {
	for kv, n := range w {
		kind, verb, _ := strings.Cut(kv, "/")
		m.writes.WithLabelValues(kind, verb).Add(float64(n))
	}
}

// observePlan records a plan: its duration and where every AnycastPrefix and claim stands.
func (m *managerMetrics) observePlan(out plan.Output, took time.Duration) {
	m.planDuration.Observe(took.Seconds())
	m.prefixNodes.Reset()
	m.budget.Reset()
	m.budgetUsed.Reset()
	for name, r := range out.Prefixes {
		for state, n := range map[string]int{"eligible": len(r.Eligible), "announcing": len(r.Announcing), "withdrawn": len(r.Withdrawn),
			"awaiting": len(r.Awaiting), "held_back": len(r.HeldBack), "leaving": len(r.Leaving)} {
			m.prefixNodes.WithLabelValues(name, state).Set(float64(n))
		}
		m.budget.WithLabelValues(name).Set(float64(r.Budget))
		m.budgetUsed.WithLabelValues(name).Set(float64(len(r.Withdrawn)))
	}
	m.claimSession.Reset()
	for name, r := range out.Claims {
		m.claimSession.WithLabelValues(name, "total").Set(float64(r.Total))
		m.claimSession.WithLabelValues(name, "established").Set(float64(r.Established))
	}
}
