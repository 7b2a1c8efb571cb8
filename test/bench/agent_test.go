package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	anycastv1 "github.com/anycast-operator/anycast-operator/api/v1alpha1"
	"github.com/anycast-operator/anycast-operator/internal/netlab"
	"github.com/anycast-operator/anycast-operator/internal/procstat"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bgptest"
	"github.com/anycast-operator/anycast-operator/internal/speaker/bird/birdtest"
	"github.com/anycast-operator/anycast-operator/internal/testenv"
)

// BenchmarkAgentFootprint runs the agent binary as users run it, against the test API server, and measures its
// resident memory (VmRSS at the end of the window, VmHWM its peak) and CPU over a 10-second window once every check
// passes and every prefix is announced, with its /metrics scraped every 5 s as Prometheus would (more often than
// the usual 15-30 s). Backends: embedded (its own BGP session to a router), bird (a real BIRD 2 announces), and
// delegated (--backend=metallb: the agent decides and reports, the cluster's BGP stack announces), with the
// agent built with -tags delegated as the agent-delegated image is.
func BenchmarkAgentFootprint(b *testing.B) {
	full, size, pkgs := buildAgent(b)
	b.Logf("the agent binary: %.1f MB, %d packages", float64(size)/1e6, pkgs)
	delegated, size, pkgs := buildAgent(b, "delegated")
	b.Logf("the agent binary built with -tags delegated (the agent-delegated image): %.1f MB, %d packages", float64(size)/1e6, pkgs)
	for _, backend := range []string{"embedded", "bird", "delegated"} {
		bin := full
		if backend == "delegated" {
			bin = delegated
		}
		for _, tc := range []struct {
			checks   int
			interval time.Duration
		}{{1, time.Second}, {10, time.Second}, {50, time.Second}, {10, 100 * time.Millisecond}} {
			b.Run(fmt.Sprintf("backend=%s/checks=%d/interval=%s", backend, tc.checks, tc.interval), func(b *testing.B) {
				for range b.N {
					m := measureAgent(b, bin, backend, tc.checks, tc.interval, 10*time.Second)
					b.ReportMetric(m.rssMB, "rss-MB")
					b.ReportMetric(m.hwmMB, "hwm-MB")
					b.ReportMetric(m.cpu.Total(), "cpu-%core")
					b.ReportMetric(m.cpu.System, "cpu-sys-%core")
				}
			})
		}
	}
}

// buildAgent builds cmd/agent as the Makefile does, with the given build tags, and returns its path, size and
// package count.
func buildAgent(b *testing.B, tags ...string) (string, int64, int) {
	bin := filepath.Join(b.TempDir(), "agent")
	tagArgs := []string{"-tags", strings.Join(tags, ",")}
	const pkg = "github.com/anycast-operator/anycast-operator/cmd/agent"
	if out, err := exec.Command("go", append(append([]string{"build"}, tagArgs...), "-o", bin, pkg)...).CombinedOutput(); err != nil {
		b.Fatalf("building the agent: %v\n%s", err, out)
	}
	fi, err := os.Stat(bin)
	if err != nil {
		b.Fatal(err)
	}
	out, err := exec.Command("go", append(append([]string{"list", "-deps"}, tagArgs...), pkg)...).Output()
	if err != nil {
		b.Fatal(err)
	}
	return bin, fi.Size(), len(strings.Fields(string(out)))
}

type footprint struct {
	rssMB, hwmMB float64
	cpu          procstat.Usage
}

func measureAgent(b *testing.B, bin, backend string, checks int, interval, window time.Duration) footprint {
	b.StopTimer()
	env, err := testenv.Start()
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	k8s, err := client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		b.Fatal(err)
	}
	// The router in a network namespace across a veth pair, as on a real link: BIRD, like routers, accepts an eBGP
	// peer only on a directly connected network, which loopback is not to it.
	lab := netlab.New(b, 1)
	node := lab.Nodes4[0]
	router := bgptest.StartWith(b, bgptest.Options{Addresses: []netip.Addr{lab.Router4}, ASN: 65001, Netns: lab.NetnsPath,
		Neighbors: map[netip.Addr]uint32{node: 64512}})
	svc := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer svc.Close()

	// At most 16 checks per policy: spread them over policies, one prefix each.
	na := &anycastv1.NodeAnnouncement{ObjectMeta: metav1.ObjectMeta{Name: "bench-1"}}
	na.Spec.Sessions = []anycastv1.NodeSessions{{Claim: "edge", BGPSessionSettings: anycastv1.BGPSessionSettings{LocalASN: 64512,
		Static: &anycastv1.StaticSessions{Peers: []anycastv1.BGPPeer{{Address: anycastv1.IPAddress(lab.Router4.String()), ASN: 65001, Port: ptr.To(int32(router.Port))}}},
		Timers: &anycastv1.BGPTimers{ConnectRetry: &metav1.Duration{Duration: time.Second}}}}}
	for p := 0; p*16 < checks; p++ {
		spec := anycastv1.HealthPolicySpec{Interval: &metav1.Duration{Duration: interval}, Timeout: &metav1.Duration{Duration: interval * 8 / 10},
			RiseThreshold: ptr.To[int32](1)}
		for c := p * 16; c < min((p+1)*16, checks); c++ {
			spec.Checks = append(spec.Checks, anycastv1.HealthCheck{Name: fmt.Sprintf("c%02d", c), HTTP: &anycastv1.HTTPCheck{URL: fmt.Sprintf("%s/check/%d", svc.URL, c)}})
		}
		name := anycastv1.LocalObjectName(fmt.Sprintf("p%d", p))
		na.Spec.HealthPolicies = append(na.Spec.HealthPolicies, anycastv1.NodeHealthPolicy{Name: name, Spec: spec})
		na.Spec.Groups = append(na.Spec.Groups, anycastv1.PrefixGroup{Sessions: []anycastv1.LocalObjectName{"edge"}, HealthPolicy: name,
			Prefixes: []anycastv1.GroupPrefix{{Prefix: anycastv1.PlannedCIDR(fmt.Sprintf("198.51.%d.0/24", 100+p)), Source: "bench"}}})
	}
	ctx := context.Background()
	for _, o := range []client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "anycast-system"}}, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "bench-1"}}, na} {
		if err := k8s.Create(ctx, o); err != nil {
			b.Fatal(err)
		}
	}
	kubeconfig, err := env.Kubeconfig()
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		b.Fatal(err)
	}
	metricsAddr := l.Addr().String()
	_ = l.Close()
	args := []string{"--node-name=bench-1", "--local-address=" + node.String(), "--health-probe-bind-address=0", "--metrics-bind-address=" + metricsAddr, "--state-dir=" + b.TempDir()}
	diagnose := func() string { return "" }
	switch backend {
	case "bird":
		d := birdtest.StartDaemon(b, node)
		args = append(args, "--backend=bird", "--bird-dir="+d.Speaker.Dir, "--bird-socket="+d.Speaker.Socket)
		diagnose = func() string {
			out, _ := exec.Command("birdc", "-s", d.Speaker.Socket, "show", "protocols", "all").CombinedOutput()
			return string(out)
		}
	case "delegated":
		args = append(args, "--backend=metallb")
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	// Warm: every prefix announced at the router or, delegated, reported announced in the status.
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		if backend == "delegated" {
			var got anycastv1.NodeAnnouncement
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(na), &got); err != nil {
				return false, nil
			}
			announced := 0
			for _, p := range got.Status.Prefixes {
				if p.State == anycastv1.PrefixAnnounced {
					announced++
				}
			}
			return announced == len(na.Spec.Groups), nil
		}
		for p := range na.Spec.Groups {
			if len(router.Paths(netip.MustParsePrefix(fmt.Sprintf("198.51.%d.0/24", 100+p)))) != 1 {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		b.Fatalf("the agent did not announce every prefix; its log:\n%s\n%s", stderr.String(), diagnose())
	}
	b.StartTimer()
	// The measurement window itself: CPU is averaged over it.
	cpu, err := procstat.Window(cmd.Process.Pid, func() {
		for end := time.Now().Add(window); time.Now().Before(end); time.Sleep(min(scrapeInterval, time.Until(end))) {
			scrape(b, "http://"+metricsAddr+"/metrics")
		}
	})
	b.StopTimer()
	rss, err1 := procstat.MemoryMB(cmd.Process.Pid, "VmRSS")
	hwm, err2 := procstat.MemoryMB(cmd.Process.Pid, "VmHWM")
	if err := errors.Join(err, err1, err2); err != nil {
		b.Fatal(err)
	}
	return footprint{rssMB: rss, hwmMB: hwm, cpu: cpu}
}

const scrapeInterval = 5 * time.Second

// scrape reads the agent's /metrics as Prometheus does, and checks that the agent's own series are there.
func scrape(b *testing.B, url string) {
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "anycast_agent_check_duration_seconds_bucket") {
		b.Fatalf("scraping %s: %v %d", url, err, resp.StatusCode)
	}
}
