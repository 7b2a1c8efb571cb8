// Package v1alpha1 holds the anycast.dev/v1alpha1 API: AnycastPrefix (what to announce), HealthPolicy (when a node
// is fit to announce it), BGPSessionClaim (over which sessions) and NodeAnnouncement (the per-node plan the manager
// writes and the node agent reports on). All four kinds are cluster-scoped.
//
// +kubebuilder:object:generate=true
// +groupName=anycast.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "anycast.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds of this package with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the kinds of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
