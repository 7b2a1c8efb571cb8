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
	"strings"

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
	sessions := d.Sessions
	if t.Mode == FRRK8s {
		sessions = oneASNPerNode(sessions, &tr)
	}
	for _, s := range sessions {
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
		if t.Mode == Native && r.Prefix.Addr().Is6() {
			continue // its pool stays, for the Services holding its addresses; MetalLB refuses to advertise it
		}
		if adv := t.advertisement(d, r, peersOf); adv != nil {
			tr.Objects = append(tr.Objects, adv)
		}
	}
	if t.Mode == Native {
		for _, p := range d.Planned {
			if p.Prefix.Addr().Is6() {
				tr.IgnorePrefix(p.Source, "IPv6 prefixes (MetalLB's native BGP mode announces IPv4 only, and refuses a whole configuration that advertises an IPv6 pool; use frr-k8s mode)")
			}
			if len(p.BGP.LargeCommunities) > 0 {
				tr.IgnorePrefix(p.Source, "attributes.largeCommunities (MetalLB's native BGP mode sends standard communities only, and refuses a whole configuration with a large one)")
			}
		}
	}
	return tr
}

// oneASNPerNode keeps, on each node, only sessions MetalLB in frr-k8s mode can run together: it runs one FRR per
// node, with one local AS and one session per peer address, and refuses a whole configuration whose BGPPeers break
// that on some node (then it keeps running the previous one, and no withdrawal happens). On a node where claims
// disagree, the sessions of the claim first by name win; the others are left off that node and the claim says so.
func oneASNPerNode(sessions []backend.Session, tr *backend.Translation) []backend.Session {
	type owner struct {
		claim string
		asn   anycastv1.ASN
	}
	asnOf := map[string]owner{}   // node → the claim whose AS it runs
	peerOf := map[string]string{} // node/peer address → the claim whose session it is
	order := slices.Clone(sessions)
	slices.SortStableFunc(order, func(a, b backend.Session) int { return strings.Compare(a.Claim, b.Claim) })
	keep := map[*backend.Session][]string{}
	for i := range order {
		s := &order[i]
		var nodes, otherAS, samePeer []string
		for _, n := range s.Nodes {
			o, ok := asnOf[n]
			switch {
			case ok && o.asn != s.Settings.LocalASN:
				otherAS = append(otherAS, fmt.Sprintf("%s (claim %s, AS %d)", n, o.claim, o.asn))
			case peerOf[n+"/"+string(s.Peer.Address)] != "" && peerOf[n+"/"+string(s.Peer.Address)] != s.Claim:
				samePeer = append(samePeer, fmt.Sprintf("%s (claim %s)", n, peerOf[n+"/"+string(s.Peer.Address)]))
			default:
				asnOf[n] = owner{s.Claim, s.Settings.LocalASN}
				peerOf[n+"/"+string(s.Peer.Address)] = s.Claim
				nodes = append(nodes, n)
			}
		}
		if len(otherAS) > 0 {
			tr.IgnoreClaim(s.Claim, fmt.Sprintf("peer %s on nodes %s: MetalLB in frr-k8s mode runs one local AS per node, and another claim's is there; give the claims one localASN",
				s.Peer.Address, strings.Join(otherAS, ", ")))
		}
		if len(samePeer) > 0 {
			tr.IgnoreClaim(s.Claim, fmt.Sprintf("peer %s on nodes %s: MetalLB in frr-k8s mode runs one session per peer and node, and another claim has it there",
				s.Peer.Address, strings.Join(samePeer, ", ")))
		}
		keep[s] = nodes
	}
	var out []backend.Session
	for i := range order {
		if nodes := keep[&order[i]]; len(nodes) > 0 {
			s := order[i]
			s.Nodes = nodes
			out = append(out, s)
		}
	}
	return out
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
		if t.Mode == Native {
			break // MetalLB's native mode refuses a whole configuration with a large community (SettingsIgnored)
		}
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
