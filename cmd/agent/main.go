// Command agent is the node daemon of anycast-operator (one per node, hostNetwork): it probes the local service and
// announces or withdraws the node's anycast prefixes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/clock"

	"github.com/anycast-operator/anycast-operator/internal/agent"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if os.Getenv("GOGC") == "" {
		// The agent's heap is a few megabytes that turn over with every probe round; collecting when it has grown by
		// half rather than doubled keeps it smaller for no measurable CPU (BenchmarkAgentFootprint, 50 checks:
		// 21.3 → 20.5 MB resident; docs/performance.md). GOGC set in the environment wins.
		debug.SetGCPercent(50)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	var cfg agent.Config
	var local, nodeAddrs, routerID, backend, probeAddr, birdDir, birdSocket, kubeconfig, logLevel, logFormat string
	fs.StringVar(&cfg.NodeName, "node-name", os.Getenv("NODE_NAME"), "This node's name (downward API: spec.nodeName).")
	fs.StringVar(&cfg.Namespace, "namespace", envOr("POD_NAMESPACE", "anycast-system"), "The operator's namespace: referenced Secrets and the agent's Lease.")
	fs.StringVar(&local, "local-address", os.Getenv("NODE_IP"), "The node address BGP sessions start from: IPv4, or IPv6 on an IPv6-only node (downward API: status.hostIP).")
	fs.StringVar(&nodeAddrs, "node-addresses", os.Getenv("NODE_IPS"), "The node's addresses, comma-separated (downward API: status.hostIPs). The IPv6 one is the source of IPv6 sessions and the next hop of IPv6 prefixes on IPv4 sessions (and the IPv4 one likewise); without one, those prefixes are not sent on those sessions.")
	fs.StringVar(&routerID, "router-id", "", "The BGP router ID of the embedded speaker (default: the node's IPv4 address; on an IPv6-only node, 32 bits derived from its IPv6 address).")
	fs.StringVar(&backend, "backend", "embedded", "How prefixes are announced: embedded (the agent's own BGP speaker), bird (a running BIRD 2), or metallb, calico or cilium (the cluster's BGP stack announces; the agent decides and reports, the manager drives the stack). Must match the manager's --backend.")
	fs.StringVar(&birdDir, "bird-dir", "/etc/bird/anycast", "bird backend: where the include files go (bird.conf includes filters.conf, routes.conf, peers.conf from here, in that order).")
	fs.StringVar(&birdSocket, "bird-socket", "/run/bird/bird.ctl", "bird backend: BIRD's control socket.")
	fs.StringVar(&probeAddr, "health-probe-bind-address", ":8082", "Address of the agent's /healthz and /readyz endpoints; 0 turns them off.")
	metricsAddr := fs.String("metrics-bind-address", ":8083", "Address of the agent's Prometheus /metrics; 0 turns it off.")
	fs.StringVar(&cfg.StateDir, "state-dir", "/var/lib/anycast-agent", "Where the agent keeps its last NodeAnnouncement and the values of the Secrets it references (mode 0600), to resume them after a restart while the API server is unreachable; empty: keep nothing.")
	fs.DurationVar(&cfg.ResumeAfter, "resume-after", 5*time.Second, "How long a restarted agent waits for its NodeAnnouncement from the API server before acting on the one in --state-dir.")
	fs.IntVar(&cfg.ProbeConcurrency, "probe-concurrency", 8, "Health probes running at once on this node.")
	fs.StringVar(&kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "A kubeconfig file; empty: the in-cluster configuration.")
	fs.StringVar(&logLevel, "log-level", "info", "info, debug, or a verbosity number (0 = info).")
	fs.StringVar(&logFormat, "log-format", "json", "json or text.")
	prepare := fs.String("prepare-state-dir", "", "Create this state directory (mode 0700) owned by --state-dir-owner, then exit: the DaemonSet's init container runs it as root, so that the agent, which does not run as root, owns its hostPath directory.")
	owner := fs.Int("state-dir-owner", 65532, "With --prepare-state-dir: the user (and group) ID that owns the directory.")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *prepare != "" {
		return prepareStateDir(*prepare, *owner)
	}
	log, err := newLogger(logLevel, logFormat)
	if err != nil {
		return err
	}
	log = log.WithName("agent").WithValues("node", cfg.NodeName)
	if cfg.NodeName == "" {
		return errors.New("--node-name (or NODE_NAME) is required")
	}
	addr, err := netip.ParseAddr(local)
	if err != nil {
		return fmt.Errorf("--local-address %q: %w", local, err)
	}
	cfg.LocalAddress, cfg.Version = speaker.Canonical(addr), version
	for _, s := range strings.FieldsFunc(nodeAddrs, func(r rune) bool { return r == ',' || r == ' ' }) {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("--node-addresses: %q: %w", s, err)
		}
		cfg.NodeAddresses = append(cfg.NodeAddresses, speaker.Canonical(a))
	}
	var rid netip.Addr
	if routerID != "" {
		if rid, err = netip.ParseAddr(routerID); err != nil || !rid.Is4() || rid.IsUnspecified() {
			return fmt.Errorf("--router-id %q: want a non-zero IPv4-shaped identifier", routerID)
		}
	}
	cfg.InterfaceAddrs = true // hostNetwork: the host's addresses identify its VM at a session provider
	sp, err := newSpeaker(backend, speakerOptions{routerID: speaker.RouterID(rid, append([]netip.Addr{cfg.LocalAddress}, cfg.NodeAddresses...)...),
		birdDir: birdDir, birdSocket: birdSocket}, log)
	if err != nil {
		return err
	}
	restCfg, err := restConfig(kubeconfig)
	if err != nil {
		return fmt.Errorf("loading the kubeconfig: %w", err)
	}
	log.Info("Starting agent", "version", version, "backend", backend, "localAddress", cfg.LocalAddress, "nodeAddresses", cfg.NodeAddresses)
	a, stop, err := agent.Start(ctx, restCfg, cfg, sp, clock.RealClock{}, log)
	if err != nil {
		return err
	}
	for _, e := range []struct {
		flag, addr string
		handler    http.Handler
	}{{"--health-probe-bind-address", probeAddr, a.Handler()}, {"--metrics-bind-address", *metricsAddr, a.MetricsHandler()}} {
		if e.addr == "0" {
			continue
		}
		l, err := net.Listen("tcp", e.addr)
		if err != nil {
			stop()
			return fmt.Errorf("%s: %w", e.flag, err)
		}
		srv := &http.Server{Handler: e.handler, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(l) }()
		defer srv.Close()
	}
	<-ctx.Done()
	stop()
	return nil
}

// prepareStateDir makes dir the agent's: created if missing, owned by uid (and gid uid), mode 0700, and the state
// file in it (if any) likewise. The init container has CHOWN but neither FOWNER nor DAC_OVERRIDE: once root no
// longer owns the directory it may neither chmod it (seen on a real kubelet: the pod never started) nor reach into
// it, so the mode comes first and the directory's owner last, and a directory that is already the agent's (every
// restart of the pod after the first) is left to the agent, which keeps its mode (saveState).
func prepareStateDir(dir string, uid int) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == uid && int(st.Gid) == uid {
		return nil
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	for _, p := range []string{filepath.Join(dir, "state.json"), dir} {
		if err := os.Lchown(p, uid, uid); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("chown %s: %w", p, err)
		}
	}
	return nil
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		return rest.InClusterConfig()
	}
	return clientcmd.BuildConfigFromFlags("", kubeconfig)
}

func newLogger(level, format string) (logr.Logger, error) {
	var l slog.Level
	switch level {
	case "info", "0":
		l = slog.LevelInfo
	case "debug":
		l = slog.LevelDebug
	default:
		var v int
		if _, err := fmt.Sscanf(level, "%d", &v); err != nil || v < 0 {
			return logr.Logger{}, fmt.Errorf("--log-level %q: want info, debug or a verbosity number", level)
		}
		l = slog.Level(-v) // logr's V(n) is slog level -n
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "json":
		return logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr, opts)), nil
	case "text":
		return logr.FromSlogHandler(slog.NewTextHandler(os.Stderr, opts)), nil
	}
	return logr.Logger{}, fmt.Errorf("--log-format %q: want json or text", format)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// speakerOptions are the flags a speaker is built from.
type speakerOptions struct {
	routerID            netip.Addr
	birdDir, birdSocket string
}
