package netactuate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// Reasons of a provisioning state; each Error reason's message says what to do.
const (
	ReasonDiscovering    = "Discovering"
	ReasonCreating       = "CreatingSessions"
	ReasonWaiting        = "WaitingForSessions"
	ReasonReady          = "SessionsReady"
	ReasonMissingFamily  = "SessionsIncomplete"
	ReasonServerNotFound = "ServerNotFound"
	ReasonUnauthorized   = "Unauthorized"
	ReasonRejected       = "RequestRejected"
	ReasonUnavailable    = "APIUnavailable"
	ReasonBadAnswer      = "UnexpectedAnswer"
	ReasonNoKey          = "APIKeyNotFound"
)

// Request is what a claim asks of the provider for one node.
type Request struct {
	GroupID   int64
	IPv6      bool
	Redundant bool
}

// RequestOf reads a claim's NetActuate settings.
func RequestOf(n *anycastv1.NetActuateSessions) Request {
	return Request{GroupID: n.GroupID, IPv6: n.IPv6, Redundant: n.Redundant}
}

// Provisioner sets up one node's sessions of one claim. It keeps no state of its own: everything it must remember
// across rounds and restarts is in the status it returns (the server id, when it last asked for sessions).
type Provisioner struct {
	Client *Client
	// NodeAddrs are the node's own addresses; the node's server is the one that has one of them.
	NodeAddrs []netip.Addr
	Clock     clock.PassiveClock
	// Settle is how long after asking for sessions the provisioner waits for them to appear before it may ask
	// again (default 5 minutes). Asking twice could create a second set.
	Settle time.Duration
}

// Provision runs one round: find the node's server, list its sessions in the group, ask for them if it has none,
// and report. progress, when not nil, sees the intermediate states. prev is the last status (zero the first time).
func (p *Provisioner) Provision(ctx context.Context, req Request, prev anycastv1.ProvisioningStatus, progress func(anycastv1.ProvisioningStatus)) anycastv1.ProvisioningStatus {
	st := anycastv1.ProvisioningStatus{Claim: prev.Claim, ServerID: prev.ServerID, LastCreateTime: prev.LastCreateTime, Sessions: prev.Sessions}
	report := func(state anycastv1.ProvisioningState, reason, msg string) anycastv1.ProvisioningStatus {
		st.State, st.Reason, st.Message = state, reason, msg
		st.Since = prev.Since
		if prev.State != state || st.Since == nil {
			st.Since = ptrTime(p.Clock.Now())
		}
		if progress != nil && state != anycastv1.ProvisioningReady && state != anycastv1.ProvisioningError {
			progress(st)
		}
		return st
	}
	if st.ServerID == 0 {
		report(anycastv1.ProvisioningDiscovering, ReasonDiscovering, "Looking for this node's server at NetActuate")
		id, err := p.discover(ctx)
		if err != nil {
			return p.failed(report, err)
		}
		st.ServerID = id
	}
	sessions, err := p.sessions(ctx, st.ServerID, req.GroupID)
	if err != nil {
		var apiErr *APIError
		if errors.As(err, &apiErr) && (apiErr.NotFound() || apiErr.Status == 422) {
			st.ServerID = 0 // the server is gone or was replaced: discover it again next round
		}
		return p.failed(report, err)
	}
	if len(sessions) == 0 {
		if last := st.LastCreateTime; last != nil && p.Clock.Since(last.Time) < p.settle() {
			return report(anycastv1.ProvisioningProvisioning, ReasonWaiting,
				fmt.Sprintf("Asked NetActuate for the sessions of group %d at %s; waiting for them to be listed", req.GroupID, last.UTC().Format(time.RFC3339)))
		}
		report(anycastv1.ProvisioningProvisioning, ReasonCreating, fmt.Sprintf("Asking NetActuate for the sessions of group %d", req.GroupID))
		_, err := p.Client.CreateSessions(ctx, st.ServerID, req.GroupID, req.IPv6, req.Redundant)
		var apiErr *APIError
		if err != nil && errors.As(err, &apiErr) && apiErr.Status >= 400 && apiErr.Status < 500 {
			return p.failed(report, err) // refused: nothing was created, and asking again may be right once fixed
		}
		// Asked, or maybe asked (a timeout or a 5xx may hide a success): never ask again before Settle.
		st.LastCreateTime = ptrTime(p.Clock.Now())
		if err != nil {
			return report(anycastv1.ProvisioningProvisioning, ReasonWaiting,
				fmt.Sprintf("The request for sessions may not have reached NetActuate (%v); the sessions are listed again before asking again", err))
		}
		sessions, err = p.sessions(ctx, st.ServerID, req.GroupID)
		if err != nil {
			return p.failed(report, err)
		}
		if len(sessions) == 0 {
			return report(anycastv1.ProvisioningProvisioning, ReasonWaiting,
				fmt.Sprintf("Asked NetActuate for the sessions of group %d; waiting for them to be listed", req.GroupID))
		}
	}
	st.Sessions, err = provisioned(sessions)
	if err != nil {
		return report(anycastv1.ProvisioningError, ReasonBadAnswer, err.Error())
	}
	msg := fmt.Sprintf("%d sessions in group %d on server %d", len(st.Sessions), req.GroupID, st.ServerID)
	if req.IPv6 && !slices.ContainsFunc(sessions, func(s Session) bool { return strings.EqualFold(s.ProviderIPType, "ipv6") }) {
		return report(anycastv1.ProvisioningReady, ReasonMissingFamily, msg+"; none is IPv6 although the claim asks for IPv6. "+
			"The operator asks only for a node that has no session in the group (asking again could duplicate the others): add the IPv6 sessions in the NetActuate portal")
	}
	return report(anycastv1.ProvisioningReady, ReasonReady, msg)
}

func (p *Provisioner) settle() time.Duration {
	if p.Settle > 0 {
		return p.Settle
	}
	return 5 * time.Minute
}

// failed turns an error into an Error state with a reason a person can act on.
func (p *Provisioner) failed(report func(anycastv1.ProvisioningState, string, string) anycastv1.ProvisioningStatus, err error) anycastv1.ProvisioningStatus {
	var (
		apiErr    *APIError
		decodeErr *DecodeError
		notFound  *serverNotFound
	)
	switch {
	case errors.As(err, &notFound):
		return report(anycastv1.ProvisioningError, ReasonServerNotFound, notFound.Error())
	case errors.As(err, &apiErr) && apiErr.Unauthorized():
		return report(anycastv1.ProvisioningError, ReasonUnauthorized, err.Error()+
			". Check the API key in the claim's Secret, or, without a key, that the node calls from the VM's own address")
	case errors.As(err, &apiErr) && apiErr.Retryable():
		return report(anycastv1.ProvisioningError, ReasonUnavailable, err.Error()+"; retrying")
	case errors.As(err, &apiErr):
		return report(anycastv1.ProvisioningError, ReasonRejected, err.Error())
	case errors.As(err, &decodeErr):
		return report(anycastv1.ProvisioningError, ReasonBadAnswer, err.Error()+"; retrying")
	}
	return report(anycastv1.ProvisioningError, ReasonUnavailable, err.Error()+"; retrying")
}

type serverNotFound struct{ addrs []netip.Addr }

func (e *serverNotFound) Error() string {
	return fmt.Sprintf("No server of this NetActuate account has any of the node's addresses (%s): check that the API key belongs to the account of this VM, or the agent's --local-address",
		joinAddrs(e.addrs))
}

// discover finds the node's server: first by the servers' primary addresses, then by each server's address list.
func (p *Provisioner) discover(ctx context.Context) (int64, error) {
	servers, err := p.Client.Servers(ctx)
	if err != nil {
		return 0, err
	}
	mine := func(a netip.Addr) bool { return slices.Contains(p.NodeAddrs, a.Unmap()) }
	for _, s := range servers {
		for _, ip := range []string{s.IP, s.IPv6} {
			if a, err := netip.ParseAddr(ip); err == nil && mine(a) {
				return int64(s.MBPkgID), nil
			}
		}
	}
	for _, s := range servers {
		ips, err := p.Client.NetworkIPs(ctx, int64(s.MBPkgID))
		if err != nil {
			return 0, err
		}
		if slices.ContainsFunc(ips.addresses(), mine) {
			return int64(s.MBPkgID), nil
		}
	}
	return 0, &serverNotFound{addrs: p.NodeAddrs}
}

// sessions lists the server's sessions in the group: those whose customer_peer_ip is one of the server's addresses.
func (p *Provisioner) sessions(ctx context.Context, serverID, groupID int64) ([]Session, error) {
	ips, err := p.Client.NetworkIPs(ctx, serverID)
	if err != nil {
		return nil, err
	}
	addrs := ips.addresses()
	all, err := p.Client.Sessions(ctx)
	if err != nil {
		return nil, err
	}
	var out []Session
	for _, s := range all {
		a, err := netip.ParseAddr(s.CustomerPeerIP)
		if err != nil || int64(s.GroupID) != groupID || !slices.Contains(addrs, a.Unmap()) {
			continue
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Session) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// provisioned derives the peers: local ASN = customer_asn, peer ASN = provider_asn, peer = provider_peer_ip, local
// address = customer_peer_ip.
func provisioned(sessions []Session) ([]anycastv1.ProvisionedSession, error) {
	var out []anycastv1.ProvisionedSession
	for _, s := range sessions {
		peer, err := netip.ParseAddr(s.ProviderPeerIP)
		if err != nil || peer.IsUnspecified() {
			return nil, fmt.Errorf("session %d: provider_peer_ip %q is not an address", s.ID, s.ProviderPeerIP)
		}
		local, err := netip.ParseAddr(s.CustomerPeerIP)
		if err != nil {
			return nil, fmt.Errorf("session %d: customer_peer_ip %q is not an address", s.ID, s.CustomerPeerIP)
		}
		if !validASN(int64(s.ProviderASN)) || !validASN(int64(s.CustomerASN)) {
			return nil, fmt.Errorf("session %d: AS numbers %d (provider) and %d (customer) are not usable", s.ID, s.ProviderASN, s.CustomerASN)
		}
		out = append(out, anycastv1.ProvisionedSession{ID: int64(s.ID), PeerAddress: anycastv1.IPAddress(peer.Unmap().String()),
			PeerASN: anycastv1.ASN(s.ProviderASN), LocalAddress: anycastv1.IPAddress(local.Unmap().String()), LocalASN: anycastv1.ASN(s.CustomerASN)})
	}
	if len(out) > 16 {
		return nil, fmt.Errorf("%d sessions in the group; the operator handles at most 16 per node and claim", len(out))
	}
	return out, nil
}

func validASN(a int64) bool { return a >= 1 && a <= 4294967294 && a != 23456 && a != 65535 }

func joinAddrs(addrs []netip.Addr) string {
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

func ptrTime(t time.Time) *metav1.Time {
	m := metav1.NewTime(t)
	return &m
}
