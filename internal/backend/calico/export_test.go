package calico

import (
	"net/netip"

	calicov3 "github.com/projectcalico/api/pkg/apis/projectcalico/v3"
)

// FirstMatch is the action of the rule that decides route, as the BIRD function confd renders from a BGPFilter's
// rules does: the first rule of the route's family whose CIDR matches by its operator (In: the route is inside it;
// Equal: it is the route). ok is false when none matches: the route goes on to Calico's own export. The tests of
// both packages evaluate filters with it.
func FirstMatch(rules []calicov3.BGPFilterRuleV4, route netip.Prefix) (action calicov3.BGPFilterAction, ok bool) {
	for _, r := range rules {
		cidr := netip.MustParsePrefix(r.CIDR)
		if cidr.Addr().Is4() != route.Addr().Is4() {
			continue
		}
		inside := cidr.Bits() <= route.Bits() && cidr.Contains(route.Addr())
		var match bool
		switch r.MatchOperator {
		case calicov3.In:
			match = inside
		case calicov3.NotIn:
			match = !inside
		case calicov3.Equal:
			match = cidr == route
		case calicov3.NotEqual:
			match = cidr != route
		}
		if match {
			return r.Action, true
		}
	}
	return "", false
}

// ExportRules are a filter's export rules of both families, as IPv4 rules (the two types have the same fields).
func ExportRules(f *calicov3.BGPFilter) []calicov3.BGPFilterRuleV4 {
	rules := append([]calicov3.BGPFilterRuleV4{}, f.Spec.ExportV4...)
	for _, r := range f.Spec.ExportV6 {
		rules = append(rules, calicov3.BGPFilterRuleV4{CIDR: r.CIDR, MatchOperator: r.MatchOperator, Action: r.Action})
	}
	return rules
}
