package controllers

import (
	"unique"

	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// NodeAnnouncementCacheTransform keeps cached NodeAnnouncements small: no managedFields (the manager never reads
// them), and one copy of each string that thousands of them repeat (prefixes, AnycastPrefix, claim and policy
// names, reasons), canonicalised with the unique package. At 5,000 nodes with 100 prefixes each, those strings are
// most of the cache.
func NodeAnnouncementCacheTransform() toolscache.TransformFunc {
	strip := cache.TransformStripManagedFields()
	return func(obj any) (any, error) {
		na, ok := obj.(*anycastv1.NodeAnnouncement)
		if !ok {
			return strip(obj)
		}
		na.ManagedFields = nil
		s := func(v string) string { return unique.Make(v).Value() }
		for gi := range na.Spec.Groups {
			g := &na.Spec.Groups[gi]
			for i := range g.Sessions {
				g.Sessions[i] = anycastv1.LocalObjectName(s(string(g.Sessions[i])))
			}
			g.HealthPolicy = anycastv1.LocalObjectName(s(string(g.HealthPolicy)))
			for i := range g.Prefixes {
				p := &g.Prefixes[i]
				p.Prefix, p.Source = anycastv1.PlannedCIDR(s(string(p.Prefix))), s(p.Source)
			}
		}
		for i := range na.Spec.Permits {
			na.Spec.Permits[i] = s(na.Spec.Permits[i])
		}
		for i := range na.Status.Prefixes {
			p := &na.Status.Prefixes[i]
			p.Prefix, p.Reason = anycastv1.PlannedCIDR(s(string(p.Prefix))), s(p.Reason)
		}
		for i := range na.Status.Permits {
			na.Status.Permits[i] = s(na.Status.Permits[i])
		}
		return na, nil
	}
}
