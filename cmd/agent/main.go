// Command agent is the node daemon of anycast-operator (one per node, hostNetwork): it probes the local service and
// announces or withdraws the node's anycast prefixes.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/netip"
	"os"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/agent"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bird"
	"github.com/anycast-operator/anycast-operator/internal/speaker/embedded"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(ctrl.SetupSignalHandler(), os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	var cfg agent.Config
	var local, backend, probeAddr, birdDir, birdSocket string
	fs.StringVar(&cfg.NodeName, "node-name", os.Getenv("NODE_NAME"), "This node's name (downward API: spec.nodeName).")
	fs.StringVar(&cfg.Namespace, "namespace", envOr("POD_NAMESPACE", "anycast-system"), "The operator's namespace: referenced Secrets and the agent's Lease.")
	fs.StringVar(&local, "local-address", os.Getenv("NODE_IP"), "The node address BGP sessions start from, also the router ID (downward API: status.hostIP).")
	fs.StringVar(&backend, "backend", "embedded", "How prefixes are announced: embedded (in-process GoBGP speaker), bird (a running BIRD 2), or metallb, calico or cilium (the cluster's BGP stack announces; the agent decides and reports, the manager drives the stack). Must match the manager's --backend.")
	fs.StringVar(&birdDir, "bird-dir", "/etc/bird/anycast", "bird backend: where the include files go (bird.conf includes filters.conf, routes.conf, peers.conf from here, in that order).")
	fs.StringVar(&birdSocket, "bird-socket", "/run/bird/bird.ctl", "bird backend: BIRD's control socket.")
	fs.StringVar(&probeAddr, "health-probe-bind-address", ":8082", "Address of the agent's /healthz endpoint; 0 turns it off.")
	fs.IntVar(&cfg.ProbeConcurrency, "probe-concurrency", 8, "Health probes running at once on this node.")
	opts := zap.Options{}
	opts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	log := ctrl.Log.WithName("agent").WithValues("node", cfg.NodeName)
	if cfg.NodeName == "" {
		return fmt.Errorf("--node-name (or NODE_NAME) is required")
	}
	addr, err := netip.ParseAddr(local)
	if err != nil {
		return fmt.Errorf("--local-address %q: %w", local, err)
	}
	cfg.LocalAddress, cfg.Version = addr, version
	cfg.InterfaceAddrs = true // hostNetwork: the host's addresses identify its VM at a session provider
	var sp speaker.Speaker
	switch backend {
	case "embedded":
		sp = embedded.New(addr, log)
	case "bird":
		sp = &bird.Speaker{Dir: birdDir, Socket: birdSocket, Log: log}
	case "metallb", "calico", "cilium":
		sp = speaker.Delegated{}
	default:
		return fmt.Errorf("--backend=%q: want embedded, bird, metallb, calico or cilium", backend)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := anycastv1.AddToScheme(scheme); err != nil {
		return err
	}
	restCfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading the kubeconfig: %w", err)
	}
	if probeAddr != "0" {
		srv := &http.Server{Addr: probeAddr, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })}
		go func() { _ = srv.ListenAndServe() }()
		defer srv.Close()
	}
	log.Info("Starting agent", "version", version, "backend", backend, "localAddress", addr)
	return agent.RunOnNode(ctx, restCfg, scheme, cfg, sp, clock.RealClock{}, log)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
