package agent

import (
	"context"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// LeaseName is the name of a node's heartbeat Lease in the operator's namespace.
func LeaseName(node string) string { return "anycast-agent-" + node }

// renewLeases keeps the node's heartbeat Lease current, every third of its duration, on its own goroutine: each
// call has a deadline, and a renewal that fails waits for the next tick.
func (a *Agent) renewLeases(ctx context.Context) {
	t := a.clock.NewTicker(a.cfg.LeaseDuration / 3)
	defer t.Stop()
	for {
		if err := a.renewLease(ctx); err != nil && ctx.Err() == nil {
			a.log.V(1).Info("Lease not renewed", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

func (a *Agent) renewLease(ctx context.Context) error {
	name := LeaseName(a.cfg.NodeName)
	now := metav1.NewMicroTime(a.clock.Now())
	seconds := ptr.To(int32(a.cfg.LeaseDuration.Seconds()))
	l, err := a.kube.getLease(ctx, a.cfg.Namespace, name)
	switch {
	case apierrors.IsNotFound(err):
		l = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: a.cfg.Namespace, Name: name}}
		l.Spec = coordinationv1.LeaseSpec{HolderIdentity: ptr.To(a.cfg.NodeName), LeaseDurationSeconds: seconds, RenewTime: &now}
		return a.kube.createLease(ctx, l)
	case err != nil:
		return err
	}
	l.Spec.HolderIdentity, l.Spec.RenewTime, l.Spec.LeaseDurationSeconds = ptr.To(a.cfg.NodeName), &now, seconds
	return a.kube.updateLease(ctx, l)
}
