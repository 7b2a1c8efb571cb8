package backend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// HashAnnotation records the hash of what was last applied to an object. An object whose hash and owned fields
// already match is not written again: a reconcile that changes nothing writes nothing.
const HashAnnotation = "anycast.dev/applied-hash"

// Kind is a kind a backend writes, and the namespace it writes it in ("" for cluster-scoped kinds).
type Kind struct {
	schema.GroupVersionKind
	Namespace string
}

// Writes counts the writes of a Sync by kind and verb ("BGPPeer/apply", "BGPPeer/delete").
type Writes map[string]int

// Total is the number of writes.
func (w Writes) Total() int {
	n := 0
	for _, v := range w {
		n += v
	}
	return n
}

// Sync makes the backend objects owned by the operator exactly objs. It server-side applies each object that is new
// or differs from what was last applied (or whose applied fields someone changed), and deletes every object of the
// kinds that carries the managed-by label but is not in objs. Objects without the label are never read for
// deletion, written or deleted: the user's own MetalLB, Calico or Cilium objects are left alone. It returns what it
// wrote or deleted, by kind.
func Sync(ctx context.Context, c client.Client, owner string, objs []client.Object, kinds []Kind) (Writes, error) {
	want := map[string]bool{}
	writes := Writes{}
	var errs []error
	for _, obj := range objs {
		u, err := toUnstructured(c.Scheme(), obj)
		if err != nil {
			return writes, err
		}
		want[objectKey(u)] = true
		changed, err := apply(ctx, c, owner, u)
		if err != nil {
			errs = append(errs, &ObjectError{Kind: u.GetKind(), Name: client.ObjectKeyFromObject(u).String(), Source: u.GetLabels()[SourceLabel], Err: err})
		}
		if changed {
			writes[u.GetKind()+"/apply"]++
		}
	}
	for _, kind := range kinds {
		gvk := kind.GroupVersionKind
		items, err := listOwned(ctx, c, kind)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, item := range items {
			if want[gvk.Group+"/"+gvk.Kind+"/"+item.GetNamespace()+"/"+item.GetName()] {
				continue
			}
			if err := c.Delete(ctx, item); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, &ObjectError{Kind: gvk.Kind, Name: client.ObjectKeyFromObject(item).String(), Source: item.GetLabels()[SourceLabel],
					Err: fmt.Errorf("deleting %s %s: %w", gvk.Kind, client.ObjectKeyFromObject(item), err)})
				continue
			}
			writes[gvk.Kind+"/delete"]++
		}
	}
	return writes, errors.Join(errs...)
}

// ObjectError is the failure to write or delete one object, and the AnycastPrefix or BGPSessionClaim it was made
// for (its SourceLabel value; "" for an object made for a node). One failed object never stops the others.
type ObjectError struct {
	Kind, Name string
	Source     string
	Err        error
}

func (e *ObjectError) Error() string { return e.Err.Error() }
func (e *ObjectError) Unwrap() error { return e.Err }

// ObjectErrors lists the object errors an error of Sync holds.
func ObjectErrors(err error) []*ObjectError {
	var out []*ObjectError
	var walk func(error)
	walk = func(err error) {
		if oe, ok := err.(*ObjectError); ok {
			out = append(out, oe)
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
	return out
}

// apply writes u unless the live object already has what u says.
func apply(ctx context.Context, c client.Client, owner string, u *unstructured.Unstructured) (bool, error) {
	hash, err := hashOf(u)
	if err != nil {
		return false, err
	}
	labels := u.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[ManagedByLabel] = ManagedBy
	u.SetLabels(labels)
	annotations := u.GetAnnotations()
	if annotations == nil {
		annotations = map[string]string{}
	}
	annotations[HashAnnotation] = hash
	u.SetAnnotations(annotations)

	// The live object is read as its typed kind, so that the manager's client serves it from its cache: a reconcile
	// that changes nothing costs no API call.
	typed, err := c.Scheme().New(u.GroupVersionKind())
	if err != nil {
		return false, err
	}
	live := typed.(client.Object)
	err = c.Get(ctx, client.ObjectKeyFromObject(u), live)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return false, fmt.Errorf("reading %s %s: %w", u.GetKind(), client.ObjectKeyFromObject(u), err)
	default:
		if live.GetLabels()[ManagedByLabel] != ManagedBy {
			return false, fmt.Errorf("%s %s exists and is not managed by %s; rename or remove it", u.GetKind(), client.ObjectKeyFromObject(u), ManagedBy)
		}
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(live)
		if err != nil {
			return false, err
		}
		if live.GetAnnotations()[HashAnnotation] == hash && Contains(m, u.Object) {
			return false, nil
		}
	}
	if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(owner), client.ForceOwnership); err != nil {
		return false, fmt.Errorf("applying %s %s: %w", u.GetKind(), client.ObjectKeyFromObject(u), err)
	}
	return true, nil
}

// listOwned lists the objects of a kind that carry the managed-by label, as typed objects (from the cache).
func listOwned(ctx context.Context, c client.Client, kind Kind) ([]client.Object, error) {
	gvk := kind.GroupVersionKind
	obj, err := c.Scheme().New(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
	if err != nil {
		return nil, err
	}
	list := obj.(client.ObjectList)
	opts := []client.ListOption{client.MatchingLabels{ManagedByLabel: ManagedBy}}
	if kind.Namespace != "" {
		opts = append(opts, client.InNamespace(kind.Namespace))
	}
	if err := c.List(ctx, list, opts...); err != nil {
		return nil, fmt.Errorf("listing %s: %w", gvk.Kind, err)
	}
	items, err := meta.ExtractList(list)
	if err != nil {
		return nil, err
	}
	out := make([]client.Object, 0, len(items))
	for _, i := range items {
		o := i.(client.Object)
		o.GetObjectKind().SetGroupVersionKind(gvk)
		out = append(out, o)
	}
	return out, nil
}

func toUnstructured(scheme *runtime.Scheme, obj client.Object) (*unstructured.Unstructured, error) {
	gvk, err := apiutilGVK(scheme, obj)
	if err != nil {
		return nil, err
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(gvk)
	// Only what the operator means to own: no status, no server-set metadata.
	delete(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	return u, nil
}

func apiutilGVK(scheme *runtime.Scheme, obj client.Object) (schema.GroupVersionKind, error) {
	gvks, _, err := scheme.ObjectKinds(obj)
	if err != nil {
		return schema.GroupVersionKind{}, err
	}
	return gvks[0], nil
}

func hashOf(u *unstructured.Unstructured) (string, error) {
	b, err := json.Marshal(u.Object) // map keys are sorted: the same object hashes the same
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8]), nil
}

func objectKey(u client.Object) string {
	gvk := u.GetObjectKind().GroupVersionKind()
	return gvk.Group + "/" + gvk.Kind + "/" + u.GetNamespace() + "/" + u.GetName()
}

// Contains reports whether every field of want is in have with the same value (have may hold more: defaults,
// other owners' fields).
func Contains(have, want any) bool {
	switch w := want.(type) {
	case map[string]any:
		if len(w) == 0 && have == nil {
			return true // an empty object the server does not keep
		}
		h, ok := have.(map[string]any)
		if !ok {
			return false
		}
		for k, v := range w {
			if !Contains(h[k], v) {
				return false
			}
		}
		return true
	case []any:
		if len(w) == 0 && have == nil {
			return true
		}
		h, ok := have.([]any)
		if !ok || len(h) != len(w) {
			return false
		}
		for i := range w {
			if !Contains(h[i], w[i]) {
				return false
			}
		}
		return true
	default:
		hb, _ := json.Marshal(have)
		wb, _ := json.Marshal(want)
		return string(hb) == string(wb)
	}
}
