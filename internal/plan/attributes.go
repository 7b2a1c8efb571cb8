package plan

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// attributeResolver gives each node the attributes of a prefix: the first attributeOverrides entry whose selector
// matches the node, merged over the base attributes. The merged values are computed once per override and shared
// by every node they apply to; callers treat them as read-only.
type attributeResolver struct {
	base      *anycastv1.BGPAttributes
	baseKey   string
	selectors []labels.Selector
	merged    []*anycastv1.BGPAttributes
	keys      []string
}

func newAttributeResolver(ap *anycastv1.AnycastPrefix) *attributeResolver {
	r := &attributeResolver{base: ap.Spec.Attributes, baseKey: attributesKey(ap.Spec.Attributes)}
	for i := range ap.Spec.AttributeOverrides {
		o := &ap.Spec.AttributeOverrides[i]
		sel, err := selectorOf(&o.NodeSelector)
		if err != nil {
			// An override whose selector cannot be parsed matches no node; the base attributes stay in force.
			continue
		}
		merged := MergeAttributes(ap.Spec.Attributes, &o.Attributes)
		r.selectors = append(r.selectors, sel)
		r.merged = append(r.merged, merged)
		r.keys = append(r.keys, attributesKey(merged))
	}
	return r
}

// forNode returns the node's attributes, their grouping key, and which variant they are: the index of the override,
// or -1 for the base attributes.
func (r *attributeResolver) forNode(n *corev1.Node) (*anycastv1.BGPAttributes, string, int) {
	set := labelsOf(n)
	for i, sel := range r.selectors {
		if sel.Matches(set) {
			return r.merged[i], r.keys[i], i
		}
	}
	return r.base, r.baseKey, -1
}

// MergeAttributes returns base with every attribute that override sets replaced by the override's value.
func MergeAttributes(base, override *anycastv1.BGPAttributes) *anycastv1.BGPAttributes {
	out := &anycastv1.BGPAttributes{}
	if base != nil {
		out = base.DeepCopy()
	}
	if override == nil {
		return out
	}
	o := override.DeepCopy()
	if o.Communities != nil {
		out.Communities = o.Communities
	}
	if o.LargeCommunities != nil {
		out.LargeCommunities = o.LargeCommunities
	}
	if o.LocalPreference != nil {
		out.LocalPreference = o.LocalPreference
	}
	if o.MED != nil {
		out.MED = o.MED
	}
	if o.ASPathPrepend != nil {
		out.ASPathPrepend = o.ASPathPrepend
	}
	return out
}
