package agent

import (
	"fmt"
	"net/netip"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
)

// sessionsOf turns the spec's claims into speaker sessions: static peers, with MD5 passwords from the watched
// Secrets, and the peers a provider set up for this node. A session that cannot be asked for (its Secret is not
// readable) is left out, with the reason by session key. Reads memory only.
func (a *Agent) sessionsOf() ([]speaker.Session, map[string]string) {
	var out []speaker.Session
	errs := map[string]string{}
	for _, ns := range a.spec.Spec.Sessions {
		switch {
		case ns.Static != nil:
			for _, peer := range ns.Static.Peers {
				addr, err := speaker.ParsePeer(string(peer.Address))
				if err != nil {
					continue // refused by the API server already
				}
				s := a.session(ns, addr, uint32(peer.ASN), uint32(ns.LocalASN), netip.Addr{})
				if peer.Port != nil {
					s.Port = uint16(*peer.Port)
				}
				if ref := peer.PasswordSecretRef; ref != nil {
					pw, err := a.secrets.value(ref)
					if err != nil {
						errs[s.Key()] = fmt.Sprintf("the MD5 password cannot be read (%v); the session is not opened", err)
						continue
					}
					s.Password = pw
				}
				out = append(out, s)
			}
		case ns.NetActuate != nil:
			for _, ps := range a.provisionedPeers(string(ns.Claim)) {
				addr, err := speaker.ParsePeer(string(ps.PeerAddress))
				if err != nil {
					continue
				}
				local, _ := speaker.ParsePeer(string(ps.LocalAddress))
				out = append(out, a.session(ns, addr, uint32(ps.PeerASN), uint32(ps.LocalASN), local))
			}
		}
	}
	return out, errs
}

// session is one speaker session of a claim with its settings. Its local address is the given one, else the node's
// address of the peer's family (none: the kernel chooses).
func (a *Agent) session(ns anycastv1.NodeSessions, peer netip.Addr, peerASN, localASN uint32, local netip.Addr) speaker.Session {
	timers := ns.Timers
	if timers == nil {
		timers = &anycastv1.BGPTimers{}
	}
	if !local.IsValid() || local.Is6() != peer.Is6() {
		local = a.cfg.nodeAddress(peer.Is6())
	}
	s := speaker.Session{
		Claim: string(ns.Claim), PeerAddress: peer, PeerASN: peerASN, LocalASN: localASN, LocalAddress: local,
		HoldTime:      durationOr(timers.HoldTime, anycastv1.DefaultHoldTime),
		KeepaliveTime: durationOr(timers.KeepaliveTime, anycastv1.DefaultKeepaliveTime),
		ConnectRetry:  durationOr(timers.ConnectRetry, anycastv1.DefaultConnectRetry),
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

func durationOr(d *metav1.Duration, def string) time.Duration {
	if d != nil {
		return d.Duration
	}
	v, _ := time.ParseDuration(def)
	return v
}

// sessionSeen is a session's last reported state and since when.
type sessionSeen struct {
	state anycastv1.SessionState
	since time.Time
}

// sessionStatus lists every session of the node: those the speaker runs, in the state it reports, and those asked
// for that it does not run (or the agent could not ask for), Idle with the reason.
func (a *Agent) sessionStatus(now time.Time) []anycastv1.NodeSessionStatus {
	var out []anycastv1.NodeSessionStatus
	seen := map[string]bool{}
	add := func(s anycastv1.NodeSessionStatus, key string) {
		seen[key] = true
		prev, ok := a.sessionSince[key]
		if !ok || prev.state != s.State {
			prev = sessionSeen{state: s.State, since: now}
			a.sessionSince[key] = prev
		}
		s.Since = &metav1.Time{Time: prev.since}
		out = append(out, s)
	}
	errs := map[string]string{}
	for k, v := range a.agentErrors {
		errs[k] = v
	}
	if a.held != nil && a.held.seq == a.requested.seq {
		for k, v := range a.held.SessionErrors {
			errs[k] = v
		}
	}
	for _, s := range a.sessions {
		addr, err := speaker.ParsePeer(s.PeerAddress)
		if err != nil {
			continue
		}
		key := speaker.SessionKey(s.Claim, addr)
		st := anycastv1.NodeSessionStatus{Claim: anycastv1.LocalObjectName(s.Claim), PeerAddress: addr.String(), PeerASN: int64(s.PeerASN),
			LocalAddress: s.LocalAddress, State: s.State, LastError: truncate(errs[key], 1024)}
		add(st, key)
	}
	for _, s := range a.requested.state.Sessions {
		if msg, bad := errs[s.Key()]; bad && !seen[s.Key()] {
			add(anycastv1.NodeSessionStatus{Claim: anycastv1.LocalObjectName(s.Claim), PeerAddress: s.PeerAddress.String(), PeerASN: int64(s.PeerASN),
				LocalAddress: addrString(s.LocalAddress), State: anycastv1.SessionIdle, LastError: truncate(msg, 1024)}, s.Key())
		}
	}
	for _, ns := range a.spec.Spec.Sessions {
		if ns.Static == nil {
			continue
		}
		for _, peer := range ns.Static.Peers {
			addr, err := speaker.ParsePeer(string(peer.Address))
			if err != nil {
				continue
			}
			key := speaker.SessionKey(string(ns.Claim), addr)
			if msg, bad := a.agentErrors[key]; bad && !seen[key] {
				add(anycastv1.NodeSessionStatus{Claim: ns.Claim, PeerAddress: addr.String(), PeerASN: int64(peer.ASN), State: anycastv1.SessionIdle,
					LastError: truncate(msg, 1024)}, key)
			}
		}
	}
	for k := range a.sessionSince {
		if !seen[k] {
			delete(a.sessionSince, k)
		}
	}
	return out
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}
