package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/agent"
	"github.com/anycast-operator/anycast-operator/internal/netlab"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
	"github.com/anycast-operator/anycast-operator/internal/speaker/embedded"
)

// probeTiming is a health policy's timing, and the bounds it gives a transition at the router.
type probeTiming struct {
	interval, timeout, reannounce time.Duration
	rise, fall                    int32
}

// withdrawBound: the failure is seen on the fall-th failed probe, at most an interval after it began plus a probe's
// timeout; the decision reaches the router within 100 ms more.
func (p probeTiming) withdrawBound() time.Duration {
	return time.Duration(p.fall)*p.interval + p.timeout + 100*time.Millisecond
}

// returnBound: rise passed probes, then the re-announce delay, then 100 ms to the router.
func (p probeTiming) returnBound() time.Duration {
	return time.Duration(p.rise)*p.interval + p.reannounce + 100*time.Millisecond
}

func (p probeTiming) policy(name, url string) *anycastv1.HealthPolicy {
	hp := &anycastv1.HealthPolicy{ObjectMeta: metav1.ObjectMeta{Name: name}}
	hp.Spec.Checks = []anycastv1.HealthCheck{{Name: "web", HTTP: &anycastv1.HTTPCheck{URL: url}}}
	hp.Spec.Interval, hp.Spec.Timeout = &metav1.Duration{Duration: p.interval}, &metav1.Duration{Duration: p.timeout}
	hp.Spec.RiseThreshold, hp.Spec.FallThreshold = ptr.To(p.rise), ptr.To(p.fall)
	hp.Spec.Dampening = &anycastv1.Dampening{WithdrawDelay: &metav1.Duration{}, ReannounceDelay: &metav1.Duration{Duration: p.reannounce},
		MinAnnounceDuration: &metav1.Duration{}}
	return hp
}

// TestFrozenAPIServer freezes the API server and etcd (SIGSTOP) under a node with two prefixes checked by two
// health policies of different timing: every failure and recovery while frozen reaches the router within the
// policy's bounds, an agent restarted while the API server is frozen resumes from its state directory (MD5
// password included), and once the API server answers again the status is right after one write.
func TestFrozenAPIServer(t *testing.T) {
	env, k8s := startCluster(t)
	lab := netlab.New(t, 1)
	node := lab.Nodes4[0]
	const password = "frozen-md5-s3cret"
	router := bgptest.StartWith(t, bgptest.Options{Addresses: []netip.Addr{lab.Router4}, ASN: 65001, Netns: lab.NetnsPath,
		Neighbors: map[netip.Addr]uint32{node: 64512}, Password: password})
	timing := map[string]probeTiming{
		"a": {interval: 200 * time.Millisecond, timeout: 100 * time.Millisecond, reannounce: 300 * time.Millisecond, rise: 2, fall: 3},
		"b": {interval: 300 * time.Millisecond, timeout: 150 * time.Millisecond, rise: 3, fall: 2},
	}
	prefixes := map[string]netip.Prefix{"a": netip.MustParsePrefix("198.51.100.0/24"), "b": netip.MustParsePrefix("198.51.101.0/24")}
	services := map[string]*service{"a": newService(t), "b": newService(t)}
	claim := edgeClaim(router)
	claim.Spec.Static.Peers[0].PasswordSecretRef = &anycastv1.SecretKeyRef{Name: "bgp-md5", Key: "password"}
	objs := []client.Object{claim, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-1"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bgp-md5", Namespace: namespace}, StringData: map[string]string{"password": password}}}
	for name, tm := range timing {
		ap := &anycastv1.AnycastPrefix{ObjectMeta: metav1.ObjectMeta{Name: name}}
		ap.Spec.Prefixes = []anycastv1.CIDR{anycastv1.CIDR(prefixes[name].String())}
		ap.Spec.SessionClaims = []anycastv1.LocalObjectName{"edge"}
		ap.Spec.HealthPolicyRef = &anycastv1.ObjectReference{Name: anycastv1.LocalObjectName("web-" + name)}
		objs = append(objs, tm.policy("web-"+name, services[name].URL+"/healthz"), ap)
	}
	create(t, k8s, objs...)
	startManager(t, env)
	log := testr.NewWithOptions(t, testr.Options{Verbosity: 0})
	stateDir := t.TempDir()
	cfg := agent.Config{NodeName: "edge-1", Namespace: namespace, LocalAddress: node, Version: "e2e", SessionPoll: 100 * time.Millisecond,
		StateDir: stateDir, ResumeAfter: 500 * time.Millisecond, StatusStaleAfter: 2 * time.Second}
	start := func() (*agent.Agent, func()) {
		a, stop, err := agent.Start(context.Background(), env.Config, cfg, embedded.New(node, log), clock.RealClock{}, log.WithValues("node", "edge-1"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(stop)
		return a, stop
	}
	_, stop := start()
	for name := range prefixes {
		router.WaitFor(t, prefixes[name], name+" announced", func(p []bgptest.Path) bool { return announcedBy(p, node.String()) })
		waitNodeState(t, k8s, "edge-1", prefixes[name].String(), anycastv1.PrefixAnnounced)
	}
	changes := router.Changes(t)

	thaw := env.Freeze(t)
	frozen, cancel := context.WithTimeout(context.Background(), time.Second)
	if err := k8s.Get(frozen, client.ObjectKey{Name: "edge-1"}, &corev1.Node{}); err == nil {
		t.Fatal("the API server still answers after SIGSTOP")
	}
	cancel()
	// transition sets the services' health and waits for each prefix's change at the router.
	phase := "API server frozen"
	transition := func(healthy bool, names ...string) {
		t.Helper()
		at := time.Now()
		for _, n := range names {
			services[n].healthy.Store(healthy)
		}
		want := map[string]bool{}
		for _, n := range names {
			want[prefixes[n].String()] = !healthy
		}
		took := waitChanges(t, changes, at, want)
		for _, n := range names {
			bound, what := timing[n].withdrawBound(), "withdrawn"
			if healthy {
				bound, what = timing[n].returnBound(), "announced again"
			}
			took := took[prefixes[n].String()]
			t.Logf("%s: %s %s at the router %s after its service changed (bound %s)", phase, n, what, took.Round(time.Millisecond), bound)
			if took > bound {
				t.Errorf("%s %s after %s, more than fall/rise × interval + timeout/re-announce delay + 100 ms = %s", n, what, took, bound)
			}
		}
	}
	transition(false, "a")
	transition(false, "b")
	transition(true, "a")
	transition(true, "b")
	transition(false, "a", "b")
	transition(true, "a", "b")
	transition(false, "b")
	transition(true, "b")

	// Restarted while the API server is frozen: the agent resumes the saved NodeAnnouncement and password.
	stop()
	for _, n := range []string{"a", "b"} {
		router.WaitFor(t, prefixes[n], n+" withdrawn as the agent stops", func(p []bgptest.Path) bool { return len(p) == 0 })
	}
	ag, _ := start()
	for _, n := range []string{"a", "b"} {
		router.WaitFor(t, prefixes[n], n+" announced by the restarted agent, API server still frozen", func(p []bgptest.Path) bool { return announcedBy(p, node.String()) })
	}
	transition(false, "a")
	transition(true, "a")
	transition(false, "b")

	// Frozen for seconds: the agent is live (a liveness restart would drop the sessions) but not ready.
	if err := ag.Live(); err != nil {
		t.Errorf("the agent reads not live with the API server frozen: %v", err)
	}
	if err := ag.Ready(); err == nil || !strings.Contains(err.Error(), "API") {
		t.Errorf("the agent reads ready with its status unwritten for seconds: %v", err)
	}
	// Thaw: the status the writer carries now is the latest, so one write brings the API up to date.
	settled := ag.Stats().StatusCalls
	poll(t, "a status call completes while frozen", func() (bool, string) {
		return ag.Stats().StatusCalls > settled, fmt.Sprint(ag.Stats())
	})
	written := ag.Stats().StatusWritten
	thaw()
	phase = "API server back"
	waitNodeState(t, k8s, "edge-1", prefixes["a"].String(), anycastv1.PrefixAnnounced)
	waitNodeState(t, k8s, "edge-1", prefixes["b"].String(), anycastv1.PrefixWithdrawn)
	// The write that put it right may be seen by the API server a moment before the agent hears back.
	poll(t, "the agent hears back from its status write", func() (bool, string) {
		return ag.Stats().StatusWritten > written, fmt.Sprint(ag.Stats())
	})
	if n := ag.Stats().StatusWritten - written; n != 1 {
		t.Errorf("status took %d writes to catch up after the thaw, want 1", n)
	}
	transition(true, "b")
	waitNodeState(t, k8s, "edge-1", prefixes["b"].String(), anycastv1.PrefixAnnounced)
	poll(t, "the agent ready again", func() (bool, string) {
		err := ag.Ready()
		return err == nil, fmt.Sprint(err)
	})
}

// waitChanges waits until each prefix's best path was withdrawn (true) or appeared (false) at the router after
// since, and returns how long after since each happened.
func waitChanges(t *testing.T, changes <-chan bgptest.Change, since time.Time, want map[string]bool) map[string]time.Duration {
	t.Helper()
	got := map[string]time.Duration{}
	deadline := time.After(30 * time.Second)
	for len(got) < len(want) {
		select {
		case c := <-changes:
			if w, ok := want[c.Prefix]; ok && c.Withdrawn == w && c.At.After(since) {
				if _, seen := got[c.Prefix]; !seen {
					got[c.Prefix] = c.At.Sub(since)
				}
			}
		case <-deadline:
			t.Fatalf("changes %v not all seen at the router within 30s (seen %v)", want, got)
		}
	}
	return got
}
