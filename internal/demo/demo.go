// Package demo runs the whole product on one machine, without root and without a cluster: a local kube-apiserver
// and etcd with the CRDs, the manager and three node agents as processes (three simulated nodes in three sites, each
// on its own loopback address in front of its own HTTP service), and an upstream route server peering with the three
// over real BGP on loopback. It shows the agents' and the router's view live and narrates a scripted scenario:
// announce, a site failing and being withdrawn, its recovery, an attribute change.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

// Namespace is the operator's namespace in the demo cluster.
const Namespace = "anycast-system"

// Config says how to run the demo.
type Config struct {
	// BinDir holds the manager and agent binaries (make build writes them to bin/).
	BinDir string
	Out    io.Writer
	// Live redraws the tables in place (a terminal); otherwise the narration is printed line by line, with the tables
	// after each step.
	Live bool
	// Stay keeps everything running after the scenario until ctx ends (Ctrl-C).
	Stay    bool
	Timings Timings
}

// Timings are the health policy's and the scenario's.
type Timings struct {
	Interval, Timeout time.Duration
	Rise, Fall        int32
	ReannounceDelay   time.Duration
	// Pause is the time between scenario steps, to watch the tables.
	Pause time.Duration
	// StepTimeout bounds how long one step may take to be seen at the router.
	StepTimeout time.Duration
}

// Interactive timings are close to a real deployment's, scaled down so that the scenario takes a minute.
var Interactive = Timings{Interval: time.Second, Timeout: 500 * time.Millisecond, Rise: 2, Fall: 3,
	ReannounceDelay: 5 * time.Second, Pause: 5 * time.Second, StepTimeout: 2 * time.Minute}

// Check timings are short, for make demo-check.
var Check = Timings{Interval: 200 * time.Millisecond, Timeout: 150 * time.Millisecond, Rise: 2, Fall: 3,
	ReannounceDelay: time.Second, Pause: 300 * time.Millisecond, StepTimeout: 2 * time.Minute}

const (
	localASN  = 64512
	routerASN = 65000
)

var (
	routerAddr = netip.MustParseAddr("127.0.0.10")
	siteIPv6   = netip.MustParseAddr("::1")
	// agentMetricsPort is where each site's agent serves /metrics, on the site's own address.
	agentMetricsPort uint16 = 18083
	sites                   = []Site{
		{Name: "ams", Node: "ams-1", Address: netip.MustParseAddr("127.0.0.11")},
		{Name: "fra", Node: "fra-1", Address: netip.MustParseAddr("127.0.0.12")},
		{Name: "nyc", Node: "nyc-1", Address: netip.MustParseAddr("127.0.0.13")},
	}
	prefixes = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8:100::/48")}
)

// demo is a running demo.
type demo struct {
	cfg        Config
	workDir    string
	kubeconfig string
	kubectl    string
	k8s        client.Client
	router     *bgptest.Router
	services   []*service
	manager    *process
	agents     []*process
	stopEnv    func() error

	mu        sync.Mutex
	narration []string
	done      bool // the scenario ended
}

// Run runs the demo until the scenario ends (or, with Stay, until ctx ends), then stops everything it started and
// removes its files. It returns an error if a scenario step was not observed at the router.
func Run(ctx context.Context, cfg Config) (err error) {
	d := &demo{cfg: cfg}
	defer func() {
		if cerr := d.cleanup(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	if err := d.start(ctx); err != nil {
		return err
	}
	viewCtx, stopView := context.WithCancel(ctx)
	viewDone := make(chan struct{})
	go func() { defer close(viewDone); d.view(viewCtx) }()
	scenarioErr := d.scenario(ctx)
	if scenarioErr == nil {
		if err := d.writePreviewExample(ctx); err != nil {
			scenarioErr = fmt.Errorf("writing the example for kubectl anycast plan: %w", err)
		}
	}
	d.mu.Lock()
	d.done = true
	d.mu.Unlock()
	if scenarioErr != nil && ctx.Err() == nil {
		d.say("FAILED: %v", scenarioErr)
	}
	if cfg.Stay && ctx.Err() == nil {
		d.say("The demo stays up; Ctrl-C stops everything.")
		if !cfg.Live {
			fmt.Fprint(cfg.Out, d.tryThis())
		}
		<-ctx.Done()
	}
	stopView()
	<-viewDone
	if ctx.Err() != nil {
		fmt.Fprintln(cfg.Out, "\nStopping everything (a few seconds)...")
	}
	if scenarioErr != nil && errors.Is(scenarioErr, context.Canceled) && ctx.Err() != nil {
		return nil // stopped by Ctrl-C during the scenario
	}
	return scenarioErr
}

// start brings up the control plane, the objects, the router, the services and the processes.
func (d *demo) start(ctx context.Context) error {
	var err error
	if d.workDir, err = os.MkdirTemp("", "anycast-demo-"); err != nil {
		return err
	}
	for _, bin := range []string{"manager", "agent", "kubectl-anycast"} {
		if _, err := os.Stat(filepath.Join(d.cfg.BinDir, bin)); err != nil {
			return fmt.Errorf("%s binary not found in %s: run `make build`", bin, d.cfg.BinDir)
		}
	}
	d.say("Starting a local control plane: kube-apiserver %s and etcd, with the anycast.dev CRDs", testenv.KubernetesVersion)
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	d.stopEnv = env.Stop
	assets, err := testenv.AssetsDir(env.Root)
	if err != nil {
		return err
	}
	d.kubectl = filepath.Join(assets, "kubectl")
	d.kubeconfig = filepath.Join(d.workDir, "kubeconfig")
	if err := env.WriteKubeconfig(d.kubeconfig); err != nil {
		return fmt.Errorf("writing the kubeconfig: %w", err)
	}
	if d.k8s, err = client.New(env.Config, client.Options{Scheme: env.Scheme}); err != nil {
		return err
	}
	if err := d.createNodes(ctx); err != nil {
		return err
	}
	neighbors := map[netip.Addr]uint32{}
	for _, s := range sites {
		neighbors[s.Address] = localASN
	}
	if d.router, err = bgptest.New(routerAddr, 0, routerASN, neighbors, ""); err != nil {
		return err
	}
	d.say("Route server %s (AS%d) waits for the three sites' sessions", d.routerAddrPort(), routerASN)
	if d.services, err = startServices(sites); err != nil {
		return err
	}
	env2 := []string{"KUBECONFIG=" + d.kubeconfig}
	if d.manager, err = startProcess("manager", filepath.Join(d.cfg.BinDir, "manager"), []string{
		"--namespace", Namespace, "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
	}, env2, filepath.Join(d.workDir, "manager.log")); err != nil {
		return err
	}
	for _, s := range sites {
		p, err := startProcess("agent "+s.Node, filepath.Join(d.cfg.BinDir, "agent"), []string{
			"--node-name", s.Node, "--local-address", s.Address.String(), "--namespace", Namespace,
			"--health-probe-bind-address", "0", "--state-dir", filepath.Join(d.workDir, "state-"+s.Node),
			"--metrics-bind-address", netip.AddrPortFrom(s.Address, agentMetricsPort).String(),
			// The sites live on this machine's loopback, whose one IPv6 address is ::1: it is their IPv6 next hop.
			"--node-addresses", siteIPv6.String(),
		}, env2, filepath.Join(d.workDir, "agent-"+s.Node+".log"))
		if err != nil {
			return err
		}
		d.agents = append(d.agents, p)
	}
	d.say("Started the manager and three agents (%s); logs in %s", siteList(), d.workDir)
	return nil
}

func (d *demo) routerAddrPort() netip.AddrPort {
	return netip.AddrPortFrom(d.router.Address, uint16(d.router.Port))
}

func siteList() string {
	var out []string
	for _, s := range sites {
		out = append(out, fmt.Sprintf("%s in %s on %s", s.Node, s.Name, s.Address))
	}
	return strings.Join(out, ", ")
}

// createNodes creates the operator's namespace and one Node per site.
func (d *demo) createNodes(ctx context.Context) error {
	objs := []client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}}
	for _, s := range sites {
		objs = append(objs, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: s.Node, Labels: map[string]string{
			"topology.kubernetes.io/zone": s.Name, "anycast.dev/site": s.Name, "anycast.dev/demo": "true",
		}}})
	}
	for _, o := range objs {
		if err := d.k8s.Create(ctx, o); err != nil {
			return fmt.Errorf("creating %s: %w", o.GetName(), err)
		}
	}
	return nil
}

// objects are what a user of the demo declares: one claim (the route server), one health policy (each node's own
// HTTP service through $(NODE_IP)) and one prefix, IPv4 and IPv6.
func (d *demo) objects() []client.Object {
	t := d.cfg.Timings
	claim := &anycastv1.BGPSessionClaim{ObjectMeta: metav1.ObjectMeta{Name: "upstream"}}
	claim.Spec.NodeSelector = metav1.LabelSelector{MatchLabels: map[string]string{"anycast.dev/demo": "true"}}
	claim.Spec.LocalASN = localASN
	port := int32(d.router.Port)
	claim.Spec.Static = &anycastv1.StaticSessions{Peers: []anycastv1.BGPPeer{{
		Address: anycastv1.IPAddress(routerAddr.String()), ASN: routerASN, Port: &port,
	}}}
	claim.Spec.Timers = &anycastv1.BGPTimers{HoldTime: &metav1.Duration{Duration: 9 * time.Second},
		KeepaliveTime: &metav1.Duration{Duration: 3 * time.Second}, ConnectRetry: &metav1.Duration{Duration: time.Second}}
	claim.Spec.ExportPolicy = &anycastv1.ExportPolicy{AllowedPrefixes: cidrs(prefixes)}

	policy := &anycastv1.HealthPolicy{ObjectMeta: metav1.ObjectMeta{Name: "web"}}
	policy.Spec.Checks = []anycastv1.HealthCheck{{Name: "http", HTTP: &anycastv1.HTTPCheck{
		URL: fmt.Sprintf("http://$(NODE_IP):%d/healthz", d.services[0].port),
	}}}
	policy.Spec.Interval = &metav1.Duration{Duration: t.Interval}
	policy.Spec.Timeout = &metav1.Duration{Duration: t.Timeout}
	policy.Spec.RiseThreshold, policy.Spec.FallThreshold = &t.Rise, &t.Fall
	policy.Spec.Dampening = &anycastv1.Dampening{WithdrawDelay: &metav1.Duration{},
		ReannounceDelay: &metav1.Duration{Duration: t.ReannounceDelay}, MinAnnounceDuration: &metav1.Duration{}}

	prefix := &anycastv1.AnycastPrefix{ObjectMeta: metav1.ObjectMeta{Name: "web"}}
	prefix.Spec.Prefixes = cidrs(prefixes)
	prefix.Spec.SessionClaims = []anycastv1.LocalObjectName{"upstream"}
	prefix.Spec.HealthPolicyRef = &anycastv1.ObjectReference{Name: "web"}
	prefix.Spec.Attributes = &anycastv1.BGPAttributes{Communities: []anycastv1.Community{"64512:100"}}
	return []client.Object{claim, policy, prefix}
}

// previewFile is a change for `kubectl anycast plan -f` to preview: web without the last site.
func (d *demo) previewFile() string {
	return filepath.Join(d.workDir, "web-without-"+sites[len(sites)-1].Name+".yaml")
}

// writePreviewExample writes the live AnycastPrefix web, as a manifest, with the last site taken out.
func (d *demo) writePreviewExample(ctx context.Context) error {
	live := &anycastv1.AnycastPrefix{}
	if err := d.k8s.Get(ctx, client.ObjectKey{Name: "web"}, live); err != nil {
		return err
	}
	ap := &anycastv1.AnycastPrefix{ObjectMeta: metav1.ObjectMeta{Name: live.Name}, Spec: live.Spec,
		TypeMeta: metav1.TypeMeta{APIVersion: anycastv1.GroupVersion.String(), Kind: "AnycastPrefix"}}
	ap.Spec.NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
		Key: "anycast.dev/site", Operator: metav1.LabelSelectorOpNotIn, Values: []string{sites[len(sites)-1].Name}}}}
	b, err := yaml.Marshal(ap)
	if err != nil {
		return err
	}
	return os.WriteFile(d.previewFile(), b, 0o644)
}

func cidrs(ps []netip.Prefix) []anycastv1.CIDR {
	out := make([]anycastv1.CIDR, len(ps))
	for i, p := range ps {
		out[i] = anycastv1.CIDR(p.String())
	}
	return out
}

// cleanup stops everything in order: the agents (they withdraw and close their sessions), the manager, the router,
// the services, the control plane; then removes the work directory.
func (d *demo) cleanup() error {
	var errs []error
	var mu sync.Mutex
	stopAll := func(procs []*process) {
		var wg sync.WaitGroup
		for _, p := range procs {
			if p == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := p.stop(15 * time.Second); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
	}
	stopAll(d.agents)
	stopAll([]*process{d.manager})
	if d.router != nil {
		d.router.Close()
	}
	for _, s := range d.services {
		if err := s.close(); err != nil {
			errs = append(errs, err)
		}
	}
	if d.stopEnv != nil {
		if err := d.stopEnv(); err != nil {
			errs = append(errs, fmt.Errorf("stopping the control plane: %w", err))
		}
	}
	if d.workDir != "" {
		if err := os.RemoveAll(d.workDir); err != nil {
			errs = append(errs, err)
		}
	}
	fmt.Fprintf(d.cfg.Out, "Stopped the agents, the manager, the route server and the control plane; removed %s.\n", d.workDir)
	return errors.Join(errs...)
}
