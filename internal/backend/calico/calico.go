// Package calico translates the operator's desired state into Calico's projectcalico.org/v3 objects.
//
// Calico advertises the CIDRs of the cluster-wide BGPConfiguration "default" spec.serviceLoadBalancerIPs from every
// node (with the default aggregation, without needing a Service), so an anycast prefix is one entry there, merged
// with the entries others own. Which node sends it to which peer is decided per node and peer: every node gets a
// BGPPeer per peer of its claims (spec.node), and each of those peers a BGPFilter of the node and claim that rejects
// every route outside the prefixes the node announces now, and nothing inside them (so that Calico's own export,
// which applies the communities, sends them). A node withdraws a prefix by its filter rejecting it; the filter is
// also the claim's route-leak guard. Communities go to prefixAdvertisements: the
// cluster-wide entry carries the attributes most announcing nodes use, and a node announcing with other attributes
// (an attribute override, or Deprefer's GRACEFUL_SHUTDOWN) gets a list of its own, with every prefix it announces, in
// its BGPConfiguration "node.<name>". Session state comes from a CalicoNodeStatus per node.
package calico

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"

	calicov3 "github.com/projectcalico/api/pkg/apis/projectcalico/v3"
	"github.com/projectcalico/api/pkg/lib/numorstring"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"

	"github.com/anycast-operator/anycast-operator/internal/backend"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
)

// GlobalConfig is the name of Calico's cluster-wide BGPConfiguration; node-specific ones are "node.<node name>".
const GlobalConfig = "default"

// statusUpdatePeriod is how often calico-node refreshes the CalicoNodeStatus the backend reads sessions from.
const statusUpdatePeriod = 10

// AddToScheme registers Calico's v3 kinds.
func AddToScheme(s *runtime.Scheme) error { return calicov3.AddToScheme(s) }

// Translator writes Calico's cluster-scoped objects, and password Secrets into calico-node's namespace.
type Translator struct {
	// Namespace is calico-node's namespace (calico-system with the operator, kube-system with the manifests),
	// where BGPPeer password Secrets must be.
	Namespace string
	Secrets   backend.Secrets
}

var (
	bgpPeer          = calicov3.SchemeGroupVersion.WithKind(calicov3.KindBGPPeer)
	bgpFilter        = calicov3.SchemeGroupVersion.WithKind(calicov3.KindBGPFilter)
	bgpConfiguration = calicov3.SchemeGroupVersion.WithKind(calicov3.KindBGPConfiguration)
	nodeStatus       = calicov3.SchemeGroupVersion.WithKind(calicov3.KindCalicoNodeStatus)
)

// Kinds are the kinds the backend owns whole objects of.
func (t Translator) Kinds() []backend.Kind {
	return []backend.Kind{
		{GroupVersionKind: bgpPeer}, {GroupVersionKind: bgpFilter}, {GroupVersionKind: nodeStatus},
		{GroupVersionKind: corev1.SchemeGroupVersion.WithKind("Secret"), Namespace: t.Namespace},
	}
}

// SharedKinds are the kinds it shares objects of (BGPConfigurations).
func (t Translator) SharedKinds() []schema.GroupVersionKind {
	return []schema.GroupVersionKind{bgpConfiguration}
}

// Translate returns the Calico objects for d.
func (t Translator) Translate(d backend.Desired) backend.Translation {
	var tr backend.Translation
	announced := announcedBy(d)
	nodes := map[string]bool{}
	filters := map[string]bool{}
	for _, s := range d.Sessions {
		secret, ok := tr.PasswordSecret(s, t.Secrets, backend.Name(s.Name(), "md5"), t.Namespace, corev1.SecretTypeOpaque, "password")
		if !ok {
			continue
		}
		if secret != nil {
			tr.Objects = append(tr.Objects, secret)
		}
		ignoreSettings(s, &tr)
		for _, node := range s.Nodes {
			filter := filterName(s.Claim, node)
			if !filters[filter] {
				filters[filter] = true
				tr.Objects = append(tr.Objects, exportFilter(filter, s.Claim, announced[node][s.Claim]))
			}
			tr.Objects = append(tr.Objects, peer(s, node, filter, secret))
			if !nodes[node] {
				nodes[node] = true
				tr.Objects = append(tr.Objects, &calicov3.CalicoNodeStatus{ObjectMeta: backend.Meta(backend.Name("anycast", node), "", ""),
					Spec: calicov3.CalicoNodeStatusSpec{Node: node, Classes: []calicov3.NodeStatusClassType{calicov3.NodeStatusClassTypeBGP},
						UpdatePeriodSeconds: ptr.To[uint32](statusUpdatePeriod)}})
			}
		}
	}
	t.advertise(d, &tr)
	tr.IgnoreAttributes(d, backend.AttributeLimits{MED: "Calico has no MED", LocalPreference: "Calico has no per-prefix local preference",
		ASPathPrepend: "not in this Calico API"})
	return tr
}

// announcedBy maps node → claim → the prefixes the node announces now over the claim's sessions.
func announcedBy(d backend.Desired) map[string]map[string][]netip.Prefix {
	out := map[string]map[string][]netip.Prefix{}
	for _, r := range d.Routes {
		for _, n := range r.Nodes {
			if out[n] == nil {
				out[n] = map[string][]netip.Prefix{}
			}
			for _, c := range r.BGP.Claims {
				if !slices.Contains(out[n][c], r.Prefix) {
					out[n][c] = append(out[n][c], r.Prefix)
				}
			}
		}
	}
	return out
}

func filterName(claim, node string) string { return backend.Name("anycast", claim, node) }

// exportFilter lets through to Calico's own export exactly the routes inside prefixes, in both families, and rejects
// every other route: the route-leak guard. It has no Accept rule: in the BIRD configuration confd renders, a BGPFilter
// runs before calico_export_to_bgp_peers(), which is where the communities of prefixAdvertisements are applied, and an
// Accept ends the export filter there, so the router would get the prefix without its communities (found with
// Calico's own confd and BIRD 1.6.8). A route the filter lets through is exported only if Calico exports it anyway:
// the prefix's static route, from serviceLoadBalancerIPs.
func exportFilter(name, claim string, prefixes []netip.Prefix) *calicov3.BGPFilter {
	f := &calicov3.BGPFilter{ObjectMeta: backend.Meta(name, "", claim)}
	var v4, v6 []netip.Prefix
	for _, p := range prefixes {
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	for _, r := range rejectOutside(v4, netip.MustParsePrefix("0.0.0.0/0")) {
		f.Spec.ExportV4 = append(f.Spec.ExportV4, calicov3.BGPFilterRuleV4{CIDR: r.cidr.String(), MatchOperator: r.op, Action: calicov3.Reject})
	}
	for _, r := range rejectOutside(v6, netip.MustParsePrefix("::/0")) {
		f.Spec.ExportV6 = append(f.Spec.ExportV6, calicov3.BGPFilterRuleV6{CIDR: r.cidr.String(), MatchOperator: r.op, Action: calicov3.Reject})
	}
	return f
}

// rejectRule rejects the routes matching cidr by op (In: inside it; NotIn: not inside it; Equal: it exactly).
type rejectRule struct {
	op   calicov3.BGPFilterMatchOperator
	cidr netip.Prefix
}

// rejectOutside returns Reject rules that match every route of the family (root is its /0) not inside one of
// allowed, and no route inside one. The rules match a CIDR only (In, NotIn, Equal), which every Calico BGPFilter has
// (3.28's has no prefix-length range; the API's later prefixLength is not used), so the set is a walk of the address
// trie: below the smallest prefix covering all of allowed (NotIn it), a subtree holding none of allowed is rejected
// whole (In), and a node above one of allowed is rejected exactly (Equal), since an aggregate covering an allowed
// prefix is not inside it. One allowed prefix takes one rule; none rejects the whole family.
func rejectOutside(allowed []netip.Prefix, root netip.Prefix) []rejectRule {
	allowed = slices.Clone(allowed)
	for i := range allowed {
		allowed[i] = allowed[i].Masked()
	}
	if len(allowed) == 0 {
		return []rejectRule{{calicov3.In, root}}
	}
	top := allowed[0]
	for _, p := range allowed[1:] {
		top = commonPrefix(top, p)
	}
	var rules []rejectRule
	if top.Bits() > 0 {
		rules = append(rules, rejectRule{calicov3.NotIn, top})
	}
	var walk func(n netip.Prefix)
	walk = func(n netip.Prefix) {
		inside := false
		for _, p := range allowed {
			if p.Bits() <= n.Bits() && p.Contains(n.Addr()) {
				return // n is inside an allowed prefix: everything below it passes
			}
			inside = inside || (n.Contains(p.Addr()) && p.Bits() > n.Bits())
		}
		if !inside {
			rules = append(rules, rejectRule{calicov3.In, n})
			return
		}
		rules = append(rules, rejectRule{calicov3.Equal, n})
		lo, hi := children(n)
		walk(lo)
		walk(hi)
	}
	walk(top)
	return rules
}

// commonPrefix is the smallest prefix holding both a and b.
func commonPrefix(a, b netip.Prefix) netip.Prefix {
	bits := min(a.Bits(), b.Bits())
	for bits > 0 {
		if p := netip.PrefixFrom(b.Addr(), bits).Masked(); p.Contains(a.Addr()) {
			return p
		}
		bits--
	}
	return netip.PrefixFrom(a.Addr(), 0).Masked()
}

// children are the two halves of n.
func children(n netip.Prefix) (lo, hi netip.Prefix) {
	lo = netip.PrefixFrom(n.Addr(), n.Bits()+1).Masked()
	b := n.Addr().AsSlice()
	b[n.Bits()/8] |= 0x80 >> (n.Bits() % 8)
	a, _ := netip.AddrFromSlice(b)
	return lo, netip.PrefixFrom(a, n.Bits()+1)
}

// peer is the BGPPeer of one node and one peer of a claim.
func peer(s backend.Session, node, filter string, secret *corev1.Secret) *calicov3.BGPPeer {
	addr := netip.MustParseAddr(string(s.Peer.Address))
	peerIP := addr.String()
	if s.Peer.Port != nil && *s.Peer.Port != 179 {
		peerIP = netip.AddrPortFrom(addr, uint16(*s.Peer.Port)).String()
	}
	p := &calicov3.BGPPeer{ObjectMeta: backend.Meta(backend.Name(s.Name(), node), "", s.Claim), Spec: calicov3.BGPPeerSpec{
		Node:          node,
		PeerIP:        peerIP,
		ASNumber:      numorstring.ASNumber(s.Peer.ASN),
		LocalASNumber: ptr.To(numorstring.ASNumber(s.Settings.LocalASN)),
		Filters:       []string{filter},
	}}
	if s.Settings.GracefulRestart != nil {
		p.Spec.MaxRestartTime = &metav1.Duration{Duration: s.Settings.GracefulRestart.RestartTime.Duration}
	}
	if secret != nil {
		p.Spec.Password = &calicov3.BGPPassword{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: secret.Name}, Key: "password"}}
	}
	return p
}

// ignoreSettings records the claim settings this Calico API cannot carry.
func ignoreSettings(s backend.Session, tr *backend.Translation) {
	if tm := s.Settings.Timers; tm != nil && (tm.HoldTime != nil || tm.KeepaliveTime != nil || tm.ConnectRetry != nil) {
		tr.IgnoreClaim(s.Claim, "timers (Calico's BGPPeer has no hold, keepalive or connect-retry time before v3.32; BIRD's defaults apply)")
	}
	if s.Settings.BFD != nil {
		tr.IgnoreClaim(s.Claim, "bfd (Calico's v3 API has no BFD)")
	}
	if s.Settings.EBGPMultihop != nil {
		tr.IgnoreClaim(s.Claim, "ebgpMultihop (Calico configures every external peer as multihop; there is no TTL to set)")
	}
}

// advertise puts the planned prefixes into serviceLoadBalancerIPs of the cluster-wide configuration and their
// communities into prefixAdvertisements: cluster-wide for the attributes most of a prefix's announcing nodes use, per
// node for the others. A prefix is listed while it is planned, announced or not (the nodes' filters decide who sends
// it): confd renders the static route of a serviceLoadBalancerIPs entry and the communities into different files and
// reloads BIRD after each, so a prefix listed at the moment its first node announces could reach the router for a
// moment without its communities (seen with Calico's own confd). Listed ahead, both are in place when a filter, in
// the same file as the communities, first lets it through.
func (t Translator) advertise(d backend.Desired, tr *backend.Translation) {
	type prefixKey struct{ source, prefix string }
	variants := map[prefixKey][]backend.Route{}
	planned := map[prefixKey]backend.PlannedPrefix{}
	var order []prefixKey
	for _, p := range d.Planned {
		k := prefixKey{p.Source, p.Prefix.String()}
		if _, ok := planned[k]; !ok {
			order = append(order, k)
		}
		planned[k] = p
	}
	for _, r := range d.Routes {
		k := prefixKey{r.Source, r.Prefix.String()}
		if _, ok := planned[k]; !ok && variants[k] == nil {
			order = append(order, k)
		}
		variants[k] = append(variants[k], r)
	}
	global := []backend.SharedList{
		{GVK: bgpConfiguration, Name: GlobalConfig, Path: []string{"spec", "serviceLoadBalancerIPs"}, Key: "cidr", Source: map[string]string{}},
		{GVK: bgpConfiguration, Name: GlobalConfig, Path: []string{"spec", "prefixAdvertisements"}, Key: "cidr", Source: map[string]string{}},
	}
	// A node announcing some prefix with attributes of its own gets a prefixAdvertisements list of its own, and that
	// list holds every prefix the node announces: Calico uses a node's list instead of the cluster-wide one, not on
	// top of it (confd's bird.cfg template; found with Calico's own confd), so the node's other prefixes would
	// otherwise lose their communities.
	own := map[string]bool{}
	mainAttrs := map[prefixKey][]any{} // the cluster-wide communities of each prefix
	for _, k := range order {
		routes := variants[k]
		global[0].Entries = append(global[0].Entries, map[string]any{"cidr": k.prefix})
		global[0].Source[k.prefix] = k.source
		// Before any node announces: the attributes the prefix is planned with.
		main, attrs := 0, planned[k].BGP
		if len(routes) > 0 {
			main = mainVariant(routes)
			attrs = routes[main].BGP
		}
		mainAttrs[k] = communitiesOf(attrs)
		if len(mainAttrs[k]) > 0 {
			global[1].Entries = append(global[1].Entries, map[string]any{"cidr": k.prefix, "communities": mainAttrs[k]})
			global[1].Source[k.prefix] = k.source
		}
		for i, r := range routes {
			for _, n := range r.Nodes {
				own[n] = own[n] || i != main
			}
		}
	}
	// A node's own list holds every listed prefix, not only those it announces now: its filter may let a prefix
	// through (the manager writes filters first) before its list would otherwise gain that prefix's communities.
	perNode := map[string]*backend.SharedList{}
	for _, n := range slices.Sorted(maps.Keys(own)) {
		if !own[n] {
			continue
		}
		l := &backend.SharedList{GVK: bgpConfiguration, Name: "node." + n, Path: []string{"spec", "prefixAdvertisements"}, Key: "cidr", Source: map[string]string{}}
		for _, k := range order {
			communities := mainAttrs[k]
			for _, r := range variants[k] {
				if slices.Contains(r.Nodes, n) {
					communities = communitiesOf(r.BGP)
				}
			}
			if len(communities) == 0 && len(mainAttrs[k]) == 0 {
				continue // nothing to apply, here or cluster-wide
			}
			// An empty list of communities still overrides the cluster-wide entry on this node.
			l.Entries = append(l.Entries, map[string]any{"cidr": k.prefix, "communities": communities})
			l.Source[k.prefix] = k.source
		}
		perNode[n] = l
	}
	tr.Shared = append(tr.Shared, global...)
	for _, n := range slices.Sorted(maps.Keys(perNode)) {
		tr.Shared = append(tr.Shared, *perNode[n])
	}
}

// mainVariant is the index of the route announced by the most nodes, not deprefered when possible.
func mainVariant(routes []backend.Route) int {
	best := 0
	score := func(r backend.Route) int {
		s := len(r.Nodes) * 2
		if !r.Deprefered {
			s += 1 << 20
		}
		return s
	}
	for i, r := range routes {
		if score(r) > score(routes[best]) {
			best = i
		}
	}
	return best
}

// communitiesOf writes communities as Calico does: aa:nn and aa:nn:mm, as JSON values for an unstructured list.
func communitiesOf(r speaker.Route) []any {
	out := []any{}
	for _, c := range r.Communities {
		out = append(out, strconv.FormatUint(uint64(c>>16), 10)+":"+strconv.FormatUint(uint64(c&0xFFFF), 10))
	}
	for _, c := range r.LargeCommunities {
		out = append(out, fmt.Sprintf("%d:%d:%d", c[0], c[1], c[2]))
	}
	return out
}

// SessionKinds are what calico-node reports sessions in.
func (t Translator) SessionKinds() []schema.GroupVersionKind {
	return []schema.GroupVersionKind{nodeStatus}
}

// Sessions reads, per node, the BGP sessions calico-node reports in the CalicoNodeStatus objects the backend owns.
// A node whose status has no BGP part yet reports nothing (its sessions stay Unknown).
func (t Translator) Sessions(ctx context.Context, r client.Reader) (map[string][]anycastv1.NodeSessionStatus, error) {
	var list calicov3.CalicoNodeStatusList
	if err := r.List(ctx, &list, client.MatchingLabels{backend.ManagedByLabel: backend.ManagedBy}); err != nil {
		return nil, fmt.Errorf("listing CalicoNodeStatus: %w", err)
	}
	out := map[string][]anycastv1.NodeSessionStatus{}
	for _, st := range list.Items {
		if st.Status.LastUpdated.IsZero() {
			continue
		}
		var sessions []anycastv1.NodeSessionStatus
		for _, p := range slices.Concat(st.Status.BGP.PeersV4, st.Status.BGP.PeersV6) {
			if p.Type == calicov3.BGPPeerTypeNodeMesh {
				continue
			}
			sessions = append(sessions, anycastv1.NodeSessionStatus{PeerAddress: p.PeerIP, State: sessionState(p.State)})
		}
		out[st.Spec.Node] = sessions
	}
	return out, nil
}

func sessionState(s calicov3.BGPSessionState) anycastv1.SessionState {
	if s == calicov3.BGPSessionStateClose {
		return anycastv1.SessionIdle // BIRD's "Close": the session is being torn down
	}
	return backend.SessionState(string(s))
}
