package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// writeStatus reports the agent's decisions when something a reader cares about changed: a prefix state, a check
// state, a session state, a permit or a request, the observed generation. Values that change with every probe
// (probe time, latency, failure count, error text) ride along with those writes but never cause one, so that a
// steady node, healthy or not, writes nothing.
func (a *Agent) writeStatus(ctx context.Context) bool {
	if a.spec == nil || a.spec.Name == "" {
		return true
	}
	st := a.status()
	fp := fingerprint(st)
	if fp == a.written {
		return true
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&anycastv1.NodeAnnouncement{Status: st})
	if err != nil {
		a.log.Error(err, "Encoding status")
		return true // cannot get better by retrying
	}
	u := &unstructured.Unstructured{Object: map[string]any{"status": obj["status"]}}
	u.SetAPIVersion(anycastv1.GroupVersion.String())
	u.SetKind("NodeAnnouncement")
	u.SetName(a.spec.Name)
	// Server-side apply under the agent's own field manager: what it stops reporting disappears, and the
	// manager's spec is never touched.
	if err := a.client.SubResource("status").Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("anycast-agent"), client.ForceOwnership); err != nil {
		a.log.V(1).Info("Status not written; retried on the next event", "error", err.Error())
		return false
	}
	a.written, a.lastStatus = fp, st
	return true
}

// status builds the status from the decisions, the checks and the sessions.
func (a *Agent) status() anycastv1.NodeAnnouncementStatus {
	st := anycastv1.NodeAnnouncementStatus{ObservedGeneration: a.spec.Generation, AgentVersion: a.cfg.Version}
	requests := map[string]bool{}
	announced := 0
	for pfx, run := range a.prefixes {
		d := run.last
		st.Prefixes = append(st.Prefixes, anycastv1.NodePrefixStatus{Prefix: anycastv1.CIDR(pfx.String()), State: d.State, Since: ptrTime(d.Since), Reason: d.Reason})
		if d.WantPermit {
			requests[run.source] = true
		}
		if d.State == anycastv1.PrefixAnnounced || d.State == anycastv1.PrefixDeprefered {
			announced++
		}
	}
	slices.SortFunc(st.Prefixes, func(x, y anycastv1.NodePrefixStatus) int { return strings.Compare(string(x.Prefix), string(y.Prefix)) })
	for name, run := range a.policies {
		for i, c := range run.spec.Checks {
			cs := anycastv1.NodeCheckStatus{Policy: anycastv1.LocalObjectName(name), Name: c.Name, State: run.checks[i].State(),
				ConsecutiveFailures: int32(run.checks[i].ConsecutiveFailures())}
			if i < len(run.last) {
				r := run.last[i]
				cs.LastProbeTime = ptrTime(r.At)
				cs.Latency = &metav1.Duration{Duration: r.Latency}
				cs.LastError = r.Err
			}
			st.Checks = append(st.Checks, cs)
		}
	}
	slices.SortFunc(st.Checks, func(x, y anycastv1.NodeCheckStatus) int {
		return strings.Compare(string(x.Policy)+"/"+x.Name, string(y.Policy)+"/"+y.Name)
	})
	established := 0
	for _, s := range a.sessions {
		st.Sessions = append(st.Sessions, anycastv1.NodeSessionStatus{Claim: anycastv1.LocalObjectName(s.Claim), PeerAddress: s.PeerAddress,
			PeerASN: int64(s.PeerASN), LocalAddress: s.LocalAddress, State: s.State})
		if s.State == anycastv1.SessionEstablished {
			established++
		}
	}
	st.Provisioning = a.provisioningStatus()
	st.Permits = slices.Clone(a.spec.Spec.Permits)
	for source := range requests {
		st.PermitRequests = append(st.PermitRequests, source)
	}
	slices.Sort(st.PermitRequests)
	st.Conditions = slices.Clone(a.lastStatus.Conditions)
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: anycastv1.ConditionReady, Status: metav1.ConditionTrue,
		Reason: "AgentRunning", ObservedGeneration: a.spec.Generation, LastTransitionTime: metav1.NewTime(a.clock.Now()),
		Message: fmt.Sprintf("%d of %d prefixes announced; %d of %d sessions established", announced, len(a.prefixes), established, len(a.sessions))})
	return st
}

// fingerprint is the status without the values that change with every probe.
func fingerprint(st anycastv1.NodeAnnouncementStatus) string {
	c := st.DeepCopy()
	for i := range c.Checks {
		c.Checks[i].LastProbeTime, c.Checks[i].Latency, c.Checks[i].LastError, c.Checks[i].ConsecutiveFailures = nil, nil, "", 0
	}
	b, _ := json.Marshal(c)
	return string(b)
}

func ptrTime(t time.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	m := metav1.NewTime(t)
	return &m
}

func jsonEqual(a, b any) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}
