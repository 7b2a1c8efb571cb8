// Package agent is the node daemon: it reads its node's NodeAnnouncement, probes the local service, decides per
// prefix (package dampening) and announces through a speaker.
//
// It is a decision loop and effectors. The loop owns the state (spec, probe results, dampening, permits) and
// computes what the speaker should hold and what status to report; it never makes a network call, so a slow or
// frozen API server delays no withdrawal and no re-announcement. Effectors carry the decisions out, each on its own
// goroutine with deadlines and retries (effector.go): the speaker applier, the status writer, the Lease renewer,
// the state directory; Secrets are watched. The status reports what the speaker holds, not what was decided.
package agent

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/dampening"
	"github.com/anycast-operator/anycast-operator/internal/health"
	"github.com/anycast-operator/anycast-operator/internal/provider/netactuate"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
)

// Config is what the agent needs to know about its node.
type Config struct {
	NodeName string
	// Namespace holds the referenced Secrets and the agent's Lease.
	Namespace string
	// LocalAddress is the node address BGP sessions start from: IPv4, or IPv6 on an IPv6-only node.
	LocalAddress netip.Addr
	// NodeAddresses are the node's other addresses (status.hostIPs). The first of each family other than
	// LocalAddress's is the source of the sessions of that family and the next hop of that family's prefixes on
	// sessions of the other family; without one, those prefixes are not sent on those sessions.
	NodeAddresses []netip.Addr
	Version       string
	// ProbeConcurrency bounds the probes running at once on the node.
	ProbeConcurrency int
	// LeaseDuration is the heartbeat's validity; the Lease is renewed every third of it.
	LeaseDuration time.Duration
	// SessionPoll is how often session states are read from the speaker.
	SessionPoll time.Duration
	// Endpoints answers serviceEndpoints checks (RunOnNode backs it with EndpointSlice watches).
	Endpoints health.EndpointsReady
	// NetActuateClient builds the client of a claim's NetActuate API (default netactuate.New); source, when set, is
	// the address calls come from (IP-based authentication).
	NetActuateClient func(apiURL, key string, source net.IP) (*netactuate.Client, error)
	// ProvisionRetry is the wait before looking again at sessions being provisioned, and the first retry after an
	// error (doubling to 5 minutes); ProvisionRecheck the wait between checks of Ready sessions.
	ProvisionRetry, ProvisionRecheck time.Duration
	// InterfaceAddrs adds the host's global unicast addresses to LocalAddress when finding the node's server at a
	// provider (the agent runs with hostNetwork).
	InterfaceAddrs bool
	// StateDir keeps the last NodeAnnouncement and its Secrets' values on the node ("": nothing is kept).
	StateDir string
	// ResumeAfter is how long a restarted agent waits for its NodeAnnouncement from the API server before it acts on
	// the one saved in StateDir.
	ResumeAfter time.Duration
	// SpeakerTimeout bounds one Apply of the speaker.
	SpeakerTimeout time.Duration
	// LivenessTimeout: /healthz fails when the decision loop has not turned for this long.
	LivenessTimeout time.Duration
	// StatusStaleAfter: /readyz fails when status could not be written for this long.
	StatusStaleAfter time.Duration
}

func (c *Config) defaults() {
	if c.ProbeConcurrency <= 0 {
		c.ProbeConcurrency = 8
	}
	if c.LeaseDuration <= 0 {
		c.LeaseDuration = 40 * time.Second
	}
	if c.SessionPoll <= 0 {
		c.SessionPoll = time.Second
	}
	if c.NetActuateClient == nil {
		c.NetActuateClient = netactuate.New
	}
	if c.ProvisionRetry <= 0 {
		c.ProvisionRetry = defaultProvisionRetry
	}
	if c.ProvisionRecheck <= 0 {
		c.ProvisionRecheck = defaultProvisionRecheck
	}
	if c.ResumeAfter <= 0 {
		c.ResumeAfter = 5 * time.Second
	}
	if c.SpeakerTimeout <= 0 {
		c.SpeakerTimeout = 30 * time.Second
	}
	if c.LivenessTimeout <= 0 {
		c.LivenessTimeout = 30 * time.Second
	}
	if c.StatusStaleAfter <= 0 {
		c.StatusStaleAfter = time.Minute
	}
}

// nodeAddress returns the node's address of a family: LocalAddress or the first of NodeAddresses.
func (c *Config) nodeAddress(v6 bool) netip.Addr {
	for _, a := range append([]netip.Addr{c.LocalAddress}, c.NodeAddresses...) {
		if a = speaker.Canonical(a); a.IsValid() && a.Is6() == v6 && !a.IsUnspecified() {
			return a
		}
	}
	return netip.Addr{}
}

// Agent runs on one node. Build it with New and call Run.
type Agent struct {
	cfg       Config
	kube      *kube // nil: no API server (tests of the loop alone)
	speaker   speaker.Speaker
	delegated bool // the cluster's BGP stack announces; the agent only decides and reports
	clock     clock.WithTicker
	runner    *health.Runner
	log       logr.Logger

	// Inputs of the loop.
	specs          latest[*anycastv1.NodeAnnouncement]
	results        chan policyResult
	provisioned    chan provisionResult
	reports        latest[applyReport]
	sessionStates  latest[[]speaker.SessionStatus]
	secretsChanged latest[struct{}]
	specSynced     atomic.Bool // a NodeAnnouncement came from the API server at least once

	// Effectors.
	applier *effector[applyRequest]
	status  *effector[statusUpdate]
	persist *effector[*savedState]
	events  *eventRecorder
	secrets *secretStore
	metrics *metrics

	alive atomic.Int64 // unix nanoseconds of the loop's last turn

	// Owned by Run's goroutine.
	saved        *savedState // what the state directory held at start
	spec         *anycastv1.NodeAnnouncement
	policies     map[string]*policyRun
	prefixes     map[netip.Prefix]*prefixRun
	provisioners map[string]*provisionRun
	provisioning map[string]anycastv1.ProvisioningStatus
	requested    applyRequest
	requestedAt  time.Time    // when requested was handed to the speaker
	held         *applyReport // the speaker's last report; nil before the first
	sessions     []speaker.SessionStatus
	sessionSince map[string]sessionSeen
	agentErrors  map[string]string // session key → why the agent could not ask for the session
	speakerError string            // of the last report, for events on a change
	lastStatus   anycastv1.NodeAnnouncementStatus
	sentStatus   string // fingerprint of the last status handed to the writer
	savedFP      string // fingerprint of the last state handed to the state directory
	// dirty: something the speaker or the status shows may have changed since they were last computed.
	dirty bool
}

// New returns an agent; spec updates are fed with Observe (RunOnNode watches the node's NodeAnnouncement).
func New(cfg Config, sp speaker.Speaker, clk clock.WithTicker, log logr.Logger) *Agent {
	return newAgent(cfg, nil, sp, clk, log)
}

func newAgent(cfg Config, k *kube, sp speaker.Speaker, clk clock.WithTicker, log logr.Logger) *Agent {
	cfg.defaults()
	_, delegated := sp.(speaker.Delegated)
	a := &Agent{
		cfg: cfg, kube: k, speaker: sp, delegated: delegated, clock: clk, log: log,
		runner:         health.NewRunner(clk, cfg.ProbeConcurrency),
		specs:          newLatest[*anycastv1.NodeAnnouncement](),
		results:        make(chan policyResult, 16),
		provisioned:    make(chan provisionResult, 16),
		reports:        newLatest[applyReport](),
		sessionStates:  newLatest[[]speaker.SessionStatus](),
		secretsChanged: newLatest[struct{}](),
		policies:       map[string]*policyRun{},
		prefixes:       map[netip.Prefix]*prefixRun{},
		provisioners:   map[string]*provisionRun{},
		provisioning:   map[string]anycastv1.ProvisioningStatus{},
		sessionSince:   map[string]sessionSeen{},
	}
	a.alive.Store(clk.Now().UnixNano())
	a.metrics = newMetrics()
	a.applier = newEffector("speaker", clk, cfg.SpeakerTimeout, 200*time.Millisecond, 5*time.Second, a.apply)
	// The status writer retries soon: when the API server answers again, status catches up within seconds.
	a.status = newEffector("status", clk, apiCallTimeout, 500*time.Millisecond, 5*time.Second, a.writeStatus)
	a.persist = newEffector("state directory", clk, 10*time.Second, time.Second, time.Minute, func(_ context.Context, st *savedState) error {
		return saveState(a.cfg.StateDir, st)
	})
	a.events = newEventRecorder(k, clk, cfg.NodeName, metav1.NamespaceDefault)
	switch saved, err := loadState(cfg.StateDir); {
	case err != nil:
		log.Error(err, "Ignoring the state directory")
	case saved != nil && saved.NodeAnnouncement != nil && saved.NodeAnnouncement.Name != cfg.NodeName:
		log.Error(nil, "Ignoring the state directory: it holds another node's NodeAnnouncement", "dir", cfg.StateDir, "node", saved.NodeAnnouncement.Name)
	default:
		a.saved = saved
	}
	var secrets map[string]map[string][]byte
	if a.saved != nil {
		secrets = a.saved.Secrets
	}
	a.secrets = newSecretStore(k, cfg.Namespace, secrets, func() { a.secretsChanged.put(struct{}{}) })
	return a
}

// Observe hands the agent the latest version of its NodeAnnouncement (nil: deleted). Only the latest counts.
func (a *Agent) Observe(na *anycastv1.NodeAnnouncement) { a.specs.put(na) }

// loopTick makes the loop turn at least this often, so that /healthz sees it alive.
const loopTick = time.Second

// Run runs the agent until ctx ends, then withdraws everything.
func (a *Agent) Run(ctx context.Context) error {
	ectx, stopEffectors := context.WithCancel(ctx)
	defer func() {
		for _, p := range a.policies {
			p.stop()
		}
		for _, p := range a.provisioners {
			p.cancel() // no wait: a run blocked in an API call ends with its context
		}
		stopEffectors()
		if err := a.speaker.Close(); err != nil {
			a.log.Error(err, "Closing the speaker")
		}
	}()
	go a.applier.run(ectx)
	if a.kube != nil {
		go a.status.run(ectx)
		go a.events.run(ectx)
		go a.renewLeases(ectx)
	}
	if a.cfg.StateDir != "" {
		go a.persist.run(ectx)
	}
	go a.pollSessions(ectx)

	wake := a.clock.NewTimer(time.Hour)
	defer wake.Stop()
	tick := a.clock.NewTicker(loopTick)
	defer tick.Stop()
	var resume <-chan time.Time
	if a.saved != nil && a.saved.NodeAnnouncement != nil {
		t := a.clock.NewTimer(a.cfg.ResumeAfter)
		defer t.Stop()
		resume = t.C()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case na := <-a.specs:
			resume = nil
			a.setSpec(ectx, na)
			a.dirty = true
		case <-resume:
			resume = nil
			a.log.Info("No NodeAnnouncement from the API server yet: resuming the one saved on the node", "generation", a.saved.NodeAnnouncement.Generation)
			a.setSpec(ectx, a.saved.NodeAnnouncement)
			a.dirty = true
		case r := <-a.results:
			a.observe(r)
		case r := <-a.provisioned:
			if a.provisioners[string(r.status.Claim)] == r.run && !jsonEqual(a.provisioning[string(r.status.Claim)], r.status) {
				a.provisioning[string(r.status.Claim)] = r.status
				a.dirty = true
			}
		case r := <-a.reports:
			a.takeReport(r)
		case s := <-a.sessionStates:
			if !jsonEqual(s, a.sessions) {
				a.sessions = s
				a.dirty = true
			}
		case <-a.secretsChanged:
			a.dirty = true
		case <-wake.C():
		case <-tick.C():
		}
		a.alive.Store(a.clock.Now().UnixNano())
		next := a.step()
		// Most probe rounds change nothing; then there is nothing to announce or report.
		if a.dirty {
			a.push()
			a.dirty = false
		}
		wake.Stop()
		if !next.IsZero() {
			wake.Reset(max(next.Sub(a.clock.Now()), time.Millisecond))
		} else {
			wake.Reset(time.Hour)
		}
	}
}

// prefixRun is one prefix's decision on this node, and what its status last said.
type prefixRun struct {
	source   string
	group    int // index in spec.Groups
	policy   string
	leaving  bool // the manager asks the node to withdraw it for good (GroupPrefix.Leaving)
	decision *dampening.Prefix
	last     dampening.Decision
	reported reportedPrefix
}

// setSpec takes a new NodeAnnouncement: probes start or stop with the policies, decisions appear and disappear
// with the prefixes. A deleted NodeAnnouncement (nil) changes nothing: the agent rides it out on the last spec
// until the manager writes it again, since deleting it is nobody's way of withdrawing a prefix (the manager never
// deletes the NodeAnnouncement of a Node that exists).
func (a *Agent) setSpec(ctx context.Context, na *anycastv1.NodeAnnouncement) {
	if na == nil {
		if a.spec != nil {
			a.log.Info("The NodeAnnouncement was deleted: keeping its last spec until the manager writes it again")
			return
		}
		na = &anycastv1.NodeAnnouncement{}
	}
	a.spec = na
	if na.Name != "" {
		a.events.about(na)
	}
	a.syncProvisioning(ctx, na)
	a.secrets.want(ctx, a.referencedSecrets(na))
	wanted := map[string]anycastv1.HealthPolicySpec{}
	for _, hp := range na.Spec.HealthPolicies {
		wanted[string(hp.Name)] = hp.Spec
	}
	for name, run := range a.policies {
		if spec, ok := wanted[name]; !ok || !jsonEqual(spec, run.spec) {
			run.stop()
			delete(a.policies, name)
		}
	}
	for name, spec := range wanted {
		if _, ok := a.policies[name]; !ok {
			a.policies[name] = a.startPolicy(ctx, name, spec)
		}
	}
	seen := map[netip.Prefix]bool{}
	now := a.clock.Now()
	for gi, g := range na.Spec.Groups {
		for _, gp := range g.Prefixes {
			pfx, err := netip.ParsePrefix(string(gp.Prefix))
			if err != nil || pfx.Bits() == 0 || pfx.Masked() != pfx {
				a.log.Error(err, "Refusing an invalid prefix", "prefix", gp.Prefix) // never a /0, never host bits
				continue
			}
			seen[pfx] = true
			run := a.prefixes[pfx]
			settings := dampening.SettingsFor(nil)
			if spec, ok := wanted[string(g.HealthPolicy)]; ok {
				settings = dampening.SettingsFor(&spec)
			}
			if run == nil {
				run = &prefixRun{decision: dampening.NewPrefix(settings, now)}
				a.prefixes[pfx] = run
			} else {
				// Another policy or edited settings: the prefix keeps its state, and the new verdict takes over
				// through the same rules (a withdrawal still needs its permit), so a changed reference withdraws
				// nothing by itself.
				run.decision.SetSettings(settings)
			}
			run.source, run.group, run.policy, run.leaving = gp.Source, gi, string(g.HealthPolicy), gp.Leaving
		}
	}
	for pfx := range a.prefixes {
		if !seen[pfx] {
			delete(a.prefixes, pfx)
		}
	}
}

// referencedSecrets are the Secrets the agent reads for a NodeAnnouncement: its providers' keys, and its peers' MD5
// passwords unless the cluster's BGP stack opens the sessions.
func (a *Agent) referencedSecrets(na *anycastv1.NodeAnnouncement) []string {
	var out []string
	for _, ns := range na.Spec.Sessions {
		if ns.Static != nil && !a.delegated {
			for _, p := range ns.Static.Peers {
				if p.PasswordSecretRef != nil && !slices.Contains(out, p.PasswordSecretRef.Name) {
					out = append(out, p.PasswordSecretRef.Name)
				}
			}
		}
		if ns.NetActuate != nil && ns.NetActuate.APIKeySecretRef != nil && !slices.Contains(out, ns.NetActuate.APIKeySecretRef.Name) {
			out = append(out, ns.NetActuate.APIKeySecretRef.Name)
		}
	}
	slices.Sort(out)
	return out
}

// step runs every decision with the current health, drain, permits and pause, and returns the next wake time.
func (a *Agent) step() time.Time {
	if a.spec == nil {
		return time.Time{}
	}
	now := a.clock.Now()
	var next time.Time
	for pfx, run := range a.prefixes {
		h := dampening.Healthy // a prefix without a health policy is announced unconditionally
		if run.policy != "" {
			h = dampening.HealthUnknown
			if p := a.policies[run.policy]; p != nil {
				h = p.health
			}
		}
		g := a.spec.Spec.Groups[run.group]
		d := run.decision.Step(dampening.Observation{
			Now: now, Health: h, Drain: a.spec.Spec.Drain, Paused: g.Paused, Leaving: run.leaving,
			Permit: slices.Contains(a.spec.Spec.Permits, run.source),
		})
		if d.State != run.last.State || d.Reason != run.last.Reason || d.WantPermit != run.last.WantPermit {
			a.dirty = true
		}
		if d.State != run.last.State {
			a.log.Info("Prefix decision changed", "prefix", pfx, "source", run.source, "from", run.last.State, "to", d.State, "reason", d.Reason)
		}
		run.last = d
		if !d.Wake.IsZero() && (next.IsZero() || d.Wake.Before(next)) {
			next = d.Wake
		}
	}
	return next
}

// push hands the effectors what changed: the speaker state, the status, the state directory.
func (a *Agent) push() {
	if a.spec == nil {
		return
	}
	if st := a.desired(); a.requested.seq == 0 || !st.Equal(a.requested.state) {
		a.requested = applyRequest{seq: a.requested.seq + 1, state: st}
		a.requestedAt = a.clock.Now()
		a.applier.put(a.requested)
	}
	st := a.buildStatus()
	sources := make(map[string]string, len(a.prefixes))
	for pfx, run := range a.prefixes {
		sources[pfx.String()] = run.source
	}
	a.metrics.observeStatus(st, sources)
	if a.kube != nil && a.spec.Name != "" {
		if fp := fingerprint(st); fp != a.sentStatus {
			a.sentStatus = fp
			a.status.put(statusUpdate{name: a.spec.Name, status: st})
		}
	}
	a.lastStatus = st
	if a.cfg.StateDir != "" && a.spec.Name != "" {
		saved := &savedState{NodeAnnouncement: persistable(a.spec), Secrets: a.secrets.snapshot(a.referencedSecrets(a.spec))}
		saved.NodeAnnouncement.Status.Provisioning = a.provisioningStatus()
		if fp := mustJSON(saved); fp != a.savedFP {
			a.savedFP = fp
			a.persist.put(saved)
		}
	}
}

// desired is what the speaker should hold now: the sessions of the claims and the routes the decisions announce.
func (a *Agent) desired() speaker.State {
	st := speaker.State{Exports: map[string][]netip.Prefix{}, NextHop4: a.cfg.nodeAddress(false), NextHop6: a.cfg.nodeAddress(true)}
	if !a.delegated {
		st.Sessions, a.agentErrors = a.sessionsOf()
	}
	for pfx, run := range a.prefixes {
		for _, c := range a.spec.Spec.Groups[run.group].Sessions {
			st.Exports[string(c)] = append(st.Exports[string(c)], pfx)
		}
	}
	for _, list := range st.Exports {
		slices.SortFunc(list, speaker.ComparePrefixes)
	}
	for pfx, run := range a.prefixes {
		state := run.last.State
		if state != anycastv1.PrefixAnnounced && state != anycastv1.PrefixDeprefered {
			continue
		}
		g := a.spec.Spec.Groups[run.group]
		claims := make([]string, len(g.Sessions))
		for i, c := range g.Sessions {
			claims[i] = string(c)
		}
		r, err := speaker.RouteFor(pfx, claims, g.Attributes, state == anycastv1.PrefixDeprefered)
		if err != nil {
			a.log.Error(err, "Not announcing", "prefix", pfx) // refused by the API server already; not retried
			continue
		}
		st.Routes = append(st.Routes, r)
	}
	slices.SortFunc(st.Routes, func(x, y speaker.Route) int { return speaker.ComparePrefixes(x.Prefix, y.Prefix) })
	return st
}

// applyRequest is a state for the speaker; applyReport what the speaker did with it.
type applyRequest struct {
	seq   uint64
	state speaker.State
}

type applyReport struct {
	seq uint64
	speaker.Report
	at, asked time.Time
}

// apply is the speaker applier's call: it runs on the applier's goroutine and reports to the loop.
func (a *Agent) apply(ctx context.Context, req applyRequest) error {
	asked := a.clock.Now()
	rep := a.speaker.Apply(ctx, req.state)
	a.reports.put(applyReport{seq: req.seq, Report: rep, at: a.clock.Now(), asked: asked})
	return rep.Error()
}

// takeReport records what the speaker holds; status follows it.
func (a *Agent) takeReport(r applyReport) {
	if r.seq == a.requested.seq && (a.held == nil || a.held.seq != r.seq) && !a.requestedAt.IsZero() {
		a.metrics.applyLatency.Observe(r.at.Sub(a.requestedAt).Seconds())
	}
	if !r.OK() {
		a.metrics.speakerErrors.Inc()
	}
	a.held = &r
	a.dirty = true
	msg := ""
	if err := r.Error(); err != nil {
		msg = err.Error()
	}
	if msg == a.speakerError {
		return
	}
	if msg != "" {
		a.log.Error(nil, "The speaker did not apply everything asked; retrying", "error", msg)
		a.events.record("Warning", ReasonSpeakerError, "Apply", "The speaker did not apply the node's announcements: "+msg)
	} else if a.speakerError != "" {
		a.log.Info("The speaker applied everything asked again")
		a.events.record("Normal", ReasonSpeakerRecovered, "Apply", "The speaker applies the node's announcements again")
	}
	a.speakerError = msg
}

// pollSessions reads the speaker's session states every SessionPoll, each read within a deadline.
func (a *Agent) pollSessions(ctx context.Context) {
	t := a.clock.NewTicker(a.cfg.SessionPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		rctx, cancel := context.WithTimeout(ctx, max(a.cfg.SessionPoll, 5*time.Second))
		s, err := a.speaker.Sessions(rctx)
		cancel()
		if err == nil {
			a.sessionStates.put(s)
		}
	}
}

func mustJSON(v any) string {
	b, _ := jsonMarshal(v)
	return string(b)
}
