// Command manager is the cluster-scoped singleton of anycast-operator: it plans one NodeAnnouncement per node from
// the AnycastPrefixes, HealthPolicies and BGPSessionClaims, and keeps their status true.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/controllers"
	"github.com/anycast-operator/anycast-operator/internal/agentdeploy"
	"github.com/anycast-operator/anycast-operator/internal/backend"
	"github.com/anycast-operator/anycast-operator/internal/backend/calico"
	"github.com/anycast-operator/anycast-operator/internal/backend/cilium"
	"github.com/anycast-operator/anycast-operator/internal/backend/metallb"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// backends the --backend flag accepts; DESIGN.md §3 says what each can do.
var backends = []string{backend.Embedded, backend.BIRD, backend.MetalLB, backend.Calico, backend.Cilium}

func main() {
	if err := run(ctrl.SetupSignalHandler(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
}

// run runs the manager until ctx ends. The kubeconfig comes from KUBECONFIG, the in-cluster config or ~/.kube.
func run(ctx context.Context, args []string) error {
	var (
		metricsAddr, probeAddr, namespace, backendName string
		stack                                          stackOptions
		agentImage                                     string
		leaderElect                                    bool
		workers                                        int
	)
	flag := flag.NewFlagSet("manager", flag.ContinueOnError)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address of the Prometheus metrics endpoint; 0 turns it off.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz endpoints.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader so that only one manager replica plans at a time.")
	flag.StringVar(&namespace, "namespace", envOr("POD_NAMESPACE", "anycast-system"), "The operator's namespace: where referenced Secrets and the leader-election Lease live.")
	flag.StringVar(&backendName, "backend", backend.Embedded, fmt.Sprintf("How prefixes reach BGP: one of %v.", backends))
	flag.IntVar(&workers, "write-concurrency", 32, "Concurrent API writes of one plan (the API server, not the manager, is what bounds a cold start: docs/performance.md).")
	pprofAddr := flag.String("pprof-bind-address", "0", "Address of Go's pprof endpoints (/debug/pprof), for profiling; 0 turns them off.")
	flag.StringVar(&agentImage, "agent-image", "", "When set, the manager deploys the agents' DaemonSet itself, in its namespace, with this image (OLM installs; otherwise apply config/agent).")
	stack.bindFlags(flag)
	opts := zap.Options{}
	opts.BindFlags(flag)
	if err := flag.Parse(args); err != nil {
		return err
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("manager")
	if os.Getenv("GOGC") == "" {
		// The manager's memory is its caches plus one plan of the whole cluster at a time; collecting garbage when
		// the heap has grown by half (not doubled, Go's default) keeps it near what it holds, for little CPU
		// (5,000 nodes: docs/performance.md). GOGC set in the environment wins.
		debug.SetGCPercent(50)
	}

	if !slices.Contains(backends, backendName) {
		return fmt.Errorf("--backend=%q: want one of %v", backendName, backends)
	}
	if err := stack.validate(); err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, anycastv1.AddToScheme, metallb.AddToScheme, calico.AddToScheme, cilium.AddToScheme} {
		if err := add(scheme); err != nil {
			return err
		}
	}
	// The backend reads claims' Secrets through the manager's client, which exists only later.
	var reader client.Reader
	secrets := func(name, key string) ([]byte, bool) {
		var s corev1.Secret
		if err := reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &s); err != nil {
			return nil, false
		}
		v, ok := s.Data[key]
		return v, ok
	}
	stackBackend, err := stack.backend(backendName, secrets)
	if err != nil {
		return err
	}
	// Secrets are cached in the operator's namespace, and in the stack's where the backend writes password Secrets
	// for it, only: the manager needs no cluster-wide Secret access.
	secretNamespaces := map[string]cache.Config{namespace: {}}
	if stackBackend != nil {
		for _, k := range stackBackend.Kinds() {
			if k.Group == "" && k.Kind == "Secret" {
				secretNamespaces[k.Namespace] = cache.Config{}
			}
		}
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading the kubeconfig: %w", err)
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:  probeAddr,
		PprofBindAddress:        *pprofAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        "anycast-manager.anycast.dev",
		LeaderElectionNamespace: namespace,
		// Cached objects keep no managedFields: the manager never reads them, and for thousands of
		// NodeAnnouncements they would be a large part of its memory.
		Cache: cache.Options{DefaultTransform: cache.TransformStripManagedFields(), ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}:              {Namespaces: secretNamespaces},
			&appsv1.DaemonSet{}:           {Namespaces: map[string]cache.Config{namespace: {}}},
			&anycastv1.NodeAnnouncement{}: {Transform: controllers.NodeAnnouncementCacheTransform()},
			// The agents' Secret access, which the manager keeps in step with the claims, in its namespace only.
			&rbacv1.Role{}:        {Namespaces: map[string]cache.Config{namespace: {}}},
			&rbacv1.RoleBinding{}: {Namespaces: map[string]cache.Config{namespace: {}}},
		}},
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	planner := &controllers.PlannerReconciler{
		Client:       mgr.GetClient(),
		Recorder:     mgr.GetEventRecorder(controllers.FieldOwner),
		Clock:        clock.RealClock{},
		Namespace:    namespace,
		Workers:      workers,
		BackendName:  backendName,
		AgentIgnores: agentIgnores(backendName),
	}
	reader = mgr.GetClient()
	if stackBackend != nil {
		planner.Backend = stackBackend
		if err := servesKinds(mgr.GetRESTMapper(), backendName, planner.Backend); err != nil {
			return err
		}
	}
	if err := planner.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the planner: %w", err)
	}
	if agentImage != "" {
		ds, err := agentdeploy.DaemonSet(namespace, agentImage, backendName)
		if err != nil {
			return err
		}
		policies, err := agentdeploy.AdmissionPolicies()
		if err != nil {
			return err
		}
		if err := ownedByNamespace(ctx, mgr.GetAPIReader(), namespace, policies); err != nil {
			return err
		}
		if err := (&controllers.AgentDaemonSetReconciler{Client: mgr.GetClient(), DaemonSet: ds, Policies: policies}).SetupWithManager(mgr); err != nil {
			return fmt.Errorf("setting up the agents' DaemonSet: %w", err)
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	log.Info("Starting manager", "version", version, "backend", backendName, "namespace", namespace, "leaderElection", leaderElect)
	return mgr.Start(ctx)
}

// ownedByNamespace makes the manager's namespace the owner of the cluster-scoped admission policies it applies, so
// that they go with it: OLM removes only what it created, and on a real cluster the policies outlived the operator's
// uninstall (test/install/singlenode). A Namespace is the one cluster-scoped owner the manager knows of.
func ownedByNamespace(ctx context.Context, r client.Reader, namespace string, objs []client.Object) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var ns corev1.Namespace
	if err := r.Get(ctx, client.ObjectKey{Name: namespace}, &ns); err != nil {
		return fmt.Errorf("reading the manager's namespace %s, the owner of the agents' admission policies: %w", namespace, err)
	}
	for _, o := range objs {
		o.SetOwnerReferences([]metav1.OwnerReference{{APIVersion: "v1", Kind: "Namespace", Name: ns.Name, UID: ns.UID}})
	}
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
