package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/provider/netactuate"
)

// Provisioning intervals: a node whose sessions are Ready checks them again now and then (a session deleted at
// the provider comes back); one waiting for its sessions looks again soon; an error is retried with backoff.
const (
	defaultProvisionRecheck = 10 * time.Minute
	defaultProvisionRetry   = 15 * time.Second
	maxProvisionRetry       = 5 * time.Minute
)

// provisionRun provisions one claim's sessions for this node, in its own goroutine: API calls and their retries
// never hold up probing and deciding.
type provisionRun struct {
	spec   anycastv1.NetActuateSessions
	cancel context.CancelFunc
	done   chan struct{}
}

// provisionResult is a run's latest status; a result of a run stopped since is dropped.
type provisionResult struct {
	run    *provisionRun
	status anycastv1.ProvisioningStatus
}

func (r *provisionRun) stop() {
	r.cancel()
	<-r.done
}

// syncProvisioning starts, restarts and stops provisioning with the claims of the spec. prev seeds a new run with
// what the last status said (when sessions were last asked for), so a restarted agent never asks twice.
func (a *Agent) syncProvisioning(ctx context.Context, na *anycastv1.NodeAnnouncement) {
	wanted := map[string]anycastv1.NetActuateSessions{}
	for _, ns := range na.Spec.Sessions {
		if ns.NetActuate != nil {
			wanted[string(ns.Claim)] = *ns.NetActuate
		}
	}
	for claim, run := range a.provisioners {
		if spec, ok := wanted[claim]; !ok || !jsonEqual(spec, run.spec) {
			run.stop()
			delete(a.provisioners, claim)
			if !ok {
				delete(a.provisioning, claim)
			}
		}
	}
	for claim, spec := range wanted {
		if _, ok := a.provisioners[claim]; ok {
			continue
		}
		prev, ok := a.provisioning[claim]
		if !ok {
			if i := slices.IndexFunc(na.Status.Provisioning, func(p anycastv1.ProvisioningStatus) bool { return string(p.Claim) == claim }); i >= 0 {
				prev = na.Status.Provisioning[i]
			}
			prev.Claim = anycastv1.LocalObjectName(claim)
		}
		a.provisioners[claim] = a.startProvisioning(ctx, spec, prev)
	}
}

func (a *Agent) startProvisioning(ctx context.Context, spec anycastv1.NetActuateSessions, prev anycastv1.ProvisioningStatus) *provisionRun {
	ctx, cancel := context.WithCancel(ctx)
	run := &provisionRun{spec: spec, cancel: cancel, done: make(chan struct{})}
	log := a.log.WithValues("claim", prev.Claim, "provider", "netactuate", "group", spec.GroupID)
	send := func(st anycastv1.ProvisioningStatus) {
		select {
		case a.provisioned <- provisionResult{run: run, status: st}:
		case <-ctx.Done():
		}
	}
	go func() {
		defer close(run.done)
		retry := a.cfg.ProvisionRetry
		for {
			// A retry after a failure reports its outcome only: the node stays in Error, with the reason, until a
			// round ends otherwise, so that a failing node's status and its claim's Stalled condition hold still
			// instead of flapping through Discovering on every retry.
			progress := send
			if prev.State == anycastv1.ProvisioningError {
				progress = func(anycastv1.ProvisioningStatus) {}
			}
			st := a.provisionOnce(ctx, spec, prev, progress)
			if ctx.Err() != nil {
				return
			}
			if st.State != prev.State || st.Reason != prev.Reason {
				log.Info("Provisioning state changed", "state", st.State, "reason", st.Reason, "message", st.Message, "sessions", len(st.Sessions))
			}
			send(st)
			prev = st
			wait := a.cfg.ProvisionRecheck
			switch st.State {
			case anycastv1.ProvisioningError:
				wait, retry = retry, min(retry*2, maxProvisionRetry)
			case anycastv1.ProvisioningReady:
				retry = a.cfg.ProvisionRetry
			default:
				wait = a.cfg.ProvisionRetry
			}
			t := a.clock.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C():
			}
		}
	}()
	return run
}

// provisionOnce reads the key (a rotated key is used from the next round on), builds the client and runs a round.
func (a *Agent) provisionOnce(ctx context.Context, spec anycastv1.NetActuateSessions, prev anycastv1.ProvisioningStatus, progress func(anycastv1.ProvisioningStatus)) anycastv1.ProvisioningStatus {
	fail := func(reason, msg string) anycastv1.ProvisioningStatus {
		st := prev
		if st.State != anycastv1.ProvisioningError {
			st.Since = &metav1.Time{Time: a.clock.Now()}
		}
		st.State, st.Reason, st.Message = anycastv1.ProvisioningError, reason, msg
		return st
	}
	var key string
	if ref := spec.APIKeySecretRef; ref != nil {
		wctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
		a.secrets.wait(wctx, ref.Name)
		cancel()
		v, err := a.secrets.value(ref)
		if err != nil {
			return fail(netactuate.ReasonNoKey, fmt.Sprintf("The API key Secret %s key %s cannot be read in namespace %s (%v); create it, or remove apiKeySecretRef for IP-based authentication",
				ref.Name, ref.Key, a.cfg.Namespace, err))
		}
		key = strings.TrimSpace(v)
	}
	var source net.IP
	if key == "" && a.cfg.LocalAddress.IsValid() {
		source = net.IP(a.cfg.LocalAddress.AsSlice()) // IP-based authentication: call from the VM's own address
	}
	c, err := a.cfg.NetActuateClient(spec.APIURL, key, source)
	if err != nil {
		return fail(netactuate.ReasonRejected, err.Error())
	}
	defer c.CloseIdleConnections() // the next round builds its own client, with the key as it is then
	p := &netactuate.Provisioner{Client: c, NodeAddrs: a.nodeAddrs(), Clock: a.clock}
	return p.Provision(ctx, netactuate.RequestOf(&spec), prev, progress)
}

// nodeAddrs are the addresses that identify this node's VM: the node address and, with hostNetwork, the host's
// global unicast addresses.
func (a *Agent) nodeAddrs() []netip.Addr {
	var out []netip.Addr
	if a.cfg.LocalAddress.IsValid() {
		out = append(out, a.cfg.LocalAddress)
	}
	if !a.cfg.InterfaceAddrs {
		return out
	}
	addrs, _ := net.InterfaceAddrs()
	for _, ad := range addrs {
		if n, ok := ad.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().IsGlobalUnicast() && !slices.Contains(out, ip.Unmap()) {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
}

// provisionedPeers are the peers a provider set up for this node, for one claim.
func (a *Agent) provisionedPeers(claim string) []anycastv1.ProvisionedSession {
	return a.provisioning[claim].Sessions
}

// provisioningStatus lists the claims' provisioning, by claim.
func (a *Agent) provisioningStatus() []anycastv1.ProvisioningStatus {
	var out []anycastv1.ProvisioningStatus
	for _, st := range a.provisioning {
		out = append(out, st)
	}
	slices.SortFunc(out, func(x, y anycastv1.ProvisioningStatus) int { return strings.Compare(string(x.Claim), string(y.Claim)) })
	return out
}
