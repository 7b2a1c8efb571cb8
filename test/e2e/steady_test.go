package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/agent"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
	"github.com/anycast-operator/anycast-operator/internal/speaker/embedded"
)

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestAgentSteadyStateWritesNoStatus: once a node has converged, probe rounds that change nothing write no status,
// healthy or failing.
func TestAgentSteadyStateWritesNoStatus(t *testing.T) {
	env, k8s := startCluster(t)
	node := netip.MustParseAddr("127.0.0.2")
	router := bgptest.Start(t, routerAddr, 65001, map[netip.Addr]uint32{node: 64512})
	svc := newService(t)
	create(t, k8s, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "edge-1"}}, edgeClaim(router), fastPolicy("web", svc.URL+"/healthz", 2), dnsPrefix("web"))
	startManager(t, env)

	var statusWrites atomic.Int64
	cfg := rest.CopyConfig(env.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			if req.Method != http.MethodGet && strings.Contains(req.URL.Path, "/nodeannouncements/") && strings.HasSuffix(req.URL.Path, "/status") {
				statusWrites.Add(1)
			}
			return rt.RoundTrip(req)
		})
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		_ = agent.RunOnNode(ctx, cfg, agent.Config{NodeName: "edge-1", Namespace: namespace, LocalAddress: node},
			embedded.New(node, logr.Discard()), clock.RealClock{}, logr.Discard())
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	prefix := netip.MustParsePrefix("198.51.100.0/24")

	// quiet waits for n probe rounds (counted by the service) and returns the status writes made meanwhile.
	quiet := func(n int64) int64 {
		writes, probes := statusWrites.Load(), svc.probes.Load()
		poll(t, fmt.Sprintf("%d probe rounds", n), func() (bool, string) { return svc.probes.Load() >= probes+n, "" })
		return statusWrites.Load() - writes
	}
	converge := func(what string) {
		// Converged once the status shows the session Established (the agent reads session states every
		// SessionPoll, so the router can hold the prefix a poll before the status says so) and ten probe rounds
		// then pass without a status write.
		poll(t, what+": the session reads Established", func() (bool, string) {
			s := getNA(t, k8s, "edge-1").Status.Sessions
			return len(s) == 1 && s[0].State == anycastv1.SessionEstablished, fmt.Sprintf("%+v", s)
		})
		poll(t, what+" settles", func() (bool, string) { return quiet(10) == 0, "status still changing" })
	}

	router.WaitFor(t, prefix, "announced", func(p []bgptest.Path) bool { return len(p) == 1 })
	converge("healthy")
	if n := quiet(30); n != 0 {
		t.Errorf("30 healthy probe rounds wrote the status %d times, want 0", n)
	}
	svc.healthy.Store(false)
	router.WaitFor(t, prefix, "withdrawn", func(p []bgptest.Path) bool { return len(p) == 0 })
	converge("failing")
	if n := quiet(30); n != 0 {
		t.Errorf("30 failing probe rounds wrote the status %d times, want 0", n)
	}
}
