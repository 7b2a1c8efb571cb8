package controllers

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// eventAction is the action of every event the planner records.
const eventAction = "Plan"

// recordFlips records an event for each condition that a person should hear about when it changes: Ready in both
// directions, and Conflict, Stalled and Degraded when they become true or clear.
func (r *PlannerReconciler) recordFlips(obj runtime.Object, oldConds, newConds []metav1.Condition) {
	if r.Recorder == nil {
		return
	}
	for _, t := range []string{anycastv1.ConditionConflict, anycastv1.ConditionStalled, anycastv1.ConditionDegraded, anycastv1.ConditionReady} {
		nc := meta.FindStatusCondition(newConds, t)
		if nc == nil {
			continue
		}
		oc := meta.FindStatusCondition(oldConds, t)
		if oc != nil && oc.Status == nc.Status && oc.Reason == nc.Reason {
			continue
		}
		// Waiting for agents is progress, not trouble.
		good := nc.Status == metav1.ConditionTrue || nc.Reason == anycastv1.ReasonAwaitingAgents
		if t != anycastv1.ConditionReady {
			good = nc.Status != metav1.ConditionTrue
			if good && oc == nil {
				continue // a problem that never was is not news
			}
		}
		eventType := corev1.EventTypeWarning
		if good {
			eventType = corev1.EventTypeNormal
		}
		note := nc.Message
		if note == "" {
			note = t + " is " + string(nc.Status)
		}
		r.Recorder.Eventf(obj, nil, eventType, nc.Reason, eventAction, "%s", note)
	}
}
