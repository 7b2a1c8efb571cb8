// Package controllers holds the manager's reconcilers. They read the cluster, call the pure plan, apply the
// difference and set conditions; every decision lives in internal/plan.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/backend"
	"github.com/anycast-operator/anycast-operator/internal/plan"
)

// FieldOwner is the field manager of everything the manager writes.
const FieldOwner = "anycast-manager"

// ManagedByLabel marks the objects the manager creates.
const ManagedByLabel = "app.kubernetes.io/managed-by"

// plannerKey is the only key of the planner's queue: every change replans the whole cluster, because conflicts,
// permits and maxPrefixes are decisions across objects. The queue folds bursts of changes into one plan.
var plannerKey = reconcile.Request{NamespacedName: types.NamespacedName{Name: "cluster"}}

// PlannerReconciler keeps one NodeAnnouncement per selected node and the status of every AnycastPrefix,
// HealthPolicy and BGPSessionClaim true to the plan.
type PlannerReconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
	Clock    clock.PassiveClock
	// Namespace is the operator's namespace, where referenced Secrets live.
	Namespace string
	// Workers bounds the concurrent writes of one reconcile.
	Workers int
	// Backend, when set, writes the objects of the cluster's BGP stack (MetalLB, Calico, Cilium). With the bird and
	// embedded backends it is nil: the agents announce.
	Backend Backend
	// BackendName names the backend in status messages ("embedded" when empty).
	BackendName string
	// AgentIgnores lists the session settings the agents' speakers do not carry out (bird, embedded).
	AgentIgnores func(anycastv1.BGPSessionSettings) []string

	// written are the NodeAnnouncements this manager wrote that its cache may not show yet (overlayWritten).
	writtenMu sync.Mutex
	written   map[string]*anycastv1.NodeAnnouncement
}

// +kubebuilder:rbac:groups=anycast.dev,resources=anycastprefixes;healthpolicies;bgpsessionclaims,verbs=get;list;watch
// +kubebuilder:rbac:groups=anycast.dev,resources=anycastprefixes/status;healthpolicies/status;bgpsessionclaims/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=anycast.dev,resources=nodeannouncements,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch,namespace=anycast-system
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile plans the cluster and applies the plan. A write that fails affects only its own object: the others are
// still written, and the statuses are written whatever failed (the deferred status write), each AnycastPrefix and
// claim that a failure affects with Ready=False, reason ApplyFailed, and the API server's message.
func (r *PlannerReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (_ reconcile.Result, retErr error) {
	in, err := r.read(ctx)
	if err != nil {
		return reconcile.Result{}, err // the cache could not be read: nothing to plan on
	}
	failed := newFailures()
	if r.Backend != nil {
		if err := r.readBackendSessions(ctx, &in); err != nil {
			failed.backend(err)
		}
	}
	start := r.Clock.Now()
	out := plan.Compute(in)
	r.metrics().observePlan(out, r.Clock.Since(start))
	ign := r.agentIgnored(in)
	defer func() {
		if err := r.applyStatuses(ctx, in, out, ign, failed); err != nil {
			retErr = errors.Join(retErr, err)
		}
		retErr = errors.Join(retErr, failed.err())
	}()
	var done changes
	r.applyAnnouncements(ctx, in, out, &done, failed)
	if c, u, d := done.created.Load(), done.updated.Load(), done.deleted.Load(); c+u+d > 0 {
		log.FromContext(ctx).Info("Applied plan", "created", c, "updated", u, "deleted", d, "nodes", len(out.Announcements), "prefixes", len(out.Prefixes))
	}
	w, err := backend.Sync(ctx, r.Client, FieldOwner, r.agentSecretsRBAC(in), nil)
	r.metrics().countWrites(w)
	failed.backend(err)
	clean := true
	if r.Backend != nil {
		var err error
		if ign, err = r.applyBackend(ctx, in, out); err != nil {
			failed.backend(err)
			clean = false
		}
	}

	return reconcile.Result{}, r.moveFinalizers(ctx, in, out, clean)
}

// metrics are the manager's Prometheus metrics (controller-runtime's registry).
func (r *PlannerReconciler) metrics() *managerMetrics { return managerMetricsOf() }

// read lists the plan's input from the cache.
func (r *PlannerReconciler) read(ctx context.Context) (plan.Input, error) {
	var (
		in       plan.Input
		nodes    metav1.PartialObjectMetadataList
		claims   anycastv1.BGPSessionClaimList
		prefixes anycastv1.AnycastPrefixList
		policies anycastv1.HealthPolicyList
		nas      anycastv1.NodeAnnouncementList
		secrets  corev1.SecretList
	)
	nodes.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("NodeList"))
	for _, l := range []struct {
		list client.ObjectList
		opts []client.ListOption
	}{
		// Nodes and NodeAnnouncements, thousands of them, are read without a copy: nothing here writes to them.
		{&nodes, []client.ListOption{client.UnsafeDisableDeepCopy}}, {&claims, nil}, {&prefixes, nil}, {&policies, nil},
		{&nas, []client.ListOption{client.UnsafeDisableDeepCopy}},
		{&secrets, []client.ListOption{client.InNamespace(r.Namespace)}},
	} {
		if err := r.Client.List(ctx, l.list, l.opts...); err != nil {
			return in, fmt.Errorf("listing %T: %w", l.list, err)
		}
	}
	// Nodes are read as metadata only (labels, annotations, UID): a Node's status (images, conditions) is most of
	// its size and nothing the plan needs.
	in.Nodes = make([]corev1.Node, len(nodes.Items))
	for i := range nodes.Items {
		in.Nodes[i].ObjectMeta = nodes.Items[i].ObjectMeta
	}
	in.Claims, in.Prefixes, in.Policies = claims.Items, prefixes.Items, policies.Items
	in.Announcements = r.overlayWritten(nas.Items)
	in.SecretKeys = make(map[string][]string, len(secrets.Items))
	for _, s := range secrets.Items {
		keys := make([]string, 0, len(s.Data)+len(s.StringData))
		for k := range s.Data {
			keys = append(keys, k)
		}
		in.SecretKeys[s.Name] = keys
	}
	return in, nil
}

// SetupWithManager registers the planner and what it watches.
func (r *PlannerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Workers <= 0 {
		r.Workers = 16
	}
	all := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{plannerKey}
	})
	b := ctrl.NewControllerManagedBy(mgr).
		Named("planner").
		// Spec changes only: the planner's own status writes must not wake it up again.
		Watches(&anycastv1.AnycastPrefix{}, all, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&anycastv1.HealthPolicy{}, all, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&anycastv1.BGPSessionClaim{}, all, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// Spec drift and what agents report; each event also tells which of the manager's own writes the cache
		// shows now (overlayWritten).
		Watches(&anycastv1.NodeAnnouncement{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			r.cacheShows(o)
			return []reconcile.Request{plannerKey}
		})).
		// Labels, the drain annotation and deletion; not the kubelet's status updates.
		WatchesMetadata(&corev1.Node{}, all, builder.WithPredicates(nodeChanged())).
		Watches(&corev1.Secret{}, all, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetNamespace() == r.Namespace
		}))).
		// The agents' Secret access: put back when someone edits or deletes it.
		Watches(&rbacv1.Role{}, all, builder.WithPredicates(agentSecretsObject(r.Namespace))).
		Watches(&rbacv1.RoleBinding{}, all, builder.WithPredicates(agentSecretsObject(r.Namespace)))
	if r.Backend != nil {
		if err := r.watchBackend(b, all); err != nil {
			return err
		}
	}
	return b.Complete(r)
}

// watchBackend wakes the planner when an object the backend wrote changes or goes (so that it is put back), when
// someone changes an object it shares, and when the stack reports a session change. The watches are on the typed
// kinds, so that the informers behind them also serve the backend's reads.
func (r *PlannerReconciler) watchBackend(b *builder.TypedBuilder[reconcile.Request], all handler.EventHandler) error {
	scheme := r.Client.Scheme()
	object := func(gvk schema.GroupVersionKind) (client.Object, error) {
		o, err := scheme.New(gvk)
		if err != nil {
			return nil, fmt.Errorf("backend kind %s: %w", gvk, err)
		}
		return o.(client.Object), nil
	}
	for _, k := range r.Backend.Kinds() {
		o, err := object(k.GroupVersionKind)
		if err != nil {
			return err
		}
		ns := k.Namespace
		b.Watches(o, all, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return o.GetLabels()[backend.ManagedByLabel] == backend.ManagedBy && (ns == "" || o.GetNamespace() == ns)
		})))
	}
	if sb, ok := r.Backend.(SharingBackend); ok {
		for _, gvk := range sb.SharedKinds() {
			b.WatchesMetadata(partialMetadata(gvk), all)
		}
	}
	if sr, ok := r.Backend.(SessionReporter); ok {
		for _, gvk := range sr.SessionKinds() {
			o, err := object(gvk)
			if err != nil {
				return err
			}
			b.Watches(o, all, builder.WithPredicates(statusChanged()))
		}
	}
	return nil
}

func partialMetadata(gvk schema.GroupVersionKind) *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(gvk)
	return m
}

// statusChanged passes creations, deletions and updates that change a status beyond its lastUpdated time (which
// calico-node bumps every few seconds).
func statusChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, err1 := runtime.DefaultUnstructuredConverter.ToUnstructured(e.ObjectOld)
			n, err2 := runtime.DefaultUnstructuredConverter.ToUnstructured(e.ObjectNew)
			if err1 != nil || err2 != nil {
				return true
			}
			os, _, _ := unstructured.NestedMap(o, "status")
			ns, _, _ := unstructured.NestedMap(n, "status")
			delete(os, "lastUpdated")
			delete(ns, "lastUpdated")
			return !equality.Semantic.DeepEqual(os, ns)
		},
	}
}

func agentSecretsObject(namespace string) predicate.Predicate {
	return predicate.NewPredicateFuncs(func(o client.Object) bool {
		return o.GetNamespace() == namespace && o.GetName() == AgentSecretsRole
	})
}

func nodeChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, n := e.ObjectOld, e.ObjectNew
			return !mapsEqual(o.GetLabels(), n.GetLabels()) ||
				o.GetAnnotations()[anycastv1.DrainAnnotation] != n.GetAnnotations()[anycastv1.DrainAnnotation] ||
				o.GetDeletionTimestamp().IsZero() != n.GetDeletionTimestamp().IsZero()
		},
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || v != w {
			return false
		}
	}
	return true
}
