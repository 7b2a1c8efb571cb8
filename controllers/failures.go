package controllers

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/backend"
	"github.com/anycast-operator/anycast-operator/internal/plan"
)

// failures collects what one reconcile could not write, so that each failure shows on the objects it affects and
// nowhere else: a NodeAnnouncement on the AnycastPrefixes planned on its node and the claims with sessions there,
// a stack object on the AnycastPrefix or claim it was made for. The reconcile goes on with everything else.
type failures struct {
	mu      sync.Mutex
	nodes   map[string]string   // NodeAnnouncement → message
	sources map[string][]string // SourceLabel value (an AnycastPrefix or claim) → messages
	others  []string            // neither: a shared object, an object made for a node
}

func newFailures() *failures {
	return &failures{nodes: map[string]string{}, sources: map[string][]string{}}
}

// node records that a NodeAnnouncement could not be written.
func (f *failures) node(name string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nodes[name] = fmt.Sprintf("NodeAnnouncement %s: %v", name, err)
	managerMetricsOf().applyErrors.WithLabelValues("NodeAnnouncement").Inc()
}

// backend records a backend step's error: its object errors by source, the rest for every object.
func (f *failures) backend(err error) {
	if err == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	objs := backend.ObjectErrors(err)
	for _, oe := range objs {
		managerMetricsOf().applyErrors.WithLabelValues(oe.Kind).Inc()
		msg := fmt.Sprintf("%s %s: %v", oe.Kind, oe.Name, oe.Err)
		if oe.Source == "" {
			f.others = append(f.others, msg)
			continue
		}
		f.sources[oe.Source] = append(f.sources[oe.Source], msg)
	}
	if len(objs) == 0 {
		f.others = append(f.others, err.Error())
	}
}

// forPrefix is what failed for an AnycastPrefix ("" when nothing did).
func (f *failures) forPrefix(name string, out plan.Output) string {
	var msgs []string
	for _, node := range f.failedNodesCarrying(out, name) {
		if m, ok := f.nodes[node]; ok {
			msgs = append(msgs, m)
		}
	}
	return f.join(name, msgs)
}

// forClaim is what failed for a BGPSessionClaim ("" when nothing did).
func (f *failures) forClaim(name string, out plan.Output) string {
	var msgs []string
	for node, m := range f.nodes {
		if spec := out.Announcements[node]; slices.ContainsFunc(spec.Sessions, func(s anycastv1.NodeSessions) bool { return string(s.Claim) == name }) {
			msgs = append(msgs, m)
		}
	}
	return f.join(name, msgs)
}

func (f *failures) join(name string, msgs []string) string {
	msgs = append(msgs, f.sources[backend.LabelValue(name)]...)
	msgs = append(msgs, f.others...)
	if len(msgs) == 0 {
		return ""
	}
	slices.Sort(msgs)
	msgs = slices.Compact(msgs)
	if len(msgs) > 3 {
		msgs = append(msgs[:3], fmt.Sprintf("and %d more", len(msgs)-3))
	}
	return "The API server refused: " + strings.Join(msgs, "; ")
}

// err sums the failures up for the reconcile's result (nil when none), so that it is retried with backoff.
func (f *failures) err() error {
	var errs []error
	for _, m := range f.nodes {
		errs = append(errs, errors.New(m))
	}
	for _, ms := range f.sources {
		for _, m := range ms {
			errs = append(errs, errors.New(m))
		}
	}
	for _, m := range f.others {
		errs = append(errs, errors.New(m))
	}
	return errors.Join(errs...)
}

// failedNodesCarrying are the nodes whose NodeAnnouncement failed and whose plan has an entry of the AnycastPrefix
// (looking only at the failed ones: a reconcile without failures looks at none).
func (f *failures) failedNodesCarrying(out plan.Output, prefix string) []string {
	var nodes []string
	for node := range f.nodes {
		spec := out.Announcements[node]
		for _, g := range spec.Groups {
			if slices.ContainsFunc(g.Prefixes, func(gp anycastv1.GroupPrefix) bool { return gp.Source == prefix }) {
				nodes = append(nodes, node)
				break
			}
		}
	}
	slices.Sort(nodes)
	return nodes
}
