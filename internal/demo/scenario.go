package demo

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
)

// routerView is the router's paths by prefix.
type routerView = map[netip.Prefix][]bgptest.Path

// scenario applies the demo's objects and plays the script. Each step passes only when the router shows it.
func (d *demo) scenario(ctx context.Context) error {
	t := d.cfg.Timings
	ams, fra, nyc := sites[0], sites[1], sites[2]
	svc := d.services[1]

	for _, o := range d.objects() {
		if err := d.k8s.Create(ctx, o); err != nil {
			return fmt.Errorf("creating %s %s: %w", o.GetObjectKind().GroupVersionKind().Kind, o.GetName(), err)
		}
	}
	applied := time.Now()
	d.say("Applied BGPSessionClaim upstream (AS%d to the route server), HealthPolicy web (GET http://$(NODE_IP):%d/healthz"+
		" every %s, timeout %s, rise %d, fall %d, re-announce delay %s) and AnycastPrefix web (%s and %s, community 64512:100)",
		localASN, svc.port, t.Interval, t.Timeout, t.Rise, t.Fall, t.ReannounceDelay, prefixes[0], prefixes[1])

	// 1. Everyone announces.
	took, err := d.waitRouter(ctx, applied, "every site announces both prefixes", func(v routerView) (bool, error) {
		return announcedBy(v, sites...), nil
	})
	if err != nil {
		return err
	}
	d.say("Step 1 passed: the router holds a path from each of the three sites for both prefixes, %s after the objects were applied", age(took))
	if err := d.pause(ctx); err != nil {
		return err
	}

	// 2. One site's service fails: its paths leave the router, the others stay.
	failed := time.Now()
	if err := svc.post(ctx, "/fail"); err != nil {
		return err
	}
	d.say("Step 2: %s's service starts failing its health check (HTTP 503)", fra.Node)
	var failedProbes int64
	took, err = d.waitRouter(ctx, failed, fra.Node+"'s paths leave the router", func(v routerView) (bool, error) {
		if !announcedBy(v, ams, nyc) {
			return false, fmt.Errorf("a healthy site lost its path while only %s failed: %s", fra.Node, describe(v))
		}
		failedProbes = svc.probes.Load()
		return withdrawnBy(v, fra), nil
	})
	if err != nil {
		return err
	}
	if failedProbes < int64(t.Fall) {
		return fmt.Errorf("%s was withdrawn after %d failed probes, fewer than fallThreshold %d", fra.Node, failedProbes, t.Fall)
	}
	reason, err := d.waitStatus(ctx, fra, anycastv1.PrefixWithdrawn)
	if err != nil {
		return err
	}
	d.say("Step 2 passed: %s's paths left the router %s after the failure, on its %s failed probe (expected between"+
		" (fall-1) × interval = %s and fall × interval + timeout = %s); its agent reports the prefixes Withdrawn (%s);"+
		" %s and %s kept announcing", fra.Node, age(took), ordinal(failedProbes), time.Duration(t.Fall-1)*t.Interval,
		time.Duration(t.Fall)*t.Interval+t.Timeout, reason, ams.Node, nyc.Node)
	if err := d.pause(ctx); err != nil {
		return err
	}

	// 3. It recovers: back after rise probes and the re-announce delay.
	recovered := time.Now()
	if err := svc.post(ctx, "/recover"); err != nil {
		return err
	}
	d.say("Step 3: %s's service is healthy again", fra.Node)
	var healthyProbes int64
	took, err = d.waitRouter(ctx, recovered, fra.Node+"'s paths return", func(v routerView) (bool, error) {
		if !announcedBy(v, ams, nyc) {
			return false, fmt.Errorf("a healthy site lost its path: %s", describe(v))
		}
		healthyProbes = svc.probes.Load()
		return announcedBy(v, fra), nil
	})
	if err != nil {
		return err
	}
	if healthyProbes < int64(t.Rise) || took < t.ReannounceDelay {
		return fmt.Errorf("%s came back after %s and %d healthy probes: sooner than riseThreshold %d and reannounceDelay %s allow",
			fra.Node, took, healthyProbes, t.Rise, t.ReannounceDelay)
	}
	if _, err := d.waitStatus(ctx, fra, anycastv1.PrefixAnnounced); err != nil {
		return err
	}
	d.say("Step 3 passed: %s's paths are back at the router %s after the recovery (at least (rise-1) × interval +"+
		" reannounceDelay = %s)", fra.Node, age(took), time.Duration(t.Rise-1)*t.Interval+t.ReannounceDelay)
	if err := d.pause(ctx); err != nil {
		return err
	}

	// 4. A change to the AnycastPrefix reaches the router from every site.
	changed := time.Now()
	const added = "64512:200"
	var prefix anycastv1.AnycastPrefix
	if err := d.k8s.Get(ctx, client.ObjectKey{Name: "web"}, &prefix); err != nil {
		return err
	}
	patch := client.MergeFrom(prefix.DeepCopy())
	prefix.Spec.Attributes.Communities = append(prefix.Spec.Attributes.Communities, added)
	if err := d.k8s.Patch(ctx, &prefix, patch); err != nil {
		return fmt.Errorf("adding community %s to AnycastPrefix web: %w", added, err)
	}
	d.say("Step 4: added community %s to AnycastPrefix web", added)
	took, err = d.waitRouter(ctx, changed, "every path carries "+added, func(v routerView) (bool, error) {
		return announcedBy(v, sites...) && everyPathCarries(v, 64512<<16|200), nil
	})
	if err != nil {
		return err
	}
	d.say("Step 4 passed: every site's paths carry %s at the router, %s after the change (manager plans, NodeAnnouncements,"+
		" agents, BGP UPDATEs)", added, age(took))
	d.say("Scenario complete: all 4 steps observed at the router")
	if !d.cfg.Live {
		fmt.Fprint(d.cfg.Out, d.tables(ctx))
	}
	return nil
}

// waitStatus waits until the site's agent reports every prefix in the state (its status follows the route change)
// and returns the reason it gives.
func (d *demo) waitStatus(ctx context.Context, s Site, want anycastv1.PrefixState) (string, error) {
	var reason string
	var last []anycastv1.NodePrefixStatus
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, d.cfg.Timings.StepTimeout, true, func(ctx context.Context) (bool, error) {
		var na anycastv1.NodeAnnouncement
		if err := d.k8s.Get(ctx, client.ObjectKey{Name: s.Node}, &na); err != nil {
			return false, nil
		}
		last = na.Status.Prefixes
		n := 0
		for _, p := range last {
			if p.State == want {
				n++
				reason = p.Reason
			}
		}
		return n == len(prefixes), nil
	})
	if err != nil {
		return "", fmt.Errorf("%s's agent does not report its prefixes %s: it reports %+v", s.Node, want, last)
	}
	return reason, nil
}

// pause lets a person look at the tables (or, without the live view, prints them).
func (d *demo) pause(ctx context.Context) error {
	if !d.cfg.Live {
		fmt.Fprint(d.cfg.Out, d.tables(ctx))
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d.cfg.Timings.Pause):
		return nil
	}
}

// waitRouter polls the router until cond holds and returns how long after from that was. It fails when cond says
// so, when a process of the demo exits, or after the step timeout.
func (d *demo) waitRouter(ctx context.Context, from time.Time, what string, cond func(routerView) (bool, error)) (time.Duration, error) {
	deadline := time.NewTimer(d.cfg.Timings.StepTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		v := d.routerView()
		ok, err := cond(v)
		if err != nil {
			return 0, err
		}
		if ok {
			return time.Since(from), nil
		}
		for _, p := range append([]*process{d.manager}, d.agents...) {
			select {
			case <-p.done:
				return 0, fmt.Errorf("waiting until %s: %s", what, p.exitReason())
			default:
			}
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-deadline.C:
			return 0, fmt.Errorf("not seen at the router within %s: %s; the router holds %s", d.cfg.Timings.StepTimeout, what, describe(v))
		case <-tick.C:
		}
	}
}

// announcedBy: every prefix has a path from each of the sites.
func announcedBy(v routerView, from ...Site) bool {
	for _, p := range prefixes {
		for _, s := range from {
			if !slices.ContainsFunc(v[p], func(path bgptest.Path) bool { return path.Neighbor == s.Address.String() }) {
				return false
			}
		}
	}
	return true
}

// withdrawnBy: no prefix has a path from the site.
func withdrawnBy(v routerView, s Site) bool {
	for _, p := range prefixes {
		if slices.ContainsFunc(v[p], func(path bgptest.Path) bool { return path.Neighbor == s.Address.String() }) {
			return false
		}
	}
	return true
}

func everyPathCarries(v routerView, community uint32) bool {
	for _, p := range prefixes {
		for _, path := range v[p] {
			if !slices.Contains(path.Communities, community) {
				return false
			}
		}
	}
	return true
}

func describe(v routerView) string {
	var out []string
	for _, p := range prefixes {
		if len(v[p]) == 0 {
			out = append(out, p.String()+": no path")
		}
		for _, path := range v[p] {
			out = append(out, path.String())
		}
	}
	return fmt.Sprint(out)
}

func ordinal(n int64) string {
	suffix := "th"
	switch {
	case n%100 >= 11 && n%100 <= 13:
	case n%10 == 1:
		suffix = "st"
	case n%10 == 2:
		suffix = "nd"
	case n%10 == 3:
		suffix = "rd"
	}
	return fmt.Sprintf("%d%s", n, suffix)
}
