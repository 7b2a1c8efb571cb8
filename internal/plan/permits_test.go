package plan

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
)

func permitCluster(nodes int, maxWithdrawn *intstr.IntOrString) Input {
	in := Input{Claims: []anycastv1.BGPSessionClaim{claim("all", nil, "192.0.2.1")}}
	for i := range nodes {
		in.Nodes = append(in.Nodes, node(fmt.Sprintf("n%02d", i), nil))
	}
	ap := prefix("dns", 0, []string{"all"}, "198.51.100.0/24")
	if maxWithdrawn != nil {
		ap.Spec.Safety = &anycastv1.PrefixSafety{MaxWithdrawn: maxWithdrawn}
	}
	in.Prefixes = []anycastv1.AnycastPrefix{ap}
	return in
}

func holders(out Output) []string {
	var got []string
	for _, n := range nodesOf(out) {
		if slices.Contains(out.Announcements[n].Permits, "dns") {
			got = append(got, n)
		}
	}
	return got
}

func TestPermitsDefaultEveryNodeFailsOverAlone(t *testing.T) {
	out := Compute(permitCluster(5, nil))
	if got := holders(out); len(got) != 5 {
		t.Errorf("holders = %v, want every node", got)
	}
	out = Compute(permitCluster(5, &intstr.IntOrString{Type: intstr.String, StrVal: "100%"}))
	if got := holders(out); len(got) != 5 {
		t.Errorf("holders at 100%% = %v, want every node", got)
	}
}

func TestPermitsBudgetWithEveryNodeFailing(t *testing.T) {
	in := permitCluster(10, &intstr.IntOrString{Type: intstr.String, StrVal: "30%"})
	in.Announcements = announced(Compute(in))
	if got := holders(Compute(in)); len(got) != 0 {
		t.Fatalf("permits granted without a request: %v", got)
	}
	for i := range in.Announcements {
		na := &in.Announcements[i]
		na.Status.PermitRequests = []string{"dns"}
		na.Status.Prefixes = []anycastv1.NodePrefixStatus{{Prefix: "198.51.100.0/24", State: anycastv1.PrefixAnnounced, Reason: "AwaitingPermit"}}
	}
	out := Compute(in)
	if got := holders(out); !slices.Equal(got, []string{"n00", "n01", "n02"}) {
		t.Errorf("holders = %v, want exactly 3", got)
	}
	r := out.Prefixes["dns"]
	if r.Budget != 3 || len(r.HeldBack) != 7 {
		t.Errorf("budget %d, held back %v", r.Budget, r.HeldBack)
	}
	st := PrefixStatus(&in.Prefixes[0], r, metav1.Now())
	var degraded *metav1.Condition
	for i := range st.Conditions {
		if st.Conditions[i].Type == anycastv1.ConditionDegraded {
			degraded = &st.Conditions[i]
		}
	}
	if degraded == nil || degraded.Reason != anycastv1.ReasonMaxWithdrawnReached ||
		!strings.Contains(degraded.Message, "7 nodes want to withdraw but are kept announcing: maxWithdrawn allows 3 of 10") ||
		!strings.Contains(degraded.Message, "n03") {
		t.Errorf("Degraded = %+v", degraded)
	}
}

func TestPermitMovesOnlyAfterTheHolderLetsGo(t *testing.T) {
	in := permitCluster(4, &intstr.IntOrString{Type: intstr.Int, IntVal: 1})
	in.Announcements = announced(Compute(in))
	na := func(name string) *anycastv1.NodeAnnouncement {
		i := slices.IndexFunc(in.Announcements, func(n anycastv1.NodeAnnouncement) bool { return n.Name == name })
		return &in.Announcements[i]
	}
	apply := func(out Output) {
		for _, n := range nodesOf(out) {
			if !jsonEqualSpec(na(n).Spec, out.Announcements[n]) {
				na(n).Spec = out.Announcements[n]
				na(n).Generation++
			}
		}
	}
	// n00 asks and gets the only permit.
	na("n00").Status.PermitRequests = []string{"dns"}
	apply(Compute(in))
	if got := holders(Compute(in)); !slices.Equal(got, []string{"n00"}) {
		t.Fatalf("holders = %v", got)
	}
	// n00 sees the grant, withdraws, recovers and stops asking, but still reports holding the permit; n01 asks.
	na("n00").Status = anycastv1.NodeAnnouncementStatus{ObservedGeneration: na("n00").Generation, Permits: []string{"dns"},
		Prefixes: []anycastv1.NodePrefixStatus{{Prefix: "198.51.100.0/24", State: anycastv1.PrefixAnnounced}}}
	na("n01").Status.PermitRequests = []string{"dns"}
	out := Compute(in)
	if got := holders(out); len(got) != 0 {
		t.Fatalf("the permit must be revoked from n00 and not yet granted to n01: holders %v", got)
	}
	apply(out)
	// Until n00 reports it has let go, n01 waits.
	if got := holders(Compute(in)); len(got) != 0 {
		t.Fatalf("granted before n00 acknowledged: %v", got)
	}
	na("n00").Status.ObservedGeneration = na("n00").Generation
	na("n00").Status.Permits = nil
	if got := holders(Compute(in)); !slices.Equal(got, []string{"n01"}) {
		t.Fatalf("holders after the acknowledgement = %v, want n01", got)
	}
}

func jsonEqualSpec(a, b anycastv1.NodeAnnouncementSpec) bool {
	return fmt.Sprintf("%+v", a) == fmt.Sprintf("%+v", b)
}

// simAgent is a node agent as the permit protocol sees it: it acts on the last spec it observed, and its status
// reaches the manager later, or not at all for a while.
type simAgent struct {
	name      string
	seenGen   int64
	seenSpec  anycastv1.NodeAnnouncementSpec
	unhealthy bool
	withdrawn bool
}

// act applies the agent's rule: withdraw while unhealthy and holding the permit of the spec it last saw.
func (a *simAgent) act() {
	a.withdrawn = a.unhealthy && slices.Contains(a.seenSpec.Permits, "dns")
}

func (a *simAgent) status() anycastv1.NodeAnnouncementStatus {
	st := anycastv1.NodeAnnouncementStatus{ObservedGeneration: a.seenGen}
	if slices.Contains(a.seenSpec.Permits, "dns") {
		st.Permits = []string{"dns"}
	} else if a.unhealthy {
		st.PermitRequests = []string{"dns"}
	}
	state := anycastv1.PrefixAnnounced
	if a.withdrawn {
		state = anycastv1.PrefixWithdrawn
	}
	st.Prefixes = []anycastv1.NodePrefixStatus{{Prefix: "198.51.100.0/24", State: state}}
	return st
}

// TestPermitBudgetHoldsUnderAnyInterleaving drives a manager and ten agents in random order (plans, spec
// observations, late status writes, health flips) and checks after every step that no more nodes are withdrawn
// than the budget allows; then it lets everything settle with every node failing and expects exactly the budget.
func TestPermitBudgetHoldsUnderAnyInterleaving(t *testing.T) {
	for seed := range uint64(300) {
		r := rand.New(rand.NewPCG(seed, 7))
		nodes := 4 + r.IntN(9)
		pct := r.IntN(101)
		in := permitCluster(nodes, &intstr.IntOrString{Type: intstr.String, StrVal: fmt.Sprintf("%d%%", pct)})
		limit := nodes * pct / 100
		in.Announcements = announced(Compute(in))
		agents := make([]*simAgent, nodes)
		// history[i][g] is node i's spec at generation g: a watch may hand an agent any version it has not seen yet.
		history := make([][]anycastv1.NodeAnnouncementSpec, nodes)
		for i := range agents {
			agents[i] = &simAgent{name: in.Announcements[i].Name}
			history[i] = []anycastv1.NodeAnnouncementSpec{in.Announcements[i].Spec}
		}
		plan := func() {
			out := Compute(in)
			for i := range in.Announcements {
				na := &in.Announcements[i]
				if !jsonEqualSpec(na.Spec, out.Announcements[na.Name]) {
					na.Spec = out.Announcements[na.Name]
					na.Generation++
					history[i] = append(history[i], *na.Spec.DeepCopy())
				}
			}
		}
		check := func(step int) {
			n := 0
			for _, a := range agents {
				if a.withdrawn {
					n++
				}
			}
			if n > limit {
				t.Fatalf("seed %d, step %d: %d of %d nodes withdrawn, maxWithdrawn %d%% allows %d", seed, step, n, nodes, pct, limit)
			}
		}
		for step := range 400 {
			i := r.IntN(nodes)
			a, na := agents[i], &in.Announcements[i]
			switch r.IntN(5) {
			case 0:
				plan()
			case 1: // the agent sees a version of its spec no older than the last one it saw, and acts on it at once
				g := a.seenGen + r.Int64N(na.Generation-a.seenGen+1)
				a.seenGen, a.seenSpec = g, history[i][g]
				a.act()
			case 2: // its status reaches the API server
				na.Status = a.status()
			case 3: // health flips
				a.unhealthy = !a.unhealthy
				a.act()
			case 4: // nothing reaches anyone for a while
			}
			check(step)
		}
		// Settle: every node fails; fair rounds until nothing changes.
		for _, a := range agents {
			a.unhealthy = true
		}
		for round := range 20 {
			plan()
			for i, a := range agents {
				a.seenGen, a.seenSpec = in.Announcements[i].Generation, *in.Announcements[i].Spec.DeepCopy()
				a.act()
				in.Announcements[i].Status = a.status()
				check(1000 + round)
			}
		}
		n := 0
		for _, a := range agents {
			if a.withdrawn {
				n++
			}
		}
		if n != limit {
			t.Fatalf("seed %d: with every node failing %d of %d withdrawn, want exactly %d (maxWithdrawn %d%%)", seed, n, nodes, limit, pct)
		}
	}
}

// interleaving is one run of the permit protocol between a planner and simulated agents, through an API server that
// the planner reads from a lagging cache and whose writes fail now and then.
type interleaving struct {
	seed       uint64
	lag        bool // the planner reads a cache that shows each object only as it was at some earlier sync
	failWrites bool // a fifth of the planner's writes fail (or conflict)
	overlay    bool // the planner overlays its own successful writes on its cache (plan.Overlay)
}

// run returns an error at the first step where more nodes are withdrawn, or more permits granted, than the budget.
func (c interleaving) run() error {
	r := rand.New(rand.NewPCG(c.seed, 11))
	nodes := 4 + r.IntN(9)
	pct := r.IntN(101)
	maxW := &intstr.IntOrString{Type: intstr.String, StrVal: fmt.Sprintf("%d%%", pct)}
	in := permitCluster(nodes, maxW)
	limit := func() int { return nodes * pct / 100 }
	first := Compute(in)
	server := announced(first) // what the API server holds
	for i := range server {
		server[i].UID = types.UID(server[i].Name)
		server[i].ResourceVersion = "1"
	}
	cache := make([]anycastv1.NodeAnnouncement, len(server))
	for i := range server {
		cache[i] = *server[i].DeepCopy()
	}
	written := map[string]*anycastv1.NodeAnnouncement{}
	agents := make([]*simAgent, nodes)
	history := make([][]anycastv1.NodeAnnouncementSpec, nodes)
	for i := range agents {
		agents[i] = &simAgent{name: server[i].Name}
		history[i] = []anycastv1.NodeAnnouncementSpec{server[i].Spec}
	}
	bump := func(na *anycastv1.NodeAnnouncement) {
		rv, _ := strconv.Atoi(na.ResourceVersion)
		na.ResourceVersion = strconv.Itoa(rv + 1)
	}
	sync := func(i int) { cache[i] = *server[i].DeepCopy() }
	// allowance is how many may be withdrawn: the budget, or after it was lowered the old one until every agent
	// acts on permits granted under the new one (a lowered budget revokes the excess; the agents take a moment).
	allowance := limit()
	lowered := false // the budget was lowered and no plan has written all of its revocations yet
	plan := func() {
		in.Announcements = cache
		if c.overlay {
			var caught []string
			in.Announcements, caught = Overlay(cache, written)
			for _, n := range caught {
				delete(written, n)
			}
		}
		out := Compute(in)
		clean := true
		for _, view := range in.Announcements {
			i := slices.IndexFunc(server, func(na anycastv1.NodeAnnouncement) bool { return na.Name == view.Name })
			want := out.Announcements[view.Name]
			if jsonEqualSpec(view.Spec, want) {
				continue
			}
			// An update carries the resourceVersion the planner read: a stale one conflicts.
			if view.ResourceVersion != server[i].ResourceVersion || (c.failWrites && r.IntN(5) == 0) {
				clean = false
				continue
			}
			na := &server[i]
			na.Spec = want
			na.Generation++
			bump(na)
			history[i] = append(history[i], *na.Spec.DeepCopy())
			written[na.Name] = na.DeepCopy()
		}
		if clean {
			lowered = false
		}
	}
	check := func(step int) error {
		withdrawn, granted, stale := 0, 0, false
		for i, a := range agents {
			if a.withdrawn {
				withdrawn++
			}
			if slices.Contains(server[i].Spec.Permits, "dns") {
				granted++
			}
			if a.seenGen != server[i].Generation {
				stale = true
			}
		}
		if !stale && granted <= limit() {
			allowance = limit()
		}
		if withdrawn > allowance || (!lowered && granted > limit()) {
			return fmt.Errorf("seed %d, step %d: %d withdrawn and %d permits granted of %d nodes; maxWithdrawn %d%% allows %d (%d while agents catch up)",
				c.seed, step, withdrawn, granted, nodes, pct, limit(), allowance)
		}
		return nil
	}
	for step := range 600 {
		i := r.IntN(nodes)
		a, na := agents[i], &server[i]
		switch r.IntN(7) {
		case 0, 1:
			plan()
		case 2: // the agent sees a version of its spec no older than the last one it saw, and acts on it at once
			g := a.seenGen + r.Int64N(na.Generation-a.seenGen+1)
			a.seenGen, a.seenSpec = g, history[i][g]
			a.act()
		case 3: // its status reaches the API server
			na.Status = a.status()
			bump(na)
		case 4: // health flips
			a.unhealthy = !a.unhealthy
			a.act()
		case 5: // the planner's cache catches up with one object (or, without lag, every step does)
			sync(i)
		case 6: // the budget is lowered, now and then, or raised again
			if r.IntN(40) == 0 {
				pct = r.IntN(pct + 1)
				lowered = true
			} else if r.IntN(40) == 0 {
				pct = min(100, pct+r.IntN(50))
				allowance = max(allowance, limit())
			}
			maxW.StrVal = fmt.Sprintf("%d%%", pct)
		}
		if !c.lag {
			for j := range server {
				sync(j)
			}
		}
		if err := check(step); err != nil {
			return err
		}
	}
	return nil
}

// TestPermitBudgetHoldsWithALaggingPlannerCache drives the protocol with a planner that reads a cache lagging its own
// writes and the agents' status, whose writes fail a fifth of the time, and whose budget is lowered and raised as it
// goes: no more nodes are ever withdrawn, and no more permits granted, than the budget of the moment allows.
func TestPermitBudgetHoldsWithALaggingPlannerCache(t *testing.T) {
	for seed := range uint64(300) {
		if err := (interleaving{seed: seed, lag: true, failWrites: true, overlay: true}).run(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestPermitProtocolMutationsFail: the same harness catches a planner that plans on its lagging cache alone.
func TestPermitProtocolMutationsFail(t *testing.T) {
	caught := 0
	for seed := range uint64(300) {
		if err := (interleaving{seed: seed, lag: true, failWrites: true}).run(); err != nil {
			caught++
		}
	}
	if caught == 0 {
		t.Fatal("a planner without Overlay passed every seed under a lagging cache: the harness cannot see the bug it guards against")
	}
	t.Logf("a planner without Overlay broke the budget in %d of 300 seeds", caught)
}
