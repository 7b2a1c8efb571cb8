package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DrainAnnotation on a Node (value "true") drains it for planned maintenance: its agent deprefers every prefix at once
// (GRACEFUL_SHUTDOWN, RFC 8326), then withdraws after withdrawDelay, whatever the health of its service.
const DrainAnnotation = "anycast.dev/drain"

// MaxPrefixesPerNode bounds the prefixes one node announces (the maxItems of NodeAnnouncement.spec.prefixes, which
// keeps the CRD's validation rules within the API server's cost budget). The plan never exceeds it.
const MaxPrefixesPerNode = 512

// NodeAnnouncementSpec is the plan for one node, written only by the manager. It is self-contained: the agent needs no
// other object of this API to act on it. Its lists are atomic: one writer owns each of them whole, and per-entry
// ownership would make the object's managedFields larger than the object itself (and every write slower).
type NodeAnnouncementSpec struct {
	// drain is set while the Node carries the anycast.dev/drain=true annotation.
	// +optional
	Drain bool `json:"drain,omitempty"`

	// sessions are the session settings of every BGPSessionClaim that selects this node.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	Sessions []NodeSessions `json:"sessions,omitempty"`

	// healthPolicies are the HealthPolicies the prefixes of this node refer to, copied so the agent never reads them.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	HealthPolicies []NodeHealthPolicy `json:"healthPolicies,omitempty"`

	// groups are the prefixes to announce from this node, grouped by how they are announced (sessions, attributes,
	// health policy), so that what many prefixes share is written once. At most MaxPrefixesPerNode prefixes in all,
	// each CIDR once.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	Groups []PrefixGroup `json:"groups,omitempty"`

	// permits names the AnycastPrefixes this node may withdraw or deprefer now (maxWithdrawn). Without a permit the
	// agent keeps announcing a prefix, however unhealthy, and asks for one in status.permitRequests.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=512
	// +kubebuilder:validation:items:MaxLength=253
	Permits []string `json:"permits,omitempty"`
}

// NodeSessions are the sessions one claim gives the node.
// +kubebuilder:validation:XValidation:rule="has(self.static) != has(self.netactuate)",message="set exactly one session provider: static or netactuate"
type NodeSessions struct {
	// claim is the name of the BGPSessionClaim.
	// +required
	Claim LocalObjectName `json:"claim"`

	BGPSessionSettings `json:",inline"`
}

// NodeHealthPolicy is a HealthPolicy's spec under its name.
type NodeHealthPolicy struct {
	// name of the HealthPolicy.
	// +required
	Name LocalObjectName `json:"name"`

	// spec of the HealthPolicy.
	// +required
	Spec HealthPolicySpec `json:"spec"`
}

// PrefixGroup is a set of prefixes the node announces the same way.
type PrefixGroup struct {
	// sessions names the claims (entries of spec.sessions) whose sessions carry the prefixes; the export policies are
	// already applied.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	Sessions []LocalObjectName `json:"sessions"`

	// attributes for this node, overrides merged.
	// +optional
	Attributes *BGPAttributes `json:"attributes,omitempty"`

	// healthPolicy names an entry of spec.healthPolicies; absent: announce unconditionally.
	// +optional
	HealthPolicy LocalObjectName `json:"healthPolicy,omitempty"`

	// paused: the agent keeps these prefixes in their current state and acts on nothing new.
	// +optional
	Paused bool `json:"paused,omitempty"`

	// prefixes announced this way.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=512
	Prefixes []GroupPrefix `json:"prefixes"`
}

// GroupPrefix is one prefix of a group and the AnycastPrefix it comes from.
type GroupPrefix struct {
	// prefix to announce.
	// +required
	Prefix PlannedCIDR `json:"prefix"`

	// source is the name of the AnycastPrefix this prefix comes from. (A plain string: it is copied from an object
	// name the API server has validated, and a name rule here, repeated for every prefix of every group, would exceed
	// the CRD's validation cost budget.)
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Source string `json:"source"`

	// leaving: the node no longer qualifies for the prefix (a selector, an export policy or maxPrefixes changed).
	// Its agent withdraws it when it holds the AnycastPrefix's permit (maxWithdrawn) and the manager removes the
	// entry once the agent reports it withdrawn: a configuration change takes a prefix off no more nodes at once
	// than the budget allows.
	// +optional
	Leaving bool `json:"leaving,omitempty"`
}

// PrefixCount counts the prefixes of every group.
func (s NodeAnnouncementSpec) PrefixCount() int {
	n := 0
	for i := range s.Groups {
		n += len(s.Groups[i].Prefixes)
	}
	return n
}

// PrefixState is what a node currently does with a prefix.
// +kubebuilder:validation:Enum=Announced;Withdrawn;Deprefered;Pending
type PrefixState string

// Prefix states reported by the agent.
const (
	PrefixAnnounced  PrefixState = "Announced"
	PrefixWithdrawn  PrefixState = "Withdrawn"
	PrefixDeprefered PrefixState = "Deprefered"
	PrefixPending    PrefixState = "Pending"
)

// NodePrefixStatus is the agent's decision for one prefix.
type NodePrefixStatus struct {
	// prefix the decision is about.
	// +required
	Prefix PlannedCIDR `json:"prefix"`

	// state of the prefix on this node.
	// +required
	State PrefixState `json:"state"`

	// since when the prefix is in this state.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`

	// reason for the state, one CamelCase word.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason,omitempty"`

	// message says why the router was not told what the agent decided (the speaker's error), when it was not.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
}

// CheckState is the dampened result of one health check.
// +kubebuilder:validation:Enum=Passing;Failing;Unknown
type CheckState string

// Check states reported by the agent.
const (
	CheckPassing CheckState = "Passing"
	CheckFailing CheckState = "Failing"
	CheckUnknown CheckState = "Unknown"
)

// NodeCheckStatus is the agent's view of one health check of one policy.
type NodeCheckStatus struct {
	// policy is the HealthPolicy the check belongs to.
	// +required
	Policy LocalObjectName `json:"policy"`

	// name of the check.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// state after the rise/fall thresholds.
	// +required
	State CheckState `json:"state"`

	// lastProbeTime is when the check last ran as of this status write.
	// +optional
	LastProbeTime *metav1.Time `json:"lastProbeTime,omitempty"`

	// consecutiveFailures counts the failed probes since the last pass.
	// +optional
	ConsecutiveFailures int32 `json:"consecutiveFailures,omitempty"`

	// latency of the last probe.
	// +optional
	Latency *metav1.Duration `json:"latency,omitempty"`

	// lastError is the error of the last failed probe.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	LastError string `json:"lastError,omitempty"`
}

// NodeSessionStatus is one BGP session of the node, as its speaker reports it.
type NodeSessionStatus struct {
	// claim the session comes from.
	// +required
	Claim LocalObjectName `json:"claim"`

	// peerAddress of the session.
	// +required
	// +kubebuilder:validation:MaxLength=45
	PeerAddress string `json:"peerAddress"`

	// peerASN of the session.
	// +optional
	PeerASN int64 `json:"peerASN,omitempty"`

	// localAddress the node speaks from.
	// +optional
	// +kubebuilder:validation:MaxLength=45
	LocalAddress string `json:"localAddress,omitempty"`

	// state of the session.
	// +required
	State SessionState `json:"state"`

	// since when the session is in this state.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`

	// lastError says why the session is not running as configured: the speaker refused it, or its password cannot
	// be read or used. Never the password itself.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	LastError string `json:"lastError,omitempty"`
}

// ProvisioningState is where a node's provisioned sessions of one claim stand.
// +kubebuilder:validation:Enum=Discovering;Provisioning;Ready;Error
type ProvisioningState string

// Provisioning states: the agent looks for its node at the provider, asks for the sessions and waits for them, has
// them, or cannot go on (the reason says why and what to do).
const (
	ProvisioningDiscovering  ProvisioningState = "Discovering"
	ProvisioningProvisioning ProvisioningState = "Provisioning"
	ProvisioningReady        ProvisioningState = "Ready"
	ProvisioningError        ProvisioningState = "Error"
)

// ProvisionedSession is one BGP session a provider set up for the node.
type ProvisionedSession struct {
	// id of the session at the provider.
	// +optional
	ID int64 `json:"id,omitempty"`

	// peerAddress is the provider's router.
	// +required
	PeerAddress IPAddress `json:"peerAddress"`

	// peerASN is the provider's AS number.
	// +required
	PeerASN ASN `json:"peerASN"`

	// localAddress is the node's address on the session.
	// +optional
	LocalAddress IPAddress `json:"localAddress,omitempty"`

	// localASN is the AS number the node speaks as on this session.
	// +required
	LocalASN ASN `json:"localASN"`
}

// ProvisioningStatus is how the node's sessions of one claim were provisioned.
type ProvisioningStatus struct {
	// claim whose provider provisioned the sessions.
	// +required
	Claim LocalObjectName `json:"claim"`

	// state of the provisioning.
	// +required
	State ProvisioningState `json:"state"`

	// reason is a CamelCase word for the state (ServerNotFound, Unauthorized, APIUnavailable, ...).
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason,omitempty"`

	// message says what happened and, for an error, what to do.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`

	// serverID is the node's id at the provider (NetActuate's mbpkgid).
	// +optional
	ServerID int64 `json:"serverID,omitempty"`

	// sessions the provider set up for the node.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Sessions []ProvisionedSession `json:"sessions,omitempty"`

	// lastCreateTime is when the agent last asked the provider to create sessions. It does not ask again before the
	// provider had time to list them, even across restarts: a retry never creates a second set.
	// +optional
	LastCreateTime *metav1.Time `json:"lastCreateTime,omitempty"`

	// since when the provisioning is in this state.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
}

// NodeAnnouncementStatus is written only by the node's agent, and only when something changed.
type NodeAnnouncementStatus struct {
	// observedGeneration is the generation of the spec the agent acts on.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// permits the agent holds as of observedGeneration. The manager counts them against maxWithdrawn until the agent
	// reports that it has let a revoked one go, so that the budget holds even while the agent cannot be reached.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=512
	// +kubebuilder:validation:items:MaxLength=253
	Permits []string `json:"permits,omitempty"`

	// permitRequests names the AnycastPrefixes the agent wants to withdraw or deprefer but holds no permit for.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=512
	// +kubebuilder:validation:items:MaxLength=253
	PermitRequests []string `json:"permitRequests,omitempty"`

	// agentVersion is the version of the agent.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	AgentVersion string `json:"agentVersion,omitempty"`

	// prefixes: the agent's decision per prefix.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=512
	Prefixes []NodePrefixStatus `json:"prefixes,omitempty"`

	// checks: the result of each health check.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=1024
	Checks []NodeCheckStatus `json:"checks,omitempty"`

	// sessions: the BGP sessions of the node.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	Sessions []NodeSessionStatus `json:"sessions,omitempty"`

	// provisioning reports, per claim whose sessions a provider sets up (NetActuate), how that went.
	// +optional
	// +listType=map
	// +listMapKey=claim
	// +kubebuilder:validation:MaxItems=8
	Provisioning []ProvisioningStatus `json:"provisioning,omitempty"`

	// conditions: Ready and the agent's own conditions.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// NodeAnnouncement is the plan for one node (name = node name, owned by the Node). The manager writes its spec; the
// node's agent writes its status.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=na,categories=anycast
// +kubebuilder:printcolumn:name="Drain",type=boolean,JSONPath=`.spec.drain`
// +kubebuilder:printcolumn:name="Agent",type=string,JSONPath=`.status.agentVersion`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NodeAnnouncement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec NodeAnnouncementSpec `json:"spec,omitempty"`
	// +optional
	Status NodeAnnouncementStatus `json:"status,omitempty"`
}

// NodeAnnouncementList is a list of NodeAnnouncement.
// +kubebuilder:object:root=true
type NodeAnnouncementList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeAnnouncement `json:"items"`
}
