// Package v1alpha1 holds the anycast.dev/v1alpha1 API: AnycastPrefix (what to announce), HealthPolicy (when a node
// is fit to announce it), BGPSessionClaim (over which sessions) and NodeAnnouncement (the per-node plan the manager
// writes and the node agent reports on). All four kinds are cluster-scoped.
//
// +kubebuilder:object:generate=true
// +groupName=anycast.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "anycast.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds of this package with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the kinds of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&AnycastPrefix{}, &AnycastPrefixList{},
		&HealthPolicy{}, &HealthPolicyList{},
		&BGPSessionClaim{}, &BGPSessionClaimList{},
		&NodeAnnouncement{}, &NodeAnnouncementList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
