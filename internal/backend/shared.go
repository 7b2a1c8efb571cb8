package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// SharedList is the operator's part of a list inside an object that others own too, such as the serviceLoadBalancerIPs
// of Calico's cluster-wide BGPConfiguration "default". Entries are told apart by one key field. The operator adds
// its entries and later removes exactly those; entries added by anyone else are never changed or removed, and an
// entry whose key someone else already uses is left to them (and reported).
type SharedList struct {
	GVK  schema.GroupVersionKind
	Name string // of a cluster-scoped object
	// Path is the list's field path, for example spec.serviceLoadBalancerIPs.
	Path []string
	// Key is the field that identifies an entry, for example cidr.
	Key string
	// Source names, per entry key, the AnycastPrefix or claim the entry is for (for reporting conflicts).
	Source  map[string]string
	Entries []map[string]any
}

// Annotations on a shared object: which entries of which list the operator added, and whether it created the
// object (then it deletes the object again once it holds nothing else).
const (
	SharedLabel            = "anycast.dev/shared"
	ownedAnnotationPrefix  = "anycast.dev/owned."
	createdByUsAnnotation  = "anycast.dev/created-by"
	createdByUsAnnotationV = ManagedBy
)

// MergeShared makes the operator's part of every shared object equal to lists, and removes its part from the shared
// objects of kinds that it touched before (found by SharedLabel) and lists no longer name. Each object is read,
// changed and written back with its resourceVersion (a concurrent change by someone else fails the write and the
// reconcile is retried), and written only when something differs. The objects are read live and unstructured, not
// from the cache as typed objects: the stack's Go types may be older than the stack, and an update built from them
// would erase the fields they do not know. It returns the writes made and, per source, the entries left to someone
// else.
func MergeShared(ctx context.Context, c client.Client, lists []SharedList, kinds []schema.GroupVersionKind) (int, map[string][]string, error) {
	type objKey struct {
		gvk  schema.GroupVersionKind
		name string
	}
	byObject := map[objKey][]SharedList{}
	for _, l := range lists {
		k := objKey{l.GVK, l.Name}
		byObject[k] = append(byObject[k], l)
	}
	// Objects the operator has a part in now but no longer wants one in: their lists are merged with no entries.
	for _, gvk := range kinds {
		list := &unstructured.UnstructuredList{}
		list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
		if err := c.List(ctx, list, client.MatchingLabels{SharedLabel: "true"}); err != nil {
			return 0, nil, fmt.Errorf("listing %s: %w", gvk.Kind, err)
		}
		for _, item := range list.Items {
			k := objKey{gvk, item.GetName()}
			if _, ok := byObject[k]; ok {
				continue
			}
			for a, v := range item.GetAnnotations() {
				if path, ok := strings.CutPrefix(a, ownedAnnotationPrefix); ok {
					byObject[k] = append(byObject[k], SharedList{GVK: gvk, Name: item.GetName(), Path: strings.Split(path, "."), Key: parseOwned(v).Key})
				}
			}
		}
	}
	keys := slices.SortedFunc(maps.Keys(byObject), func(a, b objKey) int {
		return strings.Compare(a.gvk.Kind+"/"+a.name, b.gvk.Kind+"/"+b.name)
	})
	writes := 0
	conflicts := map[string][]string{}
	var errs []error
	for _, k := range keys {
		wrote, err := mergeObject(ctx, c, k.gvk, k.name, byObject[k], conflicts)
		if err != nil {
			errs = append(errs, err)
		}
		if wrote {
			writes++
		}
	}
	return writes, conflicts, errors.Join(errs...)
}

func mergeObject(ctx context.Context, c client.Client, gvk schema.GroupVersionKind, name string, lists []SharedList, conflicts map[string][]string) (bool, error) {
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(gvk)
	err := c.Get(ctx, client.ObjectKey{Name: name}, obj)
	exists := err == nil
	switch {
	case apierrors.IsNotFound(err):
		obj = &unstructured.Unstructured{Object: map[string]any{}}
		obj.SetGroupVersionKind(gvk)
		obj.SetName(name)
	case err != nil:
		return false, fmt.Errorf("reading %s %s: %w", gvk.Kind, name, err)
	}
	before := obj.DeepCopy()
	annotations := obj.GetAnnotations()
	if annotations == nil {
		annotations = map[string]string{}
	}
	ownsAny := false
	for _, l := range lists {
		path := strings.Join(l.Path, ".")
		previously := parseOwned(annotations[ownedAnnotationPrefix+path]).Keys
		live, _, _ := unstructured.NestedSlice(obj.Object, l.Path...)
		var merged []any
		others := map[string]bool{}
		for _, e := range live {
			m, _ := e.(map[string]any)
			key, _ := m[l.Key].(string)
			if slices.Contains(previously, key) {
				continue // ours: replaced by what is wanted now
			}
			others[key] = true
			merged = append(merged, e)
		}
		var owned []string
		for _, e := range l.Entries {
			key, _ := e[l.Key].(string)
			if others[key] {
				src := l.Source[key]
				conflicts[src] = append(conflicts[src], fmt.Sprintf("%s %s %s: an entry for %s exists that the operator does not own; it is left as it is", gvk.Kind, name, path, key))
				continue
			}
			owned = append(owned, key)
			merged = append(merged, e)
		}
		if len(merged) == 0 {
			unstructured.RemoveNestedField(obj.Object, l.Path...)
		} else if err := unstructured.SetNestedSlice(obj.Object, merged, l.Path...); err != nil {
			return false, err
		}
		if len(owned) == 0 {
			delete(annotations, ownedAnnotationPrefix+path)
		} else {
			sort.Strings(owned)
			b, _ := json.Marshal(ownedEntries{Key: l.Key, Keys: owned})
			annotations[ownedAnnotationPrefix+path] = string(b)
			ownsAny = true
		}
	}
	labels := obj.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	if ownsAny {
		labels[SharedLabel] = "true"
		if !exists {
			annotations[createdByUsAnnotation] = createdByUsAnnotationV
		}
	} else {
		delete(labels, SharedLabel)
	}
	obj.SetLabels(emptyToNil(labels))
	obj.SetAnnotations(emptyToNil(annotations))

	switch {
	case !exists && !ownsAny:
		return false, nil
	case !exists:
		if err := c.Create(ctx, obj); err != nil {
			return false, fmt.Errorf("creating %s %s: %w", gvk.Kind, name, err)
		}
		return true, nil
	case !ownsAny && annotations[createdByUsAnnotation] == createdByUsAnnotationV && onlyDefaults(ctx, c, obj):
		// The operator created it and nothing but the API server's defaults is in it: leave nothing behind.
		if err := c.Delete(ctx, obj, client.Preconditions{ResourceVersion: ptr.To(obj.GetResourceVersion())}); client.IgnoreNotFound(err) != nil {
			return false, fmt.Errorf("deleting %s %s: %w", gvk.Kind, name, err)
		}
		return true, nil
	case reflect.DeepEqual(before.Object, obj.Object):
		return false, nil
	}
	if !ownsAny {
		delete(annotations, createdByUsAnnotation)
		obj.SetAnnotations(emptyToNil(annotations))
	}
	if err := c.Update(ctx, obj); err != nil {
		return false, fmt.Errorf("updating %s %s: %w", gvk.Kind, name, err)
	}
	return true, nil
}

// ownedEntries is the annotation recording the operator's entries of one list: the key field and their keys.
type ownedEntries struct {
	Key  string   `json:"key"`
	Keys []string `json:"keys"`
}

func parseOwned(v string) ownedEntries {
	var o ownedEntries
	_ = json.Unmarshal([]byte(v), &o) // an unreadable annotation owns nothing: never remove what might be someone else's
	return o
}

// onlyDefaults reports whether obj's spec is what the API server makes of an empty one (asked with a dry run).
func onlyDefaults(ctx context.Context, c client.Client, obj *unstructured.Unstructured) bool {
	probe := &unstructured.Unstructured{Object: map[string]any{"spec": map[string]any{}}}
	probe.SetGroupVersionKind(obj.GroupVersionKind())
	probe.SetName(obj.GetName() + "-anycast-dry-run")
	if err := c.Create(ctx, probe, client.DryRunAll); err != nil {
		return false // keep it: an object that may hold someone's settings is never deleted on a guess
	}
	have, _, _ := unstructured.NestedMap(obj.Object, "spec")
	empty, _, _ := unstructured.NestedMap(probe.Object, "spec")
	return equality.Semantic.DeepEqual(have, empty) || (len(have) == 0 && len(empty) == 0)
}

func emptyToNil(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}
