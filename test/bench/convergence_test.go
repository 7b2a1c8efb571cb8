// Package bench measures the manager against a real API server (envtest).
package bench

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/controllers"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
	"github.com/anycast-operator/anycast-operator/test/fixtures"
)

// coldStart is one cold-convergence run: a fresh API server holding the cluster's objects and no
// NodeAnnouncement; then a manager starts and plans everything.
type coldStart struct {
	env   *testenv.Env
	k8s   client.Client
	nodes int
}

func newColdStart(tb testing.TB, nodes, prefixes int) *coldStart {
	tb.Helper()
	env, err := testenv.Start()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = env.Stop() })
	k8s, err := client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		tb.Fatal(err)
	}
	c := fixtures.Scale(nodes, prefixes)
	var objs []client.Object
	for i := range c.Nodes {
		objs = append(objs, &c.Nodes[i])
	}
	for i := range c.Claims {
		objs = append(objs, &c.Claims[i])
	}
	for i := range c.Policies {
		objs = append(objs, &c.Policies[i])
	}
	for i := range c.Prefixes {
		objs = append(objs, &c.Prefixes[i])
	}
	g := errgroup.Group{}
	g.SetLimit(16)
	for _, o := range objs {
		o.SetCreationTimestamp(metav1.Time{})
		g.Go(func() error { return k8s.Create(context.Background(), o) })
	}
	if err := g.Wait(); err != nil {
		tb.Fatal(err)
	}
	return &coldStart{env: env, k8s: k8s, nodes: nodes}
}

// run starts a manager and returns once every AnycastPrefix reports every node eligible, which the planner writes
// after it has written every NodeAnnouncement.
func (c *coldStart) run(tb testing.TB) {
	tb.Helper()
	mgr, err := ctrl.NewManager(c.env.Config, ctrl.Options{
		Scheme:  c.env.Scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		// Each run starts a new manager in this process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		tb.Fatal(err)
	}
	planner := &controllers.PlannerReconciler{Client: mgr.GetClient(), Clock: clock.RealClock{}, Namespace: "default"}
	if err := planner.SetupWithManager(mgr); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			tb.Error(err)
		}
	}()
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 10*time.Minute, true, func(ctx context.Context) (bool, error) {
		var list anycastv1.AnycastPrefixList
		if err := c.k8s.List(ctx, &list); err != nil {
			return false, nil
		}
		for _, ap := range list.Items {
			if int(ap.Status.EligibleNodes) != c.nodes {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		tb.Fatalf("not converged: %v", err)
	}
}

// verify checks that every node got its NodeAnnouncement with every prefix.
func (c *coldStart) verify(tb testing.TB, prefixes int) {
	tb.Helper()
	var nas anycastv1.NodeAnnouncementList
	if err := c.k8s.List(context.Background(), &nas); err != nil {
		tb.Fatal(err)
	}
	if len(nas.Items) != c.nodes {
		tb.Fatalf("%d NodeAnnouncements, want %d", len(nas.Items), c.nodes)
	}
	for _, na := range nas.Items {
		if na.Spec.PrefixCount() != prefixes {
			tb.Fatalf("%s has %d prefixes, want %d", na.Name, na.Spec.PrefixCount(), prefixes)
		}
	}
}

// BenchmarkColdConvergence: 1,000 nodes × 100 prefixes from manager start to every NodeAnnouncement written.
func BenchmarkColdConvergence(b *testing.B) {
	const nodes, prefixes = 1000, 100
	for range b.N {
		b.StopTimer()
		c := newColdStart(b, nodes, prefixes)
		b.StartTimer()
		c.run(b)
		b.StopTimer()
		c.verify(b, prefixes)
		_ = c.env.Stop()
		b.StartTimer()
	}
}

// TestColdConvergence runs the benchmark's scenario at a small size, so that `make test` guards it.
func TestColdConvergence(t *testing.T) {
	const nodes, prefixes = 50, 20
	c := newColdStart(t, nodes, prefixes)
	c.run(t)
	c.verify(t, prefixes)
}

func init() {
	// The figure is for the manager's own work; its logs would only slow it down.
	ctrl.SetLogger(logr.Discard())
}
