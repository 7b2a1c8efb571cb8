package controllers

import (
	"context"
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/anycast-operator/anycast-operator/internal/backend"
)

// AgentDaemonSetReconciler keeps the agents' DaemonSet, and the admission policies that confine them, as the
// manager was told to deploy them (OLM installs: a bundle can carry neither). It writes only when one is missing or
// differs from what it applied, and puts it back when someone deletes or edits it.
type AgentDaemonSetReconciler struct {
	Client    client.Client
	DaemonSet *appsv1.DaemonSet
	// Policies are the ValidatingAdmissionPolicies and their bindings (agentdeploy.AdmissionPolicies).
	Policies []client.Object
}

// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingadmissionpolicies;validatingadmissionpolicybindings,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get

// Reconcile applies the DaemonSet and the policies.
func (r *AgentDaemonSetReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	objs := []client.Object{r.DaemonSet.DeepCopy()}
	for _, p := range r.Policies {
		objs = append(objs, p.DeepCopyObject().(client.Object))
	}
	writes, err := backend.Sync(ctx, r.Client, FieldOwner, objs, nil)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("the agents' DaemonSet and admission policies: %w", err)
	}
	if writes.Total() > 0 {
		log.FromContext(ctx).Info("Applied the agents' DaemonSet", "namespace", r.DaemonSet.Namespace, "image", r.DaemonSet.Spec.Template.Spec.Containers[0].Image)
	}
	return reconcile.Result{}, nil
}

// SetupWithManager runs the reconciler once at start and on every change of the DaemonSet.
func (r *AgentDaemonSetReconciler) SetupWithManager(mgr ctrl.Manager) error {
	start := make(chan event.GenericEvent, 1)
	start <- event.GenericEvent{Object: r.DaemonSet}
	key := client.ObjectKeyFromObject(r.DaemonSet)
	ours := map[string]bool{}
	for _, p := range r.Policies {
		ours[p.GetName()] = true
	}
	named := builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool { return ours[o.GetName()] }))
	return ctrl.NewControllerManagedBy(mgr).
		Named("agent-daemonset").
		WatchesRawSource(source.Channel(start, &handler.EnqueueRequestForObject{})).
		Watches(&appsv1.DaemonSet{}, &handler.EnqueueRequestForObject{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return client.ObjectKeyFromObject(o) == key
		}))).
		Watches(&admissionregistrationv1.ValidatingAdmissionPolicy{}, &handler.EnqueueRequestForObject{}, named).
		Watches(&admissionregistrationv1.ValidatingAdmissionPolicyBinding{}, &handler.EnqueueRequestForObject{}, named).
		Complete(r)
}
