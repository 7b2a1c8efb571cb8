package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	metallbv1beta1 "go.universe.tf/metallb/api/v1beta1"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/backend/metallb"
	"github.com/anycast-operator/anycast-operator/internal/deathsig"
	"github.com/anycast-operator/anycast-operator/internal/procstat"
	"github.com/anycast-operator/anycast-operator/internal/speaker"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

// metallbSpeakerBinary is MetalLB's speaker, built from its Go module by hack/build-metallb-speaker.sh
// (make metallb-speaker; make test builds it first and passes its path in METALLB_SPEAKER).
func metallbSpeakerBinary(t testing.TB) string {
	return builtBinary(t, "METALLB_SPEAKER", "make metallb-speaker", "bin", "metallb", "0.16.1", "speaker")
}

// builtBinary is a program a hack/ script builds from the module proxy into bin/: the path in the environment
// variable make test sets, or else where the script puts it.
func builtBinary(t testing.TB, env, target string, path ...string) string {
	t.Helper()
	bin := os.Getenv(env)
	if bin == "" {
		root, err := testenv.RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		bin = filepath.Join(append([]string{root}, path...)...)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s not found: run `%s` (builds it from the Go module proxy)", bin, target)
	}
	return bin
}

// startLogged starts cmd with its output in a log file, killed if the test process dies; the returned function
// stops it (SIGTERM, SIGKILL after 10 s), as the end of the test does anyway, and the last lines of its log are
// printed when the test fails (or always, with always).
func startLogged(t testing.TB, name string, cmd *exec.Cmd, lines int, always bool) (stop func()) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), "process.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Forked from a thread that never ends: the routers' netns goroutines end theirs, which would kill the child.
	if err := deathsig.Start(cmd, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		})
	}
	t.Cleanup(func() {
		stop()
		_ = logFile.Close()
		if t.Failed() || always {
			b, _ := os.ReadFile(logPath)
			t.Logf("%s log:\n%s", name, tail(string(b), lines))
		}
	})
	return stop
}

// lowPort returns a free port MetalLB's BGPPeer accepts (1-16384).
func lowPort(t testing.TB, addr netip.Addr) int {
	t.Helper()
	for p := 10000 + os.Getpid()%6000; p < 16384; p += 7 {
		l, err := net.Listen("tcp", netip.AddrPortFrom(addr, uint16(p)).String())
		if err == nil {
			_ = l.Close()
			return p
		}
	}
	t.Fatal("no free port below 16384")
	return 0
}

// metallbSpeakerSetup is one node whose agent decides and reports, the manager with the MetalLB backend, MetalLB's
// own speaker for that node (native BGP mode), a LoadBalancer Service holding an address of the anycast pool with a
// ready endpoint, and an upstream router on loopback.
type metallbSpeakerSetup struct {
	k8s         client.Client
	router      *bgptest.Router
	service     *nodeService
	prefix      netip.Prefix
	node        string
	stopManager func()
	env         *testenv.Env
	pid         int // the speaker's process
}

// decider says who makes the node's decisions: its agent, probing the service, or the benchmark, writing the
// NodeAnnouncement status as the agent would.
type decider int

const (
	agentDecides decider = iota
	benchmarkDecides
)

func startMetalLBSpeakerSetup(t testing.TB, who decider) *metallbSpeakerSetup {
	ctx := context.Background()
	dir, err := testenv.MetalLBCRDs()
	if err != nil {
		t.Fatal(err)
	}
	bin := metallbSpeakerBinary(t)
	env, _ := startCluster(t, testenv.WithCRDs(dir))
	if err := metallb.AddToScheme(env.Scheme); err != nil {
		t.Fatal(err)
	}
	k8s, err := client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	// The speaker dials from 127.0.0.1 (it has no sourceAddress, which would have to exist on an interface).
	routerAddr := netip.MustParseAddr("127.0.0.10")
	router, err := bgptest.New(routerAddr, lowPort(t, routerAddr), 65000, map[netip.Addr]uint32{netip.MustParseAddr("127.0.0.1"): 64512}, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(router.Close)
	node, nodeAddr := "edge-1", netip.MustParseAddr("127.0.0.2")
	port, services := startNodeServices(t, nodeAddr)
	prefix := netip.MustParsePrefix("198.51.100.0/24")

	claim := &anycastv1.BGPSessionClaim{ObjectMeta: metav1.ObjectMeta{Name: "edge"}}
	claim.Spec.LocalASN = 64512
	claim.Spec.Static = &anycastv1.StaticSessions{Peers: []anycastv1.BGPPeer{{Address: anycastv1.IPAddress(routerAddr.String()), ASN: 65000, Port: ptr.To(int32(router.Port))}}}
	claim.Spec.Timers = &anycastv1.BGPTimers{HoldTime: &metav1.Duration{Duration: 9 * time.Second}, KeepaliveTime: &metav1.Duration{Duration: 3 * time.Second},
		ConnectRetry: &metav1.Duration{Duration: time.Second}}
	ap := &anycastv1.AnycastPrefix{ObjectMeta: metav1.ObjectMeta{Name: "dns"}}
	ap.Spec.Prefixes = []anycastv1.CIDR{anycastv1.CIDR(prefix.String())}
	ap.Spec.SessionClaims = []anycastv1.LocalObjectName{"edge"}
	ap.Spec.HealthPolicyRef = &anycastv1.ObjectReference{Name: "web"}
	ap.Spec.Attributes = &anycastv1.BGPAttributes{Communities: []anycastv1.Community{"64512:100"}}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "dns", Namespace: "default"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyCluster,
		Ports: []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)}},
	}}
	create(t, k8s, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "metallb-system"}},
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{corev1.LabelHostname: node}}},
		// The speaker reads its own Pod at start-up.
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "speaker-" + node, Namespace: "metallb-system"},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "speaker", Image: "quay.io/metallb/speaker:v0.16.1"}}}},
		claim, ap, fastPolicy("web", fmt.Sprintf("http://$(NODE_IP):%d/healthz", port), 1), svc,
		&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "dns-1", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "dns"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}, NodeName: ptr.To(node)}},
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("dns"), Port: ptr.To[int32](53), Protocol: ptr.To(corev1.ProtocolUDP)}}})
	// MetalLB's controller would assign the address; the test plays it.
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.51.100.53"}}
	if err := k8s.Status().Update(ctx, svc); err != nil {
		t.Fatal(err)
	}

	stopManager := startManagerWith(t, env, metallb.Translator{Namespace: "metallb-system", Mode: metallb.Native,
		Secrets: func(string, string) ([]byte, bool) { return nil, false }})
	if who == agentDecides {
		startAgentWith(t, env, node, nodeAddr, speaker.Delegated{}, testr.NewWithInterface(t, testr.Options{Verbosity: 0}))
	}

	kubeconfig, err := env.Kubeconfig()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--node-name", node, "--pod-name", "speaker-"+node, "--namespace", "metallb-system",
		"--port", fmt.Sprint(lowPort(t, netip.MustParseAddr("127.0.0.1"))+1), "--health-probe-port", fmt.Sprint(bgptest.FreePort(t, netip.MustParseAddr("127.0.0.1"))),
		"--log-level", "info")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "METALLB_BGP_TYPE=native")
	startLogged(t, "MetalLB speaker", cmd, 40, false)
	return &metallbSpeakerSetup{k8s: k8s, router: router, service: services[0], prefix: prefix, node: node, stopManager: stopManager, env: env,
		pid: cmd.Process.Pid}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func (s *metallbSpeakerSetup) waitPaths(t testing.TB, what string, n int) []bgptest.Path {
	t.Helper()
	var got []bgptest.Path
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 90*time.Second, true, func(context.Context) (bool, error) {
		got = s.router.Paths(s.prefix)
		return len(got) == n, nil
	})
	if err != nil {
		t.Fatalf("%s: the router holds %v", what, got)
	}
	return got
}

// TestRealMetalLBSpeaker: the prefix reaches the router through MetalLB's own speaker, and leaves it when the
// node's health fails.
func TestRealMetalLBSpeaker(t *testing.T) {
	s := startMetalLBSpeakerSetup(t, agentDecides)
	got := s.waitPaths(t, "MetalLB's speaker announces the anycast prefix", 1)[0]
	if got.Prefix != s.prefix.String() || got.NextHop != "127.0.0.1" || !slices.Contains(got.Communities, 64512<<16|100) {
		t.Errorf("the router received %s", got)
	}
	s.service.healthy.Store(false)
	s.waitPaths(t, "the node's health fails: MetalLB's speaker withdraws", 0)
	s.service.healthy.Store(true)
	s.waitPaths(t, "the node recovers: announced again", 1)
}

func (s *metallbSpeakerSetup) decide(announce bool) error {
	return decide(s.k8s, s.node, s.prefix, announce)
}

// decide writes a node's decision for its one prefix into its NodeAnnouncement status, as its agent does: what the
// benchmarks of a Kubernetes BGP stack's whole path start from.
func decide(k8s client.Client, node string, prefix netip.Prefix, announce bool) error {
	ctx := context.Background()
	var na anycastv1.NodeAnnouncement
	if err := k8s.Get(ctx, client.ObjectKey{Name: node}, &na); err != nil {
		return err
	}
	state := anycastv1.PrefixWithdrawn
	if announce {
		state = anycastv1.PrefixAnnounced
	}
	na.Status.Prefixes = []anycastv1.NodePrefixStatus{{Prefix: anycastv1.PlannedCIDR(prefix.String()), State: state, Since: ptr.To(metav1.Now())}}
	return k8s.Status().Update(ctx, &na)
}

// BenchmarkMetalLBDecisionToRouter measures the whole path with MetalLB's real speaker: an agent's decision written
// to its NodeAnnouncement status → the manager → the BGPAdvertisement's node selectors → MetalLB's speaker → the
// router's RIB, for a withdrawal and an announcement each iteration.
func BenchmarkMetalLBDecisionToRouter(b *testing.B) {
	s := startMetalLBSpeakerSetup(b, benchmarkDecides)
	waitNA(b, s)
	if err := s.decide(true); err != nil {
		b.Fatal(err)
	}
	s.waitPaths(b, "announced", 1)
	withdraw, announce := s.router.MeasureToggles(b, s.prefix.String(), s.decide)
	withdraw.Report(b, "withdraw")
	announce.Report(b, "announce")
}

// BenchmarkMetalLBAdvertisementToRouter measures MetalLB's own step: a change of the BGPAdvertisement's node
// selectors (the write the manager makes) → MetalLB's speaker → the router's RIB. The manager is stopped once the
// advertisement exists, so only the benchmark writes it.
func BenchmarkMetalLBAdvertisementToRouter(b *testing.B) {
	s := startMetalLBSpeakerSetup(b, benchmarkDecides)
	waitNA(b, s)
	if err := s.decide(true); err != nil {
		b.Fatal(err)
	}
	s.waitPaths(b, "announced", 1)
	s.stopManager()
	ctx := context.Background()
	var list metallbv1beta1.BGPAdvertisementList
	if err := s.k8s.List(ctx, &list, client.InNamespace("metallb-system")); err != nil || len(list.Items) != 1 {
		b.Fatalf("want one BGPAdvertisement: %v %v", list.Items, err)
	}
	adv := &list.Items[0]
	setNodes := func(announce bool) error {
		host := "no-such-node"
		if announce {
			host = s.node
		}
		adv.Spec.NodeSelectors[0].MatchExpressions[0].Values = []string{host}
		return s.k8s.Update(ctx, adv)
	}
	withdraw, announce := s.router.MeasureToggles(b, s.prefix.String(), setNodes)
	withdraw.Report(b, "withdraw")
	announce.Report(b, "announce")
}

func waitNA(b testing.TB, s *metallbSpeakerSetup) { waitPlanned(b, s.k8s, s.node) }

// waitPlanned waits for the manager to plan a node's one prefix in its NodeAnnouncement.
func waitPlanned(t testing.TB, k8s client.Client, node string) {
	t.Helper()
	poll(t, "the manager plans "+node, func() (bool, string) {
		var na anycastv1.NodeAnnouncement
		err := k8s.Get(context.Background(), client.ObjectKey{Name: node}, &na)
		return err == nil && na.Spec.PrefixCount() == 1, fmt.Sprintf("%v %+v", err, na.Spec)
	})
}

// BenchmarkMetalLBSpeakerFootprint is the anchor of the agent's footprint (test/bench BenchmarkAgentFootprint, in
// the same make bench): MetalLB's real speaker, native mode, one BGP session announcing one prefix, its resident
// memory (VmRSS, VmHWM) and CPU over a 10-second window once the router has the prefix.
func BenchmarkMetalLBSpeakerFootprint(b *testing.B) {
	for range b.N {
		b.StopTimer()
		s := startMetalLBSpeakerSetup(b, benchmarkDecides)
		waitNA(b, s)
		if err := s.decide(true); err != nil {
			b.Fatal(err)
		}
		s.waitPaths(b, "announced", 1)
		b.StartTimer()
		cpu, err := procstat.Window(s.pid, func() { time.Sleep(10 * time.Second) })
		b.StopTimer()
		rss, err1 := procstat.MemoryMB(s.pid, "VmRSS")
		hwm, err2 := procstat.MemoryMB(s.pid, "VmHWM")
		if err := errors.Join(err, err1, err2); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(rss, "rss-MB")
		b.ReportMetric(hwm, "hwm-MB")
		b.ReportMetric(cpu.Total(), "cpu-%core")
		b.ReportMetric(cpu.System, "cpu-sys-%core")
	}
}
