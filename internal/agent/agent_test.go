package agent

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
)

// nodeSpec is a NodeAnnouncement with one IPv4 session and an IPv4 and an IPv6 prefix announced unconditionally.
func nodeSpec() *anycastv1.NodeAnnouncement {
	na := &anycastv1.NodeAnnouncement{ObjectMeta: metav1.ObjectMeta{Name: "edge-1", Generation: 1}}
	na.Spec.Sessions = []anycastv1.NodeSessions{{Claim: "edge", BGPSessionSettings: anycastv1.BGPSessionSettings{LocalASN: 64512,
		Static: &anycastv1.StaticSessions{Peers: []anycastv1.BGPPeer{{Address: "192.0.2.1", ASN: 65001}}}}}}
	na.Spec.Groups = []anycastv1.PrefixGroup{{Sessions: []anycastv1.LocalObjectName{"edge"},
		Prefixes: []anycastv1.GroupPrefix{{Prefix: "198.51.100.0/24", Source: "web"}, {Prefix: "2001:db8:100::/48", Source: "web"}}}}
	return na
}

func loopOf(t *testing.T, cfg Config) *Agent {
	t.Helper()
	a := newAgent(cfg, nil, speaker.Delegated{}, clocktesting.NewFakeClock(time.Unix(1e9, 0)), logr.Discard())
	a.delegated = false // decide as a speaker-backed agent would; the reports below stand for the speaker
	a.setSpec(context.Background(), nodeSpec())
	a.step()
	a.push()
	return a
}

// answer makes the speaker's report to the latest request: it holds the given routes of what was asked.
func answer(a *Agent, err error, routes ...netip.Prefix) {
	held := a.requested.state
	held.Routes = nil
	for _, r := range a.requested.state.Routes {
		for _, p := range routes {
			if r.Prefix == p {
				held.Routes = append(held.Routes, r)
			}
		}
	}
	a.takeReport(applyReport{seq: a.requested.seq, Report: speaker.Report{Held: held, Err: err}})
}

func prefixState(st anycastv1.NodeAnnouncementStatus, p string) anycastv1.NodePrefixStatus {
	for _, x := range st.Prefixes {
		if string(x.Prefix) == p {
			return x
		}
	}
	return anycastv1.NodePrefixStatus{}
}

func TestStatusFollowsTheSpeaker(t *testing.T) {
	v4, v6 := netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8:100::/48")
	a := loopOf(t, Config{NodeName: "edge-1", LocalAddress: netip.MustParseAddr("192.0.2.10"), NodeAddresses: []netip.Addr{netip.MustParseAddr("2001:db8::10")}})
	if len(a.requested.state.Routes) != 2 {
		t.Fatalf("asked the speaker for %+v", a.requested.state.Routes)
	}
	// Before the speaker answers: nothing is reported announced.
	st := a.buildStatus()
	if p := prefixState(st, v4.String()); p.State != anycastv1.PrefixPending || p.Reason != ReasonApplying {
		t.Errorf("before the speaker answered: %+v", p)
	}
	// The speaker refuses: the prefix stays what the router has, with the error, and Ready says why.
	answer(a, errors.New("birdc configure: connection refused"))
	st = a.buildStatus()
	if p := prefixState(st, v4.String()); p.State != anycastv1.PrefixPending || p.Reason != ReasonAnnounceFailed || !strings.Contains(p.Message, "connection refused") {
		t.Errorf("after a refusal: %+v", p)
	}
	if c := meta.FindStatusCondition(st.Conditions, anycastv1.ConditionReady); c == nil || c.Status != metav1.ConditionFalse || c.Reason != ReasonSpeakerError {
		t.Errorf("Ready after a refusal: %+v", c)
	}
	// It applies: Announced, Ready.
	answer(a, nil, v4, v6)
	st = a.buildStatus()
	for _, p := range []netip.Prefix{v4, v6} {
		if got := prefixState(st, p.String()); got.State != anycastv1.PrefixAnnounced || got.Message != "" {
			t.Errorf("after the speaker applied: %+v", got)
		}
	}
	if c := meta.FindStatusCondition(st.Conditions, anycastv1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Ready after the speaker applied: %+v", c)
	}
	if c := meta.FindStatusCondition(st.Conditions, anycastv1.ConditionDegraded); c == nil || c.Status != metav1.ConditionFalse {
		t.Errorf("Degraded with both next hops: %+v", c)
	}
}

func TestNoNextHopOfTheOtherFamily(t *testing.T) {
	a := loopOf(t, Config{NodeName: "edge-1", LocalAddress: netip.MustParseAddr("192.0.2.10")})
	st := a.requested.state
	if st.NextHop6.IsValid() || st.Carries(st.Sessions[0], netip.MustParsePrefix("2001:db8:100::/48")) {
		t.Fatalf("a node without IPv6 would send its IPv6 prefix on an IPv4 session: %+v", st)
	}
	answer(a, nil, netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8:100::/48"))
	c := meta.FindStatusCondition(a.buildStatus().Conditions, anycastv1.ConditionDegraded)
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != ReasonNoNextHop ||
		!strings.Contains(c.Message, "2001:db8:100::/48 not sent to 192.0.2.1 (claim edge)") || !strings.Contains(c.Message, "IPv6 address") {
		t.Errorf("Degraded = %+v", c)
	}
	if s := st.Sessions[0]; s.LocalAddress != netip.MustParseAddr("192.0.2.10") {
		t.Errorf("session local address %s", s.LocalAddress)
	}
}

func TestLiveness(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(1e9, 0))
	a := newAgent(Config{NodeName: "edge-1", LocalAddress: netip.MustParseAddr("192.0.2.10"), LivenessTimeout: 30 * time.Second}, nil, speaker.Delegated{}, clk, logr.Discard())
	if err := a.Live(); err != nil {
		t.Fatal(err)
	}
	clk.Step(31 * time.Second) // the loop did not turn
	if err := a.Live(); err == nil || a.Ready() == nil {
		t.Errorf("a stuck loop reads live (%v) or ready (%v)", a.Live(), a.Ready())
	}
}
