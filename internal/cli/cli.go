// Package cli is kubectl anycast: what every node announces and why, in the words an operator on call needs, and a
// preview of what a change would withdraw, computed by the manager's own planner (internal/plan) on the live
// cluster state with the change applied.
package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/plan"
)

// Read reads what the planner reads: the four kinds and the Nodes. Secrets are not read: the plugin needs no access
// to them, and the planner only checks their keys for the claims' status.
func Read(ctx context.Context, c client.Reader) (plan.Input, error) {
	var (
		in       plan.Input
		nodes    corev1.NodeList
		claims   anycastv1.BGPSessionClaimList
		prefixes anycastv1.AnycastPrefixList
		policies anycastv1.HealthPolicyList
		nas      anycastv1.NodeAnnouncementList
	)
	for _, l := range []client.ObjectList{&nodes, &claims, &prefixes, &policies, &nas} {
		if err := c.List(ctx, l); err != nil {
			return in, fmt.Errorf("listing %T: %w", l, err)
		}
	}
	in.Nodes, in.Claims, in.Prefixes, in.Policies, in.Announcements = nodes.Items, claims.Items, prefixes.Items, policies.Items, nas.Items
	return in, nil
}

// Status prints, per AnycastPrefix (or the one named) and node: what the node's agent reports of each prefix, since
// when and why, its sessions and whether it holds the permit; then each prefix's budget in use.
func Status(w io.Writer, in plan.Input, prefix string, now time.Time) error {
	out := plan.Compute(in)
	nas := byName(in.Announcements)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ANYCASTPREFIX\tPREFIX\tNODE\tSTATE\tSINCE\tREASON\tSESSIONS\tPERMIT")
	found := false
	for _, ap := range sortedPrefixes(in.Prefixes) {
		if prefix != "" && ap.Name != prefix {
			continue
		}
		found = true
		for _, node := range carriers(out, ap.Name) {
			na := nas[node]
			for _, e := range plan.EntriesOf(out.Announcements[node], ap.Name) {
				st := plan.ReportedState(na, e.Prefix)
				state, since, reason := "Pending", "-", "AwaitingAgent"
				if st != nil {
					state, since, reason = string(st.State), ago(st.Since, now), st.Reason
				}
				if e.Leaving {
					reason += ", leaving"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ap.Name, e.Prefix, node, state, since, reason, sessions(na, out.Announcements[node], e.Sessions),
					permit(ap, na, out.Prefixes[ap.Name], node))
			}
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if prefix != "" && !found {
		return fmt.Errorf("AnycastPrefix %q not found", prefix)
	}
	fmt.Fprintln(w)
	for _, ap := range sortedPrefixes(in.Prefixes) {
		if prefix != "" && ap.Name != prefix {
			continue
		}
		r := out.Prefixes[ap.Name]
		line := fmt.Sprintf("%s: announced from %d of %d eligible nodes; withdrawn %d, budget %d (maxWithdrawn %s)",
			ap.Name, len(r.Announcing), len(r.Eligible), len(r.Withdrawn), r.Budget, plan.MaxWithdrawnOf(&ap))
		if len(r.HeldBack) > 0 {
			line += fmt.Sprintf("; held back by the budget: %s", strings.Join(r.HeldBack, ", "))
		}
		if len(r.Leaving) > 0 {
			line += fmt.Sprintf("; leaving: %s", strings.Join(r.Leaving, ", "))
		}
		fmt.Fprintln(w, line)
		for _, f := range r.Findings {
			fmt.Fprintf(w, "  ! %s: %s\n", f.Reason, f.Message)
		}
		for _, d := range r.Denials {
			fmt.Fprintf(w, "  ! %s: %s\n", d.Reason, d.Message())
		}
	}
	return nil
}

// carriers are the nodes whose plan carries the AnycastPrefix, sorted.
func carriers(out plan.Output, source string) []string {
	var nodes []string
	for node, spec := range out.Announcements {
		if len(plan.EntriesOf(spec, source)) > 0 {
			nodes = append(nodes, node)
		}
	}
	slices.Sort(nodes)
	return nodes
}

// sessions counts the established sessions of the claims carrying a prefix on a node, as its agent reports them.
func sessions(na *anycastv1.NodeAnnouncement, spec anycastv1.NodeAnnouncementSpec, claims []anycastv1.LocalObjectName) string {
	total, up := 0, 0
	for _, ns := range spec.Sessions {
		if !slices.Contains(claims, ns.Claim) || ns.Static == nil {
			continue
		}
		for _, p := range ns.Static.Peers {
			total++
			if na == nil {
				continue
			}
			for _, s := range na.Status.Sessions {
				if s.Claim == ns.Claim && s.PeerAddress == string(p.Address) && s.State == anycastv1.SessionEstablished {
					up++
				}
			}
		}
	}
	return fmt.Sprintf("%d/%d", up, total)
}

func ago(t *metav1.Time, now time.Time) string {
	if t == nil {
		return "-"
	}
	return now.Sub(t.Time).Round(time.Second).String() + " ago"
}

// permit says whether the node holds the prefix's permit (maxWithdrawn): yes, no, asked (the budget holds it
// back), or - where the budget is 100% and no permit is needed.
func permit(ap anycastv1.AnycastPrefix, na *anycastv1.NodeAnnouncement, r *plan.PrefixReport, node string) string {
	switch {
	case !plan.PermitsNeeded(&ap):
		return "-"
	case na != nil && slices.Contains(na.Status.Permits, ap.Name):
		return "yes"
	case slices.Contains(r.HeldBack, node):
		return "asked"
	}
	return "no"
}

func byName(list []anycastv1.NodeAnnouncement) map[string]*anycastv1.NodeAnnouncement {
	m := make(map[string]*anycastv1.NodeAnnouncement, len(list))
	for i := range list {
		m[list[i].Name] = &list[i]
	}
	return m
}

func sortedPrefixes(list []anycastv1.AnycastPrefix) []anycastv1.AnycastPrefix {
	out := slices.Clone(list)
	slices.SortFunc(out, func(a, b anycastv1.AnycastPrefix) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Drain sets (or lifts) a Node's anycast.dev/drain annotation: its agent deprefers every prefix at once and
// withdraws after withdrawDelay; lifting it announces again after reannounceDelay.
func Drain(ctx context.Context, c client.Client, node string, on bool) error {
	value := `null`
	if on {
		value = `"true"`
	}
	patch := []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:%s}}}`, anycastv1.DrainAnnotation, value))
	n := &corev1.Node{}
	n.Name = node
	return c.Patch(ctx, n, client.RawPatch(types.MergePatchType, patch))
}

// Explain prints, in sentences, why a node does or does not announce an AnycastPrefix.
func Explain(w io.Writer, in plan.Input, prefix, node string, now time.Time) error {
	e, err := plan.Explain(in, plan.Compute(in), prefix, node, now)
	if err != nil {
		return err
	}
	fmt.Fprintln(w, e.Verdict)
	for _, r := range e.Reasons {
		fmt.Fprintln(w, "  - "+r)
	}
	return nil
}
