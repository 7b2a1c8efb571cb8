// Package ciliumv2 holds the few cilium.io/v2 types the Cilium backend writes or reads, field for field as Cilium
// 1.18+ defines them (JSON names, optional pointers). Importing github.com/cilium/cilium for them would link ~400
// packages into the manager; these are checked in a round trip against the upstream Go types (test/upstream) and
// against Cilium's CRDs (internal/backend/cilium tests). Cilium's selectors are its "slim" LabelSelector,
// JSON-identical to metav1's.
// +kubebuilder:object:generate=true
// +groupName=cilium.io
package ciliumv2

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is cilium.io/v2.
var GroupVersion = schema.GroupVersion{Group: "cilium.io", Version: "v2"}

// AddToScheme registers the types.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&CiliumBGPClusterConfig{}, &CiliumBGPClusterConfigList{},
		&CiliumBGPPeerConfig{}, &CiliumBGPPeerConfigList{},
		&CiliumBGPAdvertisement{}, &CiliumBGPAdvertisementList{},
		&CiliumLoadBalancerIPPool{}, &CiliumLoadBalancerIPPoolList{},
		&CiliumBGPNodeConfig{}, &CiliumBGPNodeConfigList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

// +kubebuilder:object:root=true

// CiliumBGPClusterConfig runs BGP instances, with their peers, on the nodes it selects.
type CiliumBGPClusterConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              CiliumBGPClusterConfigSpec `json:"spec"`
}

// +kubebuilder:object:root=true

// CiliumBGPClusterConfigList is a list of CiliumBGPClusterConfig.
type CiliumBGPClusterConfigList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`
	Items           []CiliumBGPClusterConfig `json:"items"`
}

// CiliumBGPClusterConfigSpec selects nodes and lists instances.
type CiliumBGPClusterConfigSpec struct {
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
	BGPInstances []CiliumBGPInstance   `json:"bgpInstances"`
}

// CiliumBGPInstance is one BGP speaker instance.
type CiliumBGPInstance struct {
	Name     string          `json:"name"`
	LocalASN *int64          `json:"localASN,omitempty"`
	Peers    []CiliumBGPPeer `json:"peers,omitempty"`
}

// CiliumBGPPeer is one neighbor of an instance.
type CiliumBGPPeer struct {
	Name          string               `json:"name"`
	PeerAddress   *string              `json:"peerAddress,omitempty"`
	PeerASN       *int64               `json:"peerASN,omitempty"`
	PeerConfigRef *PeerConfigReference `json:"peerConfigRef,omitempty"`
}

// PeerConfigReference names a CiliumBGPPeerConfig.
type PeerConfigReference struct {
	Name string `json:"name"`
}

// +kubebuilder:object:root=true

// CiliumBGPPeerConfig holds a neighbor's session settings and which advertisements it gets.
type CiliumBGPPeerConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              CiliumBGPPeerConfigSpec `json:"spec"`
}

// +kubebuilder:object:root=true

// CiliumBGPPeerConfigList is a list of CiliumBGPPeerConfig.
type CiliumBGPPeerConfigList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`
	Items           []CiliumBGPPeerConfig `json:"items"`
}

// CiliumBGPPeerConfigSpec are the session settings.
type CiliumBGPPeerConfigSpec struct {
	Transport       *CiliumBGPTransport               `json:"transport,omitempty"`
	Timers          *CiliumBGPTimers                  `json:"timers,omitempty"`
	AuthSecretRef   *string                           `json:"authSecretRef,omitempty"`
	GracefulRestart *CiliumBGPNeighborGracefulRestart `json:"gracefulRestart,omitempty"`
	EBGPMultihop    *int32                            `json:"ebgpMultihop,omitempty"`
	Families        []CiliumBGPFamilyWithAdverts      `json:"families,omitempty"`
}

// CiliumBGPTransport is the neighbor's port.
type CiliumBGPTransport struct {
	PeerPort *int32 `json:"peerPort,omitempty"`
}

// CiliumBGPTimers are the session timers, in seconds.
type CiliumBGPTimers struct {
	ConnectRetryTimeSeconds *int32 `json:"connectRetryTimeSeconds,omitempty"`
	HoldTimeSeconds         *int32 `json:"holdTimeSeconds,omitempty"`
	KeepAliveTimeSeconds    *int32 `json:"keepAliveTimeSeconds,omitempty"`
}

// CiliumBGPNeighborGracefulRestart is graceful restart.
type CiliumBGPNeighborGracefulRestart struct {
	Enabled            bool   `json:"enabled"`
	RestartTimeSeconds *int32 `json:"restartTimeSeconds,omitempty"`
}

// CiliumBGPFamilyWithAdverts is an address family and the advertisements (by label) sent in it.
type CiliumBGPFamilyWithAdverts struct {
	Afi            string                `json:"afi"`
	Safi           string                `json:"safi"`
	Advertisements *metav1.LabelSelector `json:"advertisements,omitempty"`
}

// +kubebuilder:object:root=true

// CiliumBGPAdvertisement says what a peer that selects it gets.
type CiliumBGPAdvertisement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              CiliumBGPAdvertisementSpec `json:"spec"`
}

// +kubebuilder:object:root=true

// CiliumBGPAdvertisementList is a list of CiliumBGPAdvertisement.
type CiliumBGPAdvertisementList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`
	Items           []CiliumBGPAdvertisement `json:"items"`
}

// CiliumBGPAdvertisementSpec lists advertisements.
type CiliumBGPAdvertisementSpec struct {
	Advertisements []BGPAdvertisement `json:"advertisements"`
}

// BGPAdvertisement is one kind of route, with attributes.
type BGPAdvertisement struct {
	AdvertisementType string                `json:"advertisementType"`
	Service           *BGPServiceOptions    `json:"service,omitempty"`
	Selector          *metav1.LabelSelector `json:"selector,omitempty"`
	Attributes        *BGPAttributes        `json:"attributes,omitempty"`
}

// BGPServiceOptions are the Service addresses advertised and their aggregation.
type BGPServiceOptions struct {
	Addresses             []string `json:"addresses,omitempty"`
	AggregationLengthIPv4 *int16   `json:"aggregationLengthIPv4,omitempty"`
	AggregationLengthIPv6 *int16   `json:"aggregationLengthIPv6,omitempty"`
}

// BGPAttributes are path attributes.
type BGPAttributes struct {
	Communities     *BGPCommunities `json:"communities,omitempty"`
	LocalPreference *int64          `json:"localPreference,omitempty"`
}

// BGPCommunities are standard (aa:nn), well-known (by name) and large (a:b:c) communities.
type BGPCommunities struct {
	Standard  []string `json:"standard,omitempty"`
	WellKnown []string `json:"wellKnown,omitempty"`
	Large     []string `json:"large,omitempty"`
}

// +kubebuilder:object:root=true

// CiliumLoadBalancerIPPool hands out LoadBalancer addresses to the Services it selects.
type CiliumLoadBalancerIPPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              CiliumLoadBalancerIPPoolSpec `json:"spec,omitempty"`
}

// +kubebuilder:object:root=true

// CiliumLoadBalancerIPPoolList is a list of CiliumLoadBalancerIPPool.
type CiliumLoadBalancerIPPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`
	Items           []CiliumLoadBalancerIPPool `json:"items"`
}

// CiliumLoadBalancerIPPoolSpec is the pool's blocks and the Services it serves.
type CiliumLoadBalancerIPPoolSpec struct {
	ServiceSelector   *metav1.LabelSelector             `json:"serviceSelector,omitempty"`
	AllowFirstLastIPs string                            `json:"allowFirstLastIPs,omitempty"`
	Blocks            []CiliumLoadBalancerIPPoolIPBlock `json:"blocks,omitempty"`
}

// CiliumLoadBalancerIPPoolIPBlock is a CIDR.
type CiliumLoadBalancerIPPoolIPBlock struct {
	Cidr string `json:"cidr,omitempty"`
}

// +kubebuilder:object:root=true

// CiliumBGPNodeConfig is what Cilium's operator derives for one node (read only); its status has the sessions.
type CiliumBGPNodeConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Status            CiliumBGPNodeStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// CiliumBGPNodeConfigList is a list of CiliumBGPNodeConfig.
type CiliumBGPNodeConfigList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata"`
	Items           []CiliumBGPNodeConfig `json:"items"`
}

// CiliumBGPNodeStatus is the state of the node's instances.
type CiliumBGPNodeStatus struct {
	BGPInstances []CiliumBGPNodeInstanceStatus `json:"bgpInstances,omitempty"`
}

// CiliumBGPNodeInstanceStatus is one instance's peers.
type CiliumBGPNodeInstanceStatus struct {
	Name         string                    `json:"name"`
	PeerStatuses []CiliumBGPNodePeerStatus `json:"peers,omitempty"`
}

// CiliumBGPNodePeerStatus is one session.
type CiliumBGPNodePeerStatus struct {
	Name            string  `json:"name"`
	PeerAddress     string  `json:"peerAddress"`
	PeerASN         *int64  `json:"peerASN,omitempty"`
	PeeringState    *string `json:"peeringState,omitempty"`
	EstablishedTime *string `json:"establishedTime,omitempty"`
}
