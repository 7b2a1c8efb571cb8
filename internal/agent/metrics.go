package agent

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// The agent's metrics, on a registry of its own (no global state): what its node announces, why, its sessions and
// checks, and how fast decisions reach the speaker. Every label is bounded by the node's spec (claims, peers,
// prefixes, policies, checks) or by an enum (states, reasons); never an error text or a time.
type metrics struct {
	reg *prometheus.Registry

	sessionUp     *prometheus.GaugeVec
	sessionState  *prometheus.GaugeVec
	prefixState   *prometheus.GaugeVec
	transitions   *prometheus.CounterVec
	checkUp       *prometheus.GaugeVec
	checkDuration *prometheus.HistogramVec
	checkFailures *prometheus.CounterVec
	applyLatency  prometheus.Histogram
	speakerErrors prometheus.Counter
	permitHeld    *prometheus.GaugeVec
	statusWrites  *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.sessionUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "anycast_agent_bgp_session_up",
		Help: "1 while the BGP session to the peer is Established, 0 otherwise."}, []string{"claim", "peer"})
	m.sessionState = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "anycast_agent_bgp_session_state",
		Help: "The BGP session's state: 1 for the current one (Idle, Connect, Active, OpenSent, OpenConfirm, Established, Unknown)."}, []string{"claim", "peer", "state"})
	m.prefixState = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "anycast_agent_prefix_state",
		Help: "What the router was told of the prefix from this node: 1 for the current state (Announced, Withdrawn, Deprefered, Pending)."}, []string{"prefix", "anycastprefix", "state"})
	m.transitions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "anycast_agent_prefix_transitions_total",
		Help: "Changes of a prefix's state at the router, by new state and cause."}, []string{"prefix", "anycastprefix", "to", "reason"})
	m.checkUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "anycast_agent_check_up",
		Help: "The health check's state after rise/fall: 1 Passing, 0 Failing, -1 Unknown."}, []string{"policy", "check"})
	m.checkDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "anycast_agent_check_duration_seconds",
		Help: "How long each probe of the health check took.", Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}},
		[]string{"policy", "check"})
	m.checkFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "anycast_agent_check_failures_total",
		Help: "Failed probes of the health check."}, []string{"policy", "check"})
	m.applyLatency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "anycast_agent_decision_to_speaker_seconds",
		Help:    "From a decision to the speaker holding it (announce, withdraw, deprefer, session change).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30}})
	m.speakerErrors = prometheus.NewCounter(prometheus.CounterOpts{Name: "anycast_agent_speaker_errors_total",
		Help: "Applies the speaker did not carry out in full (see the NodeAnnouncement's Ready condition)."})
	m.permitHeld = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "anycast_agent_permit_held",
		Help: "1 while the node holds the AnycastPrefix's withdrawal permit (maxWithdrawn)."}, []string{"anycastprefix"})
	m.statusWrites = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "anycast_agent_status_writes_total",
		Help: "Writes of the NodeAnnouncement's status, by result (ok, error)."}, []string{"result"})
	m.reg.MustRegister(m.sessionUp, m.sessionState, m.prefixState, m.transitions, m.checkUp, m.checkDuration, m.checkFailures,
		m.applyLatency, m.speakerErrors, m.permitHeld, m.statusWrites,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// handler serves the metrics.
func (m *metrics) handler() http.Handler { return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}) }

var (
	prefixStates  = []anycastv1.PrefixState{anycastv1.PrefixAnnounced, anycastv1.PrefixWithdrawn, anycastv1.PrefixDeprefered, anycastv1.PrefixPending}
	sessionStates = []anycastv1.SessionState{anycastv1.SessionIdle, anycastv1.SessionConnect, anycastv1.SessionActive, anycastv1.SessionOpenSent,
		anycastv1.SessionOpenConfirm, anycastv1.SessionEstablished, anycastv1.SessionUnknown}
)

// observeStatus makes the gauges say what the status says, and forgets the series of what left the spec.
func (m *metrics) observeStatus(st anycastv1.NodeAnnouncementStatus, sources map[string]string) {
	m.prefixState.Reset()
	for _, p := range st.Prefixes {
		for _, s := range prefixStates {
			m.prefixState.WithLabelValues(string(p.Prefix), sources[string(p.Prefix)], string(s)).Set(boolValue(p.State == s))
		}
	}
	m.sessionUp.Reset()
	m.sessionState.Reset()
	for _, s := range st.Sessions {
		m.sessionUp.WithLabelValues(string(s.Claim), s.PeerAddress).Set(boolValue(s.State == anycastv1.SessionEstablished))
		for _, x := range sessionStates {
			m.sessionState.WithLabelValues(string(s.Claim), s.PeerAddress, string(x)).Set(boolValue(s.State == x))
		}
	}
	m.checkUp.Reset()
	for _, c := range st.Checks {
		v := -1.0
		switch c.State {
		case anycastv1.CheckPassing:
			v = 1
		case anycastv1.CheckFailing:
			v = 0
		}
		m.checkUp.WithLabelValues(string(c.Policy), c.Name).Set(v)
	}
	m.permitHeld.Reset()
	for _, p := range st.Permits {
		m.permitHeld.WithLabelValues(p).Set(1)
	}
}

// transition counts a prefix's change of state at the router.
func (m *metrics) transition(prefix, source string, to anycastv1.PrefixState, reason string) {
	m.transitions.WithLabelValues(prefix, source, string(to), reason).Inc()
}

// probe records one probe of a check.
func (m *metrics) probe(policy, check string, passed bool, seconds float64) {
	m.checkDuration.WithLabelValues(policy, check).Observe(seconds)
	if !passed {
		m.checkFailures.WithLabelValues(policy, check).Inc()
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
