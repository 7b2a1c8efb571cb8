// Package e2e runs the whole product on one machine: a real API server, the manager, node agents with their
// embedded BGP speakers, local services whose health the tests toggle, and an upstream router, all on loopback.
package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/controllers"
	"github.com/anycast-operator/anycast-operator/internal/agent"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
	"github.com/anycast-operator/anycast-operator/internal/speaker/embedded"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

const namespace = "anycast-system"

var routerAddr = netip.MustParseAddr("127.0.0.1")

// service is a local HTTP service whose health the test sets; it counts the probes it answers.
type service struct {
	*httptest.Server
	healthy atomic.Bool
	probes  atomic.Int64
}

func newService(t testing.TB) *service {
	s := &service{}
	s.healthy.Store(true)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.probes.Add(1)
		if !s.healthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func startManager(t testing.TB, env *testenv.Env) {
	startManagerWith(t, env, nil)
}

// startManagerWith runs the manager with a Kubernetes BGP stack backend (nil: the agents announce).
// It returns a function that stops it (it stops at the end of the test anyway).
func startManagerWith(t testing.TB, env *testenv.Env, backend controllers.Backend) (stop func()) {
	return startManagerLogged(t, env, backend, logr.Discard())
}

// startManagerLogged is startManagerWith with the manager's logs going to log and its events recorded.
func startManagerLogged(t testing.TB, env *testenv.Env, backend controllers.Backend, log logr.Logger) (stop func()) {
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"},
		Controller: config.Controller{SkipNameValidation: ptr.To(true)}, Logger: log,
		// The last scenario kills the API server; do not wait for it at shutdown.
		GracefulShutdownTimeout: ptr.To(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	p := &controllers.PlannerReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder(controllers.FieldOwner), Clock: clock.RealClock{},
		Namespace: namespace, Backend: backend}
	if err := p.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
		close(done)
	}()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

func startAgent(t testing.TB, env *testenv.Env, node string, addr netip.Addr, log logr.Logger) {
	startAgentWith(t, env, node, addr, embedded.New(addr, log), log)
}

func startAgentWith(t testing.TB, env *testenv.Env, node string, addr netip.Addr, sp speaker.Speaker, log logr.Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	cfg := agent.Config{NodeName: node, Namespace: namespace, LocalAddress: addr, Version: "e2e", SessionPoll: 100 * time.Millisecond}
	go func() {
		if err := agent.RunOnNode(ctx, env.Config, cfg, sp, clock.RealClock{}, log.WithValues("node", node)); err != nil {
			t.Errorf("agent %s: %v", node, err)
		}
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

func announcedBy(paths []bgptest.Path, nextHops ...string) bool {
	var got []string
	for _, p := range paths {
		got = append(got, p.NextHop)
	}
	slices.Sort(got)
	slices.Sort(nextHops)
	return slices.Equal(got, nextHops)
}

func TestEmbeddedAnnounceWithdrawDeprefer(t *testing.T) {
	// The last scenario kills the API server: stopping it must not wait long.
	env, k8s := startCluster(t, testenv.WithAPIServerStopTimeout(time.Second))
	ctx := context.Background()
	nodes := map[string]netip.Addr{"edge-1": netip.MustParseAddr("127.0.0.2"), "edge-2": netip.MustParseAddr("127.0.0.4")}
	// The router requires TCP MD5; the password exists only in a Secret of the operator's namespace.
	const password = "md5-s3cret-never-copied"
	router := bgptest.StartWithPassword(t, routerAddr, 65001, map[netip.Addr]uint32{nodes["edge-1"]: 64512, nodes["edge-2"]: 64512}, password)
	services := map[string]*service{"edge-1": newService(t), "edge-2": newService(t)}

	// In a cluster every node probes its own service at the same URL (127.0.0.1:port). Here the two "nodes" share
	// one machine, so each has its own service port, hence its own policy and its own AnycastPrefix (selected by a
	// node label) over the one claim.
	claim := edgeClaim(router)
	claim.Spec.Static.Peers[0].PasswordSecretRef = &anycastv1.SecretKeyRef{Name: "bgp-md5", Key: "password"}
	objs := []client.Object{claim, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bgp-md5", Namespace: namespace}, StringData: map[string]string{"password": password}}}
	for node := range nodes {
		objs = append(objs, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{"anycast.dev/node": node}}},
			fastPolicy("web-"+node, services[node].URL+"/healthz", 2))
	}
	for i, node := range []string{"edge-1", "edge-2"} {
		ap := &anycastv1.AnycastPrefix{ObjectMeta: metav1.ObjectMeta{Name: "dns-" + node}}
		ap.Spec.Prefixes = []anycastv1.CIDR{anycastv1.CIDR(fmt.Sprintf("198.51.%d.0/24", 100+i))}
		ap.Spec.SessionClaims = []anycastv1.LocalObjectName{"edge"}
		ap.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"anycast.dev/node": node}}
		ap.Spec.HealthPolicyRef = &anycastv1.ObjectReference{Name: anycastv1.LocalObjectName("web-" + node)}
		ap.Spec.Attributes = &anycastv1.BGPAttributes{Communities: []anycastv1.Community{"64512:100"}, MED: ptr.To[int64](10)}
		objs = append(objs, ap)
	}
	create(t, k8s, objs...)
	startManager(t, env)
	log := testr.NewWithOptions(t, testr.Options{Verbosity: 0})
	for node, addr := range nodes {
		startAgent(t, env, node, addr, log)
	}
	p1, p2 := netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("198.51.101.0/24")

	// Announced, with the node as next hop and the prefix's attributes.
	got := router.WaitFor(t, p1, "edge-1 announces", func(p []bgptest.Path) bool { return announcedBy(p, "127.0.0.2") })[0]
	if !slices.Equal(got.ASPath, []uint32{64512}) || !slices.Equal(got.Communities, []uint32{64512<<16 | 100}) || got.MED == nil || *got.MED != 10 {
		t.Errorf("router received %s", got)
	}
	router.WaitFor(t, p2, "edge-2 announces", func(p []bgptest.Path) bool { return announcedBy(p, "127.0.0.4") })
	waitPrefixReady(t, k8s, "dns-edge-1", "1/1")
	var na anycastv1.NodeAnnouncement
	if err := k8s.Get(ctx, client.ObjectKey{Name: "edge-1"}, &na); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(fmt.Sprintf("%+v", na), password) {
		t.Errorf("the MD5 password was copied into the NodeAnnouncement")
	}

	// The service fails: the path disappears; it recovers: the path returns.
	services["edge-1"].healthy.Store(false)
	router.WaitFor(t, p1, "edge-1 withdraws after its service failed", func(p []bgptest.Path) bool { return len(p) == 0 })
	waitNodeState(t, k8s, "edge-1", "198.51.100.0/24", anycastv1.PrefixWithdrawn)
	services["edge-1"].healthy.Store(true)
	router.WaitFor(t, p1, "edge-1 announces again after recovery", func(p []bgptest.Path) bool { return announcedBy(p, "127.0.0.2") })

	// Deprefer mode: the path stays, less preferred.
	setOnUnhealthy(t, k8s, "web-edge-1", anycastv1.UnhealthyDeprefer, "edge-1")
	services["edge-1"].healthy.Store(false)
	router.WaitFor(t, p1, "edge-1 deprefers", func(p []bgptest.Path) bool {
		return len(p) == 1 && len(p[0].ASPath) == 4 && p[0].MED != nil && *p[0].MED == 1010 && slices.Contains(p[0].Communities, speaker.GracefulShutdown)
	})
	services["edge-1"].healthy.Store(true)
	router.WaitFor(t, p1, "edge-1 back to normal", func(p []bgptest.Path) bool { return len(p) == 1 && len(p[0].ASPath) == 1 })
	setOnUnhealthy(t, k8s, "web-edge-1", anycastv1.UnhealthyWithdraw, "edge-1")

	// The API server goes away: a failing node still withdraws (it holds its permit), a healthy one keeps announcing.
	// Stop sends SIGTERM and, after a second, SIGKILL: either way the API server is gone, as after a crash.
	if err := env.ControlPlane.APIServer.Stop(); err != nil && !strings.Contains(err.Error(), "timeout waiting for process") {
		t.Fatal(err)
	}
	if err := k8s.Get(ctx, client.ObjectKey{Name: "edge-1"}, &corev1.Node{}); err == nil {
		t.Fatal("the API server still answers")
	}
	services["edge-1"].healthy.Store(false)
	router.WaitFor(t, p1, "edge-1 withdraws with the API server down", func(p []bgptest.Path) bool { return len(p) == 0 })
	if p := router.Paths(p2); !announcedBy(p, "127.0.0.4") {
		t.Errorf("edge-2 stopped announcing while the API server was down: %v", p)
	}
}

func waitPrefixReady(t *testing.T, k8s client.Client, name, announcing string) {
	t.Helper()
	poll(t, fmt.Sprintf("%s Ready with %s announcing", name, announcing), func() (bool, string) {
		var ap anycastv1.AnycastPrefix
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, &ap); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(ap.Status.Conditions, anycastv1.ConditionReady)
		return c != nil && c.Status == metav1.ConditionTrue && ap.Status.Announcing == announcing, fmt.Sprintf("%+v", ap.Status)
	})
}

func waitNodeState(t *testing.T, k8s client.Client, node, prefix string, state anycastv1.PrefixState) {
	t.Helper()
	poll(t, fmt.Sprintf("%s reports %s %s", node, prefix, state), func() (bool, string) {
		var na anycastv1.NodeAnnouncement
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: node}, &na); err != nil {
			return false, err.Error()
		}
		for _, p := range na.Status.Prefixes {
			if string(p.Prefix) == prefix {
				return p.State == state, fmt.Sprintf("%+v", na.Status.Prefixes)
			}
		}
		return false, fmt.Sprintf("%+v", na.Status)
	})
}

func waitSpec(t *testing.T, k8s client.Client, node string, ok func(*anycastv1.NodeAnnouncement) bool) {
	t.Helper()
	poll(t, node+" spec", func() (bool, string) {
		var na anycastv1.NodeAnnouncement
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: node}, &na); err != nil {
			return false, err.Error()
		}
		return ok(&na) && na.Status.ObservedGeneration == na.Generation, fmt.Sprintf("generation %d observed %d", na.Generation, na.Status.ObservedGeneration)
	})
}

func setPolicy(t *testing.T, k8s client.Client, name string, change func(*anycastv1.HealthPolicySpec)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var hp anycastv1.HealthPolicy
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: name}, &hp); err != nil {
			return err
		}
		change(&hp.Spec)
		return k8s.Update(context.Background(), &hp)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// setOnUnhealthy sets a policy's onUnhealthy and waits until the nodes' NodeAnnouncements carry it, so that what
// fails next is handled the new way.
func setOnUnhealthy(t *testing.T, k8s client.Client, policy string, action anycastv1.UnhealthyAction, nodes ...string) {
	t.Helper()
	setPolicy(t, k8s, policy, func(s *anycastv1.HealthPolicySpec) { s.OnUnhealthy = action })
	for _, n := range nodes {
		waitSpec(t, k8s, n, func(na *anycastv1.NodeAnnouncement) bool {
			return len(na.Spec.HealthPolicies) == 1 && na.Spec.HealthPolicies[0].Spec.OnUnhealthy == action
		})
	}
}

func poll(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	if err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		ok, why := cond()
		last = why
		return ok, nil
	}); err != nil {
		t.Fatalf("%s: not reached: %s", what, last)
	}
}
