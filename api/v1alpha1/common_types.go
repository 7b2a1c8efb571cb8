package v1alpha1

// The types in this file are shared by several kinds, so their validation rules (markers and CEL) live on the type
// and every field of that type gets the same checks and the same messages.

// CIDR is an IPv4 or IPv6 prefix in CIDR notation with its host bits cleared, such as 198.51.100.0/24 or
// 2001:db8:100::/48. A /0 (a default route) is never accepted.
// +kubebuilder:validation:MinLength=9
// +kubebuilder:validation:MaxLength=43
// +kubebuilder:validation:XValidation:rule="isCIDR(self)",messageExpression="'\"' + self + '\" is not a prefix in CIDR notation; write it like 198.51.100.0/24 or 2001:db8:100::/48'"
// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).prefixLength() > 0",messageExpression="'\"' + self + '\" is a default route (/0); a default route is never announced or allowed'"
// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).masked() == cidr(self)",messageExpression="'\"' + self + '\" has host bits set; clear the host bits so the address is the first address of the prefix'"
// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || string(cidr(self)) == self",messageExpression="'\"' + self + '\" is not in canonical form; write IPv6 in lower case with zeros compressed (for example 2001:db8::/32)'"
type CIDR string

// PlannedCIDR is a prefix in a NodeAnnouncement, which only the manager writes after it has validated the CIDR of an
// AnycastPrefix, and whose agent checks it again (never a /0, never host bits). Its schema checks the format only:
// the CEL rules of CIDR, repeated for every prefix of every node, would cost the API server more than the whole
// write at thousands of nodes.
// +kubebuilder:validation:Format=cidr
// +kubebuilder:validation:MinLength=9
// +kubebuilder:validation:MaxLength=43
type PlannedCIDR string

// ASN is a BGP autonomous system number: 1 to 4294967294, excluding AS_TRANS (23456) and 65535, which RFC 6793 and
// RFC 7300 reserve.
// +kubebuilder:validation:Format=int64
// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 4294967294",message="AS number must be between 1 and 4294967294"
// +kubebuilder:validation:XValidation:rule="self != 23456",message="AS number 23456 is AS_TRANS, reserved for 2-byte-AS compatibility; use your real AS number"
// +kubebuilder:validation:XValidation:rule="self != 65535",message="AS number 65535 is reserved (RFC 7300); use a private AS such as 64512-65534 or 4200000000-4294967294"
type ASN int64

// IPAddress is an IPv4 or IPv6 host address such as 192.0.2.1 or 2001:db8::1.
// +kubebuilder:validation:MinLength=2
// +kubebuilder:validation:MaxLength=45
// +kubebuilder:validation:XValidation:rule="isIP(self)",messageExpression="'\"' + self + '\" is not an IPv4 or IPv6 address'"
// +kubebuilder:validation:XValidation:rule="!isIP(self) || !ip(self).isUnspecified()",messageExpression="'\"' + self + '\" is the unspecified address; give the address of the peer'"
type IPAddress string

// HostPort is a network address as host:port, such as 127.0.0.1:53, [::1]:53 or dns.local:53. In probe targets,
// $(NODE_IP) stands for the node's address: $(NODE_IP):53, or [$(NODE_IP)]:53 when it is IPv6.
// +kubebuilder:validation:MinLength=3
// +kubebuilder:validation:MaxLength=261
// +kubebuilder:validation:XValidation:rule="self.replace('[$(NODE_IP)]', '[2001:db8::1]').replace('$(NODE_IP)', '192.0.2.1').matches('^(\\\\[[0-9A-Fa-f:.]+\\\\]|[A-Za-z0-9._-]+):[0-9]{1,5}$')",messageExpression="'\"' + self + '\" is not host:port; write it like 127.0.0.1:53, [::1]:53 or dns.example:53'"
// +kubebuilder:validation:XValidation:rule="!self.matches(':[0-9]{1,5}$') || (int(self.substring(self.lastIndexOf(':') + 1)) >= 1 && int(self.substring(self.lastIndexOf(':') + 1)) <= 65535)",messageExpression="'the port in \"' + self + '\" must be between 1 and 65535'"
type HostPort string

// Community is a BGP standard community as ASN:VALUE (each 0-65535, for example 64512:100) or a well-known
// community name: no-export, no-advertise, no-export-subconfed, no-peer, graceful-shutdown, accept-own, llgr-stale
// or no-llgr. BLACKHOLE (65535:666) is refused: on an anycast service prefix it tells upstreams to drop the traffic.
// +kubebuilder:validation:MinLength=3
// +kubebuilder:validation:MaxLength=24
// +kubebuilder:validation:XValidation:rule="self in ['no-export', 'no-advertise', 'no-export-subconfed', 'no-peer', 'graceful-shutdown', 'accept-own', 'llgr-stale', 'no-llgr', 'blackhole'] || (self.matches('^[0-9]{1,5}:[0-9]{1,5}$') && self.split(':').all(p, int(p) <= 65535))",messageExpression="'community \"' + self + '\" is invalid; write ASN:VALUE with both parts 0-65535 (for example 64512:100) or a well-known name such as no-export'"
// +kubebuilder:validation:XValidation:rule="self != 'blackhole' && self != '65535:666'",message="the BLACKHOLE community (65535:666) makes upstreams drop traffic to the prefix and is never sent with an anycast prefix"
type Community string

// LargeCommunity is a BGP large community (RFC 8092) as GLOBAL:LOCAL1:LOCAL2, each 0-4294967295, for example
// 64512:1:2.
// +kubebuilder:validation:MinLength=5
// +kubebuilder:validation:MaxLength=32
// +kubebuilder:validation:XValidation:rule="self.matches('^[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$') && self.split(':').all(p, int(p) <= 4294967295)",messageExpression="'large community \"' + self + '\" is invalid; write GLOBAL:LOCAL1:LOCAL2 with each part 0-4294967295 (for example 64512:1:2)'"
type LargeCommunity string

// BGPAttributes are the path attributes sent with a prefix.
type BGPAttributes struct {
	// communities are standard (ASN:VALUE) or well-known (no-export, ...) communities sent with the prefix.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	Communities []Community `json:"communities,omitempty"`

	// largeCommunities are RFC 8092 large communities (GLOBAL:LOCAL1:LOCAL2) sent with the prefix.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	LargeCommunities []LargeCommunity `json:"largeCommunities,omitempty"`

	// localPreference is sent on iBGP sessions only (eBGP peers ignore it, as RFC 4271 requires).
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	LocalPreference *int64 `json:"localPreference,omitempty"`

	// med is the MULTI_EXIT_DISC sent with the prefix; lower is preferred by the peer.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	MED *int64 `json:"med,omitempty"`

	// asPathPrepend repeats the local AS this many extra times in the AS path, which makes this path less preferred
	// (for example a backup site).
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	ASPathPrepend *int32 `json:"asPathPrepend,omitempty"`
}

// SecretKeyRef names one key of a Secret in the namespace the operator runs in. The value is read where it is used
// and never copied into any object, log or event.
type SecretKeyRef struct {
	// name of the Secret, in the operator's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",messageExpression="'\"' + self + '\" is not a valid Secret name (lower-case letters, digits, \"-\" and \".\")'"
	Name string `json:"name"`

	// key in the Secret's data.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[-._a-zA-Z0-9]+$')",messageExpression="'\"' + self + '\" is not a valid Secret key (letters, digits, \"-\", \"_\" and \".\")'"
	Key string `json:"key"`
}

// LocalObjectName names another cluster-scoped object of this API.
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=253
// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')",messageExpression="'\"' + self + '\" is not a valid object name (lower-case letters, digits, \"-\" and \".\")'"
type LocalObjectName string

// ObjectReference names another cluster-scoped object of this API.
type ObjectReference struct {
	// name of the object.
	// +required
	Name LocalObjectName `json:"name"`
}
