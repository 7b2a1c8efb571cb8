package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Defaults of BGPTimers (those of RFC 4271's suggested values and of most routers), applied by the speakers.
const (
	DefaultHoldTime      = "90s"
	DefaultKeepaliveTime = "30s"
	DefaultConnectRetry  = "30s"
)

// BGPSessionClaimSpec declares the BGP sessions a set of nodes needs. Exactly one provider is set.
// +kubebuilder:validation:XValidation:rule="has(self.static) != has(self.netactuate)",message="set exactly one session provider: static or netactuate"
type BGPSessionClaimSpec struct {
	// nodeSelector selects the nodes that get these sessions. Empty selects every node.
	// +required
	NodeSelector metav1.LabelSelector `json:"nodeSelector"`

	BGPSessionSettings `json:",inline"`
}

// BGPSessionSettings are the sessions of one claim, as the claim declares them and as each selected node's
// NodeAnnouncement carries them.
type BGPSessionSettings struct {
	// localASN is the AS number the selected nodes speak as.
	// +required
	LocalASN ASN `json:"localASN"`

	// static lists the peers by hand: every selected node peers with each of them.
	// +optional
	Static *StaticSessions `json:"static,omitempty"`

	// netactuate provisions the sessions of each selected node through the NetActuate API.
	// +optional
	NetActuate *NetActuateSessions `json:"netactuate,omitempty"`

	// timers of the sessions.
	// +optional
	Timers *BGPTimers `json:"timers,omitempty"`

	// bfd enables Bidirectional Forwarding Detection where the backend supports it; where it does not, a condition
	// says so.
	// +optional
	BFD *BFD `json:"bfd,omitempty"`

	// ebgpMultihop is the TTL of eBGP packets, for peers that are not directly connected. Unset: directly connected.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=255
	EBGPMultihop *int32 `json:"ebgpMultihop,omitempty"`

	// gracefulRestart enables BGP graceful restart (RFC 4724) so that a restarting agent does not withdraw routes.
	// +optional
	GracefulRestart *GracefulRestart `json:"gracefulRestart,omitempty"`

	// exportPolicy is the route-leak guard: nothing outside it is ever sent over these sessions.
	// +optional
	ExportPolicy *ExportPolicy `json:"exportPolicy,omitempty"`
}

// StaticSessions lists peers by hand.
type StaticSessions struct {
	// peers every selected node opens a session with. Addresses are unique.
	// +required
	// +listType=map
	// +listMapKey=address
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	Peers []BGPPeer `json:"peers"`
}

// BGPPeer is one BGP neighbor.
type BGPPeer struct {
	// address of the peer.
	// +required
	Address IPAddress `json:"address"`

	// asn of the peer. Equal to localASN makes an iBGP session.
	// +required
	ASN ASN `json:"asn"`

	// port of the peer, 1-65535. Default 179.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port *int32 `json:"port,omitempty"`

	// passwordSecretRef names the Secret key holding the TCP MD5 password of the session.
	// +optional
	PasswordSecretRef *SecretKeyRef `json:"passwordSecretRef,omitempty"`
}

// NetActuateSessions provisions sessions through the NetActuate API for each selected node.
type NetActuateSessions struct {
	// groupID is the NetActuate BGP group the sessions belong to.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=2147483647
	GroupID int64 `json:"groupID"`

	// apiKeySecretRef names the Secret key holding the API key. Absent: the API identifies each node by the source
	// address of its calls (VM IP-based authentication).
	// +optional
	APIKeySecretRef *SecretKeyRef `json:"apiKeySecretRef,omitempty"`

	// redundant asks for sessions to both routers of the location.
	// +optional
	Redundant bool `json:"redundant,omitempty"`

	// ipv6 asks for IPv6 sessions as well.
	// +optional
	IPv6 bool `json:"ipv6,omitempty"`

	// apiURL is the base URL of the NetActuate API. Default https://vapi2.netactuate.com/api/.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:XValidation:rule="isURL(self) && (url(self).getScheme() == 'https' || url(self).getScheme() == 'http') && url(self).getHostname() != ''",messageExpression="'apiURL \"' + self + '\" is not an http or https URL'"
	// +kubebuilder:validation:XValidation:rule="!self.contains('?') && !self.contains('#')",message="apiURL must not carry a query or fragment; the API key belongs in the Secret named by apiKeySecretRef"
	APIURL string `json:"apiURL,omitempty"`
}

// BGPTimers are the session timers.
// +kubebuilder:validation:XValidation:rule="!has(self.holdTime) || !self.holdTime.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self.holdTime) == duration('0s') || duration(self.holdTime) >= duration('3s')",message="holdTime must be 0s (no keepalives) or at least 3s (RFC 4271)"
// +kubebuilder:validation:XValidation:rule="[has(self.holdTime) ? self.holdTime : '90s', has(self.keepaliveTime) ? self.keepaliveTime : '30s'].exists(d, !d.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')) || (duration(has(self.keepaliveTime) ? self.keepaliveTime : '30s') < duration(has(self.holdTime) ? self.holdTime : '90s')) || (duration(has(self.holdTime) ? self.holdTime : '90s') == duration('0s') && duration(has(self.keepaliveTime) ? self.keepaliveTime : '30s') == duration('0s'))",message="keepaliveTime must be shorter than holdTime, usually a third of it (defaults: holdTime 90s, keepaliveTime 30s); with holdTime 0s it must be 0s too"
type BGPTimers struct {
	// holdTime: 0s (no keepalives) or 3s to 65535s. Default 90s.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')",messageExpression="'\"' + self + '\" is not a duration; write it like 500ms, 5s or 1m30s'"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self) <= duration('65535s')",messageExpression="'holdTime ' + self + ' is longer than 65535s'"
	HoldTime *metav1.Duration `json:"holdTime,omitempty"`

	// keepaliveTime, shorter than holdTime. Default 30s.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')",messageExpression="'\"' + self + '\" is not a duration; write it like 500ms, 5s or 1m30s'"
	KeepaliveTime *metav1.Duration `json:"keepaliveTime,omitempty"`

	// connectRetry is the wait between connection attempts, 1s to 1h. Default 30s.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')",messageExpression="'\"' + self + '\" is not a duration; write it like 500ms, 5s or 1m30s'"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') || (duration(self) >= duration('1s') && duration(self) <= duration('1h'))",messageExpression="'connectRetry ' + self + ' is out of range: use 1s to 1h'"
	ConnectRetry *metav1.Duration `json:"connectRetry,omitempty"`
}

// BFD configures Bidirectional Forwarding Detection.
type BFD struct {
	// minRx is the slowest interval at which this end wants to receive control packets, 10ms to 60s.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('10ms') && duration(self) <= duration('60s')",messageExpression="'minRx \"' + self + '\" must be a duration from 10ms to 60s'"
	MinRx *metav1.Duration `json:"minRx,omitempty"`

	// minTx is the fastest interval at which this end sends control packets, 10ms to 60s.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('10ms') && duration(self) <= duration('60s')",messageExpression="'minTx \"' + self + '\" must be a duration from 10ms to 60s'"
	MinTx *metav1.Duration `json:"minTx,omitempty"`

	// multiplier is how many packets may be missed before the session is declared down, 1-255.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=255
	Multiplier *int32 `json:"multiplier,omitempty"`
}

// GracefulRestart configures BGP graceful restart.
type GracefulRestart struct {
	// restartTime is how long peers keep our routes while we restart, 1s to 4095s (RFC 4724).
	// +required
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') && duration(self) >= duration('1s') && duration(self) <= duration('4095s')",messageExpression="'restartTime \"' + self + '\" must be a duration from 1s to 4095s'"
	RestartTime metav1.Duration `json:"restartTime"`
}

// ExportPolicy bounds what may be sent over the claim's sessions.
type ExportPolicy struct {
	// allowedPrefixes: a prefix is sent only if it equals or lies inside one of these. Absent: any prefix of the
	// AnycastPrefixes that name this claim.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	AllowedPrefixes []CIDR `json:"allowedPrefixes,omitempty"`

	// maxPrefixes caps how many prefixes a node sends over these sessions; the newest prefixes beyond it are not
	// planned and say so in their status.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1024
	MaxPrefixes *int32 `json:"maxPrefixes,omitempty"`
}

// SessionState is the state of one BGP session, as its speaker reports it.
// +kubebuilder:validation:Enum=Unknown;Idle;Connect;Active;OpenSent;OpenConfirm;Established
type SessionState string

// Session states of RFC 4271's finite state machine, plus Unknown when no speaker has reported.
const (
	SessionUnknown     SessionState = "Unknown"
	SessionIdle        SessionState = "Idle"
	SessionConnect     SessionState = "Connect"
	SessionActive      SessionState = "Active"
	SessionOpenSent    SessionState = "OpenSent"
	SessionOpenConfirm SessionState = "OpenConfirm"
	SessionEstablished SessionState = "Established"
)

// SessionStatus is one session of one node.
type SessionStatus struct {
	// node the session belongs to.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Node string `json:"node"`

	// peerAddress of the session.
	// +required
	// +kubebuilder:validation:MaxLength=45
	PeerAddress string `json:"peerAddress"`

	// peerASN of the session.
	// +optional
	PeerASN int64 `json:"peerASN,omitempty"`

	// localAddress the node speaks from, when known.
	// +optional
	// +kubebuilder:validation:MaxLength=45
	LocalAddress string `json:"localAddress,omitempty"`

	// state as reported by the node's speaker; Unknown until it reports.
	// +required
	State SessionState `json:"state"`

	// since when the session is in this state.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`

	// lastError says why the node's speaker does not run the session as configured (it refused it, or its password
	// cannot be read or used).
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	LastError string `json:"lastError,omitempty"`
}

// NodeProvisioningStatus is one node's provisioning of the claim's sessions.
type NodeProvisioningStatus struct {
	// node whose sessions these are.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Node string `json:"node"`

	// state of the provisioning; Unknown-free: a node whose agent has not reported yet is Discovering.
	// +required
	State ProvisioningState `json:"state"`

	// reason is a CamelCase word for the state.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason,omitempty"`

	// message says what happened and, for an error, what to do.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`

	// sessions counts the sessions provisioned for the node.
	// +optional
	Sessions int32 `json:"sessions,omitempty"`
}

// BGPSessionClaimStatus is written by the manager.
type BGPSessionClaimStatus struct {
	// observedGeneration is the generation of the spec this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// boundNodes counts the nodes the claim selects.
	// +optional
	BoundNodes int32 `json:"boundNodes,omitempty"`

	// establishedSessions counts the sessions in state Established.
	// +optional
	EstablishedSessions int32 `json:"establishedSessions,omitempty"`

	// totalSessions counts every session of the claim, including those beyond the sessions list.
	// +optional
	TotalSessions int32 `json:"totalSessions,omitempty"`

	// sessions lists the sessions of the selected nodes, ordered by node and peer address, up to 512 entries.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=512
	Sessions []SessionStatus `json:"sessions,omitempty"`

	// provisioning lists, for a claim with a session provider, each node's provisioning state, ordered by node, up to
	// 512 entries.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=512
	Provisioning []NodeProvisioningStatus `json:"provisioning,omitempty"`

	// conditions: Ready, Bound, Reconciling, Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// BGPSessionClaim declares the BGP sessions a set of nodes needs, either listed by hand (static) or provisioned
// through a provider's API.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=bsc,categories=anycast
// +kubebuilder:printcolumn:name="ASN",type=integer,JSONPath=`.spec.localASN`
// +kubebuilder:printcolumn:name="Bound",type=integer,JSONPath=`.status.boundNodes`
// +kubebuilder:printcolumn:name="Established",type=integer,JSONPath=`.status.establishedSessions`
// +kubebuilder:printcolumn:name="Sessions",type=integer,JSONPath=`.status.totalSessions`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BGPSessionClaim struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec BGPSessionClaimSpec `json:"spec"`
	// +optional
	Status BGPSessionClaimStatus `json:"status,omitempty"`
}

// BGPSessionClaimList is a list of BGPSessionClaim.
// +kubebuilder:object:root=true
type BGPSessionClaimList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPSessionClaim `json:"items"`
}
