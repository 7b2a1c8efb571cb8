package demo

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
)

// snapshot is what the live view shows at one moment: the agents' view (NodeAnnouncement status) and the router's.
type snapshot struct {
	At       time.Time
	Sites    []Site
	Prefixes []netip.Prefix
	// Nodes are the NodeAnnouncements' prefix states, by node name.
	Nodes map[string][]anycastv1.NodePrefixStatus
	// Router holds the router's paths, by prefix.
	Router map[netip.Prefix][]bgptest.Path
}

// renderNodes is the prefix × node table: what each agent says it does with each prefix, and since when.
func renderNodes(s snapshot) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "PREFIX\tNODE\tSITE\tSTATE\tSINCE\tREASON")
	for _, p := range s.Prefixes {
		for _, site := range s.Sites {
			state, since, reason := "-", "-", "no status yet"
			for _, st := range s.Nodes[site.Node] {
				if string(st.Prefix) != p.String() {
					continue
				}
				state, reason = string(st.State), st.Reason
				if st.Since != nil {
					since = fmt.Sprintf("%s (%s ago)", st.Since.Format("15:04:05"), age(s.At.Sub(st.Since.Time)))
				}
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", p, site.Node, site.Name, state, since, reason)
		}
	}
	_ = w.Flush()
	return b.String()
}

// renderRouter is the router's RIB for the demo's prefixes: one line per path, the best one starred.
func renderRouter(s snapshot, router string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Router %s — paths it holds (* best):\n", router)
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "\tPREFIX\tFROM\tNEXT HOP\tAS PATH\tMED\tCOMMUNITIES")
	for _, p := range s.Prefixes {
		paths := s.Router[p]
		if len(paths) == 0 {
			fmt.Fprintf(w, "\t%s\t(no path: nobody announces it)\n", p) // a last cell does not widen its column
			continue
		}
		for _, path := range sortedPaths(paths, s.Sites) {
			best := ""
			if path.Best {
				best = "*"
			}
			med := "-"
			if path.MED != nil {
				med = strconv.FormatUint(uint64(*path.MED), 10)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", best, p, siteOf(path.Neighbor, s.Sites), path.NextHop,
				joinUints(path.ASPath), med, communities(path))
		}
	}
	_ = w.Flush()
	return b.String()
}

// sortedPaths orders paths by site, so the table does not jump around between redraws.
func sortedPaths(paths []bgptest.Path, sites []Site) []bgptest.Path {
	out := slices.Clone(paths)
	slices.SortFunc(out, func(a, b bgptest.Path) int {
		return strings.Compare(siteOf(a.Neighbor, sites), siteOf(b.Neighbor, sites))
	})
	return out
}

// siteOf names the site a path came from by its BGP neighbor address.
func siteOf(neighbor string, sites []Site) string {
	for _, s := range sites {
		if s.Address.String() == neighbor {
			return s.Node + " (" + s.Name + ")"
		}
	}
	return neighbor
}

func communities(p bgptest.Path) string {
	var out []string
	for _, c := range p.Communities {
		out = append(out, community(c))
	}
	out = append(out, p.LargeCommunities...)
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, " ")
}

// community writes a standard community as ASN:VALUE, or by name for the well-known ones the agent sends.
func community(c uint32) string {
	switch c {
	case 0xFFFF0000:
		return "graceful-shutdown"
	case 0xFFFFFF01:
		return "no-export"
	}
	return fmt.Sprintf("%d:%d", c>>16, c&0xFFFF)
}

func joinUints(v []uint32) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatUint(uint64(x), 10)
	}
	return strings.Join(s, " ")
}

// age rounds a duration for people: 850ms, 2.2s, 12s, 3m05s.
func age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d < 10*time.Second:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Minute:
		return d.Round(time.Second).String()
	}
	return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
}
