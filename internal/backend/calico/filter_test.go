package calico

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	calicov3 "github.com/projectcalico/api/pkg/apis/projectcalico/v3"
)

// rejected says whether rules reject route, evaluated as BIRD runs the function confd renders from them.
func rejected(rules []rejectRule, route netip.Prefix) bool {
	calicoRules := make([]calicov3.BGPFilterRuleV4, 0, len(rules))
	for _, r := range rules {
		calicoRules = append(calicoRules, calicov3.BGPFilterRuleV4{CIDR: r.cidr.String(), MatchOperator: r.op, Action: calicov3.Reject})
	}
	_, matched := FirstMatch(calicoRules, route)
	return matched
}

func insideAny(allowed []netip.Prefix, route netip.Prefix) bool {
	for _, p := range allowed {
		if p.Bits() <= route.Bits() && p.Contains(route.Addr()) {
			return true
		}
	}
	return false
}

func TestRejectOutside(t *testing.T) {
	v4, v6 := netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")
	pfx := netip.MustParsePrefix
	for _, tc := range []struct {
		name    string
		allowed []netip.Prefix
		root    netip.Prefix
		rules   int // how many rules, at most
		probes  []netip.Prefix
	}{
		{"nothing announced", nil, v4, 1, []netip.Prefix{pfx("198.51.100.0/24"), pfx("10.0.0.0/8"), v4}},
		{"one prefix: one rule", []netip.Prefix{pfx("198.51.100.0/24")}, v4, 1,
			[]netip.Prefix{pfx("198.51.100.0/24"), pfx("198.51.100.53/32"), pfx("198.51.0.0/16"), pfx("198.51.101.0/24"), v4, pfx("10.0.0.0/8")}},
		{"two adjacent prefixes", []netip.Prefix{pfx("198.51.100.0/24"), pfx("198.51.101.0/24")}, v4, 2,
			[]netip.Prefix{pfx("198.51.100.0/23"), pfx("198.51.100.0/24"), pfx("198.51.101.7/32"), pfx("198.51.102.0/24")}},
		// Far apart prefixes cost about two rules per bit below their common prefix.
		{"two far apart, and an aggregate covering one", []netip.Prefix{pfx("10.1.0.0/24"), pfx("192.0.2.0/24")}, v4, 95,
			[]netip.Prefix{pfx("10.0.0.0/8"), pfx("10.1.0.0/24"), pfx("10.1.0.0/16"), pfx("192.0.0.0/20"), pfx("192.0.2.0/24"), v4, pfx("128.0.0.0/1")}},
		{"nested prefixes", []netip.Prefix{pfx("198.51.100.0/24"), pfx("198.51.100.128/25")}, v4, 1,
			[]netip.Prefix{pfx("198.51.100.0/24"), pfx("198.51.100.128/25"), pfx("198.51.100.0/23")}},
		{"IPv6", []netip.Prefix{pfx("2001:db8:100::/48"), pfx("2001:db8:200::/48")}, v6, 40,
			[]netip.Prefix{pfx("2001:db8:100::/48"), pfx("2001:db8::/32"), pfx("2001:db8:300::/48"), pfx("2001:db8:200:1::/64"), v6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rules := rejectOutside(tc.allowed, tc.root)
			if len(rules) > tc.rules {
				t.Errorf("%d rules, want at most %d: %v", len(rules), tc.rules, rules)
			}
			for _, p := range tc.probes {
				if got, want := rejected(rules, p), !insideAny(tc.allowed, p); got != want {
					t.Errorf("%s: rejected %v, want %v (rules %v)", p, got, want, rules)
				}
			}
		})
	}
}

// TestRejectOutsideRandom: for random sets of prefixes, every route is rejected exactly when it is not inside one.
func TestRejectOutsideRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(family int, minBits int) netip.Prefix {
		var b [16]byte
		for i := range b {
			b[i] = byte(rng.IntN(4)) // few distinct bytes, so prefixes overlap and share paths
		}
		if family == 4 {
			a := netip.AddrFrom4([4]byte(b[:4]))
			return netip.PrefixFrom(a, minBits+rng.IntN(33-minBits)).Masked()
		}
		return netip.PrefixFrom(netip.AddrFrom16(b), minBits+rng.IntN(129-minBits)).Masked()
	}
	for i := range 300 {
		family, root := 4, netip.MustParsePrefix("0.0.0.0/0")
		if i%3 == 0 {
			family, root = 6, netip.MustParsePrefix("::/0")
		}
		var allowed []netip.Prefix
		for range rng.IntN(4) {
			allowed = append(allowed, random(family, 8))
		}
		rules := rejectOutside(allowed, root)
		if bound := ruleBound(allowed); len(rules) > bound {
			t.Fatalf("allowed %v: %d rules, more than %d", allowed, len(rules), bound)
		}
		for range 200 {
			p := random(family, 0)
			if got, want := rejected(rules, p), !insideAny(allowed, p); got != want {
				t.Fatalf("allowed %v, route %s: rejected %v, want %v (rules %v)", allowed, p, got, want, rules)
			}
		}
		for _, p := range allowed { // the allowed prefixes themselves, and a host route inside each
			if rejected(rules, p) || rejected(rules, netip.PrefixFrom(p.Addr(), p.Addr().BitLen())) {
				t.Fatalf("allowed %v: %s rejected (rules %v)", allowed, p, rules)
			}
		}
	}
}

// ruleBound is what rejectOutside may take: one NotIn, and two rules (Equal and In) per bit of each prefix below
// their common prefix.
func ruleBound(allowed []netip.Prefix) int {
	if len(allowed) == 0 {
		return 1
	}
	top := allowed[0].Masked()
	for _, p := range allowed[1:] {
		top = commonPrefix(top, p.Masked())
	}
	n := 1
	for _, p := range allowed {
		n += 2 * (p.Bits() - top.Bits())
	}
	return n
}
