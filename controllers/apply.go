package controllers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"golang.org/x/sync/errgroup"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/plan"
)

// changes counts what applyAnnouncements wrote.
type changes struct{ created, updated, deleted atomic.Int32 }

// applyAnnouncements creates, updates and deletes NodeAnnouncements so they match the plan, writing only those that
// differ. A write that fails is recorded in failed and stops no other.
func (r *PlannerReconciler) applyAnnouncements(ctx context.Context, in plan.Input, out plan.Output, done *changes, failed *failures) {
	logger := log.FromContext(ctx)
	nodes := make(map[string]*corev1.Node, len(in.Nodes))
	for i := range in.Nodes {
		nodes[in.Nodes[i].Name] = &in.Nodes[i]
	}
	existing := make(map[string]*anycastv1.NodeAnnouncement, len(in.Announcements))
	for i := range in.Announcements {
		existing[in.Announcements[i].Name] = &in.Announcements[i]
	}

	var g errgroup.Group // no shared context: one failure cancels no other write
	g.SetLimit(r.Workers)
	write := func(name string, do func() error) {
		g.Go(func() error {
			if err := do(); err != nil {
				failed.node(name, err)
				logger.Error(err, "Writing a NodeAnnouncement", "node", name)
			}
			return nil
		})
	}
	for name, spec := range out.Announcements {
		node, cur := nodes[name], existing[name]
		switch {
		case cur == nil:
			// A copy: the client decodes the server's answer into the object, and the plan's specs share lists.
			na := &anycastv1.NodeAnnouncement{Spec: *spec.DeepCopy()}
			na.Name = name
			setOwnership(na, node)
			write(name, func() error {
				err := r.Client.Create(ctx, na, client.FieldOwner(FieldOwner))
				if apierrors.IsAlreadyExists(err) {
					return nil // the cache is behind; the next reconcile compares again
				}
				if err != nil {
					return fmt.Errorf("creating: %w", err)
				}
				r.remember(na, spec)
				logger.V(1).Info("Created NodeAnnouncement", "node", name, "prefixes", spec.PrefixCount())
				done.created.Add(1)
				r.metrics().writes.WithLabelValues("NodeAnnouncement", "create").Inc()
				return nil
			})
		case !equality.Semantic.DeepEqual(cur.Spec, spec) || !isOwned(cur, node):
			na := cur.DeepCopy()
			na.Spec = *spec.DeepCopy()
			setOwnership(na, node)
			write(name, func() error {
				// The update carries the resourceVersion read: a write based on a stale read conflicts.
				if err := r.Client.Update(ctx, na, client.FieldOwner(FieldOwner)); err != nil {
					return fmt.Errorf("updating: %w", err)
				}
				r.remember(na, spec)
				logger.V(1).Info("Updated NodeAnnouncement", "node", name, "prefixes", spec.PrefixCount())
				done.updated.Add(1)
				r.metrics().writes.WithLabelValues("NodeAnnouncement", "update").Inc()
				return nil
			})
		}
	}
	// The plan keeps a NodeAnnouncement for every Node that exists; these are those of Nodes gone or going.
	for name, cur := range existing {
		if _, planned := out.Announcements[name]; planned || cur.DeletionTimestamp != nil || cur.UID == "" {
			continue
		}
		write(name, func() error {
			err := r.Client.Delete(ctx, cur, client.Preconditions{UID: &cur.UID})
			if err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("deleting: %w", err)
			}
			logger.V(1).Info("Deleted NodeAnnouncement", "node", name)
			done.deleted.Add(1)
			r.metrics().writes.WithLabelValues("NodeAnnouncement", "delete").Inc()
			return nil
		})
	}
	_ = g.Wait()
}

// remember records a NodeAnnouncement the manager wrote (as the server answered) with its spec as planned, until its
// cache shows it (overlayWritten). The plan's spec, which nothing changes after planning, is kept without a copy.
func (r *PlannerReconciler) remember(na *anycastv1.NodeAnnouncement, spec anycastv1.NodeAnnouncementSpec) {
	r.writtenMu.Lock()
	defer r.writtenMu.Unlock()
	if r.written == nil {
		r.written = map[string]*anycastv1.NodeAnnouncement{}
	}
	w := &anycastv1.NodeAnnouncement{ObjectMeta: metav1.ObjectMeta{Name: na.Name, UID: na.UID, Generation: na.Generation, ResourceVersion: na.ResourceVersion}}
	w.Spec = spec
	r.written[na.Name] = w
}

// cacheShows forgets a write of the manager's once its cache shows that generation (or a later one).
func (r *PlannerReconciler) cacheShows(o client.Object) {
	r.writtenMu.Lock()
	defer r.writtenMu.Unlock()
	if w := r.written[o.GetName()]; w != nil && (o.GetUID() != w.UID || o.GetGeneration() >= w.Generation) {
		delete(r.written, o.GetName())
	}
}

// overlayWritten is the cached NodeAnnouncements with the manager's own writes the cache does not show yet
// (plan.Overlay): a permit just granted is never counted free because the cache lags.
func (r *PlannerReconciler) overlayWritten(cached []anycastv1.NodeAnnouncement) []anycastv1.NodeAnnouncement {
	r.writtenMu.Lock()
	defer r.writtenMu.Unlock()
	out, caughtUp := plan.Overlay(cached, r.written)
	for _, name := range caughtUp {
		delete(r.written, name)
	}
	return out
}

// setOwnership labels the NodeAnnouncement and makes its Node its owner, so that the garbage collector deletes it
// with the Node.
func setOwnership(na *anycastv1.NodeAnnouncement, node *corev1.Node) {
	if na.Labels == nil {
		na.Labels = map[string]string{}
	}
	na.Labels[ManagedByLabel] = FieldOwner
	na.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}
}

func isOwned(na *anycastv1.NodeAnnouncement, node *corev1.Node) bool {
	return na.Labels[ManagedByLabel] == FieldOwner && len(na.OwnerReferences) == 1 && na.OwnerReferences[0].UID == node.UID
}

// jsonEqual compares two API values as the API server stores them: nil and empty lists, omitted and zero fields are
// the same there, and treating them as different would rewrite objects forever.
func jsonEqual(a, b any) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

// applyStatuses writes the status of every AnycastPrefix, BGPSessionClaim and HealthPolicy whose status changed, and
// records an event when an important condition flips.
func (r *PlannerReconciler) applyStatuses(ctx context.Context, in plan.Input, out plan.Output, ign ignored, failed *failures) error {
	now := metav1.NewTime(r.Clock.Now())
	backendName := r.BackendName
	if backendName == "" {
		backendName = "embedded"
	}
	g := &errgroup.Group{} // no shared context: one refused status write stops no other
	g.SetLimit(r.Workers)
	patch := func(cur, next conditioned) { r.patchStatus(ctx, g, cur, next) }
	eachStatus(in.Prefixes, out.Prefixes, func(cur *anycastv1.AnycastPrefix, rep *plan.PrefixReport) *anycastv1.AnycastPrefix {
		next := cur.DeepCopy()
		next.Status = plan.PrefixStatus(cur, rep, now)
		settingsIgnored(&next.Status.Conditions, cur.Generation, now, backendName, ign.prefixes[cur.Name])
		applyFailed(&next.Status.Conditions, cur.Generation, now, failed.forPrefix(cur.Name, out))
		return next
	}, patch)
	eachStatus(in.Claims, out.Claims, func(cur *anycastv1.BGPSessionClaim, rep *plan.ClaimReport) *anycastv1.BGPSessionClaim {
		next := cur.DeepCopy()
		next.Status = plan.ClaimStatus(cur, rep, now)
		settingsIgnored(&next.Status.Conditions, cur.Generation, now, backendName, ign.claims[cur.Name])
		applyFailed(&next.Status.Conditions, cur.Generation, now, failed.forClaim(cur.Name, out))
		return next
	}, patch)
	eachStatus(in.Policies, out.Policies, func(cur *anycastv1.HealthPolicy, rep *plan.PolicyReport) *anycastv1.HealthPolicy {
		next := cur.DeepCopy()
		next.Status = plan.PolicyStatus(cur, rep, now)
		return next
	}, patch)
	return g.Wait()
}

// kindOf names the kind of one of this API's objects, for metrics.
func kindOf(o client.Object) string {
	switch o.(type) {
	case *anycastv1.AnycastPrefix:
		return "AnycastPrefix"
	case *anycastv1.BGPSessionClaim:
		return "BGPSessionClaim"
	case *anycastv1.HealthPolicy:
		return "HealthPolicy"
	}
	return "object"
}

// applyFailed makes Ready say that the object's plan could not be written in full, with the API server's message
// (msg: "" when nothing failed, and then Ready stays as the plan says).
func applyFailed(conds *[]metav1.Condition, gen int64, now metav1.Time, msg string) {
	if msg == "" {
		return
	}
	if len(msg) > 32000 {
		msg = msg[:32000]
	}
	meta.SetStatusCondition(conds, metav1.Condition{Type: anycastv1.ConditionReady, Status: metav1.ConditionFalse, Reason: anycastv1.ReasonApplyFailed,
		Message: msg, ObservedGeneration: gen, LastTransitionTime: now})
}

// conditioned is an object of this API with status conditions.
type conditioned interface {
	client.Object
	GetConditions() []metav1.Condition
}

// eachStatus derives the next version of every live item that has a report and hands both versions to apply.
func eachStatus[T any, P interface {
	*T
	conditioned
}, R any](items []T, reports map[string]*R, derive func(P, *R) P, apply func(cur, next conditioned)) {
	for i := range items {
		cur := P(&items[i])
		if rep := reports[cur.GetName()]; rep != nil && cur.GetDeletionTimestamp() == nil {
			apply(cur, derive(cur, rep))
		}
	}
}

// patchStatus writes next's status if it differs from cur's (next is a copy of cur with a new status), then
// records the condition flips as events.
func (r *PlannerReconciler) patchStatus(ctx context.Context, g *errgroup.Group, cur, next conditioned) {
	if jsonEqual(cur, next) {
		return
	}
	g.Go(func() error {
		if err := r.Client.Status().Patch(ctx, next, client.MergeFrom(cur), client.FieldOwner(FieldOwner)); err != nil {
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("writing the status of %T %s: %w", next, next.GetName(), err)
		}
		r.metrics().writes.WithLabelValues(kindOf(next)+"/status", "patch").Inc()
		r.recordFlips(next, cur.GetConditions(), next.GetConditions())
		return nil
	})
}
