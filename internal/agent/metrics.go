package agent

import (
	"net/http"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/promtext"
)

// The agent's metrics, on a registry of its own (no global state): what its node announces, why, its sessions and
// checks, and how fast decisions reach the speaker, with the process's CPU, memory and goroutines. Every label is
// bounded by the node's spec (claims, peers, prefixes, policies, checks) or by an enum (states, reasons); never an
// error text or a time.
type metrics struct {
	reg *promtext.Registry

	sessionUp     *promtext.GaugeVec
	sessionState  *promtext.GaugeVec
	prefixState   *promtext.GaugeVec
	transitions   *promtext.CounterVec
	checkUp       *promtext.GaugeVec
	checkDuration *promtext.HistogramVec
	checkFailures *promtext.CounterVec
	applyLatency  *promtext.HistogramVec
	speakerErrors *promtext.CounterVec
	permitHeld    *promtext.GaugeVec
	statusWrites  *promtext.CounterVec
}

func newMetrics() *metrics {
	r := promtext.NewRegistry()
	m := &metrics{reg: r}
	m.sessionUp = promtext.NewGaugeVec(r, "anycast_agent_bgp_session_up",
		"1 while the BGP session to the peer is Established, 0 otherwise.", "claim", "peer")
	m.sessionState = promtext.NewGaugeVec(r, "anycast_agent_bgp_session_state",
		"The BGP session's state: 1 for the current one (Idle, Connect, Active, OpenSent, OpenConfirm, Established, Unknown).", "claim", "peer", "state")
	m.prefixState = promtext.NewGaugeVec(r, "anycast_agent_prefix_state",
		"What the router was told of the prefix from this node: 1 for the current state (Announced, Withdrawn, Deprefered, Pending).", "prefix", "anycastprefix", "state")
	m.transitions = promtext.NewCounterVec(r, "anycast_agent_prefix_transitions_total",
		"Changes of a prefix's state at the router, by new state and cause.", "prefix", "anycastprefix", "to", "reason")
	m.checkUp = promtext.NewGaugeVec(r, "anycast_agent_check_up",
		"The health check's state after rise/fall: 1 Passing, 0 Failing, -1 Unknown.", "policy", "check")
	m.checkDuration = promtext.NewHistogramVec(r, "anycast_agent_check_duration_seconds", "How long each probe of the health check took.",
		[]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}, "policy", "check")
	m.checkFailures = promtext.NewCounterVec(r, "anycast_agent_check_failures_total", "Failed probes of the health check.", "policy", "check")
	m.applyLatency = promtext.NewHistogramVec(r, "anycast_agent_decision_to_speaker_seconds",
		"From a decision to the speaker holding it (announce, withdraw, deprefer, session change).",
		[]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30})
	m.speakerErrors = promtext.NewCounterVec(r, "anycast_agent_speaker_errors_total",
		"Applies the speaker did not carry out in full (see the NodeAnnouncement's Ready condition).")
	m.permitHeld = promtext.NewGaugeVec(r, "anycast_agent_permit_held",
		"1 while the node holds the AnycastPrefix's withdrawal permit (maxWithdrawn).", "anycastprefix")
	m.statusWrites = promtext.NewCounterVec(r, "anycast_agent_status_writes_total",
		"Writes of the NodeAnnouncement's status, by result (ok, error).", "result")
	promtext.AddProcessMetrics(r)
	return m
}

// handler serves the metrics.
func (m *metrics) handler() http.Handler { return m.reg.Handler() }

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
			m.prefixState.Set(boolValue(p.State == s), string(p.Prefix), sources[string(p.Prefix)], string(s))
		}
	}
	m.sessionUp.Reset()
	m.sessionState.Reset()
	for _, s := range st.Sessions {
		m.sessionUp.Set(boolValue(s.State == anycastv1.SessionEstablished), string(s.Claim), s.PeerAddress)
		for _, x := range sessionStates {
			m.sessionState.Set(boolValue(s.State == x), string(s.Claim), s.PeerAddress, string(x))
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
		m.checkUp.Set(v, string(c.Policy), c.Name)
	}
	m.permitHeld.Reset()
	for _, p := range st.Permits {
		m.permitHeld.Set(1, p)
	}
}

// transition counts a prefix's change of state at the router.
func (m *metrics) transition(prefix, source string, to anycastv1.PrefixState, reason string) {
	m.transitions.Inc(prefix, source, string(to), reason)
}

// probe records one probe of a check.
func (m *metrics) probe(policy, check string, passed bool, seconds float64) {
	m.checkDuration.Observe(seconds, policy, check)
	if !passed {
		m.checkFailures.Inc(policy, check)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
