package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// AnycastPrefixSpec says what to announce, from which nodes, over which sessions and with which attributes.
type AnycastPrefixSpec struct {
	// prefixes to announce, IPv4 and/or IPv6, host bits cleared, never /0.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	Prefixes []CIDR `json:"prefixes"`

	// sessionClaims are the names of the BGPSessionClaims whose sessions carry the prefixes. A node announces the
	// prefixes when at least one of these claims selects it (and nodeSelector, if set, matches it too).
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	SessionClaims []LocalObjectName `json:"sessionClaims"`

	// nodeSelector narrows the nodes selected by the claims further. Empty or absent: every node of the claims.
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// healthPolicyRef names the HealthPolicy that decides when a node is fit to announce. Without it the prefixes
	// are announced unconditionally from every selected node.
	// +optional
	HealthPolicyRef *ObjectReference `json:"healthPolicyRef,omitempty"`

	// attributes are the BGP path attributes sent with the prefixes.
	// +optional
	Attributes *BGPAttributes `json:"attributes,omitempty"`

	// attributeOverrides change the attributes for groups of nodes, for example a backup site that prepends its AS
	// path. The first entry whose nodeSelector matches a node is merged over attributes: each attribute it sets
	// replaces the base value, the others are kept.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	AttributeOverrides []AttributeOverride `json:"attributeOverrides,omitempty"`

	// safety limits what health checks and drains may do to the prefix at once.
	// +optional
	Safety *PrefixSafety `json:"safety,omitempty"`

	// paused freezes the prefix: whatever is announced now stays announced, and no change (of this spec, of nodes,
	// of health) is acted on until paused is cleared.
	// +optional
	Paused bool `json:"paused,omitempty"`
}

// AttributeOverride replaces some attributes on the nodes its selector matches.
type AttributeOverride struct {
	// nodeSelector selects the nodes this override applies to.
	// +required
	NodeSelector metav1.LabelSelector `json:"nodeSelector"`

	// attributes merged over the prefix's attributes on the selected nodes.
	// +required
	Attributes BGPAttributes `json:"attributes"`
}

// PrefixSafety bounds how much of the anycast group health checks may take out at once.
type PrefixSafety struct {
	// maxWithdrawn is how many of the eligible nodes may withdraw (or deprefer) the prefix at the same time because
	// of failed health checks or drains: a node count, or a percentage of the eligible nodes rounded down. Default
	// 100%: every node fails over on its own. A lower value guards against a bad health check withdrawing a whole
	// site; the nodes held back keep announcing and the prefix reports Degraded.
	// +optional
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 0 : self.matches('^[0-9]{1,3}%$') && int(self.substring(0, self.size() - 1)) <= 100",message="maxWithdrawn must be a node count (0 or more) or a percentage from 0% to 100%, such as 50%"
	MaxWithdrawn *intstr.IntOrString `json:"maxWithdrawn,omitempty"`
}

// AnycastPrefixStatus is written by the manager.
type AnycastPrefixStatus struct {
	// observedGeneration is the generation of the spec this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// eligibleNodes counts the nodes selected by the claims and the nodeSelector.
	// +optional
	EligibleNodes int32 `json:"eligibleNodes,omitempty"`

	// announcingNodes counts the eligible nodes whose agent reports every prefix as announced (or deprefered).
	// +optional
	AnnouncingNodes int32 `json:"announcingNodes,omitempty"`

	// announcing is announcingNodes/eligibleNodes, for display.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	Announcing string `json:"announcing,omitempty"`

	// conditions: Ready, Reconciling, Stalled, Degraded and Conflict.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// AnycastPrefix declares prefixes to announce by BGP from a set of nodes, following the health of a service.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=ap,categories=anycast
// +kubebuilder:printcolumn:name="Prefixes",type=string,JSONPath=`.spec.prefixes`
// +kubebuilder:printcolumn:name="Announcing",type=string,JSONPath=`.status.announcing`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AnycastPrefix struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec AnycastPrefixSpec `json:"spec"`
	// +optional
	Status AnycastPrefixStatus `json:"status,omitempty"`
}

// AnycastPrefixList is a list of AnycastPrefix.
// +kubebuilder:object:root=true
type AnycastPrefixList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AnycastPrefix `json:"items"`
}
