package controllers

import (
	"context"
	"fmt"
	"slices"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/anycast-operator/anycast-operator/internal/backend"
	"github.com/anycast-operator/anycast-operator/internal/plan"
)

// Backend translates the desired state into a Kubernetes BGP stack's objects (internal/backend/metallb, ...).
type Backend interface {
	Translate(backend.Desired) backend.Translation
	// Kinds are the kinds it writes, where it writes them.
	Kinds() []backend.Kind
}

// +kubebuilder:rbac:groups=anycast.dev,resources=anycastprefixes;bgpsessionclaims,verbs=update;patch

// applyBackend writes the backend's objects for the plan and the agents' reports, then moves the finalizers: every
// AnycastPrefix and BGPSessionClaim holds one while the backend may have objects for it, and loses it once they are
// gone.
func (r *PlannerReconciler) applyBackend(ctx context.Context, in plan.Input, out plan.Output) error {
	desired := backend.Compute(out.Announcements, in.Announcements, in.Nodes)
	tr := r.Backend.Translate(desired)
	writes, err := backend.Sync(ctx, r.Client, FieldOwner, tr.Objects, r.Backend.Kinds())
	if writes > 0 {
		log.FromContext(ctx).Info("Applied backend objects", "writes", writes, "objects", len(tr.Objects))
	}
	for source, ignored := range tr.Ignored {
		log.FromContext(ctx).V(1).Info("The backend does not carry out some settings", "source", source, "ignored", ignored)
	}
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	var objs []client.Object
	for i := range in.Prefixes {
		objs = append(objs, &in.Prefixes[i])
	}
	for i := range in.Claims {
		objs = append(objs, &in.Claims[i])
	}
	for _, o := range objs {
		deleting := !o.GetDeletionTimestamp().IsZero()
		has := slices.Contains(o.GetFinalizers(), backend.Finalizer)
		if deleting == has { // deleting with the finalizer: the objects are gone now; alive without it: add it
			patch := client.MergeFromWithOptions(o.DeepCopyObject().(client.Object), client.MergeFromWithOptimisticLock{})
			if deleting {
				controllerutil.RemoveFinalizer(o, backend.Finalizer)
			} else {
				controllerutil.AddFinalizer(o, backend.Finalizer)
			}
			if err := r.Client.Patch(ctx, o, patch); client.IgnoreNotFound(err) != nil {
				return fmt.Errorf("finalizer of %s: %w", o.GetName(), err)
			}
		}
	}
	return nil
}
