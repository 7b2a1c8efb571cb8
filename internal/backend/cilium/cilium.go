// Package cilium translates the operator's desired state into Cilium's BGP control plane (cilium.io/v2, Cilium
// 1.18+).
//
// Cilium has no node selector on an advertisement: every peer of a ciliumv2.CiliumBGPClusterConfig receives the
// advertisements its ciliumv2.CiliumBGPPeerConfig selects, on every node the cluster config selects. So the backend gives
// each node its own cluster config (selecting that node by kubernetes.io/hostname) with one instance per claim, and
// each (node, claim, peer) its own peer config, whose families select the advertisements labelled for that node and
// that claim. An advertisement (one per prefix and way of announcing it) carries a label per node announcing it
// now; a node withdraws a prefix by losing its label. Withdraw granularity: per node and prefix. The prefix itself
// is announced as the aggregate of the LoadBalancer addresses of the Services labelled anycast.dev/pool=<pool>,
// which take their address from the ciliumv2.CiliumLoadBalancerIPPool of that prefix.
package cilium

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/backend"
	"github.com/anycast-operator/anycast-operator/internal/backend/cilium/ciliumv2"
)

// Labels the backend sets: PoolLabel on the user's Services (the pool their address comes from), the others on
// advertisements (which nodes announce it now, over which claims).
const (
	PoolLabel         = "anycast.dev/pool"
	announceKeyPrefix = "announce.anycast.dev/"
	claimKeyPrefix    = "claim.anycast.dev/"
)

// Translator writes Cilium's cluster-scoped BGP objects, and password Secrets into Cilium's BGP secrets namespace.
type Translator struct {
	// SecretsNamespace is Cilium's bgpControlPlane.secretsNamespace (kube-system by default).
	SecretsNamespace string
	Secrets          backend.Secrets
}

var (
	clusterConfigKind = ciliumv2.GroupVersion.WithKind("CiliumBGPClusterConfig")
	peerConfigKind    = ciliumv2.GroupVersion.WithKind("CiliumBGPPeerConfig")
	advertisementKind = ciliumv2.GroupVersion.WithKind("CiliumBGPAdvertisement")
	poolKind          = ciliumv2.GroupVersion.WithKind("CiliumLoadBalancerIPPool")
	nodeConfigKind    = ciliumv2.GroupVersion.WithKind("CiliumBGPNodeConfig")
)

// Kinds are the kinds the backend writes.
func (t Translator) Kinds() []backend.Kind {
	return []backend.Kind{
		{GroupVersionKind: clusterConfigKind}, {GroupVersionKind: peerConfigKind}, {GroupVersionKind: advertisementKind},
		{GroupVersionKind: poolKind},
		{GroupVersionKind: corev1.SchemeGroupVersion.WithKind("Secret"), Namespace: t.SecretsNamespace},
	}
}

// PoolName is the name of the ciliumv2.CiliumLoadBalancerIPPool of one prefix of an AnycastPrefix, and the value of PoolLabel
// on the Services that take their address from it.
func PoolName(source string, prefix netip.Prefix) string {
	return backend.LabelValue("anycast-" + source + "-" + backend.Sanitize(prefix.String()))
}

// Translate returns the Cilium objects for d.
func (t Translator) Translate(d backend.Desired) backend.Translation {
	var tr backend.Translation
	for _, p := range d.Planned {
		pool := PoolName(p.Source, p.Prefix)
		tr.Objects = append(tr.Objects, &ciliumv2.CiliumLoadBalancerIPPool{ObjectMeta: backend.Meta(pool, "", p.Source), Spec: ciliumv2.CiliumLoadBalancerIPPoolSpec{
			ServiceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{PoolLabel: pool}},
			Blocks:          []ciliumv2.CiliumLoadBalancerIPPoolIPBlock{{Cidr: p.Prefix.String()}},
		}})
	}
	for _, r := range d.Routes {
		tr.Objects = append(tr.Objects, advertisement(r))
	}
	tr.IgnoreAttributes(d, backend.AttributeLimits{MED: "Cilium's advertisements have no MED", ASPathPrepend: "Cilium's advertisements have none"})
	for _, p := range prefixesWithoutPeers(d) {
		tr.IgnorePrefix(p.Source, fmt.Sprintf("%s: no %s peer in its claims (Cilium would send it over the other family's sessions with a next hop no router can use)",
			p.Prefix, family(p.Prefix.Addr())))
	}
	// One cluster config per node: its instances (one per claim) and their peers.
	instances := map[string][]ciliumv2.CiliumBGPInstance{}
	for _, s := range d.Sessions {
		secret, ok := tr.PasswordSecret(s, t.Secrets, backend.Name(s.Name(), "md5"), t.SecretsNamespace, corev1.SecretTypeOpaque, "password")
		if !ok {
			continue
		}
		if secret != nil {
			tr.Objects = append(tr.Objects, secret)
		}
		for _, node := range s.Nodes {
			pc := peerConfig(s, node, secret, &tr)
			tr.Objects = append(tr.Objects, pc)
			peer := ciliumv2.CiliumBGPPeer{Name: backend.Sanitize(string(s.Peer.Address)), PeerAddress: ptr.To(string(s.Peer.Address)),
				PeerASN: ptr.To(int64(s.Peer.ASN)), PeerConfigRef: &ciliumv2.PeerConfigReference{Name: pc.Name}}
			list := instances[node]
			i := slices.IndexFunc(list, func(in ciliumv2.CiliumBGPInstance) bool { return in.Name == s.Claim })
			if i < 0 {
				list = append(list, ciliumv2.CiliumBGPInstance{Name: s.Claim, LocalASN: ptr.To(int64(s.Settings.LocalASN))})
				i = len(list) - 1
			}
			list[i].Peers = append(list[i].Peers, peer)
			instances[node] = list
		}
	}
	for _, node := range slices.Sorted(maps.Keys(instances)) {
		host := d.HostnamesOf([]string{node})[0]
		tr.Objects = append(tr.Objects, &ciliumv2.CiliumBGPClusterConfig{ObjectMeta: backend.Meta(backend.Name("anycast", node), "", ""),
			Spec: ciliumv2.CiliumBGPClusterConfigSpec{
				NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelHostname: host}},
				BGPInstances: instances[node],
			}})
	}
	return tr
}

// peerConfig is the peer config of one node and one peer of a claim: the session settings, and the advertisements
// labelled for this node and claim in the peer's address family.
func peerConfig(s backend.Session, node string, secret *corev1.Secret, tr *backend.Translation) *ciliumv2.CiliumBGPPeerConfig {
	selector := &metav1.LabelSelector{MatchLabels: map[string]string{announceKey(node): "true", claimKey(s.Claim): "true"}}
	// One family, the peer's: Cilium sends each route of a family over every session that has it, with the
	// session's own address as the next hop, so an IPv6 prefix over an IPv4 session arrives with an IPv4-mapped next
	// hop (::ffff:a.b.c.d) and an IPv4 prefix over an IPv6 session with an IPv6 one; neither is usable by a router
	// (found by the test that runs Cilium's own BGP code).
	pc := &ciliumv2.CiliumBGPPeerConfig{ObjectMeta: backend.Meta(backend.Name(s.Name(), node), "", s.Claim), Spec: ciliumv2.CiliumBGPPeerConfigSpec{
		Families: []ciliumv2.CiliumBGPFamilyWithAdverts{{Afi: family(peerAddr(s)), Safi: "unicast", Advertisements: selector}},
	}}
	if s.Peer.Port != nil {
		pc.Spec.Transport = &ciliumv2.CiliumBGPTransport{PeerPort: s.Peer.Port}
	}
	if tm := s.Settings.Timers; tm != nil {
		timers := &ciliumv2.CiliumBGPTimers{}
		if tm.HoldTime != nil {
			if tm.HoldTime.Duration == 0 {
				tr.IgnoreClaim(s.Claim, "timers.holdTime 0 (Cilium's hold time is 3-65535 s; its default applies)")
			} else {
				timers.HoldTimeSeconds = seconds(tm.HoldTime.Duration.Seconds())
			}
		}
		if tm.KeepaliveTime != nil {
			timers.KeepAliveTimeSeconds = seconds(tm.KeepaliveTime.Duration.Seconds())
		}
		if tm.ConnectRetry != nil {
			timers.ConnectRetryTimeSeconds = seconds(tm.ConnectRetry.Duration.Seconds())
		}
		if *timers != (ciliumv2.CiliumBGPTimers{}) {
			pc.Spec.Timers = timers
		}
	}
	if s.Settings.EBGPMultihop != nil && *s.Settings.EBGPMultihop > 1 {
		pc.Spec.EBGPMultihop = s.Settings.EBGPMultihop
	}
	if gr := s.Settings.GracefulRestart; gr != nil {
		pc.Spec.GracefulRestart = &ciliumv2.CiliumBGPNeighborGracefulRestart{Enabled: true, RestartTimeSeconds: seconds(gr.RestartTime.Duration.Seconds())}
	}
	if s.Settings.BFD != nil {
		tr.IgnoreClaim(s.Claim, "bfd (Cilium's BGP control plane has no BFD)")
	}
	if secret != nil {
		pc.Spec.AuthSecretRef = ptr.To(secret.Name)
	}
	return pc
}

// family is Cilium's afi of an address.
func family(a netip.Addr) string {
	if a.Is4() {
		return "ipv4"
	}
	return "ipv6"
}

// peerAddr is the session's peer address (the API server validated it).
func peerAddr(s backend.Session) netip.Addr {
	a, _ := netip.ParseAddr(string(s.Peer.Address))
	return a.Unmap()
}

// prefixesWithoutPeers are the planned prefixes none of whose claims has a peer of the prefix's family: Cilium
// cannot announce them with a usable next hop.
func prefixesWithoutPeers(d backend.Desired) []backend.PlannedPrefix {
	var out []backend.PlannedPrefix
	for _, p := range d.Planned {
		if !slices.ContainsFunc(d.Sessions, func(s backend.Session) bool {
			return slices.Contains(p.BGP.Claims, s.Claim) && peerAddr(s).Is4() == p.Prefix.Addr().Is4()
		}) {
			out = append(out, p)
		}
	}
	return out
}

// seconds rounds up to whole seconds, at least 1: Cilium's timers are whole seconds.
func seconds(s float64) *int32 {
	v := int32(s)
	if float64(v) < s || v < 1 {
		v++
	}
	return &v
}

func announceKey(node string) string { return announceKeyPrefix + backend.LabelValue(node) }
func claimKey(claim string) string   { return claimKeyPrefix + backend.LabelValue(claim) }
func variantName(r backend.Route) string {
	return backend.Name(PoolName(r.Source, r.Prefix), r.Variant())
}

// advertisement announces a route's prefix as the aggregate of its Services' addresses, from the nodes labelled.
func advertisement(r backend.Route) *ciliumv2.CiliumBGPAdvertisement {
	meta := backend.Meta(variantName(r), "", r.Source)
	for _, n := range r.Nodes {
		meta.Labels[announceKey(n)] = "true"
	}
	for _, c := range r.BGP.Claims {
		meta.Labels[claimKey(c)] = "true"
	}
	svc := &ciliumv2.BGPServiceOptions{Addresses: []string{"LoadBalancerIP"}}
	bits := int16(r.Prefix.Bits())
	// Cilium aggregates to 0-31 (IPv4) and 0-127 (IPv6) bits; a host prefix is the Service address itself.
	switch {
	case r.Prefix.Addr().Is4() && bits < 32:
		svc.AggregationLengthIPv4 = &bits
	case r.Prefix.Addr().Is6() && bits < 128:
		svc.AggregationLengthIPv6 = &bits
	}
	adv := ciliumv2.BGPAdvertisement{AdvertisementType: "Service", Service: svc,
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{PoolLabel: PoolName(r.Source, r.Prefix)}}}
	attrs := &ciliumv2.BGPAttributes{}
	if len(r.BGP.Communities) > 0 || len(r.BGP.LargeCommunities) > 0 {
		attrs.Communities = &ciliumv2.BGPCommunities{}
		for _, c := range r.BGP.Communities {
			attrs.Communities.Standard = append(attrs.Communities.Standard, strconv.FormatUint(uint64(c>>16), 10)+":"+strconv.FormatUint(uint64(c&0xFFFF), 10))
		}
		for _, c := range r.BGP.LargeCommunities {
			attrs.Communities.Large = append(attrs.Communities.Large, fmt.Sprintf("%d:%d:%d", c[0], c[1], c[2]))
		}
	}
	if r.BGP.LocalPref != nil {
		attrs.LocalPreference = ptr.To(int64(*r.BGP.LocalPref))
	}
	if attrs.Communities != nil || attrs.LocalPreference != nil {
		adv.Attributes = attrs
	}
	return &ciliumv2.CiliumBGPAdvertisement{ObjectMeta: meta, Spec: ciliumv2.CiliumBGPAdvertisementSpec{Advertisements: []ciliumv2.BGPAdvertisement{adv}}}
}

// SessionKinds are what Cilium reports sessions in.
func (t Translator) SessionKinds() []schema.GroupVersionKind {
	return []schema.GroupVersionKind{nodeConfigKind}
}

// Sessions reads, per node, the sessions of the backend's instances (named after the claims) from the status of
// the node's CiliumBGPNodeConfig, which Cilium's operator creates and its agent keeps up to date.
func (t Translator) Sessions(ctx context.Context, r client.Reader) (map[string][]anycastv1.NodeSessionStatus, error) {
	var list ciliumv2.CiliumBGPNodeConfigList
	if err := r.List(ctx, &list); err != nil {
		return nil, fmt.Errorf("listing CiliumBGPNodeConfig: %w", err)
	}
	out := map[string][]anycastv1.NodeSessionStatus{}
	for _, nc := range list.Items {
		var sessions []anycastv1.NodeSessionStatus
		for _, in := range nc.Status.BGPInstances {
			for _, p := range in.PeerStatuses {
				s := anycastv1.NodeSessionStatus{Claim: anycastv1.LocalObjectName(in.Name), PeerAddress: p.PeerAddress, State: sessionState(p.PeeringState)}
				if p.PeerASN != nil {
					s.PeerASN = *p.PeerASN
				}
				sessions = append(sessions, s)
			}
		}
		if sessions != nil {
			out[nc.Name] = sessions
		}
	}
	return out, nil
}

func sessionState(s *string) anycastv1.SessionState {
	if s == nil {
		return anycastv1.SessionUnknown
	}
	return backend.SessionState(*s)
}

// AddToScheme registers the Cilium kinds the backend writes and reads.
func AddToScheme(s *runtime.Scheme) error { return ciliumv2.AddToScheme(s) }
