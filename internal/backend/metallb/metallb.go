// Package metallb translates the operator's desired state into MetalLB v0.16 objects (native BGP or frr-k8s mode):
// a BGPPeer (v1beta2) per claim and peer, selecting the claim's nodes; an IPAddressPool per AnycastPrefix and prefix
// (autoAssign off: only Services that ask for an anycast address get one); and a BGPAdvertisement per prefix and way
// of announcing it, whose nodeSelectors are the nodes announcing it now. MetalLB announces a pool's aggregate only
// while a LoadBalancer Service holds an address of it, so each anycast Service needs an address from the pool.
package metallb

import (
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"
	metallbv1beta2 "go.universe.tf/metallb/api/v1beta2"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/backend"
)

// Mode is how MetalLB speaks BGP; what it supports differs.
type Mode string

const (
	// Native is MetalLB's own BGP speaker: no AS-path prepend, no BFD, no graceful restart, and neither
	// keepaliveTime nor connectTime on a BGPPeer (its speaker refuses such a peer: found by the real-speaker test).
	Native Mode = "native"
	// FRRK8s is the default mode of MetalLB v0.16 (FRR through frr-k8s).
	FRRK8s Mode = "frr-k8s"
)

// maxPeerPort is the highest peerPort MetalLB's CRD accepts.
const maxPeerPort = 16384

// Kinds are the kinds the backend writes, all in MetalLB's namespace; Sync prunes its stale objects among them.
func (t Translator) Kinds() []backend.Kind {
	var out []backend.Kind
	for _, gvk := range []schema.GroupVersionKind{
		metallbv1beta2.GroupVersion.WithKind("BGPPeer"),
		metallbv1beta1.GroupVersion.WithKind("IPAddressPool"),
		metallbv1beta1.GroupVersion.WithKind("BGPAdvertisement"),
		metallbv1beta1.GroupVersion.WithKind("BFDProfile"),
		corev1.SchemeGroupVersion.WithKind("Secret"),
	} {
		out = append(out, backend.Kind{GroupVersionKind: gvk, Namespace: t.Namespace})
	}
	return out
}

// AddToScheme registers the MetalLB kinds the backend writes, and frr-k8s's session state it reads.
func AddToScheme(s *runtime.Scheme) error {
	if err := metallbv1beta1.AddToScheme(s); err != nil {
		return err
	}
	addFRRK8sToScheme(s)
	return metallbv1beta2.AddToScheme(s)
}

// Translator writes into MetalLB's namespace.
type Translator struct {
	Namespace string // where MetalLB runs (metallb-system)
	Mode      Mode
	Secrets   backend.Secrets
	// FRRK8sNamespace is where frr-k8s publishes BGPSessionStates (frr-k8s mode): MetalLB's namespace when MetalLB
	// deploys frr-k8s, frr-k8s-system when it runs on its own.
	FRRK8sNamespace string
}

// Translate returns the MetalLB objects for d.
func (t Translator) Translate(d backend.Desired) backend.Translation {
	var tr backend.Translation
	peersOf := map[string][]string{} // claim → BGPPeer names
	for _, s := range d.Sessions {
		peer, secret, bfd, ok := t.peer(d, s, &tr)
		if !ok {
			continue
		}
		if secret != nil {
			tr.Objects = append(tr.Objects, secret)
		}
		if bfd != nil && len(peersOf[s.Claim]) == 0 { // a claim's BFD profile serves all its peers
			tr.Objects = append(tr.Objects, bfd)
		}
		peersOf[s.Claim] = append(peersOf[s.Claim], peer.Name)
		tr.Objects = append(tr.Objects, peer)
	}
	// A pool per planned prefix, whether announced or not: MetalLB refuses a whole new configuration while a
	// Service holds an address of no pool, and would then keep announcing what was just withdrawn (found by the
	// real-speaker test).
	for _, p := range d.Planned {
		tr.Objects = append(tr.Objects, &metallbv1beta1.IPAddressPool{ObjectMeta: t.meta(poolName(p.Source, p.Prefix), p.Source),
			Spec: metallbv1beta1.IPAddressPoolSpec{Addresses: []string{p.Prefix.String()}, AutoAssign: ptr.To(false)}})
	}
	limits := backend.AttributeLimits{MED: "MetalLB has no MED"}
	if t.Mode == Native {
		limits.ASPathPrepend = "MetalLB's native mode has none"
	}
	tr.IgnoreAttributes(d, limits)
	for _, r := range d.Routes {
		if adv := t.advertisement(d, r, peersOf); adv != nil {
			tr.Objects = append(tr.Objects, adv)
		}
	}
	return tr
}

func (t Translator) meta(name, source string) metav1.ObjectMeta {
	return backend.Meta(name, t.Namespace, source)
}

func poolName(source string, prefix netip.Prefix) string {
	return backend.Name("anycast", source, backend.Sanitize(prefix.String()))
}

// bfdProfile is a claim's BFD settings as a MetalLB BFDProfile (frr-k8s mode); intervals in milliseconds.
func bfdProfile(meta metav1.ObjectMeta, b *anycastv1.BFD) *metallbv1beta1.BFDProfile {
	p := &metallbv1beta1.BFDProfile{ObjectMeta: meta}
	ms := func(d *metav1.Duration) *uint32 {
		if d == nil {
			return nil
		}
		return ptr.To(uint32(d.Milliseconds()))
	}
	p.Spec.ReceiveInterval, p.Spec.TransmitInterval = ms(b.MinRx), ms(b.MinTx)
	if b.Multiplier != nil {
		p.Spec.DetectMultiplier = ptr.To(uint32(*b.Multiplier))
	}
	return p
}

// peer is the BGPPeer of a session, the Secret carrying its password into MetalLB's namespace, and its claim's BFD
// profile (nil when there is none).
func (t Translator) peer(d backend.Desired, s backend.Session, tr *backend.Translation) (*metallbv1beta2.BGPPeer, *corev1.Secret, *metallbv1beta1.BFDProfile, bool) {
	port := int32(179)
	if s.Peer.Port != nil {
		port = *s.Peer.Port
	}
	if port > maxPeerPort {
		tr.IgnoreClaim(s.Claim, fmt.Sprintf("peer %s: port %d (MetalLB accepts 1-%d); the session is not configured", s.Peer.Address, port, maxPeerPort))
		return nil, nil, nil, false
	}
	p := &metallbv1beta2.BGPPeer{ObjectMeta: t.meta(s.Name(), s.Claim), Spec: metallbv1beta2.BGPPeerSpec{
		MyASN: uint32(s.Settings.LocalASN), ASN: uint32(s.Peer.ASN), Address: string(s.Peer.Address), Port: uint16(port),
		NodeSelectors: []metav1.LabelSelector{hostnameSelector(d.HostnamesOf(s.Nodes))},
	}}
	if tm := s.Settings.Timers; tm != nil {
		p.Spec.HoldTime = tm.HoldTime
		if tm.KeepaliveTime != nil {
			if t.Mode == Native {
				tr.IgnoreClaim(s.Claim, "timers.keepaliveTime (MetalLB native mode refuses it; the speaker uses a third of the hold time)")
			} else {
				p.Spec.KeepaliveTime = tm.KeepaliveTime
			}
		}
		if tm.ConnectRetry != nil {
			if t.Mode == Native {
				tr.IgnoreClaim(s.Claim, "timers.connectRetry (MetalLB native mode refuses connectTime)")
			} else {
				p.Spec.ConnectTime = tm.ConnectRetry
			}
		}
	}
	if s.Settings.EBGPMultihop != nil && *s.Settings.EBGPMultihop > 1 {
		p.Spec.EBGPMultiHop = true
		tr.IgnoreClaim(s.Claim, "the ebgpMultihop TTL (MetalLB turns multihop on or off; FRR's TTL applies)")
	}
	if s.Settings.GracefulRestart != nil {
		if t.Mode == Native {
			tr.IgnoreClaim(s.Claim, "gracefulRestart (MetalLB native mode has none)")
		} else {
			p.Spec.EnableGracefulRestart = true
			tr.IgnoreClaim(s.Claim, "gracefulRestart.restartTime (MetalLB turns graceful restart on or off; FRR's restart time applies)")
		}
	}
	var bfd *metallbv1beta1.BFDProfile
	if b := s.Settings.BFD; b != nil {
		if t.Mode == Native {
			tr.IgnoreClaim(s.Claim, "bfd (MetalLB's native mode has no BFD)")
		} else {
			bfd = bfdProfile(t.meta(backend.Name("anycast", s.Claim, "bfd"), s.Claim), b)
			p.Spec.BFDProfile = bfd.Name
		}
	}
	// MetalLB reads MD5 passwords from a basic-auth Secret in its own namespace.
	secret, ok := tr.PasswordSecret(s, t.Secrets, backend.Name(s.Name(), "md5"), t.Namespace, corev1.SecretTypeBasicAuth, corev1.BasicAuthPasswordKey)
	if !ok {
		return nil, nil, nil, false
	}
	if secret != nil {
		p.Spec.PasswordSecret = corev1.SecretReference{Name: secret.Name, Namespace: t.Namespace}
	}
	return p, secret, bfd, true
}

// advertisement is the BGPAdvertisement of a route: its pool rolled up to the prefix, from the nodes announcing it,
// to the peers of its claims only.
func (t Translator) advertisement(d backend.Desired, r backend.Route, peersOf map[string][]string) *metallbv1beta1.BGPAdvertisement {
	var peers []string
	for _, c := range r.BGP.Claims {
		peers = append(peers, peersOf[c]...)
	}
	hosts := d.HostnamesOf(r.Nodes)
	if len(peers) == 0 || len(hosts) == 0 {
		// An advertisement without peers or node selectors means every peer or every node: never write one.
		return nil
	}
	slices.Sort(peers)
	adv := &metallbv1beta1.BGPAdvertisement{ObjectMeta: t.meta(backend.Name(poolName(r.Source, r.Prefix), r.Variant()), r.Source), Spec: metallbv1beta1.BGPAdvertisementSpec{
		IPAddressPools: []string{poolName(r.Source, r.Prefix)},
		Peers:          slices.Compact(peers),
		NodeSelectors:  []metav1.LabelSelector{hostnameSelector(hosts)},
	}}
	bits := int32(r.Prefix.Bits())
	if r.Prefix.Addr().Is4() {
		adv.Spec.AggregationLength = &bits
	} else {
		adv.Spec.AggregationLengthV6 = &bits
	}
	for _, c := range r.BGP.Communities {
		adv.Spec.Communities = append(adv.Spec.Communities, fmt.Sprintf("%d:%d", c>>16, c&0xFFFF))
	}
	for _, c := range r.BGP.LargeCommunities {
		adv.Spec.Communities = append(adv.Spec.Communities, fmt.Sprintf("large:%d:%d:%d", c[0], c[1], c[2]))
	}
	if r.BGP.LocalPref != nil {
		adv.Spec.LocalPref = *r.BGP.LocalPref
	}
	if r.BGP.Prepend > 0 && t.Mode != Native {
		adv.Spec.AsPathPrepend = uint8(min(r.BGP.Prepend, 10))
	}
	return adv
}

// hostnameSelector selects the nodes by their kubernetes.io/hostname label.
func hostnameSelector(hosts []string) metav1.LabelSelector {
	return metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key: corev1.LabelHostname, Operator: metav1.LabelSelectorOpIn, Values: hosts,
	}}}
}
