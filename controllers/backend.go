package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/backend"
	"github.com/anycast-operator/anycast-operator/internal/plan"
)

// Backend translates the desired state into a Kubernetes BGP stack's objects (internal/backend/metallb, calico,
// cilium).
type Backend interface {
	Translate(backend.Desired) backend.Translation
	// Kinds are the kinds it writes whole objects of, where it writes them.
	Kinds() []backend.Kind
}

// SharingBackend is a Backend that also keeps entries in objects others own (Calico's BGPConfiguration).
type SharingBackend interface {
	SharedKinds() []schema.GroupVersionKind
}

// SessionReporter is a Backend that can read the state of the stack's BGP sessions, per node.
type SessionReporter interface {
	// SessionKinds are the kinds the stack reports sessions in; the planner watches them.
	SessionKinds() []schema.GroupVersionKind
	Sessions(ctx context.Context, r client.Reader) (map[string][]anycastv1.NodeSessionStatus, error)
}

// +kubebuilder:rbac:groups=anycast.dev,resources=anycastprefixes;bgpsessionclaims,verbs=update;patch

// readBackendSessions puts the sessions the stack reports into the plan's input.
func (r *PlannerReconciler) readBackendSessions(ctx context.Context, in *plan.Input) error {
	sr, ok := r.Backend.(SessionReporter)
	if !ok {
		return nil
	}
	sessions, err := sr.Sessions(ctx, r.Client)
	if err != nil {
		return fmt.Errorf("backend sessions: %w", err)
	}
	in.BackendSessions = sessions
	return nil
}

// Desired is what a backend is asked to make true for the cluster state in.
func Desired(in plan.Input) backend.Desired { return desired(in, plan.Compute(in)) }

func desired(in plan.Input, out plan.Output) backend.Desired {
	return backend.Compute(out.Announcements, in.Announcements, in.Nodes)
}

// ReadInput reads the plan's input as a reconcile does, from the client (tests use it to see what the backend was
// asked for).
func (r *PlannerReconciler) ReadInput(ctx context.Context) (plan.Input, error) {
	in, err := r.read(ctx)
	if err != nil || r.Backend == nil {
		return in, err
	}
	return in, r.readBackendSessions(ctx, &in)
}

// applyBackend writes the backend's objects for the plan and the agents' reports. An object the API server refuses
// stops no other; the error says which (backend.ObjectErrors).
func (r *PlannerReconciler) applyBackend(ctx context.Context, in plan.Input, out plan.Output) (ignored, error) {
	tr := r.Backend.Translate(desired(in, out))
	w, err := backend.Sync(ctx, r.Client, FieldOwner, tr.Objects, r.Backend.Kinds())
	r.metrics().countWrites(w)
	writes := w.Total()
	if sb, ok := r.Backend.(SharingBackend); ok {
		shared, conflicts, serr := backend.MergeShared(ctx, r.Client, tr.Shared, sb.SharedKinds())
		writes += shared
		r.metrics().writes.WithLabelValues("shared", "merge").Add(float64(shared))
		for source, what := range conflicts {
			for _, w := range what {
				tr.IgnorePrefix(source, w)
			}
		}
		err = errors.Join(err, serr)
	}
	if writes > 0 {
		log.FromContext(ctx).Info("Applied backend objects", "writes", writes, "objects", len(tr.Objects))
	}
	ign := ignored{claims: tr.IgnoredClaims, prefixes: tr.IgnoredPrefixes}
	return ign, err
}

// moveFinalizers keeps a finalizer on every AnycastPrefix and BGPSessionClaim while something still carries it, on
// every backend: the plan (a NodeAnnouncement entry or session), and the stack's objects. Deleting either is the
// user's explicit intent to withdraw it (the plan drops it at once, on every backend alike); the object goes once
// nothing carries it any more. clean says the backend's objects were all written as planned this time.
func (r *PlannerReconciler) moveFinalizers(ctx context.Context, in plan.Input, out plan.Output, clean bool) error {
	carried := map[string]bool{} // "prefix/name", "claim/name"
	for _, spec := range out.Announcements {
		for _, s := range spec.Sessions {
			carried["claim/"+string(s.Claim)] = true
		}
		for _, g := range spec.Groups {
			for _, c := range g.Sessions {
				carried["claim/"+string(c)] = true
			}
			for _, gp := range g.Prefixes {
				carried["prefix/"+gp.Source] = true
			}
		}
	}
	type item struct {
		obj  client.Object
		kind string
	}
	var items []item
	for i := range in.Prefixes {
		items = append(items, item{&in.Prefixes[i], "prefix"})
	}
	for i := range in.Claims {
		items = append(items, item{&in.Claims[i], "claim"})
	}
	var errs []error
	for _, it := range items {
		o := it.obj
		deleting := !o.GetDeletionTimestamp().IsZero()
		has := slices.Contains(o.GetFinalizers(), backend.Finalizer)
		var change func(client.Object, string) bool
		switch {
		case !deleting && !has:
			change = controllerutil.AddFinalizer
		case deleting && has && clean && !carried[it.kind+"/"+o.GetName()]:
			change = controllerutil.RemoveFinalizer
		default:
			continue
		}
		patch := client.MergeFromWithOptions(o.DeepCopyObject().(client.Object), client.MergeFromWithOptimisticLock{})
		change(o, backend.Finalizer)
		if err := r.Client.Patch(ctx, o, patch); client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("finalizer of %s: %w", o.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

// ignored names, per claim and per AnycastPrefix, the settings the backend does not carry out.
type ignored struct{ claims, prefixes map[string][]string }

// agentIgnored is what the agents' own speakers do not carry out, when they announce (bird, embedded).
func (r *PlannerReconciler) agentIgnored(in plan.Input) ignored {
	ign := ignored{claims: map[string][]string{}}
	if r.AgentIgnores == nil {
		return ign
	}
	for _, c := range in.Claims {
		if what := r.AgentIgnores(c.Spec.BGPSessionSettings); len(what) > 0 {
			ign.claims[c.Name] = what
		}
	}
	return ign
}

// settingsIgnored sets the SettingsIgnored condition from what the backend ignores.
func settingsIgnored(conds *[]metav1.Condition, gen int64, now metav1.Time, backendName string, what []string) {
	c := metav1.Condition{Type: anycastv1.ConditionSettingsIgnored, Status: metav1.ConditionFalse, Reason: anycastv1.ReasonAllSupported,
		ObservedGeneration: gen, LastTransitionTime: now, Message: "The " + backendName + " backend carries out every setting"}
	if len(what) > 0 {
		sorted := slices.Clone(what)
		slices.Sort(sorted)
		c.Status, c.Reason = metav1.ConditionTrue, anycastv1.ReasonUnsupported
		c.Message = "The " + backendName + " backend does not carry out: " + strings.Join(sorted, "; ")
	}
	meta.SetStatusCondition(conds, c)
}
