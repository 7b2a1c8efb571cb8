// Package agent is the node daemon: it reads its node's NodeAnnouncement, probes the local service, decides per
// prefix (package dampening) and announces through a speaker. It decides alone and keeps deciding while the API
// server is unreachable: the last spec it saw, with its permits, is enough.
package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

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
	// LocalAddress is the node address BGP sessions start from.
	LocalAddress netip.Addr
	Version      string
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
}

// Agent runs on one node. Build it with New and call Run.
type Agent struct {
	cfg     Config
	client  client.Client // writes status and the Lease; reads through the cache
	speaker speaker.Speaker
	clock   clock.WithTicker
	runner  *health.Runner
	log     logr.Logger

	specs       chan *anycastv1.NodeAnnouncement
	results     chan policyResult
	provisioned chan provisionResult

	// Owned by Run's goroutine.
	spec         *anycastv1.NodeAnnouncement
	policies     map[string]*policyRun
	prefixes     map[netip.Prefix]*prefixRun
	provisioners map[string]*provisionRun
	provisioning map[string]anycastv1.ProvisioningStatus
	applied      *speaker.State
	sessions     []speaker.SessionStatus
	written      string // fingerprint of the last status written
	lastStatus   anycastv1.NodeAnnouncementStatus
	// dirty: something the speaker or the status shows may have changed since they were last made true.
	dirty bool
}

// New returns an agent; spec updates are fed with Observe (from an informer on the node's NodeAnnouncement).
func New(cfg Config, c client.Client, sp speaker.Speaker, clk clock.WithTicker, log logr.Logger) *Agent {
	if cfg.ProbeConcurrency <= 0 {
		cfg.ProbeConcurrency = 8
	}
	if cfg.LeaseDuration <= 0 {
		cfg.LeaseDuration = 40 * time.Second
	}
	if cfg.SessionPoll <= 0 {
		cfg.SessionPoll = time.Second
	}
	if cfg.NetActuateClient == nil {
		cfg.NetActuateClient = netactuate.New
	}
	if cfg.ProvisionRetry <= 0 {
		cfg.ProvisionRetry = defaultProvisionRetry
	}
	if cfg.ProvisionRecheck <= 0 {
		cfg.ProvisionRecheck = defaultProvisionRecheck
	}
	return &Agent{
		cfg: cfg, client: c, speaker: sp, clock: clk, log: log,
		runner:       health.NewRunner(clk, cfg.ProbeConcurrency),
		specs:        make(chan *anycastv1.NodeAnnouncement, 1),
		results:      make(chan policyResult, 16),
		policies:     map[string]*policyRun{},
		prefixes:     map[netip.Prefix]*prefixRun{},
		provisioned:  make(chan provisionResult, 16),
		provisioners: map[string]*provisionRun{},
		provisioning: map[string]anycastv1.ProvisioningStatus{},
	}
}

// Observe hands the agent the latest version of its NodeAnnouncement (nil: deleted). Only the latest counts.
func (a *Agent) Observe(na *anycastv1.NodeAnnouncement) {
	for {
		select {
		case a.specs <- na:
			return
		default:
			select {
			case <-a.specs: // drop the older version
			default:
			}
		}
	}
}

// Run runs the agent until ctx ends, then withdraws everything.
func (a *Agent) Run(ctx context.Context) error {
	defer func() {
		for _, p := range a.policies {
			p.stop()
		}
		for _, p := range a.provisioners {
			p.cancel() // no wait: a run blocked in an API call ends with its context
		}
		if err := a.speaker.Close(); err != nil {
			a.log.Error(err, "Closing the speaker")
		}
	}()
	wake := a.clock.NewTimer(time.Hour)
	sessions := a.clock.NewTicker(a.cfg.SessionPoll)
	defer sessions.Stop()
	lease := a.clock.NewTicker(a.cfg.LeaseDuration / 3)
	defer lease.Stop()
	a.renewLease(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case na := <-a.specs:
			a.setSpec(ctx, na)
			a.dirty = true
		case r := <-a.results:
			a.observe(r)
		case r := <-a.provisioned:
			if a.provisioners[string(r.status.Claim)] == r.run && !jsonEqual(a.provisioning[string(r.status.Claim)], r.status) {
				a.provisioning[string(r.status.Claim)] = r.status
				a.dirty = true
			}
		case <-wake.C():
		case <-sessions.C():
			a.readSessions(ctx)
		case <-lease.C():
			a.renewLease(ctx)
			continue
		}
		next := a.step()
		// Most probe rounds change nothing; then there is nothing to announce or report. A failed Apply or status
		// write leaves dirty set, so the next event retries it.
		if a.dirty {
			applied := a.announce(ctx)
			written := a.writeStatus(ctx)
			a.dirty = !applied || !written
		}
		wake.Stop()
		if !next.IsZero() {
			wake.Reset(max(next.Sub(a.clock.Now()), time.Millisecond))
		} else {
			wake.Reset(time.Hour)
		}
	}
}

// prefixRun is one prefix's decision on this node.
type prefixRun struct {
	source   string
	group    int // index in spec.Groups
	policy   string
	decision *dampening.Prefix
	last     dampening.Decision
}

// setSpec takes a new NodeAnnouncement: probes start or stop with the policies, decisions appear and disappear
// with the prefixes. A deleted NodeAnnouncement withdraws everything.
func (a *Agent) setSpec(ctx context.Context, na *anycastv1.NodeAnnouncement) {
	if na == nil {
		na = &anycastv1.NodeAnnouncement{}
	}
	a.spec = na
	a.syncProvisioning(ctx, na)
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
			if run == nil || run.policy != string(g.HealthPolicy) {
				run = &prefixRun{decision: dampening.NewPrefix(settings, now)}
				a.prefixes[pfx] = run
			} else {
				run.decision.SetSettings(settings)
			}
			run.source, run.group, run.policy = gp.Source, gi, string(g.HealthPolicy)
		}
	}
	for pfx := range a.prefixes {
		if !seen[pfx] {
			delete(a.prefixes, pfx)
		}
	}
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
			Now: now, Health: h, Drain: a.spec.Spec.Drain, Paused: g.Paused,
			Permit: slices.Contains(a.spec.Spec.Permits, run.source),
		})
		if d.State != run.last.State || d.Reason != run.last.Reason || d.WantPermit != run.last.WantPermit {
			a.dirty = true
		}
		if d.State != run.last.State {
			a.log.Info("Prefix state changed", "prefix", pfx, "source", run.source, "from", run.last.State, "to", d.State, "reason", d.Reason)
		}
		run.last = d
		if !d.Wake.IsZero() && (next.IsZero() || d.Wake.Before(next)) {
			next = d.Wake
		}
	}
	return next
}

// announce makes the speaker announce what the decisions say; false when the speaker refused.
func (a *Agent) announce(ctx context.Context) bool {
	if a.spec == nil {
		return true
	}
	st := speaker.State{Sessions: a.sessionsOf(ctx), Exports: map[string][]netip.Prefix{}}
	for pfx, run := range a.prefixes {
		for _, c := range a.spec.Spec.Groups[run.group].Sessions {
			st.Exports[string(c)] = append(st.Exports[string(c)], pfx)
		}
	}
	for _, list := range st.Exports {
		slices.SortFunc(list, comparePrefixes)
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
	slices.SortFunc(st.Routes, func(x, y speaker.Route) int { return comparePrefixes(x.Prefix, y.Prefix) })
	if a.applied != nil && jsonEqual(*a.applied, st) {
		return true
	}
	if err := a.speaker.Apply(ctx, st); err != nil {
		a.log.Error(err, "Applying the BGP state")
		return false
	}
	a.applied = &st
	return true
}

func comparePrefixes(x, y netip.Prefix) int {
	if c := x.Addr().Compare(y.Addr()); c != 0 {
		return c
	}
	return x.Bits() - y.Bits()
}

// sessionsOf turns the spec's claims into speaker sessions: static peers, with MD5 passwords from their Secrets, and
// the peers a provider set up for this node.
func (a *Agent) sessionsOf(ctx context.Context) []speaker.Session {
	var out []speaker.Session
	for _, ns := range a.spec.Spec.Sessions {
		switch {
		case ns.Static != nil:
			for _, peer := range ns.Static.Peers {
				addr, err := netip.ParseAddr(string(peer.Address))
				if err != nil {
					continue
				}
				s := a.session(ns, addr, uint32(peer.ASN), uint32(ns.LocalASN), a.cfg.LocalAddress)
				if peer.Port != nil {
					s.Port = uint16(*peer.Port)
				}
				if ref := peer.PasswordSecretRef; ref != nil {
					pw, err := a.secretValue(ctx, ref)
					if err != nil {
						a.log.Error(err, "Cannot read the session password; the session is not opened", "claim", ns.Claim, "peer", addr, "secret", ref.Name)
						continue
					}
					s.Password = pw
				}
				out = append(out, s)
			}
		case ns.NetActuate != nil:
			for _, ps := range a.provisionedPeers(string(ns.Claim)) {
				addr, err := netip.ParseAddr(string(ps.PeerAddress))
				if err != nil {
					continue
				}
				local, _ := netip.ParseAddr(string(ps.LocalAddress))
				if !local.IsValid() {
					local = a.cfg.LocalAddress
				}
				out = append(out, a.session(ns, addr, uint32(ps.PeerASN), uint32(ps.LocalASN), local))
			}
		}
	}
	return out
}

// session is one speaker session of a claim with its settings.
func (a *Agent) session(ns anycastv1.NodeSessions, peer netip.Addr, peerASN, localASN uint32, local netip.Addr) speaker.Session {
	timers := ns.Timers
	if timers == nil {
		timers = &anycastv1.BGPTimers{}
	}
	s := speaker.Session{
		Claim: string(ns.Claim), PeerAddress: peer, PeerASN: peerASN, LocalASN: localASN, LocalAddress: local,
		HoldTime:      durationOr(timers.HoldTime, anycastv1.DefaultHoldTime),
		KeepaliveTime: durationOr(timers.KeepaliveTime, anycastv1.DefaultKeepaliveTime),
		ConnectRetry:  durationOr(timers.ConnectRetry, anycastv1.DefaultConnectRetry),
	}
	if local.IsValid() && peer.Is4() != local.Is4() {
		s.LocalAddress = netip.Addr{} // another family than the local address: let the kernel choose
	}
	if ns.EBGPMultihop != nil {
		s.EBGPMultihop = uint8(*ns.EBGPMultihop)
	}
	if ns.GracefulRestart != nil {
		s.GracefulRestart = ns.GracefulRestart.RestartTime.Duration
	}
	s.BFD = speaker.BFDOf(ns.BFD)
	return s
}

func (a *Agent) secretValue(ctx context.Context, ref *anycastv1.SecretKeyRef) (string, error) {
	var s corev1.Secret
	if err := a.client.Get(ctx, client.ObjectKey{Namespace: a.cfg.Namespace, Name: ref.Name}, &s); err != nil {
		return "", err
	}
	v, ok := s.Data[ref.Key]
	if !ok {
		return "", fmt.Errorf("key %q not in Secret %s/%s", ref.Key, a.cfg.Namespace, ref.Name)
	}
	return string(v), nil
}

func durationOr(d *metav1.Duration, def string) time.Duration {
	if d != nil {
		return d.Duration
	}
	v, _ := time.ParseDuration(def)
	return v
}

func (a *Agent) readSessions(ctx context.Context) {
	s, err := a.speaker.Sessions(ctx)
	if err == nil && !jsonEqual(s, a.sessions) {
		a.sessions = s
		a.dirty = true
	}
}

// renewLease keeps the node's heartbeat Lease current. Failures are logged and retried on the next tick.
func (a *Agent) renewLease(ctx context.Context) {
	name := "anycast-agent-" + a.cfg.NodeName
	now := metav1.NewMicroTime(a.clock.Now())
	var l coordinationv1.Lease
	err := a.client.Get(ctx, client.ObjectKey{Namespace: a.cfg.Namespace, Name: name}, &l)
	switch {
	case apierrors.IsNotFound(err):
		l = coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: a.cfg.Namespace, Name: name}}
		l.Spec = coordinationv1.LeaseSpec{HolderIdentity: ptr.To(a.cfg.NodeName), LeaseDurationSeconds: ptr.To(int32(a.cfg.LeaseDuration.Seconds())), RenewTime: &now}
		err = a.client.Create(ctx, &l)
	case err == nil:
		l.Spec.HolderIdentity, l.Spec.RenewTime = ptr.To(a.cfg.NodeName), &now
		l.Spec.LeaseDurationSeconds = ptr.To(int32(a.cfg.LeaseDuration.Seconds()))
		err = a.client.Update(ctx, &l)
	}
	if err != nil {
		a.log.V(1).Info("Lease not renewed", "error", err.Error())
	}
}
