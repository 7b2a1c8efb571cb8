package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Defaults of HealthPolicySpec, applied by the agent (not by the CRD schema, so that applied manifests and live
// objects never differ and GitOps tools see no drift). The CEL rules compare against the same values.
const (
	DefaultInterval            = "5s"
	DefaultTimeout             = "2s"
	DefaultRiseThreshold       = 2
	DefaultFallThreshold       = 3
	DefaultWithdrawDelay       = "30s"
	DefaultReannounceDelay     = "60s"
	DefaultMinAnnounceDuration = "5m"
)

// HealthMode says how the results of several checks combine.
// +kubebuilder:validation:Enum=Any;All
type HealthMode string

const (
	// HealthModeAny keeps the node fit while any check passes; it is unfit when every check fails.
	HealthModeAny HealthMode = "Any"
	// HealthModeAll requires every check to pass.
	HealthModeAll HealthMode = "All"
)

// UnhealthyAction is what a node does with its prefixes when it becomes unfit.
// +kubebuilder:validation:Enum=Withdraw;Deprefer
type UnhealthyAction string

const (
	// UnhealthyWithdraw withdraws the prefixes.
	UnhealthyWithdraw UnhealthyAction = "Withdraw"
	// UnhealthyDeprefer keeps announcing with AS-path prepend +3, MED +1000 and the GRACEFUL_SHUTDOWN community
	// 65535:0, so that traffic moves to other nodes but nothing is black-holed if every node is unfit.
	UnhealthyDeprefer UnhealthyAction = "Deprefer"
)

// HealthPolicySpec says when a node is fit to announce.
// +kubebuilder:validation:XValidation:rule="duration(has(self.timeout) ? self.timeout : '2s') < duration(has(self.interval) ? self.interval : '5s')",message="timeout must be shorter than interval (defaults: timeout 2s, interval 5s)"
type HealthPolicySpec struct {
	// checks probe the local service; each sets exactly one probe. Names are unique.
	// +required
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	Checks []HealthCheck `json:"checks"`

	// mode: Any keeps the node fit while any check passes (withdraw when all fail); All needs every check to pass.
	// Default Any.
	// +optional
	Mode HealthMode `json:"mode,omitempty"`

	// interval between two probes of a check, 100ms to 5m. Default 5s.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')",messageExpression="'\"' + self + '\" is not a duration; write it like 500ms, 5s or 1m30s'"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') || (duration(self) >= duration('100ms') && duration(self) <= duration('5m'))",messageExpression="'interval ' + self + ' is out of range: use 100ms to 5m'"
	Interval *metav1.Duration `json:"interval,omitempty"`

	// timeout of one probe, shorter than interval. Default 2s.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')",messageExpression="'\"' + self + '\" is not a duration; write it like 500ms, 5s or 1m30s'"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') || (duration(self) >= duration('10ms') && duration(self) <= duration('5m'))",messageExpression="'timeout ' + self + ' is out of range: use 10ms to 5m'"
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// riseThreshold is how many consecutive passes make an unfit node fit again. Default 2.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	RiseThreshold *int32 `json:"riseThreshold,omitempty"`

	// fallThreshold is how many consecutive failures make a fit node unfit. Default 3.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	FallThreshold *int32 `json:"fallThreshold,omitempty"`

	// dampening keeps short blips and flapping services from moving traffic back and forth.
	// +optional
	Dampening *Dampening `json:"dampening,omitempty"`

	// onUnhealthy: Withdraw (default) withdraws the prefixes from an unfit node; Deprefer keeps announcing them
	// with AS-path prepend +3, MED +1000 and the GRACEFUL_SHUTDOWN community (65535:0).
	// +optional
	OnUnhealthy UnhealthyAction `json:"onUnhealthy,omitempty"`
}

// Dampening delays announcement changes. Defaults (those of NetActuate's controller): 30s, 60s, 5m.
type Dampening struct {
	// withdrawDelay: a node stays unfit this long before it withdraws (absorbs blips). 0 to 1h. Default 30s.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')",messageExpression="'\"' + self + '\" is not a duration; write it like 500ms, 5s or 1m30s'"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self) <= duration('1h')",messageExpression="'withdrawDelay ' + self + ' is out of range: use 0s to 1h'"
	WithdrawDelay *metav1.Duration `json:"withdrawDelay,omitempty"`

	// reannounceDelay: a node stays fit this long before it announces again. 0 to 1h. Default 60s.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')",messageExpression="'\"' + self + '\" is not a duration; write it like 500ms, 5s or 1m30s'"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self) <= duration('1h')",messageExpression="'reannounceDelay ' + self + ' is out of range: use 0s to 1h'"
	ReannounceDelay *metav1.Duration `json:"reannounceDelay,omitempty"`

	// minAnnounceDuration: once announced, a prefix is withdrawn no sooner than this (flap protection); until then
	// an unfit node deprefers instead, so traffic still moves away at once. 0 to 24h. Default 5m.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$')",messageExpression="'\"' + self + '\" is not a duration; write it like 500ms, 5s or 1m30s'"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self) <= duration('24h')",messageExpression="'minAnnounceDuration ' + self + ' is out of range: use 0s to 24h'"
	MinAnnounceDuration *metav1.Duration `json:"minAnnounceDuration,omitempty"`
}

// HealthCheck is one probe of the local service. Exactly one of http, tcp, dns, grpc and serviceEndpoints is set.
// +kubebuilder:validation:XValidation:rule="[has(self.http), has(self.tcp), has(self.dns), has(self.grpc), has(self.serviceEndpoints)].filter(x, x).size() == 1",message="each check sets exactly one probe: http, tcp, dns, grpc or serviceEndpoints"
type HealthCheck struct {
	// name of the check, unique in the policy; it names the check in status.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",messageExpression="'check name \"' + self + '\" must be lower-case letters, digits and \"-\"'"
	Name string `json:"name"`

	// http probes an HTTP or HTTPS URL.
	// +optional
	HTTP *HTTPCheck `json:"http,omitempty"`

	// tcp succeeds when a TCP connection to the address opens.
	// +optional
	TCP *TCPCheck `json:"tcp,omitempty"`

	// dns sends a query and checks the response code.
	// +optional
	DNS *DNSCheck `json:"dns,omitempty"`

	// grpc calls the standard gRPC health service (grpc.health.v1.Health/Check).
	// +optional
	GRPC *GRPCCheck `json:"grpc,omitempty"`

	// serviceEndpoints succeeds while the named Service has a ready endpoint on this node.
	// +optional
	ServiceEndpoints *ServiceEndpointsCheck `json:"serviceEndpoints,omitempty"`
}

// HTTPCheck probes an HTTP or HTTPS URL.
type HTTPCheck struct {
	// url to GET; http or https only. $(NODE_IP) stands for the node's address (in brackets when it is IPv6).
	// +required
	// +kubebuilder:validation:MinLength=8
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="isURL(self.replace('[$(NODE_IP)]', '[2001:db8::1]').replace('$(NODE_IP)', '192.0.2.1')) && url(self.replace('[$(NODE_IP)]', '[2001:db8::1]').replace('$(NODE_IP)', '192.0.2.1')).getScheme() in ['http', 'https'] && url(self.replace('[$(NODE_IP)]', '[2001:db8::1]').replace('$(NODE_IP)', '192.0.2.1')).getHost() != ''",messageExpression="'url \"' + self + '\" must be an absolute http:// or https:// URL with a host, such as http://127.0.0.1:8080/healthz'"
	URL string `json:"url"`

	// expectedStatus lists the status codes that pass. Default: any 2xx.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:Minimum=100
	// +kubebuilder:validation:items:Maximum=599
	ExpectedStatus []int32 `json:"expectedStatus,omitempty"`

	// headers sent with the request.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	Headers []HTTPHeader `json:"headers,omitempty"`

	// insecureSkipVerify disables TLS certificate verification for https URLs. Off by default.
	// +optional
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`
}

// HTTPHeader is one request header.
type HTTPHeader struct {
	// name of the header.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:XValidation:rule="self.matches('^[-!#$%&*+.^_|~0-9A-Za-z]+$')",messageExpression="'\"' + self + '\" is not a valid HTTP header name'"
	Name string `json:"name"`

	// value of the header.
	// +required
	// +kubebuilder:validation:MaxLength=1024
	Value string `json:"value"`
}

// TCPCheck succeeds when a TCP connection opens.
type TCPCheck struct {
	// address as host:port.
	// +required
	Address HostPort `json:"address"`
}

// DNSQueryType is the type of a DNS query.
// +kubebuilder:validation:Enum=A;AAAA;CNAME;MX;NS;PTR;SOA;SRV;TXT
type DNSQueryType string

// DNSRcode is a DNS response code.
// +kubebuilder:validation:Enum=NOERROR;NXDOMAIN;SERVFAIL;REFUSED
type DNSRcode string

// DNSCheck sends one query and checks the response code.
type DNSCheck struct {
	// server to query, as host:port.
	// +required
	Server HostPort `json:"server"`

	// query is the name to look up, such as example.com.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == '.' || self.matches('^([A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?\\\\.)*[A-Za-z0-9_]([-A-Za-z0-9_]{0,61}[A-Za-z0-9_])?\\\\.?$')",messageExpression="'\"' + self + '\" is not a DNS name'"
	Query string `json:"query"`

	// type of the query. Default A.
	// +optional
	Type DNSQueryType `json:"type,omitempty"`

	// expectRcode is the response code that passes. Default NOERROR.
	// +optional
	ExpectRcode DNSRcode `json:"expectRcode,omitempty"`
}

// GRPCCheck calls grpc.health.v1.Health/Check.
type GRPCCheck struct {
	// address as host:port.
	// +required
	Address HostPort `json:"address"`

	// service name sent in the request; empty asks for the server's overall health.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Service string `json:"service,omitempty"`
}

// ServiceEndpointsCheck succeeds while the Service has a ready endpoint on this node.
type ServiceEndpointsCheck struct {
	// namespace of the Service.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",messageExpression="'\"' + self + '\" is not a valid namespace name'"
	Namespace string `json:"namespace"`

	// name of the Service.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",messageExpression="'\"' + self + '\" is not a valid Service name'"
	Name string `json:"name"`
}

// HealthPolicyStatus is written by the manager.
type HealthPolicyStatus struct {
	// observedGeneration is the generation of the spec this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// prefixes counts the AnycastPrefixes that use this policy.
	// +optional
	Prefixes int32 `json:"prefixes,omitempty"`

	// nodes counts the nodes that run these checks.
	// +optional
	Nodes int32 `json:"nodes,omitempty"`

	// unhealthyNodes counts the nodes whose agent reports a failing check of this policy.
	// +optional
	UnhealthyNodes int32 `json:"unhealthyNodes,omitempty"`

	// conditions: Ready, Reconciling, Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// HealthPolicy says when a node is fit to announce a prefix: which probes of the local service to run, how their
// results combine, and how changes are dampened.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=hp,categories=anycast
// +kubebuilder:printcolumn:name="Mode",type=string,JSONPath=`.spec.mode`
// +kubebuilder:printcolumn:name="Interval",type=string,JSONPath=`.spec.interval`
// +kubebuilder:printcolumn:name="Prefixes",type=integer,JSONPath=`.status.prefixes`
// +kubebuilder:printcolumn:name="Unhealthy",type=integer,JSONPath=`.status.unhealthyNodes`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type HealthPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec HealthPolicySpec `json:"spec"`
	// +optional
	Status HealthPolicyStatus `json:"status,omitempty"`
}

// HealthPolicyList is a list of HealthPolicy.
// +kubebuilder:object:root=true
type HealthPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []HealthPolicy `json:"items"`
}
