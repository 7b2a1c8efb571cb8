package demo

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
)

// narrationLines is how much of the narration the live view keeps on screen.
const narrationLines = 16

// say narrates: a timestamped line, printed at once unless the live view shows it.
func (d *demo) say(format string, args ...any) {
	line := time.Now().Format("15:04:05.000") + "  " + fmt.Sprintf(format, args...)
	d.mu.Lock()
	d.narration = append(d.narration, line)
	d.mu.Unlock()
	if !d.cfg.Live {
		fmt.Fprintln(d.cfg.Out, line)
	}
}

// snapshot reads both views now.
func (d *demo) snapshot(ctx context.Context) snapshot {
	s := snapshot{At: time.Now(), Sites: sites, Prefixes: prefixes, Nodes: map[string][]anycastv1.NodePrefixStatus{},
		Router: d.routerView()}
	if d.k8s != nil {
		var list anycastv1.NodeAnnouncementList
		if err := d.k8s.List(ctx, &list); err == nil {
			for _, na := range list.Items {
				s.Nodes[na.Name] = na.Status.Prefixes
			}
		}
	}
	return s
}

func (d *demo) routerView() map[netip.Prefix][]bgptest.Path {
	out := map[netip.Prefix][]bgptest.Path{}
	if d.router == nil {
		return out
	}
	for _, p := range prefixes {
		out[p] = d.router.Paths(p)
	}
	return out
}

// tables renders both views.
func (d *demo) tables(ctx context.Context) string {
	s := d.snapshot(ctx)
	return "What the agents report (NodeAnnouncement status):\n" + indent(renderNodes(s)) + "\n" +
		renderRouter(s, fmt.Sprintf("%s AS%d", d.routerAddrPort(), routerASN))
}

// view redraws the screen every quarter second in live mode; otherwise it does nothing (the scenario prints the
// tables after each step).
func (d *demo) view(ctx context.Context) {
	if !d.cfg.Live {
		return
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		d.redraw(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (d *demo) redraw(ctx context.Context) {
	var b strings.Builder
	b.WriteString("\x1b[H") // home; each line then clears its own rest, and the screen's rest is cleared at the end
	fmt.Fprintf(&b, "anycast-operator demo — %s — three sites, one route server, real BGP on loopback\n\n", time.Now().Format("15:04:05"))
	b.WriteString(d.tables(ctx))
	b.WriteString("\nWhat happened:\n")
	d.mu.Lock()
	lines := d.narration
	if len(lines) > narrationLines {
		lines = lines[len(lines)-narrationLines:]
	}
	done := d.done
	for _, l := range lines {
		b.WriteString("  " + l + "\n")
	}
	d.mu.Unlock()
	if done {
		b.WriteString("\n" + d.tryThis())
	} else {
		b.WriteString("\nCtrl-C stops everything.\n")
	}
	fmt.Fprint(d.cfg.Out, strings.ReplaceAll(b.String(), "\n", "\x1b[K\n")+"\x1b[J")
}

// tryThis is what a person can do with the running demo.
func (d *demo) tryThis() string {
	fra, nyc := d.services[1].site, sites[2]
	var b strings.Builder
	bin, _ := filepath.Abs(d.cfg.BinDir)
	fmt.Fprintf(&b, "Try it, in another terminal:\n  export KUBECONFIG=%s PATH=%s:%s:$PATH\n", d.kubeconfig, bin, filepath.Dir(d.kubectl))
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, l := range [][2]string{
		{"kubectl get anycast", "all four kinds, with their status"},
		{"kubectl get nodeannouncement " + fra.Node + " -o yaml", "what the manager planned for the node, what its agent reports"},
		{"kubectl anycast status", "per prefix and node: state, since, reason, sessions, permit; the budget"},
		{"kubectl anycast explain web " + fra.Node, "why " + fra.Node + " announces web (or does not), in sentences"},
		{"kubectl anycast plan -f " + d.previewFile() + " --max-withdraw 0", "preview taking web off " + nyc.Node + ": exits 2, nothing applied"},
		{"curl -s " + fmt.Sprintf("http://%s/metrics", netip.AddrPortFrom(fra.Address, agentMetricsPort)) + " | grep ^anycast_", fra.Node + "'s agent's metrics"},
		{"curl -X POST " + d.services[1].url("/fail"), "fail " + fra.Node + "'s service by hand: its paths leave the router"},
		{"curl -X POST " + d.services[1].url("/recover"), "... and return after the re-announce delay"},
		{"kubectl edit healthpolicy web", "e.g. fallThreshold, dampening.reannounceDelay, onUnhealthy: Deprefer"},
		{"kubectl anycast drain " + nyc.Node, "planned maintenance: deprefer at once, then withdraw (undrain to return)"},
		{"tail -f " + filepath.Join(d.workDir, "agent-"+fra.Node+".log"), "the agent's decisions"},
	} {
		fmt.Fprintf(w, "  %s\t# %s\n", l[0], l[1])
	}
	_ = w.Flush()
	fmt.Fprintf(&b, "Ctrl-C stops everything and removes %s.\n", d.workDir)
	return b.String()
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ") + "\n"
}
