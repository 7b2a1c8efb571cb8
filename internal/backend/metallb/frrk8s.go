package metallb

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/backend"
)

// In frr-k8s mode, frr-k8s publishes one BGPSessionState (frrk8s.metallb.io/v1beta1) per node and neighbor; native
// MetalLB publishes no session state at all. The module github.com/metallb/frr-k8s is not a dependency: the one
// small read-only type is declared here, as frr-k8s v0.0.25 defines it.

// FRRK8sGroupVersion is frr-k8s's API group.
var FRRK8sGroupVersion = schema.GroupVersion{Group: "frrk8s.metallb.io", Version: "v1beta1"}

var sessionStateKind = FRRK8sGroupVersion.WithKind("BGPSessionState")

// BGPSessionState is one BGP session of one node, as frr-k8s reports it.
type BGPSessionState struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Status            BGPSessionStateStatus `json:"status,omitempty"`
}

// BGPSessionStateStatus is frr-k8s's view of the session. Peer is the neighbor's address, an IPv6 address written
// out in full with "-" for ":" (a label value may hold no ":").
type BGPSessionStateStatus struct {
	BGPStatus string `json:"bgpStatus,omitempty"`
	BFDStatus string `json:"bfdStatus,omitempty"`
	Node      string `json:"node,omitempty"`
	Peer      string `json:"peer,omitempty"`
	VRF       string `json:"vrf,omitempty"`
}

// BGPSessionStateList is a list of BGPSessionState.
type BGPSessionStateList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPSessionState `json:"items"`
}

// DeepCopyObject implements runtime.Object.
func (s *BGPSessionState) DeepCopyObject() runtime.Object {
	out := *s
	s.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	return &out
}

// DeepCopyObject implements runtime.Object.
func (l *BGPSessionStateList) DeepCopyObject() runtime.Object {
	out := *l
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	out.Items = make([]BGPSessionState, len(l.Items))
	for i := range l.Items {
		out.Items[i] = *l.Items[i].DeepCopyObject().(*BGPSessionState)
	}
	return &out
}

func addFRRK8sToScheme(s *runtime.Scheme) {
	s.AddKnownTypes(FRRK8sGroupVersion, &BGPSessionState{}, &BGPSessionStateList{})
	metav1.AddToGroupVersion(s, FRRK8sGroupVersion)
}

// SessionKinds are what the stack reports sessions in: frr-k8s's BGPSessionState in frr-k8s mode, nothing in
// native mode.
func (t Translator) SessionKinds() []schema.GroupVersionKind {
	if t.Mode != FRRK8s {
		return nil
	}
	return []schema.GroupVersionKind{sessionStateKind}
}

// Sessions reads the sessions frr-k8s reports, per node, in its namespace. In native mode there is nothing to read
// and claims show their MetalLB sessions as Unknown.
func (t Translator) Sessions(ctx context.Context, r client.Reader) (map[string][]anycastv1.NodeSessionStatus, error) {
	if t.Mode != FRRK8s {
		return nil, nil
	}
	var list BGPSessionStateList
	if err := r.List(ctx, &list, client.InNamespace(t.FRRK8sNamespace)); err != nil {
		return nil, fmt.Errorf("listing frr-k8s BGPSessionStates: %w", err)
	}
	out := map[string][]anycastv1.NodeSessionStatus{}
	for _, s := range list.Items {
		if s.Status.Node == "" || (s.Status.VRF != "" && s.Status.VRF != "default") {
			continue
		}
		out[s.Status.Node] = append(out[s.Status.Node], anycastv1.NodeSessionStatus{
			PeerAddress: peerAddress(s.Status.Peer), State: backend.SessionState(s.Status.BGPStatus)})
	}
	return out, nil
}

// peerAddress undoes frr-k8s's label form of an IPv6 address.
func peerAddress(p string) string {
	if _, err := netip.ParseAddr(p); err == nil {
		return p
	}
	if a, err := netip.ParseAddr(strings.ReplaceAll(p, "-", ":")); err == nil {
		return a.String()
	}
	return p
}
