// Package backend turns the plan and the agents' decisions into the objects of a Kubernetes BGP stack (MetalLB,
// Calico, Cilium), for the manager to apply. Desired says what must be announced, from which nodes, over which
// sessions, whatever the stack; each stack's package translates it into its own kinds (a pure function); Sync applies
// the objects with server-side apply under one field owner and removes the ones it owns that are no longer wanted.
package backend

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
)

// Names of the backends the manager's --backend flag accepts. With bird and embedded the agents announce on their
// own and the manager writes no backend objects.
const (
	MetalLB  = "metallb"
	Calico   = "calico"
	Cilium   = "cilium"
	BIRD     = "bird"
	Embedded = "embedded"
)

// ManagedByLabel and ManagedBy mark every object a backend writes; Sync never touches an object without them.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedBy      = "anycast-operator"
	// SourceLabel names the AnycastPrefix or BGPSessionClaim an object was made for.
	SourceLabel = "anycast.dev/source"
)

// Finalizer holds an AnycastPrefix or BGPSessionClaim until the backend objects made for it are gone.
const Finalizer = "anycast.dev/backend-cleanup"

// Desired is what the cluster's BGP stack must do now.
type Desired struct {
	// Sessions are one per claim and peer, with the nodes that open them.
	Sessions []Session
	// Routes are one per AnycastPrefix, prefix and way of announcing it, with the nodes announcing it that way now.
	// A prefix no node announces has no route.
	Routes []Route
	// Planned are the prefixes planned on some node, announced or not: the stack's address pools follow them, so
	// that a withdrawal never removes the pool a Service's address comes from.
	Planned []PlannedPrefix
	// Hostnames maps node names to their kubernetes.io/hostname label, which the stacks' node selectors match.
	Hostnames map[string]string
}

// Session is one BGP peer of one claim.
type Session struct {
	Claim    string
	Settings anycastv1.BGPSessionSettings // the claim's settings; Static is cleared, Peer is the peer
	Peer     anycastv1.BGPPeer
	Nodes    []string
}

// Name is a stable object name for the session: claim and peer address.
func (s Session) Name() string { return Name("anycast", s.Claim, Sanitize(string(s.Peer.Address))) }

// Route is one prefix, announced by some nodes with some attributes.
type Route struct {
	Source string // the AnycastPrefix
	Prefix netip.Prefix
	// BGP carries the attributes as BGP values (communities as numbers, deprefer applied); Attributes as the user
	// wrote them.
	BGP        speaker.Route
	Attributes *anycastv1.BGPAttributes
	Deprefered bool
	Nodes      []string
}

// PlannedPrefix is one prefix of an AnycastPrefix.
type PlannedPrefix struct {
	Source string
	Prefix netip.Prefix
	// BGP is how the prefix is announced when not deprefered (on the first node planned; attribute overrides may
	// differ per node).
	BGP speaker.Route
}

// AttributeLimits are the path attributes a backend cannot carry, each with the reason (empty: carried).
type AttributeLimits struct{ MED, LocalPreference, ASPathPrepend string }

// IgnoreAttributes records, for every planned prefix, the attributes it asks for that the backend cannot carry. It
// looks at the plan rather than at the routes of the moment, so that the prefix's condition does not flip with
// announcements. Deprefer's own MED and prepend are not counted here (the README's backend table says where only
// GRACEFUL_SHUTDOWN is sent).
func (t *Translation) IgnoreAttributes(d Desired, l AttributeLimits) {
	for _, p := range d.Planned {
		if p.BGP.MED != nil && l.MED != "" {
			t.IgnorePrefix(p.Source, "attributes.med ("+l.MED+")")
		}
		if p.BGP.LocalPref != nil && l.LocalPreference != "" {
			t.IgnorePrefix(p.Source, "attributes.localPreference ("+l.LocalPreference+")")
		}
		if p.BGP.Prepend > 0 && l.ASPathPrepend != "" {
			t.IgnorePrefix(p.Source, "attributes.asPathPrepend ("+l.ASPathPrepend+")")
		}
	}
}

// Variant names the way a route is announced (its attributes and deprefer), stable across plans.
func (r Route) Variant() string {
	h := fnv.New32a()
	fmt.Fprint(h, r.BGP.Communities, r.BGP.LargeCommunities, r.BGP.Prepend, r.Deprefered)
	if r.BGP.MED != nil {
		fmt.Fprint(h, "med", *r.BGP.MED)
	}
	if r.BGP.LocalPref != nil {
		fmt.Fprint(h, "lp", *r.BGP.LocalPref)
	}
	return fmt.Sprintf("%08x", h.Sum32())
}

// Compute derives Desired from the planned NodeAnnouncement specs and what each node's agent reports: a node
// announces a prefix while its agent reports it Announced (or Deprefered, with the deprefer attributes). A node
// whose agent reports nothing announces nothing; an agent that stops reporting leaves its last report in force
// (fail-static).
func Compute(planned map[string]anycastv1.NodeAnnouncementSpec, reported []anycastv1.NodeAnnouncement, nodes []corev1.Node) Desired {
	states := map[string]map[string]anycastv1.PrefixState{}
	provisioned := map[string]map[string][]anycastv1.ProvisionedSession{} // node → claim → sessions
	for _, na := range reported {
		m := map[string]anycastv1.PrefixState{}
		for _, p := range na.Status.Prefixes {
			m[string(p.Prefix)] = p.State
		}
		states[na.Name] = m
		provisioned[na.Name] = map[string][]anycastv1.ProvisionedSession{}
		for _, p := range na.Status.Provisioning {
			provisioned[na.Name][string(p.Claim)] = p.Sessions
		}
	}
	d := Desired{Hostnames: map[string]string{}}
	for _, n := range nodes {
		host := n.Labels[corev1.LabelHostname]
		if host == "" {
			host = n.Name
		}
		d.Hostnames[n.Name] = host
	}
	sessions := map[string]*Session{}
	routes := map[string]*Route{}
	plannedPrefixes := map[string]PlannedPrefix{}
	for _, node := range sortedKeys(planned) {
		spec := planned[node]
		for _, ns := range spec.Sessions {
			add := func(peer anycastv1.BGPPeer, localASN anycastv1.ASN) {
				key := fmt.Sprintf("%s/%s/%d", ns.Claim, peer.Address, localASN)
				s := sessions[key]
				if s == nil {
					settings := *ns.BGPSessionSettings.DeepCopy()
					settings.Static, settings.NetActuate, settings.LocalASN = nil, nil, localASN
					s = &Session{Claim: string(ns.Claim), Settings: settings, Peer: *peer.DeepCopy()}
					sessions[key] = s
				}
				s.Nodes = append(s.Nodes, node)
			}
			switch {
			case ns.Static != nil:
				for _, peer := range ns.Static.Peers {
					add(peer, ns.LocalASN)
				}
			case ns.NetActuate != nil:
				// Provisioned sessions reach the stack once the node's agent reports them, like static peers.
				for _, ps := range provisioned[node][string(ns.Claim)] {
					add(anycastv1.BGPPeer{Address: ps.PeerAddress, ASN: ps.PeerASN}, ps.LocalASN)
				}
			}
		}
		for _, g := range spec.Groups {
			claims := make([]string, len(g.Sessions))
			for i, c := range g.Sessions {
				claims[i] = string(c)
			}
			for _, gp := range g.Prefixes {
				pfx, err := netip.ParsePrefix(string(gp.Prefix))
				if err != nil || pfx.Bits() == 0 || pfx != pfx.Masked() {
					continue // never announce what the planner would not have planned
				}
				if _, ok := plannedPrefixes[gp.Source+"/"+pfx.String()]; !ok {
					normal, _ := speaker.RouteFor(pfx, claims, g.Attributes, false)
					plannedPrefixes[gp.Source+"/"+pfx.String()] = PlannedPrefix{Source: gp.Source, Prefix: pfx, BGP: normal}
				}
				state := states[node][string(gp.Prefix)]
				if state != anycastv1.PrefixAnnounced && state != anycastv1.PrefixDeprefered {
					continue
				}
				deprefer := state == anycastv1.PrefixDeprefered
				bgp, err := speaker.RouteFor(pfx, claims, g.Attributes, deprefer)
				if err != nil {
					continue
				}
				r := Route{Source: gp.Source, Prefix: pfx, BGP: bgp, Attributes: g.Attributes, Deprefered: deprefer}
				key := gp.Source + "/" + pfx.String() + "/" + r.Variant()
				if routes[key] == nil {
					routes[key] = &r
				}
				routes[key].Nodes = append(routes[key].Nodes, node)
			}
		}
	}
	for _, k := range sortedKeys(sessions) {
		d.Sessions = append(d.Sessions, *sessions[k])
	}
	for _, k := range sortedKeys(routes) {
		d.Routes = append(d.Routes, *routes[k])
	}
	for _, k := range sortedKeys(plannedPrefixes) {
		d.Planned = append(d.Planned, plannedPrefixes[k])
	}
	return d
}

// HostnamesOf maps node names to hostnames, sorted.
func (d Desired) HostnamesOf(nodes []string) []string {
	out := make([]string, 0, len(nodes))
	for _, n := range nodes {
		if h, ok := d.Hostnames[n]; ok {
			out = append(out, h)
		} else {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Translation is a backend's objects for a Desired state, and what it could not express.
type Translation struct {
	Objects []client.Object
	// Shared are the backend's entries in lists of objects it shares with others (MergeShared).
	Shared []SharedList
	// IgnoredClaims and IgnoredPrefixes list, per BGPSessionClaim and per AnycastPrefix, the settings the backend
	// cannot carry out; the manager says so in their status.
	IgnoredClaims, IgnoredPrefixes map[string][]string
}

// IgnoreClaim records that a claim's setting is not carried out by the backend.
func (t *Translation) IgnoreClaim(claim, what string) { addOnce(&t.IgnoredClaims, claim, what) }

// IgnorePrefix records that an AnycastPrefix's setting is not carried out by the backend.
func (t *Translation) IgnorePrefix(source, what string) { addOnce(&t.IgnoredPrefixes, source, what) }

func addOnce(m *map[string][]string, key, what string) {
	if *m == nil {
		*m = map[string][]string{}
	}
	if !slices.Contains((*m)[key], what) {
		(*m)[key] = append((*m)[key], what)
	}
}

// Secrets reads a key of a Secret in the operator's namespace; ok is false when it does not exist.
type Secrets func(name, key string) (value []byte, ok bool)

// maxNameLength is the longest object name of the kinds backends write (a DNS subdomain).
const maxNameLength = 253

// Name joins parts with "-" into an object name; a name longer than an object name may be is cut and made unique
// again with a hash of the whole.
func Name(parts ...string) string {
	return shorten(strings.Join(parts, "-"), maxNameLength)
}

// LabelValue is s as a label value (at most 63 characters): cut and made unique with a hash when longer.
func LabelValue(s string) string { return shorten(s, 63) }

func shorten(s string, max int) string {
	if len(s) <= max {
		return s
	}
	h := fnv.New64a()
	h.Write([]byte(s))
	sum := fmt.Sprintf("%016x", h.Sum64())
	return strings.TrimRight(s[:max-len(sum)-1], "-.") + "-" + sum
}

// Meta is the metadata of an object made for source (an AnycastPrefix or BGPSessionClaim; "" for an object made for
// a node).
func Meta(name, namespace, source string) metav1.ObjectMeta {
	m := metav1.ObjectMeta{Name: name, Namespace: namespace}
	if source != "" {
		m.Labels = map[string]string{SourceLabel: LabelValue(source)}
	}
	return m
}

// PasswordSecret copies the MD5 password of a session's peer into a Secret that the stack can read, in its
// namespace and under the session's name, owned and labelled like the rest; typ and key are the stack's convention.
// ok is false, and the reason recorded, when the claim's Secret or key does not exist: the session is then not
// configured rather than configured without its password. A peer without a password gets no Secret.
func (t *Translation) PasswordSecret(s Session, secrets Secrets, name, namespace string, typ corev1.SecretType, key string) (*corev1.Secret, bool) {
	ref := s.Peer.PasswordSecretRef
	if ref == nil {
		return nil, true
	}
	value, ok := secrets(ref.Name, ref.Key)
	if !ok {
		t.IgnoreClaim(s.Claim, fmt.Sprintf("peer %s: Secret %s key %s not found; the session is not configured", s.Peer.Address, ref.Name, ref.Key))
		return nil, false
	}
	return &corev1.Secret{ObjectMeta: Meta(name, namespace, s.Claim), Type: typ, Data: map[string][]byte{key: value}}, true
}

// SessionState reads a BGP finite-state-machine state as a stack names it ("Established", "established",
// "open_sent", "OpenSent"); anything else is Unknown.
func SessionState(name string) anycastv1.SessionState {
	norm := strings.ReplaceAll(strings.ToLower(name), "_", "")
	for _, st := range []anycastv1.SessionState{anycastv1.SessionIdle, anycastv1.SessionConnect, anycastv1.SessionActive,
		anycastv1.SessionOpenSent, anycastv1.SessionOpenConfirm, anycastv1.SessionEstablished} {
		if norm == strings.ToLower(string(st)) {
			return st
		}
	}
	return anycastv1.SessionUnknown
}

// Sanitize makes a string (an address, a prefix) usable in an object name: lower case, [a-z0-9-].
func Sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '-'
	}, s)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
