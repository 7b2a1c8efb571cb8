package plan

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

// Admission of an AnycastPrefix is a chain of rules, as in cert-manager's policy chains: each rule detects one
// thing, decides what it means for the prefix, and explains it (reason and message) in one function, so that adding
// a rule touches one place. Every rule runs, and the report keeps every finding; their order ranks them: the first
// finding decides the prefix's fate and its Stalled condition.
var admissionRules = []admissionRule{overlapRule, claimsRule, healthPolicyRule, selectorRule, prefixesRule, pauseRule}

// admissionRule returns what it finds about one AnycastPrefix, or nil.
type admissionRule func(a *admission) *Finding

// Outcome is what a finding does to a prefix.
type Outcome int

const (
	// NotPlanned: the prefix is announced nowhere (it would compete for addresses an older one owns).
	NotPlanned Outcome = iota + 1
	// Frozen: the prefix keeps exactly its last plan (fail-static) and acts on nothing new.
	Frozen
)

// Finding is one admission rule's verdict on a prefix.
type Finding struct {
	Outcome Outcome
	// Stalled: only a change of the prefix or of an object it names resolves it (a pause does not stall).
	Stalled bool
	Reason  string
	Message string
}

// admission is what the rules see of one AnycastPrefix, the prefixes of the older ones among them.
type admission struct {
	p       *planner
	ap      *anycastv1.AnycastPrefix
	r       *PrefixReport
	invalid []string
	overlap *Conflict
}

// stallSuffix ends the message of a finding that freezes a prefix.
const stallSuffix = " New announcements wait; what was announced before is kept."

func overlapRule(a *admission) *Finding {
	if a.overlap == nil {
		return nil
	}
	a.r.Conflict = a.overlap
	return &Finding{Outcome: NotPlanned, Stalled: true, Reason: anycastv1.ReasonOverlap,
		Message: fmt.Sprintf("Overlaps AnycastPrefix %q (%s); remove the overlap", a.overlap.With, a.overlap.Detail)}
}

func claimsRule(a *admission) *Finding {
	for _, c := range a.ap.Spec.SessionClaims {
		if _, ok := a.p.claims[string(c)]; !ok {
			a.r.MissingClaims = append(a.r.MissingClaims, string(c))
		}
	}
	if len(a.r.MissingClaims) == 0 {
		return nil
	}
	return &Finding{Outcome: Frozen, Stalled: true, Reason: anycastv1.ReasonClaimNotFound,
		Message: fmt.Sprintf("BGPSessionClaim %s not found; create it or fix spec.sessionClaims.%s", quoteAll(a.r.MissingClaims), stallSuffix)}
}

func healthPolicyRule(a *admission) *Finding {
	ref := a.ap.Spec.HealthPolicyRef
	if ref == nil {
		return nil
	}
	if hp, ok := a.p.out.Policies[string(ref.Name)]; ok {
		hp.Prefixes++
		return nil
	}
	a.r.MissingPolicy = string(ref.Name)
	return &Finding{Outcome: Frozen, Stalled: true, Reason: anycastv1.ReasonHealthPolicyMissing,
		Message: fmt.Sprintf("HealthPolicy %q not found; create it or fix spec.healthPolicyRef.%s", ref.Name, stallSuffix)}
}

func selectorRule(a *admission) *Finding {
	if _, err := selectorOf(a.ap.Spec.NodeSelector); err != nil {
		a.r.InvalidSelector = err.Error()
		return &Finding{Outcome: Frozen, Stalled: true, Reason: "InvalidSelector",
			Message: fmt.Sprintf("spec.nodeSelector: %s.%s", err, stallSuffix)}
	}
	return nil
}

func prefixesRule(a *admission) *Finding {
	if len(a.invalid) == 0 {
		return nil
	}
	a.r.InvalidPrefixes = a.invalid
	return &Finding{Outcome: Frozen, Stalled: true, Reason: "InvalidPrefix",
		Message: fmt.Sprintf("Prefixes %s can never be announced.%s", quoteAll(a.invalid), stallSuffix)}
}

func pauseRule(a *admission) *Finding {
	if !a.ap.Spec.Paused {
		return nil
	}
	a.r.Paused = true
	return &Finding{Outcome: Frozen, Reason: anycastv1.ReasonPaused, Message: "Paused: announcements are frozen."}
}

// admitPrefixes runs the admission chain on each AnycastPrefix, from the oldest to the newest (the older one owns
// overlapping addresses).
func (p *planner) admitPrefixes() {
	type owned struct {
		pfx   netip.Prefix
		owner string
	}
	var older []owned
	for _, ap := range p.prefixes {
		r := &PrefixReport{Generation: ap.Generation}
		p.out.Prefixes[ap.Name] = r
		a := &admission{p: p, ap: ap, r: r}
		for _, s := range ap.Spec.Prefixes {
			pfx, ok := parsePrefix(s)
			if !ok {
				a.invalid = append(a.invalid, string(s))
				continue
			}
			r.cidrs = append(r.cidrs, pfx)
			// The first overlap with an older object is enough to explain the conflict.
			for _, o := range older {
				if a.overlap == nil && o.pfx.Overlaps(pfx) {
					a.overlap = &Conflict{With: o.owner, Detail: fmt.Sprintf("%s overlaps %s", pfx, o.pfx)}
				}
			}
		}
		for _, pfx := range r.cidrs {
			older = append(older, owned{pfx: pfx, owner: ap.Name})
		}
		for _, rule := range admissionRules {
			if f := rule(a); f != nil {
				r.Findings = append(r.Findings, *f)
			}
		}
	}
}

// Placement rules decide, per node, claim and CIDR, whether an admitted prefix goes out on the claim's sessions on
// that node; a denial is recorded under the rule's reason and explained by its message.
var (
	exportPolicyRule = placementRule{reason: anycastv1.ReasonExportDenied, message: func(d Denial) string {
		return fmt.Sprintf("%s not sent over BGPSessionClaim %q: outside its exportPolicy.allowedPrefixes", strings.Join(d.Prefixes, ", "), d.Claim)
	}}
	maxPrefixesRule = placementRule{reason: anycastv1.ReasonMaxPrefixesExceeded, message: func(d Denial) string {
		return fmt.Sprintf("%s not sent over BGPSessionClaim %q on some nodes: its exportPolicy.maxPrefixes is reached", strings.Join(d.Prefixes, ", "), d.Claim)
	}}
	nodeLimitRule = placementRule{reason: anycastv1.ReasonMaxPrefixesExceeded, message: func(d Denial) string {
		return fmt.Sprintf("%s not announced on some nodes: they already announce %d prefixes, the most one node may", strings.Join(d.Prefixes, ", "), anycastv1.MaxPrefixesPerNode)
	}}
)

// placementRule is a reason a prefix is not planned somewhere, and how that reads.
type placementRule struct {
	reason  string
	message func(Denial) string
}

// deny records that the rule keeps prefix off claim (somewhere).
func (r *PrefixReport) deny(rule *placementRule, claim, prefix string) {
	for i := range r.Denials {
		if d := &r.Denials[i]; d.rule == rule && d.Claim == claim {
			if !slices.Contains(d.Prefixes, prefix) {
				d.Prefixes = append(d.Prefixes, prefix)
			}
			return
		}
	}
	r.Denials = append(r.Denials, Denial{Claim: claim, Prefixes: []string{prefix}, Reason: rule.reason, rule: rule})
}

// Message explains the denial in a sentence.
func (d Denial) Message() string { return d.rule.message(d) }

// Denied returns the denials of one reason, in the order they were found.
func (r *PrefixReport) Denied(reason string) []Denial {
	var out []Denial
	for _, d := range r.Denials {
		if d.Reason == reason {
			out = append(out, d)
		}
	}
	return out
}
