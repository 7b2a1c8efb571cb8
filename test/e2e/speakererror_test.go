package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/agent"
	"github.com/anycast-operator/anycast-operator/internal/health"
	"github.com/anycast-operator/anycast-operator/internal/netlab"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bird/birdtest"
)

// TestSpeakerErrorHoldsThePermit: two nodes announce through BIRD with maxWithdrawn 1. Node A withdraws (its service
// failed) and its BIRD dies; A's service recovers but its speaker cannot announce. A's status says so (Withdrawn,
// AnnounceFailed, the error, Ready=False, an event) and A keeps its permit, so B, whose service fails next, is held
// announcing by the budget: at the router one node is out, never two. Once A's BIRD is back, A announces, lets the
// permit go, and B withdraws.
func TestSpeakerErrorHoldsThePermit(t *testing.T) {
	env, k8s := startCluster(t)
	lab := netlab.New(t, 2)
	nodes := map[string]netip.Addr{"edge-a": lab.Nodes4[0], "edge-b": lab.Nodes4[1]}
	router := bgptest.StartWith(t, bgptest.Options{Addresses: []netip.Addr{lab.Router4}, ASN: 65001, Netns: lab.NetnsPath,
		Neighbors: map[netip.Addr]uint32{nodes["edge-a"]: 64512, nodes["edge-b"]: 64512}})
	// Each node's service on the node's own address, one port for both: one policy probes http://$(NODE_IP):port.
	port, svcs := startNodeServices(t, nodes["edge-a"], nodes["edge-b"])
	healthy := map[string]*atomic.Bool{"edge-a": &svcs[0].healthy, "edge-b": &svcs[1].healthy}
	dns := netip.MustParsePrefix("198.51.100.0/24")
	ap := dnsPrefix("web")
	ap.Spec.Safety = &anycastv1.PrefixSafety{MaxWithdrawn: ptrIntOrString(intstr.FromInt32(1))}
	create(t, k8s, edgeClaim(router), ap, fastPolicy("web", fmt.Sprintf("http://%s:%d/healthz", health.NodeIPVariable, port), 2))
	for name := range nodes {
		create(t, k8s, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}})
	}
	startManager(t, env)
	log := testr.NewWithOptions(t, testr.Options{Verbosity: 0})
	daemons := map[string]*birdtest.Daemon{}
	for name, addr := range nodes {
		d := birdtest.StartDaemon(t, addr)
		d.Speaker.Log = log
		daemons[name] = d
		cfg := agent.Config{NodeName: name, Namespace: namespace, LocalAddress: addr, Version: "e2e", SessionPoll: 100 * time.Millisecond,
			SpeakerTimeout: 2 * time.Second}
		_, stop, err := agent.Start(context.Background(), env.Config, cfg, d.Speaker, clock.RealClock{}, log.WithValues("node", name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
	}
	a, b := nodes["edge-a"].String(), nodes["edge-b"].String()
	router.WaitFor(t, dns, "both nodes announce", func(p []bgptest.Path) bool { return announcedBy(p, a, b) })

	healthy["edge-a"].Store(false)
	router.WaitFor(t, dns, "edge-a withdraws", func(p []bgptest.Path) bool { return announcedBy(p, b) })
	daemons["edge-a"].Kill()
	healthy["edge-a"].Store(true)
	// edge-a cannot announce again: its status says what the router was told, and why, and it keeps the permit.
	poll(t, "edge-a reports the failed announcement", func() (bool, string) {
		na := getNA(t, k8s, "edge-a")
		p := prefixStatus(na, dns)
		ready := meta.FindStatusCondition(na.Status.Conditions, anycastv1.ConditionReady)
		return p != nil && p.State == anycastv1.PrefixWithdrawn && p.Reason == agent.ReasonAnnounceFailed && strings.Contains(p.Message, "birdc") &&
				slices.Contains(na.Status.Permits, "dns") && ready != nil && ready.Status == metav1.ConditionFalse && ready.Reason == agent.ReasonSpeakerError,
			fmt.Sprintf("%+v", na.Status)
	})
	poll(t, "a SpeakerError event on edge-a's NodeAnnouncement", func() (bool, string) {
		var list eventsv1.EventList
		if err := k8s.List(context.Background(), &list, client.InNamespace(metav1.NamespaceDefault)); err != nil {
			return false, err.Error()
		}
		for _, e := range list.Items {
			if e.Regarding.Name == "edge-a" && e.Regarding.Kind == "NodeAnnouncement" && e.Reason == agent.ReasonSpeakerError && e.Type == corev1.EventTypeWarning {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events", len(list.Items))
	})
	// edge-b fails now: the budget (one node) is edge-a's, so edge-b keeps announcing.
	healthy["edge-b"].Store(false)
	waitNodeReason(t, k8s, "edge-b", dns, "AwaitingPermit")
	if p := router.Paths(dns); !announcedBy(p, b) {
		t.Fatalf("edge-b withdrew while edge-a held the only permit: the router holds %v", p)
	}
	if na := getNA(t, k8s, "edge-b"); slices.Contains(na.Spec.Permits, "dns") {
		t.Fatalf("the manager granted edge-b a permit while edge-a's route is still out")
	}
	// edge-a's BIRD is back: it announces, lets the permit go, and edge-b withdraws.
	daemons["edge-a"].Restart(t)
	router.WaitFor(t, dns, "edge-a back, then edge-b withdrawn", func(p []bgptest.Path) bool { return announcedBy(p, a) })
	waitNodeState(t, k8s, "edge-a", dns.String(), anycastv1.PrefixAnnounced)
	waitNodeState(t, k8s, "edge-b", dns.String(), anycastv1.PrefixWithdrawn)
	poll(t, "edge-a Ready again", func() (bool, string) {
		ready := meta.FindStatusCondition(getNA(t, k8s, "edge-a").Status.Conditions, anycastv1.ConditionReady)
		return ready != nil && ready.Status == metav1.ConditionTrue, fmt.Sprintf("%+v", ready)
	})
}

func ptrIntOrString(v intstr.IntOrString) *intstr.IntOrString { return &v }

func getNA(t *testing.T, k8s client.Client, name string) *anycastv1.NodeAnnouncement {
	t.Helper()
	var na anycastv1.NodeAnnouncement
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, &na); err != nil {
		t.Fatal(err)
	}
	return &na
}

func prefixStatus(na *anycastv1.NodeAnnouncement, p netip.Prefix) *anycastv1.NodePrefixStatus {
	for i := range na.Status.Prefixes {
		if string(na.Status.Prefixes[i].Prefix) == p.String() {
			return &na.Status.Prefixes[i]
		}
	}
	return nil
}

func waitNodeReason(t *testing.T, k8s client.Client, node string, p netip.Prefix, reason string) {
	t.Helper()
	poll(t, node+" reports "+reason, func() (bool, string) {
		na := getNA(t, k8s, node)
		s := prefixStatus(na, p)
		return s != nil && s.Reason == reason, fmt.Sprintf("%+v", na.Status.Prefixes)
	})
}
