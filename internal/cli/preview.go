package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/plan"
)

// Load reads the objects of YAML or JSON files ("-" is standard input), several per file.
func Load(paths []string, stdin io.Reader) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	for _, path := range paths {
		r := stdin
		if path != "-" {
			f, err := os.Open(path)
			if err != nil {
				return nil, err
			}
			defer f.Close()
			r = f
		}
		d := utilyaml.NewYAMLOrJSONDecoder(bufio.NewReader(r), 4096)
		for {
			u := &unstructured.Unstructured{}
			if err := d.Decode(&u.Object); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			if len(u.Object) == 0 {
				continue // an empty document
			}
			if u.GetName() == "" {
				return nil, fmt.Errorf("%s: a %s without metadata.name", path, u.GetKind())
			}
			objs = append(objs, u)
		}
	}
	return objs, nil
}

// Ref names an object to delete in a preview: kind/name, the kind as in `kubectl get` (anycastprefix/web).
type Ref struct{ Kind, Name string }

// ParseRef parses kind/name.
func ParseRef(s string) (Ref, error) {
	kind, name, ok := strings.Cut(s, "/")
	if !ok || name == "" {
		return Ref{}, fmt.Errorf("%q: want KIND/NAME, such as anycastprefix/web", s)
	}
	switch strings.ToLower(kind) {
	case "anycastprefix", "anycastprefixes", "ap":
		return Ref{Kind: "AnycastPrefix", Name: name}, nil
	case "bgpsessionclaim", "bgpsessionclaims":
		return Ref{Kind: "BGPSessionClaim", Name: name}, nil
	case "healthpolicy", "healthpolicies":
		return Ref{Kind: "HealthPolicy", Name: name}, nil
	}
	return Ref{}, fmt.Errorf("%q: only AnycastPrefixes, BGPSessionClaims and HealthPolicies can be deleted in a preview", s)
}

// Change applies objects and deletions to the planner's input. With a client, each object goes through a
// server-side dry run first (create, or update of the live object with the file's spec), so that the API server
// validates it (schema, CEL rules, admission policies) and defaults it as it would on apply; without one, the
// objects are planned as written. The file's object replaces the live one's spec, labels and annotations, as a
// GitOps sync of a complete manifest would; a Node's labels and annotations are merged into the live Node's.
func Change(ctx context.Context, c client.Client, in plan.Input, objs []*unstructured.Unstructured, deletes []Ref) (plan.Input, error) {
	out := in
	out.Nodes, out.Claims, out.Prefixes, out.Policies = slices.Clone(in.Nodes), slices.Clone(in.Claims), slices.Clone(in.Prefixes), slices.Clone(in.Policies)
	for _, u := range objs {
		gvk := u.GroupVersionKind()
		switch {
		case gvk.Group == anycastv1.GroupVersion.Group && gvk.Kind == "AnycastPrefix":
			if err := put(ctx, c, u, &out.Prefixes, func(live, file *anycastv1.AnycastPrefix) { live.Spec = file.Spec }); err != nil {
				return in, err
			}
		case gvk.Group == anycastv1.GroupVersion.Group && gvk.Kind == "BGPSessionClaim":
			if err := put(ctx, c, u, &out.Claims, func(live, file *anycastv1.BGPSessionClaim) { live.Spec = file.Spec }); err != nil {
				return in, err
			}
		case gvk.Group == anycastv1.GroupVersion.Group && gvk.Kind == "HealthPolicy":
			if err := put(ctx, c, u, &out.Policies, func(live, file *anycastv1.HealthPolicy) { live.Spec = file.Spec }); err != nil {
				return in, err
			}
		case gvk.Group == "" && gvk.Kind == "Node":
			if err := mergeNode(ctx, c, u, out.Nodes); err != nil {
				return in, err
			}
		default:
			return in, fmt.Errorf("%s %q: the preview plans AnycastPrefixes, BGPSessionClaims, HealthPolicies and Node labels only", gvk.Kind, u.GetName())
		}
	}
	for _, d := range deletes {
		var found bool
		switch d.Kind {
		case "AnycastPrefix":
			out.Prefixes, found = without(out.Prefixes, d.Name)
		case "BGPSessionClaim":
			out.Claims, found = without(out.Claims, d.Name)
		case "HealthPolicy":
			out.Policies, found = without(out.Policies, d.Name)
		}
		if !found {
			return in, fmt.Errorf("%s %q not found", d.Kind, d.Name)
		}
	}
	return out, nil
}

// object is a pointer to one of the planner's kinds.
type object[T any] interface {
	*T
	client.Object
}

// put replaces (or adds) the file's object in list, after a server-side dry run when c is set.
func put[T any, P object[T]](ctx context.Context, c client.Client, u *unstructured.Unstructured, list *[]T, replace func(live, file P)) error {
	file := P(new(T))
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, file); err != nil {
		return fmt.Errorf("%s %q: %w", u.GetKind(), u.GetName(), err)
	}
	i := slices.IndexFunc(*list, func(o T) bool { return P(&o).GetName() == file.GetName() })
	var obj P
	if i >= 0 {
		obj = P(new(T))
		*obj = (*list)[i]
		replace(obj, file)
		obj.SetLabels(file.GetLabels())
		obj.SetAnnotations(file.GetAnnotations())
	} else {
		obj = file
		// Without a dry run nothing stamps it: it is newer than every object there (the older one wins overlaps).
		var newest metav1.Time
		for j := range *list {
			if t := P(&(*list)[j]).GetCreationTimestamp(); newest.Before(&t) {
				newest = t
			}
		}
		obj.SetCreationTimestamp(metav1.NewTime(newest.Add(time.Second)))
	}
	if c != nil {
		var err error
		if i >= 0 {
			err = c.Update(ctx, obj, client.DryRunAll)
		} else {
			obj.SetResourceVersion("")
			err = c.Create(ctx, obj, client.DryRunAll)
		}
		if err != nil {
			return fmt.Errorf("the API server refuses %s %q: %w", u.GetKind(), u.GetName(), cause(err))
		}
	}
	if i >= 0 {
		(*list)[i] = *obj
	} else {
		*list = append(*list, *obj)
	}
	return nil
}

// cause is the API server's message without the client's wrapping.
func cause(err error) error {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return errors.New(status.Status().Message)
	}
	return err
}

func mergeNode(ctx context.Context, c client.Client, u *unstructured.Unstructured, nodes []corev1.Node) error {
	i := slices.IndexFunc(nodes, func(n corev1.Node) bool { return n.Name == u.GetName() })
	if i < 0 {
		return fmt.Errorf("node %q not found: the preview changes the labels of existing Nodes only", u.GetName())
	}
	n := nodes[i].DeepCopy()
	for k, v := range u.GetLabels() {
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		n.Labels[k] = v
	}
	for k, v := range u.GetAnnotations() {
		if n.Annotations == nil {
			n.Annotations = map[string]string{}
		}
		n.Annotations[k] = v
	}
	if c != nil {
		if err := c.Update(ctx, n, client.DryRunAll); err != nil {
			return fmt.Errorf("the API server refuses Node %q: %w", n.Name, cause(err))
		}
	}
	nodes[i] = *n
	return nil
}

func without[T any, P object[T]](list []T, name string) ([]T, bool) {
	i := slices.IndexFunc(list, func(o T) bool { return P(&o).GetName() == name })
	if i < 0 {
		return list, false
	}
	return slices.Delete(list, i, i+1), true
}

// Move is what a change does to one CIDR on one node.
type Move struct {
	Node string
	// What: Announce, Withdraw (at once), Leave (withdrawn as maxWithdrawn permits), Update (sessions, attributes
	// or health policy change).
	What   string
	Detail string
}

// Moves of a preview.
const (
	MoveAnnounce = "announce"
	MoveWithdraw = "withdraw"
	MoveLeave    = "leave"
	MoveUpdate   = "update"
)

// CIDRChange is what a change does to one CIDR of one AnycastPrefix.
type CIDRChange struct {
	AnycastPrefix string
	CIDR          string
	Moves         []Move
	// Before and After count the nodes planned to announce the CIDR (not leaving).
	Before, After int
}

// Off is how many nodes the change takes the CIDR off, at once or through the budget.
func (c CIDRChange) Off() int {
	n := 0
	for _, m := range c.Moves {
		if m.What == MoveWithdraw || m.What == MoveLeave {
			n++
		}
	}
	return n
}

// Preview is what a change does to the plan.
type Preview struct {
	CIDRs []CIDRChange
	// Findings are the admission findings of the changed AnycastPrefixes after the change, by name, that were not
	// there before (an overlap, a missing claim).
	Findings map[string][]plan.Finding
	// OtherNodes counts the nodes whose NodeAnnouncement changes without a move (sessions, drain, permits).
	OtherNodes int
}

type slot struct {
	e    plan.GroupEntry
	have bool
}

// Diff plans before and after and compares them.
func Diff(before, after plan.Input) Preview {
	b, a := plan.Compute(before), plan.Compute(after)
	pv := Preview{Findings: map[string][]plan.Finding{}}
	sources := map[string]bool{}
	for _, ap := range before.Prefixes {
		sources[ap.Name] = true
	}
	for _, ap := range after.Prefixes {
		sources[ap.Name] = true
	}
	var names []string
	for s := range sources {
		names = append(names, s)
	}
	slices.Sort(names)
	nodeNames := map[string]bool{}
	for n := range b.Announcements {
		nodeNames[n] = true
	}
	for n := range a.Announcements {
		nodeNames[n] = true
	}
	nodes := make([]string, 0, len(nodeNames))
	for n := range nodeNames {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)

	moved := map[string]bool{}
	for _, source := range names {
		byCIDR := map[string]*CIDRChange{}
		var order []string
		for _, node := range nodes {
			was := entryMap(b.Announcements[node], source)
			will := entryMap(a.Announcements[node], source)
			for _, cidr := range unionKeys(was, will) {
				c := byCIDR[cidr]
				if c == nil {
					c = &CIDRChange{AnycastPrefix: source, CIDR: cidr}
					byCIDR[cidr] = c
					order = append(order, cidr)
				}
				w, n := was[cidr], will[cidr]
				if w.have && !w.e.Leaving {
					c.Before++
				}
				if n.have && !n.e.Leaving {
					c.After++
				}
				if m, ok := move(w, n, a.Prefixes[source]); ok {
					m.Node = node
					c.Moves = append(c.Moves, m)
					moved[node] = true
				}
			}
		}
		slices.Sort(order)
		for _, cidr := range order {
			if c := byCIDR[cidr]; len(c.Moves) > 0 {
				pv.CIDRs = append(pv.CIDRs, *c)
			}
		}
		if r := a.Prefixes[source]; r != nil {
			var old []plan.Finding
			if br := b.Prefixes[source]; br != nil {
				old = br.Findings
			}
			for _, f := range r.Findings {
				if !slices.Contains(old, f) {
					pv.Findings[source] = append(pv.Findings[source], f)
				}
			}
		}
	}
	for _, node := range nodes {
		if !moved[node] && !equality.Semantic.DeepEqual(b.Announcements[node], a.Announcements[node]) {
			pv.OtherNodes++
		}
	}
	return pv
}

func move(was, will slot, after *plan.PrefixReport) (Move, bool) {
	switch {
	case (!was.have || was.e.Leaving) && will.have && !will.e.Leaving:
		return Move{What: MoveAnnounce, Detail: "over " + claimList(will.e.Sessions)}, true
	case was.have && !was.e.Leaving && will.have && will.e.Leaving:
		detail := fmt.Sprintf("leaving: withdrawn as maxWithdrawn permits, at most %d node(s) at a time", after.Budget)
		if after.LeavingHeld {
			detail = fmt.Sprintf("leaving, but held: more nodes leave than the budget of %d, so none withdraws", after.Budget)
		}
		return Move{What: MoveLeave, Detail: detail}, true
	case was.have && !was.e.Leaving && !will.have:
		return Move{What: MoveWithdraw, Detail: "at once"}, true
	case was.have && will.have && !will.e.Leaving:
		var changes []string
		if !slices.Equal(was.e.Sessions, will.e.Sessions) {
			changes = append(changes, fmt.Sprintf("sessions %s -> %s", claimList(was.e.Sessions), claimList(will.e.Sessions)))
		}
		if was.e.HealthPolicy != will.e.HealthPolicy {
			changes = append(changes, fmt.Sprintf("health policy %q -> %q", was.e.HealthPolicy, will.e.HealthPolicy))
		}
		if was.e.Paused != will.e.Paused {
			changes = append(changes, fmt.Sprintf("paused %t -> %t", was.e.Paused, will.e.Paused))
		}
		if !equality.Semantic.DeepEqual(was.e.Attributes, will.e.Attributes) {
			changes = append(changes, fmt.Sprintf("attributes %s -> %s", attributesText(was.e.Attributes), attributesText(will.e.Attributes)))
		}
		if len(changes) > 0 {
			return Move{What: MoveUpdate, Detail: strings.Join(changes, ", ")}, true
		}
	}
	return Move{}, false
}

// attributesText is BGP attributes as compact JSON, {} for none.
func attributesText(a *anycastv1.BGPAttributes) string {
	if a == nil {
		return "{}"
	}
	b, err := json.Marshal(a)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func claimList(list []anycastv1.LocalObjectName) string {
	s := make([]string, len(list))
	for i, c := range list {
		s[i] = string(c)
	}
	return strings.Join(s, ",")
}

func entryMap(spec anycastv1.NodeAnnouncementSpec, source string) map[string]slot {
	m := map[string]slot{}
	for _, e := range plan.EntriesOf(spec, source) {
		m[string(e.Prefix)] = slot{e: e, have: true}
	}
	return m
}

func unionKeys(a, b map[string]slot) []string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

var moveSigns = map[string]string{MoveAnnounce: "+", MoveWithdraw: "-", MoveLeave: "-", MoveUpdate: "~"}

// Print writes the preview.
func (pv Preview) Print(w io.Writer) {
	var names []string
	for name := range pv.Findings {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		for _, f := range pv.Findings[name] {
			fmt.Fprintf(w, "! AnycastPrefix %s: %s: %s\n", name, f.Reason, f.Message)
		}
	}
	if len(pv.CIDRs) == 0 {
		fmt.Fprintln(w, "No prefix is announced or withdrawn anywhere by this change.")
	}
	for _, c := range pv.CIDRs {
		fmt.Fprintf(w, "%s (AnycastPrefix %s): announced from %d node(s), %d after the change\n", c.CIDR, c.AnycastPrefix, c.Before, c.After)
		for _, m := range c.Moves {
			fmt.Fprintf(w, "  %s %-9s %s: %s\n", moveSigns[m.What], m.What, m.Node, m.Detail)
		}
	}
	if pv.OtherNodes > 0 {
		fmt.Fprintf(w, "The NodeAnnouncements of %d more node(s) change without announcing or withdrawing anything (sessions, health policies, drain).\n", pv.OtherNodes)
	}
}

// MostTakenOff is the CIDR the change takes off the most nodes, and how many.
func (pv Preview) MostTakenOff() (CIDRChange, int) {
	var worst CIDRChange
	most := 0
	for _, c := range pv.CIDRs {
		if n := c.Off(); n > most {
			worst, most = c, n
		}
	}
	return worst, most
}
